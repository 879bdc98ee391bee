import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from langclip.cache import build_cache, check_cache_matches, load_cache
from langclip.cli import main
from langclip.config import CacheConfig
from langclip.runfolder import split_by_image
from langclip.pairs import open_image, read_pairs
from langclip.build import load_image_tower
from langclip.model import LangCLIP, model_config
from langclip.model import image_transform, preprocess_cfg
from langclip.files import sha256_file

from conftest import make_image, torchrun


def direct_embeddings(arch, weights, refs):
    m = LangCLIP(model_config(arch))
    load_image_tower(m, weights, arch)
    tf = image_transform(preprocess_cfg(m))
    with torch.no_grad():
        return m.encode_image(torch.stack([tf(open_image(r)) for r in refs]))


def test_cache_equals_direct_tower(tmp_path, pair_data, tiny_arch, tiny_clip):
    spec = [str(pair_data / "pairs.csv"), str(pair_data / "shard-{00000..00001}.tar")]
    out = build_cache(CacheConfig(data=spec, clip=tiny_arch, weights=tiny_clip[1], out=str(tmp_path / "c"),
                                  batch_size=5, shard_size=7), progress=False)   # automatic decoding workers
    c = load_cache(out)
    pairs = read_pairs(spec)
    assert c.manifest["num_images"] == 24 and c.manifest["num_images_ok"] == 24
    assert len(c.captions) == 32 + 8 and c.teacher is not None and int(c.teacher_has.sum()) == 32
    ref = direct_embeddings(tiny_arch, tiny_clip[1], pairs.images)
    assert (c.image_emb.float() - ref).abs().max() < 2e-3  # fp16 storage
    from langclip.weights import load_state_dict, split_towers, tower_digest

    digest = tower_digest(split_towers(load_state_dict(tiny_clip[1]))[0])
    check_cache_matches(c.manifest, {"arch": tiny_arch, "tower_sha256": digest})
    with pytest.raises(ValueError, match="image-tower digest"):
        check_cache_matches(c.manifest, {"arch": tiny_arch, "tower_sha256": "0" * 64})
    old = {k: v for k, v in c.manifest.items() if k != "tower_sha256"}   # a cache from before digests
    check_cache_matches(old, {"arch": tiny_arch, "tower_sha256": digest, "sha256": sha256_file(tiny_clip[1])})
    tr, va = split_by_image(c, 0.25, seed=0)
    assert set(c.caption_image[tr].tolist()).isdisjoint(c.caption_image[va].tolist())
    assert len(tr) + len(va) == len(c.captions)


@pytest.mark.slow
@pytest.mark.xdist_group("compile")   # its graphs are test_benchmarks' compiled tower's: one worker, one compile
def test_compiled_image_tower_gives_the_direct_towers_embeddings(tmp_path, pair_data, tiny_arch, tiny_clip,
                                                                 monkeypatch, caplog):
    """`compile: true`: the image tower through torch.compile (here the CPU backend; batches of 5 and a
    last one of 1, padded to 5: one graph) embeds as open_clip's eager tower does; where torch.compile
    cannot build, the build warns, says why, and embeds eagerly."""
    import logging

    import langclip.cache.embed as embed

    spec = [str(pair_data / "pairs.csv")]
    cfg = dict(data=spec, clip=tiny_arch, weights=tiny_clip[1], batch_size=5, workers=0, compile=True)
    torch._dynamo.reset()
    assert embed.compile_problem(torch.device("cpu")) is None   # its tiny graph (once a process) counted before
    counters = torch._dynamo.utils.counters
    counters.clear()
    c = load_cache(build_cache(CacheConfig(out=str(tmp_path / "c"), **cfg), progress=False))
    # it did compile, one graph: the last batch ran padded, not through a second graph of its own
    assert counters["stats"]["unique_graphs"] == 1 and c.manifest["config"]["compile"] is True
    ref = direct_embeddings(tiny_arch, tiny_clip[1], read_pairs(spec).images)
    assert c.manifest["num_images_ok"] == 16 and (c.image_emb.float() - ref).abs().max() < 2e-3   # fp16 storage
    monkeypatch.setattr(embed, "compile_problem", lambda device: "no C++ compiler (simulated)")
    with caplog.at_level(logging.WARNING, logger="langclip.cache.embed"):
        e = load_cache(build_cache(CacheConfig(out=str(tmp_path / "e"), **cfg), progress=False))
    assert "cannot build on cpu here (no C++ compiler (simulated)): embedding without it" in caplog.text
    assert (e.image_emb.float() - ref).abs().max() < 2e-3


