"""The command line as a user meets it: docstring examples that run, labels inflected for the
templates, every failure one screen without a traceback, outputs that never overwrite foreign files,
and progress that stays readable in a log."""
import doctest
import importlib
import json
import pkgutil
import shutil
from pathlib import Path

import pytest
import torch

import langclip
from langclip.cli import main

from conftest import make_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_arch, tiny_clip, ru_tokenizer):
    from langclip.build import build_student
    from langclip.runfolder import save_model_files

    run = tmp_path_factory.mktemp("cli") / "run"
    model, ref, info = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip", context_length=32)
    with torch.no_grad():
        emb = model.clip.token_embedding.weight
        emb[49406:ru_tokenizer.sot_token_id] += 0.05 * torch.randn_like(emb[49406:ru_tokenizer.sot_token_id])
    save_model_files(run, model, ru_tokenizer, ref, {"init": info})
    return run


def test_every_docstring_example_runs(tmp_path, run_dir, monkeypatch):
    """Every `>>>` example in the package runs as written, from a folder holding what the examples
    name (runs/ru, cat.jpg, configs/)."""
    shutil.copytree(run_dir, tmp_path / "runs" / "ru")
    make_image(tmp_path / "cat.jpg", 3)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tried, names = 0, []
    modules = ["langclip"] + [x.name for x in pkgutil.walk_packages(langclip.__path__, "langclip.")
                              if not x.name.endswith("__main__")]
    for name in modules:
        m = importlib.import_module(name)
        for t in finder.find(m, extraglobs={"m": langclip.load("runs/ru", device="cpu"),
                                       "img": __import__("PIL.Image", fromlist=["Image"]).open("cat.jpg")}):
            if t.examples:
                r = runner.run(t, clear_globs=False)
                tried += r.attempted
                names.append(t.name)
                assert r.failed == 0, t.name
    assert tried >= 12 and {"langclip", "langclip.inference", "langclip.morph", "langclip.config"} <= set(names), names


