"""The command line as a user meets it: docstring examples that run, labels inflected for the
templates, every failure one screen without a traceback, outputs that never overwrite foreign files,
and progress that stays readable in a log."""
import doctest
import importlib
import json
import pkgutil
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import langclip
from langclip.cli import main

from conftest import make_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
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
    extra = {"m": langclip.load("runs/ru", device="cpu"), "img": __import__("PIL.Image", fromlist=["Image"]).open("cat.jpg")}
    for name in modules:
        m = importlib.import_module(name)
        for t in finder.find(m, extraglobs=extra):
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
    # a word before the last agreeing one reads as an adjective when it can: "смажені" is also a noun
    assert label_forms("смажені кальмари", "uk")["gen"] == "смажених кальмарів"
    assert label_forms("дві червоні зірки", "uk")["gen"] == "двох червоних зірок"
    # the accusative follows the head noun: feminine singular declines, inanimate keeps the nominative,
    # animate takes the genitive; a modifier's gender picks the head's reading ("зірка" is also masculine)
    acc = {(ph, lang): label_forms(ph, lang, {"acc"})["acc"] for ph, lang in (
        ("красный круг", "ru"), ("серый кот", "ru"), ("красные круги", "ru"), ("серая мышь", "ru"),
        ("большое окно", "ru"), ("червоний круг", "uk"), ("червона зірка", "uk"), ("сірі коти", "uk"), ("жаба", "uk"),
        ("две красные звёзды", "ru"), ("серые коты", "ru"), ("тигры", "ru"))}
    # "звёзды" is also "celebrities" (animate, the likelier plural reading): the star's reading wins, as
    # in the singular; a plural with one animacy keeps it
    assert list(acc.values()) == ["красный круг", "серого кота", "красные круги", "серую мышь", "большое окно",
                                  "червоний круг", "червону зірку", "сірих котів", "жабу",
                                  "две красные звёзды", "серых котов", "тигров"]
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
    # a language with no shipped templates: --templates (German), checked before the model loads
    (tmp_path / "de.json").write_text('{"de": ["ein Foto von {}", "ein Bild: {c}"]}', encoding="utf-8")
    de = ["predict", "--image", str(tmp_path / "a.png"), "--labels", "Katze,Hund", "--lang", "de", "--device", "cpu"]
    assert main(de + ["--model", str(tmp_path / "no-such-run")]) == 2
    assert "no 'de' prompt templates shipped" in capsys.readouterr().err
    assert main(de + ["--model", str(run_dir), "--templates", str(tmp_path / "de.json")]) == 0
    got = [float(line.split("%")[0]) / 100 for line in capsys.readouterr().out.splitlines()[1:]]
    want = m.classify([img], ["Katze", "Hund"], ["ein Foto von {c}", "ein Bild: {c}"])[0]
    assert sorted(got, reverse=True) == pytest.approx(sorted(want.tolist(), reverse=True), abs=1e-3)
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


