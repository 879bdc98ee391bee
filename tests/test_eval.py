"""Zero-shot evaluation (parity with CLIP_benchmark), the English reference row, retrieval evaluation,
shipped class names, inference bad input, and the pictures."""
import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from langclip.cli import main

from conftest import make_image


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_arch, tiny_clip, ru_tokenizer):
    """A run folder: `clip` init (English exactly CLIP's), context 32, a slightly changed Russian part."""
    from langclip.build import build_student
    from langclip.runfolder import save_model_files

    run = tmp_path_factory.mktemp("eval") / "run"
    model, ref, info = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip", context_length=32)
    with torch.no_grad():  # new (Russian) tokens only: English stays CLIP's
        emb = model.clip.token_embedding.weight
        emb[49406:ru_tokenizer.sot_token_id] += 0.05 * torch.randn_like(emb[49406:ru_tokenizer.sot_token_id])
    save_model_files(run, model, ru_tokenizer, ref, {"init": info})
    return run


def _clip_benchmark(m, root, names, templates):
    import torchvision.datasets as tvd
    from clip_benchmark.metrics import zeroshot_classification as zsc

    ds = tvd.CIFAR10(str(root), train=False, transform=m.preprocess)
    loader = torch.utils.data.DataLoader(ds, batch_size=7)
    return zsc.evaluate(m.model, loader, m.tokenizer, names, templates, "cpu", amp=False)


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")  # CLIP_benchmark's
def test_zero_shot_parity_with_clip_benchmark(tiny_run, cifar_root, tmp_path):
    import langclip
    from langclip.datasets import shipped_classnames, shipped_templates
    from langclip.evaluate import evaluate, evaluate_cli

    m = langclip.load(tiny_run, device="cpu")
    # English through the CLI path (shipped names and templates), Russian through the API with
    # nominative names in {c} templates, since CLIP_benchmark fills only {c}
    ours = evaluate_cli(str(tiny_run), "cifar10", "en", str(cifar_root), batch_size=6, device="cpu",
                        out=str(tmp_path / "ev"), workers=0)["cifar10"]
    ref = _clip_benchmark(m, cifar_root, shipped_classnames("cifar10", "en"), shipped_templates("en"))
    ru_names = [c["nom"] for c in shipped_classnames("cifar10", "ru")]
    ru_templates = ["фото: {c}", "{c}", "на картинке {c}"]
    import torchvision.datasets as tvd

    loader = torch.utils.data.DataLoader(tvd.CIFAR10(str(cifar_root), train=False, transform=m.preprocess), batch_size=5)
    ours_ru = evaluate(m.model, loader, m.tokenizer, ru_names, ru_templates, "cpu")
    ref_ru = _clip_benchmark(m, cifar_root, ru_names, ru_templates)
    for a, b in ((ours, ref), (ours_ru, ref_ru)):
        assert a["n"] == 20
        for k in ("acc1", "acc5", "mean_per_class_recall"):
            assert a[k] == pytest.approx(b[k], abs=1e-9), (k, a[k], b[k])
    assert 0 < ours["acc5"] < 1 and ours_ru["acc5"] > 0  # not a degenerate agreement
    files = {p.name: p.stat().st_size for p in (tmp_path / "ev").iterdir()}
    assert files["confusion_cifar10.png"] > 10_000 and "results.md" in files and "results.json" in files
    # results.json: what evaluate_cli returned; a confusion matrix a row a line (not a number a line)
    text = (tmp_path / "ev" / "results.json").read_text(encoding="utf-8")
    saved = json.loads(text)["cifar10"]
    assert saved["acc1"] == ours["acc1"] and saved["confusion"] == [list(map(int, r)) for r in ours["confusion"]]
    rows = [line.strip().rstrip(",") for line in text.splitlines()]
    assert sum(r.startswith("[") and r.endswith("]") and len(json.loads(r)) == 10 for r in rows) >= 10, text[:500]


