"""The real recipe (docs/recipe.md) on tiny files written in each real format: CC3M's split TSV,
img2dataset webdataset shards whose .json sidecars carry the row number (some downloads failed),
the published machine-translation JSON lines for two languages (train and dev files), COCO pictures;
then the join, a tokenizer from the captions, a cache, a short run of the shipped config and the
held-out dev split's retrieval, all through the command line as the recipe writes them."""
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from langclip.cli import main

ROOT = Path(__file__).parent.parent
SPLITS = {"train": 20, "dev": 4}                 # CC3M rows of its training and validation TSVs
FAILED = {"train": {3, 9, 14}, "dev": {2}}       # downloads that failed
LETTERS_EN = "abcdefghijklmnopqrstuvwxyz"
RU = ["кошка", "собака", "лошадь", "корова", "птица", "рыба", "машина", "дом", "мост", "лодка", "гора", "река"]
UK = ["кішка", "собака", "кінь", "корова", "птах", "риба", "машина", "будинок", "міст", "човен", "гора", "річка"]


def colour(split, i):   # each CC3M picture's colour encodes its split and row: the join is checked on pixels
    return (10 * i, 255 - 10 * i, 40 if split == "train" else 200)


def _en(split, i):
    return f"a photo of a {LETTERS_EN[i % 12]} thing , {split} number # ."