def test_predict_and_similarity_on_a_folder_of_phone_photos(tmp_path, run_dir, tiny_clip, capsys, caplog, monkeypatch):
    """A folder is its pictures (recursive): a phone's EXIF-rotated JPEG is classified upright (as
    PIL's exif_transpose shows it) unless --as-stored, a damaged JPEG among them is skipped and counted,
    the predictions go to a .csv or .jsonl, and the labels come from a file as from the command line."""
    import csv

    from PIL import Image, ImageOps

    import langclip.inference as inf
    import langclip.pictures as pictures

    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    ex = Image.Exif()
    ex[0x0112] = 6
    Image.open(make_image(tmp_path / "r.png", 2, size=(80, 40))).save(photos / "trip" / "portrait.jpg", quality=95,
                                                                       exif=ex.tobytes())
    Image.open(make_image(tmp_path / "p.png", 3, size=(48, 36))).save(photos / "plain.jpg", quality=95)
    (photos / "broken.jpg").write_bytes((photos / "plain.jpg").read_bytes()[:200])
    (photos / "notes.txt").write_text("not a picture", encoding="utf-8")
    labels = ["кот", "собака", "лошадь"]
    (tmp_path / "labels.json").write_text(json.dumps({"en": ["cat", "dog", "horse"], "ru": labels},
                                                     ensure_ascii=False), encoding="utf-8")
    m = langclip.load(run_dir, device="cpu")
    upright = ImageOps.exif_transpose(Image.open(photos / "trip" / "portrait.jpg"))
    assert upright.size == (40, 80)
    want = {"upright": m.classify([upright, Image.open(photos / "plain.jpg")], labels, lang="ru"),
            "as_stored": m.classify([Image.open(photos / "trip" / "portrait.jpg"), Image.open(photos / "plain.jpg")],
                                    labels, lang="ru")}
    assert not torch.allclose(want["upright"][0], want["as_stored"][0], atol=1e-4)   # the turn matters here
    for mode, extra, label_arg in (("upright", [], str(tmp_path / "labels.json")),
                                   ("as_stored", ["--as-stored"], "кот, собака,лошадь")):
        out = tmp_path / f"{mode}.csv"
        monkeypatch.setattr(inf, "QUIET_OVER", 1 if mode == "upright" else 20)   # a large folder: the file only
        # upright: batches of one, so the pictures are decoded in 2 worker processes (beyond one batch)
        monkeypatch.setattr(pictures, "IMAGE_BATCH", 1 if mode == "upright" else 32)
        assert main(["predict", "--model", str(run_dir), "--image", str(photos), "--labels", label_arg, "--lang", "ru",
                     "--top", "3", "--out", str(out), "--device", "cpu", "--workers", "2", *extra]) == 0
        printed = capsys.readouterr()
        assert "2 pictures classified, 1 skipped" in printed.out and "broken.jpg: skipped" in caplog.text
        assert ("%" in printed.out) == (mode == "as_stored"), printed.out
        caplog.clear()
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        assert [r["image"] for r in rows] == [str(photos / "plain.jpg")] * 3 + [str(photos / "trip" / "portrait.jpg")] * 3
        for k, name in enumerate(["plain.jpg", "portrait.jpg"]):
            got = {r["label"]: float(r["prob"]) for r in rows if r["image"].endswith(name)}
            ref = want[mode][1 - k]
            assert got == pytest.approx({x: float(p) for x, p in zip(labels, ref)}, abs=1e-4), (mode, name)
    # .jsonl, the same predictions; a second run may overwrite langclip's own file
    for _ in range(2):
        assert main(["predict", "--model", str(run_dir), "--image", str(photos / "plain.jpg"), "--labels",
                     f"@{tmp_path / 'labels.json'}", "--lang", "ru", "--out", str(tmp_path / "p.jsonl"),
                     "--device", "cpu"]) == 0
    line = json.loads((tmp_path / "p.jsonl").read_text(encoding="utf-8"))
    assert line["image"] == str(photos / "plain.jpg") and len(line["top"]) == 3
    # similarity over the folder: the .json holds every picture, the picture draws the first few
    monkeypatch.setattr(inf, "SIMILARITY_PICTURE_MAX", 1)
    monkeypatch.setattr(pictures, "IMAGE_BATCH", 1)          # through the worker processes too
    assert main(["similarity", "--model", str(run_dir), "--images", str(photos), "--texts", "кот, рыжий", "собака",
                 "--out", str(tmp_path / "sim.png"), "--device", "cpu", "--workers", "2"]) == 0
    sim = json.loads((tmp_path / "sim.json").read_text(encoding="utf-8"))
    assert sim["images"] == ["plain.jpg", "portrait.jpg"] and sim["texts"] == ["кот, рыжий", "собака"]
    ref = (m.encode_image([Image.open(photos / "plain.jpg"), upright]) @ m.encode_text(sim["texts"]).T).T
    assert torch.allclose(m.encode_image([photos / "plain.jpg", str(photos / "trip" / "portrait.jpg")]),
                          m.encode_image([Image.open(photos / "plain.jpg"), upright]))      # paths: read upright
    assert np.allclose(sim["similarity_text_x_image"], ref.numpy(), atol=1e-4)
    assert Image.open(tmp_path / "sim.png").size[0] < 600


def test_every_command_has_help_with_an_example():
    """Every leaf subcommand's --help ends with at least one `langclip ...` example."""
    from conftest import cli_leaves
    from langclip.cli import build_parser

    found = dict(cli_leaves(build_parser()))
    assert {"tokenizer train", "cache build", "train", "eval", "encode", "index build", "search", "demo"} <= set(found)
    missing = [name for name, p in found.items() if "langclip " + name.split()[0] not in (p.epilog or "")]
    assert not missing, missing


def test_name_lists_read_one_way(tmp_path):
    """--labels, --texts and --classnames share one reading: commas split names but not texts, @FILE
    anywhere, a lone file path, JSON by language, and a lone missing file name is an error, not a name."""
    from langclip.files import read_names

    (tmp_path / "l.txt").write_text("кот\n\n  собака \n", encoding="utf-8")
    (tmp_path / "l.json").write_text('{"ru": ["кот"], "en": ["cat"]}', encoding="utf-8")
    ex = "an example"
    assert read_names("кот, собака,,", "labels", ex) == ["кот", "собака"]
    assert read_names(["кот, рыжий", "собака"], "texts", ex, commas=False) == ["кот, рыжий", "собака"]
    assert read_names(str(tmp_path / "l.txt"), "labels", ex) == ["кот", "собака"]
    assert read_names(["лошадь", f"@{tmp_path / 'l.txt'}"], "texts", ex, commas=False) == ["лошадь", "кот", "собака"]
    assert read_names(f"@{tmp_path / 'l.json'}", "labels", ex, lang="en") == ["cat"]
    assert read_names("кот", "labels", ex) == ["кот"]
    for bad, kw, msg in (("labels.txt", {}, "labels file not found"), ("@x", {}, "labels file not found"),
                         ("кот", {"bare_is_file": True}, "labels file not found"), (" , ", {}, "no labels given"),
                         (str(tmp_path / "l.json"), {"lang": "de"}, "expected a non-empty JSON list"),
                         (str(tmp_path / "l.json"), {}, r"labels by language \(ru, en\): say which with --lang")):
        with pytest.raises((FileNotFoundError, ValueError), match=msg):
            read_names(bad, "labels", ex, **kw)


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


