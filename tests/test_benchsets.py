"""The benchmarks multilingual CLIPs report (Babel-ImageNet, ImageNet-1k, Food101, Flowers102, XM3600,
XTD10), read from tiny copies written here in each dataset's public on-disk format, and CLIP_benchmark
(unmodified, its own command line) on langclip's open_clip export giving the same numbers as
`langclip eval` on the same files."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from langclip.cli import main


def _cb_datasets() -> Path:
    """clip_benchmark's datasets folder, found without importing it (its command line pulls in
    scikit-learn and more: only the test that runs it imports it). The test extra installs it: missing,
    the tests fail rather than skip."""
    import importlib.util

    spec = importlib.util.find_spec("clip_benchmark")
    assert spec is not None, "clip-benchmark is not installed (pip install -e '.[test]')"
    return Path(spec.submodule_search_locations[0]) / "datasets"


def _jpeg(path, rng, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0], 3), rng.integers(0, 255, 3), dtype=np.uint8)
    a[: size[1] // 2] = rng.integers(0, 255, 3)
    Image.fromarray(a).save(path, quality=95)


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    from scipy.io import savemat

    from langclip.datasets import shipped_classnames

    r = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    # ImageNet validation as torchvision lays it out: val/<wnid>/, meta.bin (what torchvision makes from the devkit)
    wnids = [f"n{i:08d}" for i in range(1000)]
    for w in wnids:
        _jpeg(r / "val" / w / f"ILSVRC2012_val_{w}.JPEG", rng)
    torch.save(({w: (f"class {i}",) for i, w in enumerate(wnids)}, wnids), r / "meta.bin")
    # Food-101: meta/test.json lists every class (most without pictures here), images/<class>/<id>.jpg
    classes = [n.replace(" ", "_") for n in shipped_classnames("food101", "en")]
    test = {c: [] for c in classes}
    for i, c in enumerate(classes[::10]):
        for j in range(2):
            _jpeg(r / "food-101" / "images" / c / f"{i}{j}.jpg", rng)
            test[c].append(f"{c}/{i}{j}")
    (r / "food-101" / "meta").mkdir(parents=True)
    (r / "food-101" / "meta" / "test.json").write_text(json.dumps(test))
    (r / "food-101" / "meta" / "classes.txt").write_text("\n".join(classes))
    # Flowers-102: jpg/image_NNNNN.jpg, imagelabels.mat (1-based), setid.mat
    n = 30
    for i in range(1, n + 1):
        _jpeg(r / "flowers-102" / "jpg" / f"image_{i:05d}.jpg", rng)
    savemat(r / "flowers-102" / "imagelabels.mat", {"labels": (np.arange(n) * 7 % 102 + 1)[None, :]})
    savemat(r / "flowers-102" / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                               "tstid": np.arange(5, n + 1)[None, :]})
    # Crossmodal-3600: captions.jsonl (every language per line) + images/<key>.jpg; one image missing
    lines = []
    for i in range(14):
        key = f"{i:016x}"
        if i != 13:
            _jpeg(r / "xm3600" / "images" / f"{key}.jpg", rng)
        lines.append(json.dumps({"image/key": key, "ru": {"caption": [f"фото номер {i}", f"ещё {i}"],
                                                          "caption/tokenized": [f"фото номер {i}"]},
                                 "uk": {"caption": [f"світлина номер {i}"], "caption/tokenized": [f"світлина номер {i}"]},
                                 "en": {"caption": [f"photo number {i}"], "caption/tokenized": [f"photo number {i}"]}},
                                ensure_ascii=False))
    (r / "xm3600" / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # XTD10: the dataset's own files
    names = [f"COCO_val2014_{i:012d}.jpg" for i in range(12)]
    for nm in names:
        _jpeg(r / "xtd10" / "images" / nm, rng)
    (r / "xtd10" / "test_image_names.txt").write_text("\n".join(names) + "\n")
    (r / "xtd10" / "test_1kcaptions_ru.txt").write_text("\n".join(f"кошка {i} на диване" for i in range(12)) + "\n",
                                                         encoding="utf-8")
    (r / "xtd10" / "test_1kcaptions_en.txt").write_text("\n".join(f"a cat {i} on a sofa" for i in range(12)) + "\n")
    return r


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, trained_run):
    d = tmp_path_factory.mktemp("cbexport") / "export"
    assert main(["export", "--model", str(trained_run), "--out", str(d)]) == 0
    return d


def test_readers_follow_the_public_layouts(root, tmp_path):
    from langclip.benchsets import load_zero_shot, retrieval_pairs

    t = lambda im: 0   # noqa: E731
    ds, names, prompts = load_zero_shot("babel_imagenet", root, t, "ru", None)
    cb_labels = json.loads((_cb_datasets() / "babel_imagenet.json").read_text())["RU"]
    assert names == cb_labels[1] and len(ds) == len(cb_labels[0]) == 748
    assert ds[5][1] == 5 and "{c}" in prompts[0] and len(prompts) == 80
    ds, names, _ = load_zero_shot("food101", root, t, "ru", None)
    assert len(ds) == 22 and names[0]["nom"] == "яблочный пирог" and len(names) == 101
    ds, names, _ = load_zero_shot("flowers102", root, t, "ru", None)
    assert len(ds) == 26 and [ds[i][1] for i in range(3)] == [28, 35, 42] and len(names) == 102
    with pytest.raises(ValueError, match="--classnames"):
        load_zero_shot("imagenet1k", root, t, "ru", None)
    xm = retrieval_pairs("xm3600", root, "ru")
    assert len(xm) == 13 and xm[2][1] == "фото номер 2"        # the first caption; the missing image skipped
    xtd = retrieval_pairs("xtd10", root, "ru")
    assert len(xtd) == 12 and xtd[0][1] == "кошка 0 на диване"
    with pytest.raises(FileNotFoundError, match="test_1kcaptions_de"):
        retrieval_pairs("xtd10", root, "de")
    empty = tmp_path / "empty"
    (empty / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="1000 wnid folders"):
        load_zero_shot("imagenet1k", empty, t, "en", None)


def _clip_benchmark(argv, monkeypatch):
    """CLIP_benchmark's own command line, in this process. Its Flowers102 is torchvision's, which checks
    the original files' MD5: the tiny copies here cannot match it, so that one check is switched off."""
    import clip_benchmark.cli as CB
    import torchvision.datasets.flowers102 as f102

    monkeypatch.setattr(f102, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(sys, "argv", ["clip_benchmark", "eval", *argv])
    CB.main()


@pytest.mark.slow
def test_ukrainian_evaluation_as_the_recipe_runs_it(root, export_dir, tmp_path):
    """docs/recipe.md's Ukrainian evaluation: Babel-ImageNet's Ukrainian names and prompts, XM3600's
    Ukrainian captions, Food-101 and Flowers-102 with the shipped Ukrainian names (CIFAR and Caltech101
    in Ukrainian: tests/test_eval.py)."""
    assert main(["eval", "--model", str(export_dir), "--dataset", "babel_imagenet", "xm3600", "food101", "flowers102",
                 "--lang", "uk", "--data-root", str(root), "--device", "cpu", "--workers", "0",
                 "--out", str(tmp_path / "uk")]) == 0
    res = json.loads((tmp_path / "uk" / "results.json").read_text(encoding="utf-8"))
    labels = json.loads((_cb_datasets() / "babel_imagenet.json").read_text())["UK"]
    assert res["babel_imagenet"]["classnames"] == labels[1] and res["xm3600"]["texts"] == 13
    assert res["food101"]["n"] == 22 and res["food101"]["classnames"][0] == "яблучний пиріг"
    assert res["flowers102"]["n"] == 26 and res["flowers102"]["classnames"][73] == "троянда"


@pytest.mark.slow
def test_clip_benchmark_on_the_export_equals_langclip_eval(root, export_dir, tmp_path, monkeypatch):
    out = tmp_path / "langclip"
    ru_imagenet = tmp_path / "imagenet_ru.json"
    ru_imagenet.write_text(json.dumps([f"класс {i}" for i in range(1000)], ensure_ascii=False), encoding="utf-8")
    assert main(["eval", "--model", str(export_dir), "--dataset", "babel_imagenet", "food101", "flowers102",
                 "xm3600", "xtd10", "--lang", "ru", "--data-root", str(root), "--device", "cpu", "--workers", "0",
                 "--reference", "--out", str(out)]) == 0
    assert main(["eval", "--model", str(export_dir), "--dataset", "imagenet1k", "--lang", "ru", "--data-root",
                 str(root), "--classnames", str(ru_imagenet), "--device", "cpu", "--workers", "0",
                 "--out", str(tmp_path / "langclip_in1k")]) == 0
    ours = json.loads((out / "results.json").read_text(encoding="utf-8"))
    ours.update(json.loads((tmp_path / "langclip_in1k" / "results.json").read_text(encoding="utf-8")))
    # XTD10: CLIP_benchmark reads the annotation file it would otherwise build from the download
    xtd = [(str(root / "xtd10" / "images" / f"COCO_val2014_{i:012d}.jpg"), f"кошка {i} на диване") for i in range(12)]
    (root / "xtd10-ru.json").write_text(json.dumps({"image_paths": [p for p, _ in xtd], "annotations": [c for _, c in xtd],
                                                    "indicies": list(range(12))}, ensure_ascii=False), encoding="utf-8")
    cb = tmp_path / "cb"
    cb.mkdir()
    common = ["--model", f"local-dir:{export_dir}", "--pretrained", "", "--dataset_root", str(root),
              "--no_amp", "--num_workers", "0", "--batch_size", "64", "--recall_k", "1", "5", "10",
              "--language", "ru", "--output", str(cb / "{dataset}_{language}.json")]
    # Babel-ImageNet and the retrieval sets with CLIP_benchmark's own names and prompts
    _clip_benchmark(["--dataset", "babel_imagenet", "crossmodal3600", "xtd10", *common], monkeypatch)
    # the others with the Russian names and prompts langclip used, from the files `langclip eval --out` writes
    names = json.loads((out / "clip_benchmark_classnames.json").read_text(encoding="utf-8"))
    names.update(json.loads((tmp_path / "langclip_in1k" / "clip_benchmark_classnames.json").read_text(encoding="utf-8")))
    prompts = json.loads((out / "clip_benchmark_templates.json").read_text(encoding="utf-8"))
    prompts.update(json.loads((tmp_path / "langclip_in1k" / "clip_benchmark_templates.json").read_text(encoding="utf-8")))
    del names["babel_imagenet"], prompts["babel_imagenet"]
    (tmp_path / "names.json").write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "prompts.json").write_text(json.dumps(prompts, ensure_ascii=False), encoding="utf-8")
    # (--language en: CLIP_benchmark reads its own <language>_classnames.json for flowers and imagenet1k
    # before custom names replace them, and it ships none for ru; the names and prompts used are the
    # Russian ones from the custom files)
    _clip_benchmark(["--dataset", "food101", "flowers", "imagenet1k", *common[:-6], "--language", "en",
                     "--output", str(cb / "{dataset}_ru.json"),
                     "--custom_classname_file", str(tmp_path / "names.json"),
                     "--custom_template_file", str(tmp_path / "prompts.json")], monkeypatch)
    theirs = {p.stem.rsplit("_", 1)[0]: json.loads(p.read_text())["metrics"] for p in cb.glob("*.json")}
    assert 0 < theirs["xtd10"]["image_retrieval_recall@5"] < 1 and 0 < theirs["imagenet1k"]["acc5"] < 1  # not all-0
    for ours_name, cb_name in (("babel_imagenet", "babel_imagenet"), ("food101", "food101"), ("flowers102", "flowers"),
                               ("imagenet1k", "imagenet1k")):
        a, b = ours[ours_name], theirs[cb_name]
        assert (a["acc1"], a["acc5"]) == pytest.approx((b["acc1"], b["acc5"]), abs=1e-9), ours_name
        assert a["mean_per_class_recall"] == pytest.approx(b["mean_per_class_recall"], abs=1e-9), ours_name
    for ours_name, cb_name in (("xm3600", "crossmodal3600"), ("xtd10", "xtd10")):
        a, b = ours[ours_name], theirs[cb_name]
        for k in (1, 5, 10):
            assert a[f"t2i_r@{k}"] == pytest.approx(b[f"image_retrieval_recall@{k}"], abs=1e-9), (ours_name, k)
            assert a[f"i2t_r@{k}"] == pytest.approx(b[f"text_retrieval_recall@{k}"], abs=1e-9), (ours_name, k)
    # one table per run, ruCLIP's layout, with the English reference column
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| dataset | langclip (ru) | CLIP (en, reference) |" in table
    assert "| Food101 acc |" in table and "| Flowers102 mean-per-class |" in table and "| XM3600 text→image R@1 |" in table
    rows = json.loads((out / "table.json").read_text(encoding="utf-8"))
    babel = next(r for r in rows if r["dataset"] == "Babel-ImageNet acc")
    assert babel["CLIP (en, reference)"] is None and babel["langclip (ru)"] == ours["babel_imagenet"]["acc1"]
    assert next(r for r in rows if r["dataset"] == "XTD10 text→image R@1")["CLIP (en, reference)"] is not None