def test_english_reference_row(tiny_run, cifar_root, tmp_path):
    """The reference row is the original English CLIP: with `clip` init, the student's English equals it."""
    from langclip.evaluate import evaluate_cli

    assert main(["eval", "--model", str(tiny_run), "--dataset", "cifar10", "--lang", "en", "--data-root",
                 str(cifar_root), "--reference", "--out", str(tmp_path / "ev"), "--workers", "0",
                 "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text(encoding="utf-8"))
    a, b = res["cifar10"], res["cifar10/reference_en"]
    assert [a[k] for k in ("acc1", "acc5", "mean_per_class_recall")] == [b[k] for k in ("acc1", "acc5", "mean_per_class_recall")]
    md = (tmp_path / "ev" / "results.md").read_text(encoding="utf-8")
    assert "CLIP (en, reference)" in md and "langclip (en)" in md
    # Russian row beside the English reference (the gap users want to see)
    r = evaluate_cli(str(tiny_run), ["cifar10"], "ru", str(cifar_root), device="cpu", workers=0, reference=True)
    assert set(r) == {"cifar10", "cifar10/reference_en"} and r["cifar10/reference_en"]["acc1"] == b["acc1"]
    # an exported folder evaluates the same, reference included
    assert main(["export", "--model", str(tiny_run), "--out", str(tmp_path / "exp")]) == 0
    e = evaluate_cli(str(tmp_path / "exp"), "cifar10", "ru", str(cifar_root), device="cpu", workers=0, reference=True)
    for k in ("acc1", "acc5", "mean_per_class_recall"):
        assert e["cifar10"][k] == r["cifar10"][k] and e["cifar10/reference_en"][k] == b[k]


def test_shipped_class_names_complete_and_up_to_date():
    import runpy
    from pathlib import Path

    import pymorphy3

    from langclip.datasets import shipped_classnames, shipped_templates
    from langclip.metrics import fill

    mk = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "make_classnames.py"))
    assert mk["main"](["--check"]) == 0, "class-name files differ from scripts/make_classnames.py"
    written_out = {ph.split("|")[0] for v in mk.values() if isinstance(v, list)   # "nom|gen": by hand
                   for x in v for ph in (x if isinstance(x, tuple) else (x,)) if isinstance(ph, str) and "|" in ph}
    for lang in ("ru", "uk"):
        morph = pymorphy3.MorphAnalyzer(lang=lang)
        for ds, n in (("cifar10", 10), ("cifar100", 100), ("caltech101", 101), ("food101", 101), ("flowers102", 102)):
            en, names = shipped_classnames(ds, "en"), shipped_classnames(ds, lang)
            assert len(en) == len(names) == n and len(set(en)) == n
            assert all(set(c) == {"nom", "gen"} and c["nom"] and c["gen"] for c in names)
            for c in names:  # the first word of every genitive reads as a genitive, or stays as written
                w = c["gen"].split()[0].lower()    # (indeclinable, or a borrowed word written "=севиче")
                assert (w == c["nom"].split()[0].lower() or c["nom"] in written_out
                        or any({"gent"} <= p.tag.grammemes or "Fixd" in p.tag for p in morph.parse(w))), (lang, c)
    en, uk = shipped_classnames("cifar100", "en"), shipped_classnames("cifar100", "uk")
    assert fill("фото {gen}", uk[en.index("sweet pepper")]) == "фото солодкого перцю"
    assert fill("фото {gen}", uk[en.index("tiger")]) == "фото тигра"           # an animal: animate
    assert [fill("фото {gen}", c) for c in shipped_classnames("cifar10", "uk")][3] == "фото кота"
    en, uk = shipped_classnames("food101", "en"), shipped_classnames("food101", "uk")
    assert fill("фото {gen}", uk[en.index("fried calamari")]) == "фото смажених кальмарів"   # an adjective, not a noun
    assert fill("фото {gen}", uk[en.index("lobster bisque")]) == "фото біска з омара"
    en, uk = shipped_classnames("flowers102", "en"), shipped_classnames("flowers102", "uk")
    assert fill("фото {gen}", uk[en.index("rose")]) == "фото троянди"
    en, ru = shipped_classnames("cifar100", "en"), shipped_classnames("cifar100", "ru")
    for t in shipped_templates("ru"):
        assert "{" not in fill(t, ru[en.index("maple tree")])
    assert fill("фото {gen}", ru[en.index("sweet pepper")]) == "фото сладкого перца"
    assert fill("{nom}", ru[en.index("maple tree")]) == "клён"