def test_encode_writes_texts_and_pictures_as_the_api_embeds_them(tmp_path, run_dir, tiny_clip, capsys):
    """`langclip encode`: texts (needing no CLIP weights file) into .npy with a .json naming each row, and
    a folder of pictures (one undecodable: skipped, named) into .parquet, equal to LoadedModel's own
    embeddings; float16 on request; a foreign file is never overwritten, our own one is."""
    import pyarrow.parquet as pq

    from conftest import run_with_own_clip_file
    from langclip.encode import read_embeddings

    texts = ["две красные звезды", "синий круг", "кот"]
    (tmp_path / "q.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    run, clip = run_with_own_clip_file(run_dir, tiny_clip[1], tmp_path)
    m = langclip.load(run, device="cpu")
    clip.unlink()                                    # texts do not need the image tower's file
    assert main(["encode", "--model", str(run), "--texts", str(tmp_path / "q.txt"), "--out", str(tmp_path / "q.npy")]) == 0
    emb, rows, rec = read_embeddings(tmp_path / "q.npy")
    assert rows == texts and rec["kind"] == "text" and emb.dtype == np.float32
    assert np.allclose(emb, m.encode_text(texts).numpy(), atol=1e-6)
    assert np.load(tmp_path / "q.npy").shape == (3, emb.shape[1])           # a plain .npy for numpy alone
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(3):
        make_image(pics / f"{i}.jpg", i)
    (pics / "broken.jpg").write_bytes(b"not a picture")
    assert main(["encode", "--model", str(run), "--images", str(pics), "--out", str(tmp_path / "p.parquet"),
                 "--weights", tiny_clip[1], "--dtype", "float16"]) == 0
    assert "3 images" in capsys.readouterr().out
    emb, rows, rec = read_embeddings(tmp_path / "p.parquet")
    assert [Path(r).name for r in rows] == ["0.jpg", "1.jpg", "2.jpg"] and emb.dtype == np.float16
    assert [Path(s["image"]).name for s in rec["skipped"]] == ["broken.jpg"]
    assert np.allclose(emb.astype(np.float32), m.encode_image(rows).numpy(), atol=2e-3)
    assert pq.read_table(tmp_path / "p.parquet").column_names == ["image", "embedding"]
    assert rec["image_tower"]["tower_sha256"] == m.meta["image_tower"]["tower_sha256"]
    # worker processes (the default, 2) and this process give the same rows, in order, over more than one
    # batch of 32, with a broken picture in the middle
    for i in range(3, 70):
        make_image(pics / f"{i:02d}.jpg", i)
    (pics / "17b.jpg").write_bytes(b"\xff\xd8 broken")
    got = {}
    for w in ("0", "2"):
        assert main(["encode", "--model", str(run), "--images", str(pics), "--out", str(tmp_path / f"w{w}.npy"),
                     "--weights", tiny_clip[1], "--workers", w]) == 0
        got[w] = read_embeddings(tmp_path / f"w{w}.npy")
    assert got["0"][1] == got["2"][1] and len(got["2"][1]) == 70
    assert [Path(s["image"]).name for s in got["2"][2]["skipped"]] == ["17b.jpg", "broken.jpg"]
    assert np.abs(got["0"][0] - got["2"][0]).max() <= 1e-6
    assert np.abs(got["2"][0][:5] - m.encode_image(got["2"][1][:5]).numpy()).max() <= 1e-5
    (tmp_path / "mine.npy").write_bytes(b"someone else's")
    assert main(["encode", "--model", str(run), "--texts", "кот", "--out", str(tmp_path / "mine.npy")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    (tmp_path / "theirs.json").write_text("{}")     # the .npy's row names would go there: refused too
    assert main(["encode", "--model", str(run), "--texts", "кот", "--out", str(tmp_path / "theirs.npy")]) == 2
    assert "theirs.json: exists and was not written by langclip" in capsys.readouterr().err
    assert main(["encode", "--model", str(run), "--texts", "кот", "--out", str(tmp_path / "q.npy")]) == 0
    assert read_embeddings(tmp_path / "q.npy")[1] == ["кот"]
    assert main(["encode", "--model", str(run), "--texts", "кот", "--out", str(tmp_path / "q.csv")]) == 2
    assert ".npy or .parquet" in capsys.readouterr().err