@pytest.mark.slow
def test_clip_benchmark_reads_a_wds_copy_as_langclip_eval_does(export_dir, cifar_root, tmp_path, monkeypatch):
    """CLIP_benchmark's webdataset layout (`wds:DIR`, its `wds/NAME` datasets): a classification copy (CIFAR-10's
    pictures and English names; Russian names and prompts through CLIP_benchmark's custom files that
    `langclip eval --out` writes) and a retrieval copy with two captions a picture over three shards;
    CLIP_benchmark's own reader and metrics on the export give langclip's numbers."""
    from conftest import cifar_as_wds, write_wds

    cls = cifar_as_wds(cifar_root, tmp_path / "wds_cifar10", ["a photo of a {c}."])
    rng = np.random.default_rng(3)
    samples = []
    for i in range(18):
        _jpeg(tmp_path / "pics" / f"{i}.jpg", rng)
        caps = f"кошка номер {i} на диване\nфото {i} собак в парке"   # no two pictures share a caption (a tie)
        samples.append(((tmp_path / "pics" / f"{i}.jpg").read_bytes(), "jpg", caps.encode(), "txt"))
    ret = write_wds(tmp_path / "wds_captions", samples, shard_size=7)
    (ret / "dataset_type.txt").write_text("retrieval\n")
    out = tmp_path / "langclip"
    assert main(["eval", "--model", str(export_dir), "--dataset", f"wds:{cls}", f"wds:{ret}", "--lang", "ru",
                 "--device", "cpu", "--workers", "0", "--out", str(out)]) == 0
    ours = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert ours[f"wds:{ret}"]["texts"] == 36 and ours[f"wds:{ret}"]["images"] == 18
    cb = tmp_path / "cb"
    cb.mkdir()
    common = ["--model", f"local-dir:{export_dir}", "--pretrained", "", "--no_amp", "--num_workers", "0",
              "--batch_size", "64", "--output", str(cb / "{dataset}.json")]
    _clip_benchmark(["--dataset", "wds/cifar10", "--dataset_root", str(cls), "--language", "en",
                     "--custom_classname_file", str(out / "clip_benchmark_classnames.json"),
                     "--custom_template_file", str(out / "clip_benchmark_templates.json"), *common], monkeypatch)
    _clip_benchmark(["--dataset", "wds/captions", "--dataset_root", str(ret), "--task", "zeroshot_retrieval",
                     "--language", "ru", "--recall_k", "1", "5", "10", *common], monkeypatch)
    theirs = {p.stem: json.loads(p.read_text())["metrics"] for p in cb.glob("*.json")}
    a, b = ours[f"wds:{cls}"], theirs["cifar10"]
    assert a["n"] == 20 and 0 < b["acc5"] < 1
    assert (a["acc1"], a["acc5"], a["mean_per_class_recall"]) == pytest.approx(
        (b["acc1"], b["acc5"], b["mean_per_class_recall"]), abs=1e-9)
    a, b = ours[f"wds:{ret}"], theirs["captions"]
    assert 0 < b["image_retrieval_recall@5"] < 1
    for k in (1, 5, 10):
        assert a[f"t2i_r@{k}"] == pytest.approx(b[f"image_retrieval_recall@{k}"], abs=1e-9), k
        assert a[f"i2t_r@{k}"] == pytest.approx(b[f"text_retrieval_recall@{k}"], abs=1e-9), k
    # `langclip eval --out` wrote its numbers as CLIP_benchmark's result files: `clip_benchmark build` puts them
    # in one table with CLIP_benchmark's own, each dataset's two rows alike
    import csv

    import clip_benchmark.cli as CB

    monkeypatch.setattr(sys, "argv", ["clip_benchmark", "build", str(out / "clip_benchmark"), str(cb),
                                      "--output", str(tmp_path / "all.csv")])
    CB.main()
    rows = list(csv.DictReader(open(tmp_path / "all.csv", encoding="utf-8")))
    by = {(r["dataset"], r["model"]): r for r in rows}
    assert len(rows) == 4 and {r["dataset"] for r in rows} == {"wds/cifar10", "wds/captions"}
    for ds, keys in (("wds/cifar10", ("acc1", "acc5", "mean_per_class_recall")),
                     ("wds/captions", [f"{w}_retrieval_recall@{k}" for w in ("image", "text") for k in (1, 5, 10)])):
        mine, cbs = by[(ds, "langclip")], by[(ds, f"local-dir:{export_dir}")]
        assert mine["task"] == cbs["task"] and mine["language"] == "ru"
        for k in keys:
            assert float(mine[k]) == pytest.approx(float(cbs[k]), abs=1e-9), (ds, k)


