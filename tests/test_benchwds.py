"""CLIP_benchmark's webdataset copies (`langclip eval --dataset wds:DIR`, benchwds.py), written here in its
layout: a copy of a CIFAR-format split scores exactly what torchvision's reader of the CIFAR files scores
(CLIP_benchmark's own wds reader on an export: tests/test_benchsets.py), and broken copies are named."""
import json
import shutil

import pytest

from conftest import cifar_as_wds, write_wds
from langclip.cli import main
from langclip.evaluate import evaluate_cli

KEYS = ("acc1", "acc5", "mean_per_class_recall", "n")


def test_a_wds_copy_scores_what_the_cifar_files_score(trained_run, cifar_root, tmp_path):
    """Russian: the copy's English class names are CIFAR-10's, so the shipped Russian names and templates
    serve it; English: the copy's own prompt templates (CLIP_benchmark's setting) equal the CIFAR files
    evaluated with those templates given; `wds:DIR/test` names the split itself."""
    d = cifar_as_wds(cifar_root, tmp_path / "wds_cifar10", ["a photo of a {c}.", "a blurry picture of the {c}."])
    webp = cifar_as_wds(cifar_root, tmp_path / "wds_cifar10_webp", fmt="webp")   # clip_benchmark_export_wds's default format
    # and as CLIP_benchmark's own exporter writes it (its layout, names and shards: the reference for the reader)
    import torchvision.datasets as tvd
    from clip_benchmark.webdataset_builder import PIL_to_bytes, convert_dataset

    theirs = tmp_path / "wds_cifar10_cb"
    convert_dataset(tvd.CIFAR10(str(cifar_root), train=False), "test", str(theirs), transform=PIL_to_bytes("webp"),
                    max_count=8, verbose=False)
    assert (theirs / "test" / "nshards.txt").read_text().strip() == "3"
    from langclip.info import info   # `langclip info DIR` says what the copy is and which names langclip would use

    text = info([str(theirs)])
    assert text.startswith(f"{theirs}: CLIP_benchmark webdataset copy (classification)") and "3 shards" in text
    assert "10: airplane, automobile, bird, cat, deer, …; in other languages langclip's cifar10 names (en, ru, uk)" in text
    assert "prompts" not in text and "2 of its own (English)" in info([str(d)])   # CLIP_benchmark's writes none here
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(trained_run), "--dataset", "cifar10", f"wds:{d}", f"wds:{webp}", f"wds:{theirs}", "--lang", "ru",
                 "--data-root", str(cifar_root), "--device", "cpu", "--workers", "0", "--batch-size", "7",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    a, b = res["cifar10"], res[f"wds:{d}"]
    assert [a[k] for k in KEYS] == [b[k] for k in KEYS] == [res[f"wds:{webp}"][k] for k in KEYS] == \
        [res[f"wds:{theirs}"][k] for k in KEYS] and a["n"] == 20 and res[f"wds:{theirs}"]["confusion"] == a["confusion"]
    assert a["confusion"] == b["confusion"] and b["classnames"][0] == "самолёт" and 0 < a["acc5"] < 1
    assert (out / "confusion_wds_cifar10.png").stat().st_size > 10_000
    assert f"| wds_cifar10 acc | {b['acc1']:.3f} |" in (out / "table.md").read_text(encoding="utf-8")
    en_own = evaluate_cli(str(trained_run), f"wds:{d}/test", "en", str(cifar_root), device="cpu", workers=0)
    en_cifar = evaluate_cli(str(trained_run), "cifar10", "en", str(cifar_root), device="cpu", workers=0,
                            templates=str(d / "zeroshot_classification_templates.txt"))
    shipped = evaluate_cli(str(trained_run), "cifar10", "en", str(cifar_root), device="cpu", workers=0)
    assert shipped["cifar10"]["confusion"] != en_cifar["cifar10"]["confusion"]   # the templates matter here
    assert [en_own[f"wds:{d}/test"][k] for k in KEYS] == [en_cifar["cifar10"][k] for k in KEYS]
    assert en_own[f"wds:{d}/test"]["classnames"] == en_cifar["cifar10"]["classnames"] == shipped["cifar10"]["classnames"]