def test_predict_inflects_labels_into_the_templates_forms(tmp_path, run_dir, tiny_clip, capsys):
    from PIL import Image

    from langclip.datasets import shipped_templates
    from langclip.metrics import fill
    from langclip.morph import label_forms

    m = langclip.load(run_dir, device="cpu")
    img = Image.open(make_image(tmp_path / "a.png", 1))
    forms = label_forms("серая кошка", "ru")
    assert forms["gen"] == "серой кошки" and forms["nom"] == "серая кошка"
    assert fill("фото {gen}", label_forms("кот", "ru")) == "фото кота"
    assert label_forms("iphone", "ru")["gen"] == "iphone"          # unknown words stay as written
    labels = ["кот", "серая кошка", "лошадь"]
    by_lang = m.classify([img], labels, lang="ru")
    explicit = m.classify([img], [{"nom": x, "gen": g} for x, g in zip(labels, ["кота", "серой кошки", "лошади"])],
                          shipped_templates("ru"))
    nominative_everywhere = m.classify([img], labels, shipped_templates("ru"))   # the old behaviour
    assert torch.equal(by_lang, explicit) and not torch.equal(by_lang, nominative_everywhere)
    # the CLI: --lang inflects, --weights and --device are accepted
    assert main(["predict", "--model", str(run_dir), "--image", str(tmp_path / "a.png"), "--labels", ",".join(labels),
                 "--lang", "ru", "--weights", tiny_clip[1], "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    got = [float(line.split("%")[0]) / 100 for line in out.splitlines()[1:]]
    assert sorted(got, reverse=True) == pytest.approx(sorted(by_lang[0].tolist(), reverse=True), abs=1e-3)
    texts = tmp_path / "t.txt"
    texts.write_text("кот\nсобака\n", encoding="utf-8")
    assert main(["similarity", "--model", str(run_dir), "--images", str(tmp_path / "a.png"), "--texts", str(texts),
                 "--out", str(tmp_path / "sim.png"), "--weights", tiny_clip[1], "--device", "cpu"]) == 0
    from_file = json.loads((tmp_path / "sim.json").read_text(encoding="utf-8"))
    # the texts typed on the command line (and @FILE among them) give the same matrix
    for texts_args in (["кот", "собака"], [f"@{texts}"], ["кот", f"@{tmp_path / 'one.txt'}"]):
        (tmp_path / "one.txt").write_text("собака\n", encoding="utf-8")
        out = tmp_path / f"sim{len(texts_args)}{texts_args[0][0] == '@'}.png"
        assert main(["similarity", "--model", str(run_dir), "--images", str(tmp_path / "a.png"), "--texts", *texts_args,
                     "--out", str(out), "--weights", tiny_clip[1], "--device", "cpu"]) == 0
        assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8")) == from_file, texts_args
    assert main(["export", "--model", str(run_dir), "--out", str(tmp_path / "exp"), "--weights", tiny_clip[1],
                 "--device", "cpu"]) == 0


def test_failures_are_one_screen_without_traceback(tmp_path, run_dir, monkeypatch, capsys):
    import langclip.inference as inf

    good = make_image(tmp_path / "a.png", 1)
    cases = [
        (["predict", "--model", str(tmp_path / "nope"), "--image", str(good), "--labels", "кот"], str(tmp_path / "nope")),
        (["train", "--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["cache", "build", "--data", str(tmp_path / "none.csv"), "--clip", "ViT-B-32-quickgelu", "--weights",
          str(good), "--out", str(tmp_path / "c")], str(tmp_path / "none.csv")),
        (["cache", "build", "--data", str(good), "--clip", "ViT-B-32-quickgelu", "--weights",
          str(good), "--out", str(tmp_path / "c")], str(good)),
        (["tokenizer", "stats", "--tokenizer", str(tmp_path), "--lang", "ru"], str(tmp_path)),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("langclip: error: ") and "Traceback" not in err and named in err, (argv, err)
        assert len(err.splitlines()) <= 27
    monkeypatch.setattr(inf, "predict_cli", lambda *a, **k: {}["no such key"])   # a bug langclip did not expect
    assert main(["predict", "--model", str(run_dir), "--image", str(good), "--labels", "кот"]) == 2
    err = capsys.readouterr().err
    assert "unexpected KeyError" in err and "run with -v for the traceback" in err and "Traceback" not in err
    with pytest.raises(KeyError):
        main(["-v", "predict", "--model", str(run_dir), "--image", str(good), "--labels", "кот"])


def test_outputs_never_overwrite_what_is_not_langclips(tmp_path, run_dir, train_cfg, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine", encoding="utf-8")
    img = make_image(tmp_path / "a.png", 1)
    texts = tmp_path / "t.txt"
    texts.write_text("кот\n", encoding="utf-8")
    cases = [
        ["tokenizer", "train", "--lang", "ru", "--wordfreq", "--wordfreq-top", "500", "--merges", "10", "--out", str(foreign)],
        ["export", "--model", str(run_dir), "--out", str(foreign)],
        ["export", "--model", str(run_dir), "--out", str(a_file)],
        ["train", "--config", str(_cfg(train_cfg, tmp_path)), f"out={foreign}"],
        ["similarity", "--model", str(run_dir), "--images", str(img), "--texts", str(texts), "--out", str(a_file)],
        ["demo", "--out", str(foreign), "--size", "tiny"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert ("not a langclip" in err or "is a file" in err or "not written by langclip" in err), (argv, err)
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"] and a_file.read_text() == "mine"
    # its own outputs are rewritten as before
    assert main(["export", "--model", str(run_dir), "--out", str(tmp_path / "e")]) == 0
    assert main(["export", "--model", str(run_dir), "--out", str(tmp_path / "e")]) == 0
    for _ in range(2):
        assert main(["similarity", "--model", str(run_dir), "--images", str(img), "--texts", str(texts),
                     "--out", str(tmp_path / "s.png")]) == 0


def _cfg(cfg, tmp_path):
    from dataclasses import asdict

    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(asdict(cfg), allow_unicode=True))
    return p


def test_progress_in_a_log_stays_short(train_cfg, capsys):
    """stderr is not a terminal here (as in CI or `> log`): a few-second run writes a handful of
    progress updates, not one every tenth of a second."""
    train_cfg.epochs = 40
    assert main(["train", "--config", str(_cfg(train_cfg, Path(train_cfg.out).parent))]) == 0
    err = capsys.readouterr().err
    renders = err.count("step/s]")          # each drawing of the training bar
    epochs = sum(ln.startswith("epoch ") for ln in err.replace("\r", "\n").splitlines())
    assert renders <= 6 and epochs == 40, (renders, epochs, err[-500:])


def test_key_value_overrides_work_for_every_stage_command(tmp_path, pair_data, tiny_arch, tiny_clip, capsys):
    """`key=value` after a command sets any field of its config dataclass, as for `train`; a key the
    dataclass does not have is refused, naming the known keys."""
    assert main(["cache", "build", "--data", str(pair_data / "pairs.csv"), "--clip", tiny_arch, "--weights", tiny_clip[1],
                 "--out", str(tmp_path / "c"), "--workers", "0", "shard_size=5", "teacher_shard_size=7"]) == 0
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert man["shard_size"] == 5 and man["num_shards"] == 4 and man["config"]["teacher_shard_size"] == 7
    assert main(["tokenizer", "train", "--lang", "ru", "--wordfreq", "--out", str(tmp_path / "t"),
                 "wordfreq_top=2000", "merges=40"]) == 0
    assert json.loads((tmp_path / "t" / "langclip_tokenizer.json").read_text())["merges_added"] == 40
    capsys.readouterr()
    assert main(["cache", "build", "--data", str(pair_data / "pairs.csv"), "--clip", tiny_arch, "--weights", tiny_clip[1],
                 "--out", str(tmp_path / "c2"), "shard_sise=5"]) == 2
    assert "unknown key 'shard_sise'" in capsys.readouterr().err


def test_help_does_not_import_torch():
    """`langclip --help` and every subcommand's parser stay light: the parser (search's included) and
    `import langclip` import no torch — a second and more of a user's wait (the import is lazy)."""
    import subprocess
    import sys

    code = ("import sys, langclip; from langclip.cli import build_parser; p = build_parser(); "
            "p.parse_args(['search', '--index', 'i', '--model', 'm', 'q']); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]