def test_bad_data_is_skipped_and_listed(tmp_path, tiny_arch, tiny_clip):
    import csv

    d = tmp_path / "bad"
    d.mkdir()
    make_image(d / "good.jpg", 1)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (d / "zero.jpg").write_bytes(b"")
    make_image(d / "alpha.png", 2, "RGBA")
    make_image(d / "grey.png", 3, "L")
    make_image(d / "tiny.png", 4, size=(1, 1))
    rows = [("good.jpg", "хорошая", "good"), ("corrupt.jpg", "битая", "broken"), ("zero.jpg", "пустая", "empty"),
            ("missing.jpg", "нет файла", "no file"), ("alpha.png", "прозрачная", ""), ("grey.png", "серая", "grey"),
            ("tiny.png", "крошечная", "tiny"), ("good.jpg", "", "none"), ("good.jpg", "длинная " * 1250, "long")]
    with open(d / "t.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption", "caption_en"])
        w.writerows(rows)
    # a truncated tar shard: good first sample, cut in the middle of the second
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for k in range(2):
            data = open(d / "good.jpg", "rb").read()
            for name, b in ((f"k{k}.jpg", data), (f"k{k}.txt", "подпись".encode())):
                ti = tarfile.TarInfo(name)
                ti.size = len(b)
                tf.addfile(ti, io.BytesIO(b))
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        second = [m for m in tf.getmembers() if m.name == "k1.jpg"][0]
    (d / "cut.tar").write_bytes(raw[: second.offset_data + 100])
    out = build_cache(CacheConfig(data=[str(d / "t.csv"), str(d / "cut.tar")], clip=tiny_arch, weights=tiny_clip[1],
                                  out=str(tmp_path / "c"), batch_size=4, workers=0), progress=False)
    man = json.loads((out / "manifest.json").read_text())
    reasons = {Path(f["source"].split("::")[0]).name: f["reason"] for f in man["failures"]}
    assert set(reasons) == {"corrupt.jpg", "zero.jpg", "missing.jpg"}, reasons
    assert "zero-byte" in reasons["zero.jpg"] and "No such file" in reasons["missing.jpg"]
    skipped = " | ".join(p["reason"] for p in man["skipped"])
    assert "empty caption" in skipped and "truncated" in skipped
    c = load_cache(out)
    assert man["num_images_ok"] == 5  # good, alpha, grey, tiny, and the first tar sample
    assert any(len(t) > 9000 for t in c.captions)  # long caption kept (the tokenizer cuts it)
    assert all(c.image_ok[r] for r in c.caption_image)
    # teacher rows follow the kept captions (those of failed images dropped), memory-mapped or not
    assert c.captions_en == ["good", None, "grey", "tiny", "long", None] and c.teacher_has.tolist() == [
        True, False, True, True, True, False]
    (out / "teacher" / "dense.npy").rename(tmp_path / "dense.npy")
    c2 = load_cache(out)
    assert torch.equal(c2.teacher, c.teacher) and torch.equal(c2.teacher_has, c.teacher_has)


def _build_cmd(spec, arch, weights, out, extra=()):
    return [sys.executable, "-m", "langclip", "cache", "build", "--data", *spec, "--clip", arch, "--weights", weights,
            "--out", out, "--batch-size", "3", "--workers", "0", "--shard-size", "4", "--teacher-shard-size", "5", *extra]