@pytest.mark.slow
def test_imagenet_from_clip_benchmark_copy_and_in_its_languages(root, export_dir, tmp_path, monkeypatch):
    """ImageNet as CLIP_benchmark's webdataset copy holds it (wds_imagenet1k: the sorted-wnid labels) serves
    imagenet1k and babel_imagenet as the torchvision layout does, with the same numbers; imagenet1k in Italian
    (and Arabic, Chinese, Japanese) takes CLIP_benchmark's names and prompts, as CLIP_benchmark's own command
    line does (equal numbers); a copy in a language without ImageNet names points to Babel-ImageNet."""
    from conftest import write_wds

    cb_en = json.loads((_cb_datasets() / "en_classnames.json").read_text())["imagenet1k"]
    wnids = sorted(p.name for p in (root / "val").iterdir())
    samples = [((root / "val" / w / f"ILSVRC2012_val_{w}.JPEG").read_bytes(), "jpg", str(i).encode(), "cls")
               for i, w in enumerate(wnids)]
    copy = write_wds(tmp_path / "data" / "wds_imagenet1k", samples[::-1], shard_size=400)   # another order
    (copy / "classnames.txt").write_text("\n".join(cb_en) + "\n", encoding="utf-8")
    run = lambda *a: main(["eval", "--model", str(export_dir), "--device", "cpu", "--workers", "0", *a]) == 0   # noqa: E731
    assert run("--dataset", "babel_imagenet", "imagenet1k", "--lang", "it", "--data-root", str(root), "--out", str(tmp_path / "tv"))
    import langclip.benchwds as benchwds   # both datasets over one copy: its shards listed once

    opened, real_open = [], benchwds.tarfile.open
    monkeypatch.setattr(benchwds.tarfile, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    assert run("--dataset", "babel_imagenet", "imagenet1k", "--lang", "it", "--data-root", str(tmp_path / "data"),
               "--out", str(tmp_path / "wds"))
    monkeypatch.setattr(benchwds.tarfile, "open", real_open)
    assert sorted(opened) == sorted(str(p) for p in benchwds.shards(benchwds.open_wds(f"wds:{copy}"))), opened
    assert run("--dataset", f"wds:{copy}", "--lang", "it", "--out", str(tmp_path / "spec"))
    tv, wd = (json.loads((tmp_path / d / "results.json").read_text(encoding="utf-8")) for d in ("tv", "wds"))
    spec = json.loads((tmp_path / "spec" / "results.json").read_text(encoding="utf-8"))[f"wds:{copy}"]
    it = json.loads((_cb_datasets() / "it_classnames.json").read_text())["imagenet1k"]
    assert tv["imagenet1k"]["classnames"] == it and tv["babel_imagenet"]["n"] > 0
    for name in ("babel_imagenet", "imagenet1k"):
        assert [tv[name][k] for k in ("acc1", "acc5", "mean_per_class_recall", "n")] == \
            [wd[name][k] for k in ("acc1", "acc5", "mean_per_class_recall", "n")], name
    assert [spec[k] for k in ("acc1", "acc5", "n")] == [tv["imagenet1k"][k] for k in ("acc1", "acc5", "n")]
    from langclip.evaluate import evaluate_cli

    with pytest.raises(ValueError, match=r"ImageNet-1k in 'ru'.*--dataset babel_imagenet --data-root"):
        evaluate_cli(str(export_dir), f"wds:{copy}", "ru", "", device="cpu", workers=0)
    cb = tmp_path / "cb"
    cb.mkdir()
    _clip_benchmark(["--model", f"local-dir:{export_dir}", "--pretrained", "", "--dataset_root", str(root),
                     "--no_amp", "--num_workers", "0", "--batch_size", "64", "--language", "it",
                     "--dataset", "imagenet1k", "--output", str(cb / "{dataset}_{language}.json")], monkeypatch)
    theirs = json.loads((cb / "imagenet1k_it.json").read_text())["metrics"]
    a = tv["imagenet1k"]
    assert 0 < theirs["acc5"] < 1
    assert (a["acc1"], a["acc5"], a["mean_per_class_recall"]) == pytest.approx(
        (theirs["acc1"], theirs["acc5"], theirs["mean_per_class_recall"]), abs=1e-9)


def test_nllb_retrieval_sets_as_clip_benchmark_scores_them(export_dir, tmp_path, monkeypatch):
    """XTD200 and Flickr30k-200 (NLLB-CLIP's translated test captions, languages by FLORES code): read from
    nllb-clip's raw files, the English reference from their eng_Latn captions; CLIP_benchmark's own command
    line, on the annotation files it would write from the same files, gives the same recalls."""
    from langclip.benchsets import flores_code

    assert [flores_code(x) for x in ("ru", "uk", "zh", "ar", "rus_Cyrl")] == \
        ["rus_Cyrl", "ukr_Cyrl", "zho_Hans", "arb_Arab", "rus_Cyrl"]
    with pytest.raises(ValueError, match="no FLORES-200 code for 'qq'"):
        flores_code("qq")
    r, rng = tmp_path / "data", np.random.default_rng(5)
    for folder, index in (("xtd200", "test_image_names.txt"), ("flickr30k-200", "filenames.txt")):
        names = [f"{folder}_{i}.jpg" for i in range(11)]
        for n in names:
            _jpeg(r / folder / "images" / n, rng)
        (r / folder / index).write_text("\n".join(names) + "\n")
        (r / folder / "rus_Cyrl.txt").write_text("\n".join(f"собака {i} бежит по {folder}" for i in range(11)) + "\n",
                                                 encoding="utf-8")
        (r / folder / "eng_Latn.txt").write_text("\n".join(f"a dog {i} runs" for i in range(11)) + "\n")
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(export_dir), "--dataset", "xtd200", "flickr30k_200", "--lang", "ru",
                 "--data-root", str(r), "--device", "cpu", "--workers", "0", "--reference", "--out", str(out)]) == 0
    ours = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert ours["xtd200"]["texts"] == ours["flickr30k_200/reference_en"]["texts"] == 11
    assert (out / "clip_benchmark" / "flickr30k-200_rus_Cyrl.json").is_file()
    for stem, folder, index in (("xtd200", "xtd200", "test_image_names.txt"), ("flickr30k_200", "flickr30k-200", "filenames.txt")):
        imgs = [str(r / folder / "images" / n) for n in (r / folder / index).read_text().split()]
        caps = (r / folder / "rus_Cyrl.txt").read_text(encoding="utf-8").splitlines()
        (r / f"{stem}-rus_Cyrl.json").write_text(json.dumps({"image_paths": imgs, "annotations": caps,
                                                             "indicies": list(range(11))}, ensure_ascii=False), encoding="utf-8")
    cb = tmp_path / "cb"
    cb.mkdir()
    _clip_benchmark(["--model", f"local-dir:{export_dir}", "--pretrained", "", "--dataset_root", str(r), "--no_amp",
                     "--num_workers", "0", "--batch_size", "64", "--recall_k", "1", "5", "10", "--language", "rus_Cyrl",
                     "--dataset", "xtd200", "flickr30k-200", "--output", str(cb / "{dataset}.json")], monkeypatch)
    for ours_name, cb_name in (("xtd200", "xtd200"), ("flickr30k_200", "flickr30k-200")):
        a, b = ours[ours_name], json.loads((cb / f"{cb_name}.json").read_text())["metrics"]
        assert 0 < b["image_retrieval_recall@5"] < 1, cb_name
        for k in (1, 5, 10):
            assert a[f"t2i_r@{k}"] == pytest.approx(b[f"image_retrieval_recall@{k}"], abs=1e-9), (ours_name, k)
            assert a[f"i2t_r@{k}"] == pytest.approx(b[f"text_retrieval_recall@{k}"], abs=1e-9), (ours_name, k)