def test_retrieval_eval_on_pairs_and_cache(tiny_run, pair_data, world_cache, tmp_path, capsys):
    import langclip
    from langclip.cache import load_cache
    from langclip.runfolder import split_by_image
    from langclip.retrieval import evaluate_retrieval_cli
    from langclip.metrics import recall_at_k

    # pairs: one image is corrupt -> skipped and counted; the rest equals a direct computation
    (pair_data / "img" / "05.jpg").write_bytes(b"not a jpeg")
    res = evaluate_retrieval_cli(str(tiny_run), [str(pair_data / "pairs.csv")], device="cpu", workers=0,
                                 out=str(tmp_path / "r"))
    assert res["images_skipped"] == 1 and res["images"] == 15 and res["texts"] == 30
    m = langclip.load(tiny_run, device="cpu")
    from PIL import Image

    names = [f"{i:02d}.{'png' if i % 4 == 0 else 'jpg'}" for i in range(16) if i != 5]
    img = m.encode_image([Image.open(pair_data / "img" / n) for n in names])
    caps = [c for i in range(16) if i != 5 for c in (f"картинка номер {i}", f"изображение {i}")]
    direct = recall_at_k(m.encode_text(caps), img, torch.arange(15).repeat_interleave(2))
    for k, v in direct.items():
        assert res[k] == pytest.approx(v, abs=1e-6), k
    assert (tmp_path / "r" / "retrieval.md").is_file()
    # cache: the held-out images of the split; `all` covers every caption
    assert main(["eval-retrieval", "--model", str(tiny_run), "--data", str(world_cache), "--split", "val",
                 "--val-fraction", "0.25", "--seed", "0", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, val = split_by_image(load_cache(world_cache), 0.25, 0)
    assert out["texts"] == len(val) and out["images"] == 48
    # this run folder records no split: without both --val-fraction and --seed it is refused, not guessed
    assert main(["eval-retrieval", "--model", str(tiny_run), "--data", str(world_cache), "--val-fraction", "0.25",
                 "--device", "cpu"]) == 2
    assert "does not record the split" in capsys.readouterr().err
    assert main(["eval-retrieval", "--model", str(tiny_run), "--data", str(world_cache), "--split", "all",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["texts"] == 192 * 3


def test_retrieval_eval_on_a_cache_needs_no_clip_file(tiny_run, tiny_clip, world_cache, pair_data, tmp_path, capsys):
    """A cache holds the image embeddings: the run's text tower alone is loaded, so the CLIP weights
    file may be gone (the recipe evaluates on the dev cache); the numbers are the same as with it."""
    from conftest import run_with_own_clip_file

    run, clip = run_with_own_clip_file(tiny_run, tiny_clip[1], tmp_path)
    args = ["eval-retrieval", "--model", str(run), "--data", str(world_cache), "--split", "all", "--device", "cpu"]
    assert main(args) == 0
    with_file = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    clip.unlink()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == with_file
    assert main(["eval-retrieval", "--model", str(run), "--data", str(pair_data / "pairs.csv"), "--device", "cpu",
                 "--workers", "0"]) == 2                 # pictures to embed: the tower is needed, and named
    assert "clip.pt" in capsys.readouterr().err


def test_inference_bad_input(tiny_run, tmp_path, capsys):
    import shutil

    good = make_image(tmp_path / "cat.png", 1)
    broken = tmp_path / "broken.jpg"
    broken.write_text("this is not an image")
    cp1251 = tmp_path / "labels.txt"
    cp1251.write_bytes("кот\nсобака\n".encode("cp1251"))
    texts = tmp_path / "texts.txt"
    texts.write_text("кот\nсобака\n", encoding="utf-8")
    for i, c in enumerate(["cat", "dog"]):
        (tmp_path / "photos" / c).mkdir(parents=True)
        make_image(tmp_path / "photos" / c / "a.png", i)
    cp1251_json = tmp_path / "names_cp1251.json"
    cp1251_json.write_bytes('["кот", "собака"]'.encode("cp1251"))
    names3 = tmp_path / "names.json"
    names3.write_text('{"ru": ["кот", "собака", "лошадь"]}', encoding="utf-8")
    (tmp_path / "empty").mkdir()
    other_csv = tmp_path / "prices.csv"
    other_csv.write_text("item,price\n", encoding="utf-8")
    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_run, no_tok)
    shutil.rmtree(no_tok / "tokenizer")
    cases = [
        (["predict", "--model", str(tiny_run), "--image", str(broken), "--labels", "кот,собака"], "broken.jpg: not a readable image"),
        (["predict", "--model", str(tiny_run), "--image", str(tmp_path / "nope.jpg"), "--labels", "кот"], "image not found"),
        (["predict", "--model", str(tiny_run), "--image", str(good), "--labels", " , ,"], "no labels given"),
        (["predict", "--model", str(tiny_run), "--image", str(good), "--labels", "labels_ru.txt"], "labels file not found: labels_ru.txt"),
        (["predict", "--model", str(tiny_run), "--image", str(good), "--labels", "кот", "--out", str(tmp_path / "p.xlsx")],
         "written as .csv or .jsonl"),
        (["predict", "--model", str(tiny_run), "--image", str(tmp_path / "photos" / "cat"), str(tmp_path / "empty"),
          "--labels", "кот"], "no images found in"),
        (["predict", "--model", str(tiny_run), "--image", str(good), "--labels", "кот", "--out", str(other_csv)], "refusing to overwrite"),
        (["predict", "--model", str(tiny_run), "--image", str(good), "--labels", f"@{cp1251}"], "labels.txt:1: not UTF-8"),
        (["predict", "--model", str(no_tok), "--image", str(good), "--labels", "кот"], "has no tokenizer"),
        (["similarity", "--model", str(tiny_run), "--images", str(good), str(broken), "--texts", str(texts),
          "--out", str(tmp_path / "s.png")], "broken.jpg: not a readable image"),
        (["similarity", "--model", str(tiny_run), "--images", str(good), "--texts", str(cp1251),
          "--out", str(tmp_path / "s.png")], "labels.txt:1: not UTF-8"),
        (["similarity", "--model", str(tiny_run), "--images", str(good), "--texts", "кот", f"@{tmp_path / 'more.txt'}",
          "--out", str(tmp_path / "s.png")], "texts file not found"),
        (["eval", "--model", str(tiny_run), "--dataset", "cifar10", "--data-root", str(tmp_path / "nodata")], "cifar10 not found under"),
        (["eval", "--model", str(tiny_run), "--dataset", f"imagefolder:{tmp_path / 'photos'}", "--classnames", str(cp1251)], "labels.txt:1: not UTF-8"),
        (["eval", "--model", str(tiny_run), "--dataset", f"imagefolder:{tmp_path / 'photos'}", "--classnames", str(cp1251_json)], "names_cp1251.json:1: not UTF-8"),
        (["eval", "--model", str(tiny_run), "--dataset", f"imagefolder:{tmp_path / 'photos'}", "--classnames", "кот"], "class names file not found: кот"),
        (["eval", "--model", str(tiny_run), "--dataset", f"imagefolder:{tmp_path / 'photos'}", "--classnames", "кот,собака,лошадь"], "3 class names for 2 classes (its folders, in label order: cat, dog)"),
        (["eval", "--model", str(tiny_run), "--dataset", f"imagefolder:{tmp_path / 'photos'}", "--classnames", str(names3)], "3 class names for 2 classes"),
        (["eval", "--model", str(tmp_path), "--dataset", "cifar10"], "not a langclip run folder"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "s.png").exists() and other_csv.read_text(encoding="utf-8") == "item,price\n"


def test_pictures_render_cyrillic(tiny_run, tmp_path):
    from PIL import Image

    import langclip
    from langclip.datasets import shipped_classnames
    from langclip.pictures import plot_confusion
    from langclip.inference import save_similarity

    m = langclip.load(tiny_run, device="cpu")
    ims = [Image.open(make_image(tmp_path / f"{i}.png", i, size=(64, 48))) for i in range(3)]
    texts = ["рыжий кот на диване", "две собаки на траве", "Ελληνικά: γάτα", "a red car"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sim = (m.encode_image(ims) @ m.encode_text(texts).T).numpy()
        save_similarity(sim, ims, ["0.png", "1.png", "2.png"], texts, tmp_path / "sim.png")
        names = [c["nom"] for c in shipped_classnames("cifar100", "ru")]
        plot_confusion(np.eye(100, dtype=int), names, tmp_path / "conf.png", "CIFAR-100 (ru)")
    missing = [str(x.message) for x in w if "missing from font" in str(x.message).lower() or "glyph" in str(x.message).lower()]
    assert not missing, missing[:3]
    with Image.open(tmp_path / "sim.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200
    assert (tmp_path / "conf.png").stat().st_size > 50_000
    rows = (tmp_path / "sim.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith("рыжий кот") and len(rows) == 5


CALTECH_FOLDERS = (
    "accordion airplanes anchor ant BACKGROUND_Google barrel bass beaver binocular bonsai brain brontosaurus buddha "
    "butterfly camera cannon car_side ceiling_fan cellphone chair chandelier cougar_body cougar_face crab crayfish "
    "crocodile crocodile_head cup dalmatian dollar_bill dolphin dragonfly electric_guitar elephant emu euphonium ewer "
    "Faces Faces_easy ferry flamingo flamingo_head garfield gerenuk gramophone grand_piano hawksbill headphone hedgehog "
    "helicopter ibis inline_skate joshua_tree kangaroo ketch lamp laptop Leopards llama lobster lotus mandolin mayfly "
    "menorah metronome minaret Motorbikes nautilus octopus okapi pagoda panda pigeon pizza platypus pyramid revolver "
    "rhino rooster saxophone schooner scissors scorpion sea_horse snoopy soccer_ball stapler starfish stegosaurus "
    "stop_sign strawberry sunflower tick trilobite umbrella watch water_lilly wheelchair wild_cat windsor_chair wrench "
    "yin_yang").split()


@pytest.mark.slow
def test_cifar100_and_caltech101_layouts(tiny_run, tmp_path, monkeypatch, capsys):
    """Both datasets read from torchvision's on-disk layouts in one `langclip eval`; the shipped names
    line up with the real Caltech101 folders (torchvision's label order). A language langclip ships
    nothing for evaluates with the user's names (a folder of <dataset>.json) and templates."""
    import hashlib

    import torchvision.datasets as tvd

    from langclip.datasets import shipped_classnames, shipped_templates
    from langclip.evaluate import SUMMARY

    real = sorted(c for c in CALTECH_FOLDERS if c != "BACKGROUND_Google")
    assert len(real) == 101
    for folder, en in zip(real, shipped_classnames("caltech101", "en")):
        assert any(w.rstrip("s") in en for w in folder.lower().split("_")), (folder, en)
    root = tmp_path / "data"
    for i, c in enumerate(CALTECH_FOLDERS):
        (root / "caltech101" / "101_ObjectCategories" / c).mkdir(parents=True)
        if c != "BACKGROUND_Google":
            make_image(root / "caltech101" / "101_ObjectCategories" / c / "image_0001.jpg", i, size=(20, 16))
    d = root / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 2), ("test", 20)):
        obj = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "fine_labels": [i * 5 % 100 for i in range(n)],
               "coarse_labels": [0] * n, "filenames": ["f"] * n}
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    (d / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)],
                                           "coarse_label_names": ["x"] * 20}, protocol=2))
    md5 = lambda f: hashlib.md5((d / f).read_bytes()).hexdigest()
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", md5("train")]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", md5("test")]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": md5("meta")})
    assert main(["eval", "--model", str(tiny_run), "--dataset", "cifar100", "caltech101", "--lang", "ru",
                 "--data-root", str(root), "--out", str(tmp_path / "ev"), "--workers", "0", "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text(encoding="utf-8"))
    assert res["cifar100"]["n"] == 20 and len(res["cifar100"]["classnames"]) == 100
    assert res["caltech101"]["n"] == 101 and res["caltech101"]["classnames"][0] == "лицо не в центре"
    # Ukrainian: the same datasets with its shipped names and templates
    assert main(["eval", "--model", str(tiny_run), "--dataset", "cifar100", "caltech101", "--lang", "uk",
                 "--data-root", str(root), "--out", str(tmp_path / "uk"), "--workers", "0", "--device", "cpu"]) == 0
    uk = json.loads((tmp_path / "uk" / "results.json").read_text(encoding="utf-8"))
    assert uk["caltech101"]["classnames"][0] == "обличчя не в центрі" and uk["cifar100"]["classnames"][3] == "ведмідь"
    # a language without shipped names is refused before any work; a dataset that fails keeps the ones before it
    assert main(["eval", "--model", str(tiny_run), "--dataset", "cifar100", "food101", "--lang", "be",
                 "--data-root", str(root), "--workers", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no 'be' class names for cifar100" in err and "no 'be' class names for food101" in err
    assert main(["eval", "--model", str(tiny_run), "--dataset", "cifar100", "xm3600", "--lang", "uk",
                 "--data-root", str(root), "--out", str(tmp_path / "part"), "--workers", "0", "--device", "cpu"]) == 2
    assert "captions.jsonl" in capsys.readouterr().err
    part = json.loads((tmp_path / "part" / "results.json").read_text(encoding="utf-8"))
    assert list(part) == ["cifar100"] and part["cifar100"]["acc1"] == uk["cifar100"]["acc1"]
    prompts = json.loads((tmp_path / "uk" / "clip_benchmark_templates.json").read_text(encoding="utf-8"))
    assert "розмите фото кота" in json.dumps(prompts, ensure_ascii=False) or "розмите фото ведмедя" in \
        json.dumps(prompts, ensure_ascii=False)
    assert (tmp_path / "ev" / "confusion_caltech101.png").stat().st_size > 50_000
    # without --lang: the language the model was trained for (Russian)
    assert main(["eval", "--model", str(tiny_run), "--dataset", "cifar100", "--data-root", str(root),
                 "--workers", "0", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["acc1"] == res["cifar100"]["acc1"]
    # a language langclip ships nothing for brings its own: a folder of <dataset>.json and --templates.
    # The shipped Russian lists, given that way, reproduce the shipped run exactly
    own = tmp_path / "own"
    own.mkdir()
    for ds in ("cifar100", "caltech101"):
        (own / f"{ds}.json").write_text(json.dumps({"ru": shipped_classnames(ds, "ru")}, ensure_ascii=False),
                                        encoding="utf-8")
    (tmp_path / "ru.json").write_text(json.dumps(shipped_templates("ru"), ensure_ascii=False), encoding="utf-8")
    assert main(["eval", "--model", str(tiny_run), "--dataset", "cifar100", "caltech101", "--lang", "ru",
                 "--classnames", str(own), "--templates", str(tmp_path / "ru.json"), "--data-root", str(root),
                 "--out", str(tmp_path / "own_ru"), "--workers", "0", "--device", "cpu"]) == 0
    again = json.loads((tmp_path / "own_ru" / "results.json").read_text(encoding="utf-8"))
    for ds in ("cifar100", "caltech101"):
        assert {k: again[ds][k] for k in SUMMARY} == {k: res[ds][k] for k in SUMMARY}, ds
    # German: its names for cifar100 (a plain list), the shipped folders' for nothing else; one template a line
    de_names = [f"Klasse {i}" for i in range(100)]
    (own / "cifar100.json").write_text(json.dumps(de_names), encoding="utf-8")
    (own / "caltech101.json").unlink()
    (tmp_path / "de.txt").write_text("ein Foto von {}\nein Bild: {c}\n", encoding="utf-8")
    de = ["eval", "--model", str(tiny_run), "--dataset", "cifar100", "--lang", "de", "--data-root", str(root),
          "--workers", "0", "--device", "cpu"]
    assert main(de + ["--classnames", str(own)]) == 2             # refused before any model loads
    assert "no 'de' prompt templates shipped" in capsys.readouterr().err
    assert main(de + ["--classnames", str(own), "--templates", str(tmp_path / "de.txt"),
                      "--out", str(tmp_path / "de"), "--reference"]) == 0
    got = json.loads((tmp_path / "de" / "results.json").read_text(encoding="utf-8"))
    assert got["cifar100"]["classnames"] == de_names and got["cifar100"]["n"] == 20
    assert got["cifar100/reference_en"]["classnames"] == shipped_classnames("cifar100", "en")
    prompts = json.loads((tmp_path / "de" / "clip_benchmark_templates.json").read_text(encoding="utf-8"))
    assert prompts["cifar100"]["Klasse 3"] == ["ein Foto von Klasse 3", "ein Bild: Klasse 3"]
    assert main(de[:5] + ["caltech101"] + de[5:] + ["--classnames", str(own), "--templates", str(tmp_path / "de.txt")]) == 2
    assert "no 'de' class names for caltech101" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("ein Foto von {}\nein Foto\n", encoding="utf-8")
    assert main(de + ["--classnames", str(own), "--templates", str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt: template 2 'ein Foto': no place for the class name" in capsys.readouterr().err


def test_recall_in_chunks_equals_the_whole_matrix():
    """recall_at_k never builds the whole similarity matrix; chunked results equal the direct ones."""
    from langclip.metrics import recall_at_k

    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(37, 16, generator=g), dim=-1)
    text_image = torch.randint(0, 30, (150,), generator=g)                    # 7 images without captions
    text = torch.nn.functional.normalize(image[text_image] + 0.9 * torch.randn(150, 16, generator=g), dim=-1)
    # reference by the definition, with sort/topk (not the counting formula recall_at_k uses):
    # t2i@k — the text's image is among its k best images; i2t@k — one of the image's captions is
    # among its k best texts (images without captions do not count)
    sim = (text.double() @ image.double().T)
    top_img = sim.topk(10, dim=1).indices                                    # (150, 10)
    top_txt = sim.T.topk(10, dim=1).indices                                  # (37, 10)
    has = [i for i in range(37) if (text_image == i).any()]
    want = {f"t2i_r@{k}": sum(int(text_image[t]) in top_img[t, :k].tolist() for t in range(150)) / 150
            for k in (1, 5, 10)}
    want.update({f"i2t_r@{k}": sum(any(int(text_image[j]) == i for j in top_txt[i, :k]) for i in has) / len(has)
                 for k in (1, 5, 10)})
    assert 0.05 < want["t2i_r@1"] < 0.95                                    # neither trivial nor hopeless
    for m in (1, 37, 100, 37 * 150, 1 << 27):                               # 1 text a chunk ... one chunk
        got = recall_at_k(text, image, text_image, max_elements=m)
        assert all(abs(got[k] - v) < 1e-6 for k, v in want.items()), (m, got, want)


def test_zero_shot_weights_of_several_classes_a_call_equal_one_class_a_call(tiny_clip):
    """zero_shot_weights sends all classes' texts through the tower by length, up to a batch of one
    length a call; the weights equal the plain recipe's, one class a call through open_clip's own tower
    and tokenizer at the full context (15 texts of several lengths, at most 7, 3 and 1,024 a call; a name
    in forms, a name shorter and one longer than the rest)."""
    import open_clip
    import torch.nn.functional as F

    from conftest import TINY_CFG
    from langclip.metrics import zero_shot_weights
    from langclip.model import LangCLIP

    ref, _ = tiny_clip
    model = LangCLIP(TINY_CFG).eval()
    model.clip.load_state_dict(ref.state_dict())
    names = ["cat", {"nom": "red fox", "gen": "red foxes"}, "a very long name of a rather rare kind of bird", "dog", "x"]
    templates = ["a photo of a {}.", "{} in the wild", "many {gen}!"]
    with torch.no_grad():
        want = []
        for c in names:
            forms = c if isinstance(c, dict) else {"nom": c, "gen": c}
            texts = [t.replace("{}", forms["nom"]).replace("{gen}", forms["gen"]) for t in templates]
            e = F.normalize(ref.encode_text(open_clip.tokenize(texts)), dim=-1).mean(0)
            want.append(F.normalize(e, dim=-1))
        want = torch.stack(want)
        for batch_texts in (7, 3, 1024):
            got = zero_shot_weights(model, open_clip.tokenize, names, templates, batch_texts=batch_texts)
            torch.testing.assert_close(got, want, rtol=0, atol=2e-6, msg=str(batch_texts))


def test_an_image_folder_on_a_share_or_from_a_notebook_has_only_its_classes(tmp_path):
    """`imagefolder:PATH` as torchvision reads it took a notebook's .ipynb_checkpoints and a NAS's @eaDir for
    classes (a bogus class name among the prompts) and counted the thumbnails in a class's @eaDir and macOS's
    "._" files as its pictures. Now only the classes' own pictures count (folders.SKIPPED_FOLDERS)."""
    from langclip.datasets import load_dataset

    root = tmp_path / "pets"
    for rel in ("cat/0.jpg", "cat/1.png", "dog/0.jpg", ".ipynb_checkpoints/x.jpg", "@eaDir/y.jpg",
                "cat/@eaDir/0.jpg/SYNOPHOTO_THUMB_M.jpg", "dog/.thumbnails/0.jpg", "dog/sub/2.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make_image(root / rel, len(rel))
    (root / "cat" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    ds, classes = load_dataset(f"imagefolder:{root}", tmp_path, transform=None)
    assert classes == ["cat", "dog"]
    assert sorted((os.path.relpath(f, root), y) for f, y in ds.samples) == [
        ("cat/0.jpg", 0), ("cat/1.png", 0), ("dog/0.jpg", 1), ("dog/sub/2.jpg", 1)]


def test_imagefolder_class_names_in_each_form(tiny_run, tmp_path, capsys):
    """`--dataset imagefolder:PATH`: class names from a JSON list, a {lang: list} JSON file, a text file
    (one a line) or typed inline ("кошка,собака") give the same evaluation, in the folders' sorted order."""
    from langclip.evaluate import evaluate_cli

    for i, c in enumerate(["cat", "dog"]):
        (tmp_path / "pets" / c).mkdir(parents=True)
        for j in range(3):
            make_image(tmp_path / "pets" / c / f"{j}.png", 10 * i + j)
    (tmp_path / "names.json").write_text('["кошка", "собака"]', encoding="utf-8")
    (tmp_path / "by_lang.json").write_text('{"en": ["cat", "dog"], "ru": ["кошка", "собака"]}', encoding="utf-8")
    (tmp_path / "names.txt").write_text("кошка\nсобака\n", encoding="utf-8")
    got = []
    for spec in ("кошка,собака", str(tmp_path / "names.json"), str(tmp_path / "by_lang.json"),
                 str(tmp_path / "names.txt"), f"@{tmp_path / 'names.txt'}"):
        r = evaluate_cli(str(tiny_run), f"imagefolder:{tmp_path / 'pets'}", "ru", str(tmp_path), classnames=spec,
                         device="cpu", workers=0)[f"imagefolder:{tmp_path / 'pets'}"]
        assert r["n"] == 6 and r["classnames"] == ["кошка", "собака"], spec
        got.append({k: r[k] for k in ("acc1", "acc5", "mean_per_class_recall")})
    assert all(g == got[0] for g in got)
    # templates from a file or typed as a JSON list give the same; a folder given with its "/" names its picture
    (tmp_path / "t.txt").write_text("{}\nфото: {}\n", encoding="utf-8")
    by = [evaluate_cli(str(tiny_run), f"imagefolder:{tmp_path / 'pets'}/", "ru", str(tmp_path), classnames="кошка,собака",
                       device="cpu", workers=0, templates=t, out=str(tmp_path / f"ev{i}"))
          for i, t in enumerate((str(tmp_path / "t.txt"), '["{}", "фото: {}"]'))]
    assert len(by[0]) == 1 and [{k: r[k] for k in ("acc1", "acc5", "confusion")} for b in by for r in b.values()] == \
        [{k: r[k] for k in ("acc1", "acc5", "confusion")} for r in by[0].values()] * 2
    assert sorted(p.name for p in (tmp_path / "ev1").glob("confusion_*")) == ["confusion_imagefolder_pets.png"]
    for bad, msg in (('["фото"]', "--templates: template 1 'фото': no place for the class name"),
                     ('["{}", ', "--templates: not a JSON list")):
        with pytest.raises(ValueError, match=msg):
            evaluate_cli(str(tiny_run), f"imagefolder:{tmp_path / 'pets'}", "ru", str(tmp_path), classnames="кошка,собака",
                         device="cpu", workers=0, templates=bad)
    # the English reference row: the file's English names, else the folders' own names
    pets = f"imagefolder:{tmp_path / 'pets'}"
    for spec, en in ((str(tmp_path / "by_lang.json"), ["cat", "dog"]), ("кошка,собака", ["cat", "dog"])):
        r = evaluate_cli(str(tiny_run), pets, "ru", str(tmp_path), classnames=spec, device="cpu", workers=0,
                         reference=True)
        assert r[f"{pets}/reference_en"]["classnames"] == en, spec
    (tmp_path / "by_lang.json").write_text('{"en": ["a cat", "a dog"], "ru": ["кошка", "собака"]}', encoding="utf-8")
    r = evaluate_cli(str(tiny_run), pets, "ru", str(tmp_path), classnames=str(tmp_path / "by_lang.json"),
                     device="cpu", workers=0, reference=True)
    assert r[f"{pets}/reference_en"]["classnames"] == ["a cat", "a dog"]
    assert "untrained_words" not in r[pets]   # the run records no token counts: nothing to say
    # a run whose training captions held every token but those of "собака" (coverage.py): the class is named
    import shutil

    from langclip.coverage import save_counts
    from langclip.tokenizer import Tokenizer

    run = shutil.copytree(tiny_run, tmp_path / "run")
    tok = Tokenizer.load(run / "tokenizer")
    counts = np.ones(tok.vocab_size, dtype=np.int64)
    zero = sorted(set(tok.encode("собака")) - set(tok.encode("собаки")))   # «собаки» keeps its tokens
    assert zero
    counts[zero] = 0
    save_counts(run, counts, tok.digest(), ["caption"])
    r = evaluate_cli(str(run), pets, "ru", str(tmp_path), classnames="кошка,собака", device="cpu", workers=0)[pets]
    assert list(r["untrained_words"]) == ["собака"]
    import pymorphy3

    err = capsys.readouterr().err   # a form of the word whose tokens were all trained is named beside it
    forms = [f.word for p in pymorphy3.MorphAnalyzer(lang="ru").parse("собака")[:3] for f in p.lexeme]
    trained = [f for f in forms if not set(tok.encode(f)) & set(zero)]
    assert "«собака» (token" in err and trained and any(f"trained form «{f}»" in err for f in trained), (err, trained)


def _font_with(path, chars: str, family: str) -> None:
    """A TrueType font holding a filled square for each of `chars` (written with fontTools, matplotlib's own
    dependency): a stand-in for a Noto or system font of a script DejaVu Sans lacks."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef"] + [f"u{ord(c):04X}" for c in chars]
    fb = FontBuilder(1000, isTTF=True)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({ord(c): n for c, n in zip(chars, names[1:])})
    glyphs = {}
    for n in names:
        pen = TTGlyphPen(None)
        for x, y in ((100, 0), (100, 700), (800, 700), (800, 0)):
            (pen.lineTo if (x, y) != (100, 0) else pen.moveTo)((x, y))
        pen.closePath()
        glyphs[n] = pen.glyph()
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({n: (900, 100) for n in names})
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": family, "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=800, usWinAscent=800, usWinDescent=200)
    fb.setupPost()
    fb.save(str(path))


def test_pictures_draw_labels_in_any_script_with_an_installed_font(tmp_path, monkeypatch, caplog):
    """Class names and texts in Chinese, Korean, Hindi, ... were drawn with DejaVu Sans, which has none of their
    characters: empty boxes, and a warning per character. An installed font that holds them (here one written for
    the test) now draws them (matplotlib's font fallback): matplotlib warns of no missing glyph. Characters no
    installed font holds are named once, with what to install, instead of a warning each."""
    import logging
    import warnings

    import matplotlib
    import numpy as np
    from matplotlib import font_manager
    from PIL import Image

    from langclip.fonts import fit_fonts
    from langclip.inference import save_similarity
    from langclip.pictures import plot_confusion

    monkeypatch.setattr(font_manager.fontManager, "ttflist", list(font_manager.fontManager.ttflist))
    texts, names = ["红色猫", "한국어 кот"], ["猫", "한국", "кот"]
    with matplotlib.rc_context(), caplog.at_level(logging.WARNING, logger="langclip.fonts"):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            plot_confusion(np.eye(3), names, tmp_path / "boxes.png")   # no font here holds 猫 or 한
        assert "no installed font holds" in caplog.text and "猫" in caplog.text and "fonts-noto-cjk" in caplog.text
        assert not [w for w in got if "missing from font" in str(w.message)]   # said once, above
    font = tmp_path / "han.ttf"
    _font_with(font, "红色猫한국어", "Langclip Test Han")
    font_manager.fontManager.addfont(str(font))
    with matplotlib.rc_context():
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            save_similarity(np.array([[0.3, 0.1]]), [Image.new("RGB", (8, 8))], ["a.png"], texts, tmp_path / "sim.png")
            plot_confusion(np.eye(3), names, tmp_path / "conf.png")
            assert "Langclip Test Han" in matplotlib.rcParams["font.family"]
        assert not [str(w.message) for w in got if "missing from font" in str(w.message)]
        assert fit_fonts(["𓀀"]) == ["𓀀"]
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "conf.png")), np.asarray(Image.open(tmp_path / "boxes.png")))