def test_resume_after_interruption_gives_same_cache(tmp_path, pair_data, tiny_arch, tiny_clip):
    spec = [str(pair_data / "pairs.csv")]
    cfg = dict(data=spec, clip=tiny_arch, weights=tiny_clip[1], batch_size=3, workers=0, shard_size=4)
    full = load_cache(build_cache(CacheConfig(out=str(tmp_path / "full"), **cfg), progress=False))
    part = build_cache(CacheConfig(out=str(tmp_path / "part"), **cfg), progress=False)
    # what a kill half-way leaves: no manifest, later shards missing, a half-written temporary file
    os.remove(part / "manifest.json")
    for k in (2, 3):
        os.remove(part / "emb" / f"shard_{k:05d}.safetensors")
    (part / "emb" / "shard_00002.safetensors.tmp").write_bytes(b"partial")
    before = (part / "emb" / "shard_00000.safetensors").stat().st_mtime_ns
    # what reads a cache names this one unfinished and how to finish it (train, info, index, eval-retrieval)
    from langclip.config import ModelSection, TrainConfig
    from langclip.info import describe_all

    want = f"{part} is an unfinished cache build (2 of 4 embedding shards written; no manifest.json yet): rerun " \
           f"the same `langclip cache build` with --out {part} to finish it (it resumes)"
    with pytest.raises(ValueError, match=re.escape(want)):
        TrainConfig(cache=str(part), model=ModelSection(weights=tiny_clip[1], tokenizer=str(pair_data))).validate()
    with pytest.raises(ValueError, match=re.escape(want)):
        read_pairs([str(part)])
    with pytest.raises(FileNotFoundError, match=re.escape(want)):
        load_cache(part)
    assert describe_all([str(part)])[0]["error"] == want.removeprefix(f"{part} is ")
    from langclip.folders import unfinished_cache

    (tmp_path / "cut" / "emb").mkdir(parents=True)   # killed while writing its build.json: still named
    (tmp_path / "cut" / "emb" / "build.json").write_text('{"form', encoding="utf-8")
    assert unfinished_cache(tmp_path / "cut").startswith("an unfinished cache build (0 of ? embedding shards")
    resumed = load_cache(build_cache(CacheConfig(out=str(part), **cfg), progress=False))
    assert (part / "emb" / "shard_00000.safetensors").stat().st_mtime_ns == before  # not recomputed
    assert full.manifest["num_images"] == 16 == full.manifest["timing"]["images_embedded"]   # each build's own
    assert resumed.manifest["timing"]["images_embedded"] == 8       # shards 2 and 3 (4 images each), redone
    assert 0 < resumed.manifest["timing"]["embed_seconds"] <= resumed.manifest["seconds"] + 0.05
    assert torch.equal(full.image_emb, resumed.image_emb) and full.captions == resumed.captions
    # the memory-mapped array equals what the shards give (caches from before it existed)
    assert (part / "emb" / "normalized.npy").is_file()
    for f in ("normalized.npy", "ok.npy"):
        (part / "emb" / f).rename(tmp_path / f)
    from_shards = load_cache(part)
    assert torch.equal(from_shards.image_emb, resumed.image_emb) and torch.equal(from_shards.image_ok, resumed.image_ok)
    for f in ("normalized.npy", "ok.npy"):
        (tmp_path / f).rename(part / "emb" / f)
    # a rerun with other shard boundaries, other data or another tower would mix rows: refused,
    # and nothing already written is touched
    os.remove(part / "manifest.json")
    written = {f: f.read_bytes() for f in (part / "emb").iterdir()}
    other = tmp_path / "other.csv"
    other.write_text("image,caption\n" + str(pair_data / "img" / "00.jpg") + ",кот\n", encoding="utf-8")
    for change, msg in ((dict(cfg, shard_size=5), "shard_size: was 4, now 5"),
                        (dict(cfg, data=[str(other)]), "the list of images"),
                        (dict(cfg, teacher_shard_size=7), "teacher_shard_size: was 65536, now 7")):
        with pytest.raises(ValueError, match=msg):
            build_cache(CacheConfig(out=str(part), **change), progress=False)
    assert {f: f.read_bytes() for f in (part / "emb").iterdir()} == written


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tmp_path, pair_data, tiny_arch, tiny_clip):
    spec = [str(pair_data / "pairs.csv"), str(pair_data / "shard-{00000..00001}.tar")]
    threads = torch.get_num_threads()   # the reference in this process, on one thread as each rank is
    torch.set_num_threads(1)
    try:
        assert main(_build_cmd(spec, tiny_arch, tiny_clip[1], str(tmp_path / "one"))[3:]) == 0
    finally:
        torch.set_num_threads(threads)
    two = torchrun(29533, ["-m", "langclip", *_build_cmd(spec, tiny_arch, tiny_clip[1], str(tmp_path / "two"))[3:]],
                   timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_cache(tmp_path / "one"), load_cache(tmp_path / "two")
    assert torch.equal(a.image_emb, b.image_emb) and a.captions == b.captions
    assert torch.equal(a.teacher, b.teacher) and torch.equal(a.teacher_has, b.teacher_has)
    assert len(list((tmp_path / "two" / "teacher").glob("shard_*"))) == 7   # 32 English captions, 5 a shard, both ranks


def test_teacher_embeddings_are_english_clips_and_resume(tmp_path, pair_data, tiny_arch, tiny_clip):
    """The cached teacher is the original CLIP's text embedding of each English caption; it is written
    in shards that a rerun completes (here 4 shards of 10 captions, one deleted and rebuilt)."""
    import open_clip

    from langclip.model import model_config
    from langclip.weights import load_state_dict

    cfg = CacheConfig(data=[str(pair_data / "pairs.csv")], clip=tiny_arch, weights=tiny_clip[1],
                      out=str(tmp_path / "c"), batch_size=5, workers=0, shard_size=7, teacher_shard_size=10)
    c = load_cache(build_cache(cfg, progress=False))
    shards = sorted((tmp_path / "c" / "teacher").glob("shard_*.safetensors"))
    assert len(shards) == 4 and int(c.teacher_has.sum()) == 32
    ref = open_clip.CLIP(**model_config(tiny_arch))
    ref.load_state_dict(load_state_dict(tiny_clip[1]))
    en = [e for _, _, e in read_pairs([str(pair_data / "pairs.csv")]).captions]
    rows = [i for i, e in enumerate(en) if e]
    with torch.no_grad():
        want = ref.eval().encode_text(open_clip.tokenize([en[i] for i in rows]), normalize=True)
    assert (c.teacher[rows].float() - want).abs().max() < 2e-3   # fp16 storage
    shards[1].unlink()
    (tmp_path / "c" / "manifest.json").unlink()
    c2 = load_cache(build_cache(cfg, progress=False))
    assert torch.equal(c2.teacher, c.teacher) and torch.equal(c2.teacher_has, c.teacher_has)
    # a cache written before teacher shards (one dense teacher.safetensors) still loads
    import shutil

    from safetensors.torch import save_file

    save_file({"emb": c.teacher.contiguous(), "has": c.teacher_has}, str(tmp_path / "c" / "teacher.safetensors"))
    shutil.rmtree(tmp_path / "c" / "teacher")
    c3 = load_cache(tmp_path / "c")
    assert torch.equal(c3.teacher, c.teacher) and torch.equal(c3.teacher_has, c.teacher_has)


def test_tables_read_alike_in_every_format(tmp_path):
    """CSV, JSONL and Parquet give the same images, captions and problems: paths resolved against the
    table's folder (once per distinct path), list cells, empty and missing captions and English."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    home = str(Path("~").expanduser())
    rows = [("a.jpg", "кот", "cat"), ("./a.jpg", "  кошка ", ""), ("sub/b.jpg", '["собака", "пёс"]', '["dog", "hound"]'),
            ("", "ничего", "nothing"), ("/abs/c.jpg", "   ", "blank"), ("~/d.jpg", "дом", None),
            ("sub//b.jpg", "щенок", "puppy"), ("a.jpg", '["лиса"]', "fox")]
    want_images = [str(tmp_path / "a.jpg"), str(tmp_path / "sub/b.jpg"), "/abs/c.jpg", home + "/d.jpg"]
    want_caps = [(0, "кот", "cat"), (0, "кошка", None), (1, "собака", "dog"), (1, "пёс", "hound"),
                 (3, "дом", None), (1, "щенок", "puppy"), (0, "лиса", "fox")]
    with open(tmp_path / "t.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption", "caption_en"])
        w.writerows([(i, c, e or "") for i, c, e in rows])
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"image": i, "caption": c, "caption_en": e}, ensure_ascii=False)
                                                for i, c, e in rows), encoding="utf-8")
    pq.write_table(pa.table({"image": [r[0] for r in rows], "caption": [r[1] for r in rows],
                             "caption_en": [r[2] for r in rows]}), tmp_path / "t.parquet")
    for ext, first in (("csv", 2), ("jsonl", 1), ("parquet", 1)):
        p = read_pairs([str(tmp_path / f"t.{ext}")])
        assert [r.key for r in p.images] == want_images, ext
        assert p.captions == want_caps, ext
        assert p.problems == [{"where": f"{tmp_path / f't.{ext}'}:{3 + first}", "reason": "empty image"},
                              {"where": f"{tmp_path / f't.{ext}'}:{4 + first}", "reason": "empty caption"}], ext


def test_malformed_table_rows_are_named_by_their_line(tmp_path):
    """A CSV row with the wrong number of fields (an unquoted comma, a missing column) is skipped and
    listed with the line it starts on, counting the physical lines of quoted multi-line captions and
    blank lines; a quote that is never closed (which would swallow every later row) stops the read
    naming its line, in CSV and in the leniently read TSV; a JSONL line that is not an object is named."""
    (tmp_path / "t.csv").write_text(
        'image,caption\n'                 # 1
        'a.jpg,"кот\nна двух строках"\n'  # 2-3
        '\n'                              # 4: blank
        'b.jpg,собака, пёс\n'              # 5: an unquoted comma
        'c.jpg\n'                          # 6: no caption column
        'd.jpg,\n'                         # 7: an empty caption
        'e.jpg,"лиса"\n', encoding="utf-8")  # 8
    p = read_pairs([str(tmp_path / "t.csv")])
    assert [c[1] for c in p.captions] == ["кот\nна двух строках", "лиса"]
    t = str(tmp_path / "t.csv")
    assert p.problems == [{"where": f"{t}:5", "reason": "3 fields where the header has 2 (row skipped)"},
                          {"where": f"{t}:6", "reason": "1 field where the header has 2 (row skipped)"},
                          {"where": f"{t}:7", "reason": "empty caption"}]
    for ext, sep in (("csv", ","), ("tsv", "\t")):
        (tmp_path / f"r.{ext}").write_text(f'image{sep}caption\na.jpg{sep}кот\nb.jpg{sep}"конь\nc.jpg{sep}x\n'
                                           f'd.jpg{sep}y\n', encoding="utf-8")
        with pytest.raises(ValueError, match=f"r.{ext}:3: a quoted field opens here and is never closed"):
            read_pairs([str(tmp_path / f"r.{ext}")])
    # TSV reads quoted words at a caption's start as words, as pandas and img2dataset write them
    (tmp_path / "q.tsv").write_text('image\tcaption\tcaption_en\na.jpg\t"the joker" actor\tx\n'
                                    'b.jpg\t"на двух\nстроках"\ttwo lines\n', encoding="utf-8")
    assert [c[1] for c in read_pairs([str(tmp_path / "q.tsv")]).captions] == ["the joker actor", "на двух\nстроках"]
    (tmp_path / "s.csv").write_text('image,caption\na.jpg,"кот" и пёс\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"s.csv:2: .*a quote inside one is doubled"):
        read_pairs([str(tmp_path / "s.csv")])
    (tmp_path / "j.jsonl").write_text('{"image": "a.jpg", "caption": "кот"}\n\n{"image": "", "caption": "x"}\n'
                                      '["b.jpg", "пёс"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"j.jsonl:4: expected a JSON object"):
        read_pairs([str(tmp_path / "j.jsonl")])
    (tmp_path / "j.jsonl").write_text('{"image": "a.jpg", "caption": "кот"}\n\n{"image": "", "caption": "x"}\n',
                                      encoding="utf-8")
    assert read_pairs([str(tmp_path / "j.jsonl")]).problems == [
        {"where": f"{tmp_path / 'j.jsonl'}:3", "reason": "empty image"}]


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    """Excel's "CSV UTF-8" and Notepad start files with a byte-order mark: the first column is still
    "image", the first label still "кот" (not "\\ufeffкот", another text to the tokenizer), and a
    --classnames JSON still reads."""
    from langclip.datasets import english_classnames
    from langclip.files import read_names

    bom = "\ufeff".encode()
    (tmp_path / "t.csv").write_bytes(bom + "image,caption\na.jpg,кот\n".encode())
    assert read_pairs([str(tmp_path / "t.csv")]).captions == [(0, "кот", None)]
    (tmp_path / "labels.txt").write_bytes(bom + "кот\nпёс\n".encode())
    assert read_names([str(tmp_path / "labels.txt")], "labels", "") == ["кот", "пёс"]
    (tmp_path / "names.json").write_bytes(bom + '{"en": ["cat"], "ru": ["кот"]}'.encode())
    assert english_classnames(str(tmp_path / "names.json")) == ["cat"]
    assert read_names([str(tmp_path / "names.json")], "classnames", "", lang="ru") == ["кот"]


def test_a_table_of_urls_says_to_download_them_first(tmp_path):
    """A table as a dataset site publishes it (image URLs): the rows are named, the build says how to
    download them; a URL among local paths is skipped and named; file:// URLs are paths."""
    from langclip.tables import URL_PROBLEM
    from langclip.pairs import read_images

    (tmp_path / "urls.csv").write_text("url,caption\nhttps://example.com/1.jpg,кот\nhttp://example.com/2.jpg,пёс\n",
                                       encoding="utf-8")
    for read in (read_pairs, read_images):
        with pytest.raises(ValueError, match=r"2 rows hold URLs \(first: .*urls.csv:2\).*img2dataset --url_list"):
            read([str(tmp_path / "urls.csv")])
    make_image(tmp_path / "a.jpg", 0)
    (tmp_path / "mixed.jsonl").write_text(json.dumps({"image": (tmp_path / "a.jpg").as_uri(), "caption": "кот"}) + "\n"
                                          + json.dumps({"image": "s3://bucket/b.jpg", "caption": "пёс"}) + "\n",
                                          encoding="utf-8")
    p = read_pairs([str(tmp_path / "mixed.jsonl")])
    assert [r.path for r in p.images] == [str(tmp_path / "a.jpg")] and p.captions == [(0, "кот", None)]
    assert p.problems == [{"where": f"{tmp_path / 'mixed.jsonl'}:2", "reason": URL_PROBLEM}]
    assert [r.path for r in read_images([str(tmp_path / "mixed.jsonl")]).images] == [str(tmp_path / "a.jpg")]


def test_a_table_made_on_windows_names_its_pictures_with_backslashes(tmp_path):
    """A table written on Windows names its pictures "images\\0001.jpg": read here, every row was "not found".
    Such a relative path is the file it names with "/" when that exists and no file bears the name as
    written; absolute Windows paths and a file whose name holds a backslash stay as written."""
    (tmp_path / "images").mkdir()
    make_image(tmp_path / "images" / "0001.jpg", 0)
    make_image(tmp_path / "back\\slash.jpg", 1)     # a Linux name holding a backslash
    (tmp_path / "win.csv").write_text("image,caption\nimages\\0001.jpg,кот\nback\\slash.jpg,пёс\n"
                                      "C:\\data\\x.jpg,конь\nimages\\missing.jpg,ёж\n", encoding="utf-8")
    p = read_pairs([str(tmp_path / "win.csv")])
    assert [r.path for r in p.images] == [str(tmp_path / "images" / "0001.jpg"), str(tmp_path / "back\\slash.jpg"),
                                          str(tmp_path / "C:\\data\\x.jpg"), str(tmp_path / "images\\missing.jpg")]


def test_json_documents_a_json_array_and_cocos_captions_file(tmp_path):
    """A .json that is one document, not JSON lines: a pretty-printed file was "invalid JSON" at line 1, a JSON
    array "expected a JSON object, got list", COCO's captions file "which column holds the image?". An array
    of row objects and COCO's captions file (a row per caption; the picture found beside the file, else in
    the folder its name gives, COCO's layout) are read; any other document is named with what is read."""
    from langclip.tokenizer.train import read_texts

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    make_image(root / "train2017" / "000000000009.jpg", 0)
    coco = {"info": {}, "images": [{"id": 9, "file_name": "000000000009.jpg"}, {"id": 25, "file_name": "000000000025.jpg"}],
            "annotations": [{"id": 1, "image_id": 9, "caption": "кот на диване"}, {"id": 2, "image_id": 9, "caption": "кошка"},
                            {"id": 3, "image_id": 25, "caption": "жираф"}, {"id": 4, "image_id": 77, "caption": "ничей"}]}
    f = root / "annotations" / "captions_train2017.json"
    for indent in (None, 2):
        f.write_text(json.dumps(coco, ensure_ascii=False, indent=indent), encoding="utf-8")
        p = read_pairs([str(f)])
        assert [r.path for r in p.images] == [str(root / "train2017" / "000000000009.jpg"),
                                              str(root / "annotations" / "000000000025.jpg")]   # not there: named later
        assert p.captions == [(0, "кот на диване", None), (0, "кошка", None), (1, "жираф", None)]
        assert p.problems == [{"where": f"{f}:4", "reason": "empty image"}]
    assert read_texts(f, column="caption") == ["кот на диване", "кошка", "жираф", "ничей"]
    make_image(tmp_path / "a.jpg", 1)
    (tmp_path / "rows.json").write_text(json.dumps([{"image": "a.jpg", "caption": ["кот", "кошка"], "caption_en": ["cat", "a cat"]}],
                                                   ensure_ascii=False, indent=2), encoding="utf-8")
    p = read_pairs([str(tmp_path / "rows.json")])
    assert p.captions == [(0, "кот", "cat"), (0, "кошка", "a cat")]
    (tmp_path / "other.json").write_text(json.dumps({"data": [1], "version": 2}, indent=2), encoding="utf-8")
    with pytest.raises(ValueError, match=r"other\.json: one JSON document \(keys \['data', 'version'\]\); langclip reads JSON "
                                         r"lines .*a JSON array of row objects, or COCO's captions file"):
        read_pairs([str(tmp_path / "other.json")])
    (tmp_path / "mixed.json").write_text(json.dumps([{"image": "a.jpg", "caption": "кот"}, "кот"]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"mixed\.json: item 2 of its JSON array is a str, not a row object"):
        read_pairs([str(tmp_path / "mixed.json")])


def test_list_columns_named_columns_and_sidecar_folders(tmp_path):
    """A Parquet table with a list<string> caption column (COCO-style, five captions an image) under
    names given by --image-column/--caption-column/--english-column; a wrong column name is named with
    the table's columns; a folder of pictures with sidecar .txt captions (one a line; a picture without
    one is a listed problem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pic": ["a.jpg", "b.jpg"], "ru": [["кот", "кошка", " "], ["пёс"]],
                             "en": [["cat", "a cat", "x"], ["dog"]]}), tmp_path / "coco.parquet")
    p = read_pairs([str(tmp_path / "coco.parquet")], image_column="pic", caption_column="ru", english_column="en")
    assert [r.key for r in p.images] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert p.captions == [(0, "кот", "cat"), (0, "кошка", "a cat"), (1, "пёс", "dog")]
    with pytest.raises(ValueError, match=r"no caption column 'caption'.*'pic', 'ru', 'en'"):
        read_pairs([str(tmp_path / "coco.parquet")], image_column="pic", caption_column="caption")
    with pytest.raises(ValueError, match="which column holds the image"):
        read_pairs([str(tmp_path / "coco.parquet")])
    d = tmp_path / "folder"
    (d / "sub").mkdir(parents=True)
    for name in ("x.jpg", "sub/y.png", "z.jpg"):
        (d / name).write_bytes(b"")
    (d / "x.txt").write_text("рыжий кот\n\nкот на окне\n", encoding="utf-8")
    (d / "sub" / "y.txt").write_text("собака", encoding="utf-8")
    f = read_pairs([str(d)])
    assert [r.key for r in f.images] == [str(d / "sub" / "y.png"), str(d / "x.jpg")]
    assert f.captions == [(0, "собака", None), (1, "рыжий кот", None), (1, "кот на окне", None)]
    assert f.problems == [{"where": str(d / "z.jpg"), "reason": "no sidecar .txt caption"}]


def test_automatic_workers_share_the_cores(monkeypatch):
    import langclip.cache.embed as cache_mod

    monkeypatch.setattr(cache_mod.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cache_mod.auto_workers() == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert cache_mod.auto_workers() == 1
    monkeypatch.setattr(cache_mod.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cache_mod.auto_workers() == 0


def test_wrong_base_folder_stops_early_and_names_it(tmp_path, pair_data, tiny_arch, tiny_clip, capsys):
    """A table moved away from its images: every path misses. The build stops with the folder the
    paths were resolved against and the first failures, instead of "succeeding" with zero images; a
    corrected rerun into the same --out is not refused."""

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "pairs.csv").write_text((pair_data / "pairs.csv").read_text(encoding="utf-8"), encoding="utf-8")
    args = ["cache", "build", "--clip", tiny_arch, "--weights", tiny_clip[1], "--out", str(tmp_path / "c"),
            "--workers", "0", "--batch-size", "4"]
    assert main(args + ["--data", str(moved / "pairs.csv")]) == 2
    err = capsys.readouterr().err
    assert "16 of the first 16 images could not be read" in err, err
    assert f"resolved against the table's folder ({moved.resolve()})" in err
    assert str(moved / "img" / "00.png") in err and "--max-failure-rate" in err
    assert not (tmp_path / "c" / "manifest.json").exists()
    assert main(args + ["--data", str(pair_data / "pairs.csv")]) == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["num_images"] == 16