@pytest.fixture(scope="session")
def public(tmp_path_factory):
    d = tmp_path_factory.mktemp("public")
    for split, n in SPLITS.items():
        name = "Train_GCC-training.tsv" if split == "train" else "Validation_GCC-1.1.0-Validation.tsv"
        with open(d / name, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(f"a photo of a {LETTERS_EN[i % 12]} thing number {i}\thttp://example.com/{split}/{i}.jpg\n")
        # img2dataset's output: keys in download order (not row order), .jpg/.txt/.json a sample; a failed
        # download has no picture, only its .json with the error status
        order = [int(x) for x in np.random.default_rng(len(split)).permutation(n)]
        out = d / f"cc3m_{split}"
        out.mkdir()
        for s in range(2):
            with tarfile.open(out / f"{s:05d}.tar", "w") as tf:
                for j, i in enumerate(order[s * n // 2:(s + 1) * n // 2]):
                    key = f"{s:05d}{j:04d}"
                    meta = {"url": f"http://example.com/{split}/{i}.jpg", "key": key, "rec_num": i,
                            "status": "failed_to_download" if i in FAILED[split] else "success",
                            "caption": f"a photo of a {LETTERS_EN[i % 12]} thing number {i}"}
                    files = [(f"{key}.json", json.dumps(meta).encode())]
                    if i not in FAILED[split]:
                        buf = io.BytesIO()
                        Image.new("RGB", (40, 30), colour(split, i)).save(buf, "JPEG", quality=95)
                        files += [(f"{key}.jpg", buf.getvalue()), (f"{key}.txt", meta["caption"].encode())]
                    for name_, data in files:
                        ti = tarfile.TarInfo(name_)
                        ti.size = len(data)
                        tf.addfile(ti, io.BytesIO(data))
        # the translations, tokenised as published, both languages in each file
        with open(d / f"cc3m_mt_{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                for lang, words in (("ru", RU), ("uk", UK)):
                    f.write(json.dumps({"rec_num": i, "src_lang": "en", "trg_lang": lang, "caption_tokenized": _en(split, i),
                                        "translation_tokenized": f"{words[i % 12]} , {split} номер # ( {i} ) .",
                                        "backtranslation_tokenized": "..."}, ensure_ascii=False) + "\n")
    with open(d / "coco_mt_train.jsonl", "w", encoding="utf-8") as f:
        for n_ in range(2):
            f.write(json.dumps({"image_id": f"391895_{n_}", "src_lang": "en", "trg_lang": "ru",
                                "caption_tokenized": f"a man riding a bike {n_}",
                                "translation_tokenized": f"мужчина на велосипеде {n_}",
                                "backtranslation_tokenized": "..."}, ensure_ascii=False) + "\n")
    (d / "coco").mkdir()
    Image.new("RGB", (50, 40), (1, 2, 3)).save(d / "coco" / "COCO_train2014_000000391895.jpg")
    return d


def test_cc3m_tsv_carries_the_row_number(public, tmp_path):
    out = tmp_path / "cc3m_train.tsv"
    assert main(["data", "cc3m-tsv", "--tsv", str(public / "Train_GCC-training.tsv"), "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "rec_num\tcaption\turl" and lines[6].split("\t")[0] == "5" and len(lines) == SPLITS["train"] + 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("only a caption\n")
    assert main(["data", "cc3m-tsv", "--tsv", str(bad), "--out", str(tmp_path / "x.tsv")]) == 2


@pytest.mark.parametrize("tokenized,text", [
    ("a man , standing on a bench .", "a man, standing on a bench."),
    ("кот , сидящий на скамейке .", "кот, сидящий на скамейке."),
    ("一 只 猫 坐在 桌子 上 。", "一只猫坐在桌子上。"),               # Chinese writes no spaces
    ("我 爱 iPhone 手机", "我爱 iPhone 手机"),                       # ... but keeps them around Latin
    ("ラーメン を 食べる 猫 。", "ラーメンを食べる猫。"),
    ("고양이 가 있다", "고양이 가 있다"),                             # Korean and Thai write spaces
    ("ผู้ชาย กำลัง ยืน", "ผู้ชาย กำลัง ยืน"),
])
def test_detokenize_writes_each_language_as_it_is_written(tokenized, text):
    """The captions are published tokenised; the student must read them as users type them."""
    from langclip.translations import detokenize

    assert detokenize(tokenized) == text


def test_bad_translation_lines_are_named():
    """A translations JSONL line that is not UTF-8, not JSON, not an object, or has a non-numeric
    rec_num is an error naming the file and line; a byte-order mark on line 1 is not."""
    import tempfile

    from langclip.translations import read_translations

    good = b'{"src_lang": "en", "trg_lang": "ru", "rec_num": 3, "caption_tokenized": "a cat", "translation_tokenized": "\xd0\xba\xd0\xbe\xd1\x82"}\n'
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "cc3m_mt_train.jsonl"
        f.write_bytes(b"\xef\xbb\xbf" + good)
        assert read_translations([str(f)], "ru")[0] == {("cc3m", 3): [("a cat", "кот", "train")]}
        for bad, msg in ((b"\xff\xfe\n", "not UTF-8"), (b"{oops\n", "not JSON"), (b"[1, 2]\n", "expected a JSON object"),
                         (good.replace(b'"rec_num": 3', b'"rec_num": "x"'), "rec_num / image_id is not a number")):
            f.write_bytes(good + b"\n" + bad)
            with pytest.raises(ValueError, match=f"cc3m_mt_train.jsonl:3: {msg}"):
                read_translations([str(f)], "ru")


def test_join_is_exact_and_counts_failed_downloads(public, tmp_path, capsys):
    from langclip.pairs import open_image, read_pairs

    for split in ("train", "dev"):
        out = tmp_path / f"cc3m_ru_{split}.parquet"
        files = [str(public / f"cc3m_mt_{split}.jsonl")] + ([str(public / "coco_mt_train.jsonl")] if split == "train" else [])
        assert main(["data", "translations", "--lang", "ru", "--translations", *files,
                     "--shards", str(public / f"cc3m_{split}" / "{00000..00001}.tar"), "--coco-images",
                     str(public / "coco"), "--out", str(out)]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["pictures_missing"] == len(FAILED[split]) and report["other_languages"] == SPLITS[split]
        assert report["pairs"] == SPLITS[split] - len(FAILED[split]) + (2 if split == "train" else 0)
        t = pq.read_table(out).to_pydict()
        refs = {r.key: r for r in read_pairs([str(out)]).images}     # what `cache build` reads
        for img, ru, en in zip(t["image"], t["caption"], t["caption_en"]):
            if "COCO" in img:
                assert ru.startswith("мужчина") and en.startswith("a man riding") and Path(img).is_file()
                continue
            i = int(re.search(r"\((\d+)\)", ru).group(1))             # the row the Russian caption came from
            assert ru == f"{RU[i % 12]}, {split} номер # ({i})." and en == _en(split, i).replace(" ,", ",").replace(" .", ".")
            pixel = open_image(refs[img]).convert("RGB").getpixel((5, 5))
            assert pixel == pytest.approx(colour(split, i), abs=3), (img, i)                # the right picture
    # train and dev in one run would join dev rows with training pictures: refused
    assert main(["data", "translations", "--lang", "ru", "--translations", str(public / "cc3m_mt_train.jsonl"),
                 str(public / "cc3m_mt_dev.jsonl"), "--shards", str(public / "cc3m_train" / "00000.tar"),
                 "--out", str(tmp_path / "mixed.parquet")]) == 2
    assert "once per split" in capsys.readouterr().err
    # Ukrainian: one flag
    assert main(["data", "translations", "--lang", "uk", "--translations", str(public / "cc3m_mt_train.jsonl"),
                 "--shards", str(public / "cc3m_train" / "{00000..00001}.tar"), "--out", str(tmp_path / "uk.parquet")]) == 0
    uk = pq.read_table(tmp_path / "uk.parquet").to_pydict()["caption"]
    assert len(uk) == SPLITS["train"] - len(FAILED["train"]) and all(c.split(",")[0] in UK for c in uk)


@pytest.mark.slow
def test_the_recipe_end_to_end(public, tmp_path, tiny_arch, tiny_clip, monkeypatch):
    """Every command of docs/recipe.md after the downloads, in its order, on the tiny files."""
    monkeypatch.chdir(tmp_path)
    pt = str(public)
    cmds = [
        ["data", "cc3m-tsv", "--tsv", f"{pt}/Train_GCC-training.tsv", "--out", "cc3m_train.tsv"],
        ["data", "translations", "--lang", "ru", "--translations", f"{pt}/cc3m_mt_train.jsonl",
         "--shards", f"{pt}/cc3m_train/{{00000..00001}}.tar", "--out", "cc3m_ru.parquet"],
        ["data", "translations", "--lang", "ru", "--translations", f"{pt}/cc3m_mt_dev.jsonl",
         "--shards", f"{pt}/cc3m_dev/{{00000..00001}}.tar", "--out", "cc3m_ru_dev.parquet"],
        ["tokenizer", "stats", "--tokenizer", "tok/ru-cc3m", "--lang", "ru", "--corpus", "cc3m_ru.parquet", "--column", "caption"],
        ["cache", "build", "--data", "cc3m_ru.parquet", "--clip", tiny_arch, "--weights", tiny_clip[1],
         "--out", "cache/cc3m-ru", "--workers", "0"],
        ["cache", "build", "--data", "cc3m_ru_dev.parquet", "--clip", tiny_arch, "--weights", tiny_clip[1],
         "--out", "cache/cc3m-ru-dev", "--workers", "0"],
        ["train", "--config", str(ROOT / "configs" / "ru-vitb32-cc3m.yaml"), f"model.clip={tiny_arch}",
         f"model.weights={tiny_clip[1]}", "model.pretrained=", "epochs=1", "batch_size=4", "compile=false",
         "val_fraction=0.1", "optim.warmup_steps=1", "tensorboard=false"],
        ["eval-retrieval", "--model", "runs/ru-cc3m", "--data", "cache/cc3m-ru-dev", "--split", "all", "--device", "cpu",
         "--out", "eval-dev"],
        ["export", "--model", "runs/ru-cc3m", "--out", "export"],
    ]
    # the tokenizer from the captions themselves (the recipe compares it with wordfreq's)
    assert main(cmds[0]) == 0 and main(cmds[1]) == 0 and main(cmds[2]) == 0
    assert main(["tokenizer", "train", "--lang", "ru", "--corpus", "cc3m_ru.parquet", "--column", "caption",
                 "--merges", "40", "--out", "tok/ru-cc3m"]) == 0
    for c in cmds[3:]:
        assert main(c) == 0, c
    res = json.loads((tmp_path / "eval-dev" / "retrieval.json").read_text())
    assert res["texts"] == SPLITS["dev"] - len(FAILED["dev"]) and 0 <= res["t2i_r@1"] <= 1
    # every langclip command of the recipe page is one of those exercised here
    page = (ROOT / "docs" / "recipe.md").read_text(encoding="utf-8")
    used = {" ".join(c[:2]) if c[0] in ("data", "cache", "tokenizer") else c[0] for c in cmds}
    used |= {"tokenizer train", "eval", "index build"}   # eval: tests/test_benchsets.py; index: tests/test_search.py
    code = "\n".join(re.findall(r"```bash\n(.*?)```", page, re.S))
    lines = re.findall(r"^langclip (.+)$", code, re.M)
    assert len(lines) >= 12
    for line in lines:
        words = line.split()
        sub = " ".join(words[:2]) if words[0] in ("data", "cache", "tokenizer", "index") else words[0]
        assert sub in used, f"docs/recipe.md runs `langclip {sub}`, which no test exercises"