def test_several_languages_in_one_call(root, export_dir, tmp_path, monkeypatch):
    """`--lang ru uk`: each language's evaluation as a call of its own gives it (files in out/<lang>/), one
    table with a column a language, and the English reference measured once (its row in the first
    language's results, and in the table); each dataset's pictures go through the image tower once."""
    import langclip.evaluate as E
    from langclip.evaluate import evaluate_cli

    passes = []
    real = E.image_features
    monkeypatch.setattr(E, "image_features", lambda *a, **k: passes.append(a[3]) or real(*a, **k))
    args = dict(data_root=str(root), device="cpu", workers=0)
    both = evaluate_cli(str(export_dir), ["xm3600", "food101"], ["ru", "uk"], out=str(tmp_path / "ev"),
                        reference=True, **args)
    assert set(both) == {"ru", "uk"} and "xm3600/reference_en" in both["ru"] and "xm3600/reference_en" not in both["uk"]
    assert passes == ["xm3600", "food101 (ru)"]   # Ukrainian took the Russian pass's embeddings
    for lg in ("ru", "uk"):
        alone = evaluate_cli(str(export_dir), ["xm3600", "food101"], lg, **args)
        assert json.loads((tmp_path / "ev" / lg / "results.json").read_text(encoding="utf-8"))["food101"]["acc1"] == \
            alone["food101"]["acc1"] == both[lg]["food101"]["acc1"]
        assert all(both[lg]["xm3600"][k] == alone["xm3600"][k] for k in alone["xm3600"] if "_r@" in k)
    table = (tmp_path / "ev" / "table.md").read_text(encoding="utf-8")
    assert table.startswith("| dataset | langclip (ru) | langclip (uk) | CLIP (en, reference) |")
    row = next(r for r in json.loads((tmp_path / "ev" / "table.json").read_text(encoding="utf-8"))
               if r["dataset"] == "Food101 acc")
    assert (row["langclip (ru)"], row["langclip (uk)"], row["CLIP (en, reference)"]) == (
        both["ru"]["food101"]["acc1"], both["uk"]["food101"]["acc1"], both["ru"]["food101/reference_en"]["acc1"])
    assert main(["eval", "--model", str(export_dir), "--dataset", "xm3600", "--lang", "ru", "uk", "--data-root",
                 str(root), "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "uk" / "results.json").is_file() and (tmp_path / "cli" / "table.md").is_file()