def test_broken_copies_are_named_before_the_model_loads(trained_run, cifar_root, tmp_path, capsys):
    d = cifar_as_wds(cifar_root, tmp_path / "wds_cifar10")
    run = str(trained_run)
    ev = lambda spec, lang="ru", **k: evaluate_cli(run, spec, lang, "", device="cpu", workers=0, **k)   # noqa: E731
    # names langclip ships no Russian for: say which file and what to pass
    other = tmp_path / "wds_pets"
    shutil.copytree(d, other)
    (other / "classnames.txt").write_text("\n".join(f"breed {i}" for i in range(10)))
    with pytest.raises(ValueError, match=r"classnames.txt holds 10 English names .*--classnames"):
        ev(f"wds:{other}")
    names = ",".join(f"порода {i}" for i in range(10))
    r = ev(f"wds:{other}", classnames=names)[f"wds:{other}"]
    assert r["n"] == 20 and r["classnames"][3] == "порода 3"
    with pytest.raises(ValueError, match="9 class names for its 10 classes"):
        ev(f"wds:{other}", classnames=",".join(f"порода {i}" for i in range(9)))
    # a shard that nshards.txt counts but is not there
    (d / "test" / "nshards.txt").write_text("4")
    with pytest.raises(FileNotFoundError, match=r"counts 4 shards; 1 missing, first .*3\.tar"):
        ev(f"wds:{d}")
    (d / "test" / "nshards.txt").write_text("3")
    # kinds it does not score
    (d / "dataset_type.txt").write_text("multilabel\n")
    with pytest.raises(ValueError, match="dataset_type.txt: 'multilabel'"):
        ev(f"wds:{d}")
    (d / "dataset_type.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no test split"):
        ev(f"wds:{tmp_path}")
    # a sample without its label is skipped and counted; a label past the class list is an error
    import io
    import tarfile

    bad = tmp_path / "wds_bad"
    shutil.copytree(d, bad)
    with tarfile.open(bad / "test" / "2.tar", "a") as tf:
        for name, data in (("orphan.png", (d / "classnames.txt").read_bytes()),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    capsys.readouterr()
    assert ev(f"wds:{bad}")[f"wds:{bad}"]["n"] == 20
    assert "1 sample(s) skipped (first: " in capsys.readouterr().err
    write_wds(bad, [((d / "classnames.txt").read_bytes(), "png", b"10", "cls")], split="test")
    with pytest.raises(ValueError, match="label 10 for 10 classes"):
        ev(f"wds:{bad}")


def test_an_unreadable_picture_is_left_out_and_counted(trained_run, cifar_root, tmp_path, capsys):
    """A corrupt picture in a benchmark is skipped, counted in the results and named, not fatal: a copy with
    one scores exactly what the copy without it scores — a classification set, and a retrieval set, whose
    broken picture's captions go with it; a set none of whose pictures reads is an error."""
    import io

    import numpy as np
    from PIL import Image

    def png(seed):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    d = cifar_as_wds(cifar_root, tmp_path / "wds_cifar10")
    with_bad = tmp_path / "bad" / "wds_cifar10"
    shutil.copytree(d, with_bad)
    samples = []   # the copy's samples, read back in order, plus a broken one in the middle
    import tarfile

    for i in range(3):
        with tarfile.open(d / "test" / f"{i}.tar") as tf:
            ms = [m for m in tf if m.isfile()]
            for a, b in zip(ms[::2], ms[1::2]):
                samples.append((tf.extractfile(a).read(), "png", tf.extractfile(b).read(), "cls"))
    write_wds(with_bad, samples[:9] + [(b"\x89PNG\r\n\x1a\n not really", "png", b"3", "cls")] + samples[9:])
    ev = lambda *specs, **k: evaluate_cli(str(trained_run), list(specs), "ru", "", device="cpu", workers=0, **k)   # noqa: E731
    capsys.readouterr()
    good, bad = ev(f"wds:{d}")[f"wds:{d}"], ev(f"wds:{with_bad}")[f"wds:{with_bad}"]
    assert bad["skipped"] == 1 and "skipped" not in good and "1 of 21 pictures could not be read" in capsys.readouterr().err
    assert [good[k] for k in KEYS] == [bad[k] for k in KEYS] and good["confusion"] == bad["confusion"]
    # retrieval: two captions a picture; the broken picture's two leave with it
    caps = [(png(i), "png", f"собака {i}\nкошка {i}".encode(), "txt") for i in range(12)]
    ret, ret_bad = tmp_path / "r" / "wds_caps", tmp_path / "rb" / "wds_caps"
    for out, s in ((ret, caps), (ret_bad, caps[:5] + [(b"GIF89a broken", "png", "волк\nлиса".encode(), "txt")] + caps[5:])):
        write_wds(out, s, shard_size=5)
        (out / "dataset_type.txt").write_text("retrieval\n")
    a, b = ev(f"wds:{ret}")[f"wds:{ret}"], ev(f"wds:{ret_bad}")[f"wds:{ret_bad}"]
    assert (a["texts"], a["images"], b["texts"], b["images"], b["skipped"]) == (24, 12, 24, 12, 1)
    assert all(a[k] == b[k] for k in a if "_r@" in k)
    none = tmp_path / "n" / "wds_caps"
    write_wds(none, [(b"broken", "png", b"x", "txt")])
    (none / "dataset_type.txt").write_text("retrieval\n")
    with pytest.raises(ValueError, match="none of its 1 pictures could be read"):
        ev(f"wds:{none}")
