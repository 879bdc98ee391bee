"""Tables that hold their pictures (Hugging Face datasets' Parquet): refused with what to do by the readers of
paths, written out as webdataset shards by `langclip data shards`, which the cache and the index read."""
import hashlib
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from langclip.cli import main
from langclip.pairs import read_images, read_pairs


def _encoded(seed: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24 + seed, 16), (seed * 20 % 256, 90, 200)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture()
def hf_tables(tmp_path):
    """Two tables as Hugging Face datasets write them: an Image feature (struct of bytes and path) with a caption
    and an English one, and a plain binary column with a list of captions a row; some rows without a picture."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "local.png").write_bytes(_encoded(1, "PNG"))   # a struct holding a local file's path alone
    a_pics = [{"bytes": _encoded(0, "JPEG"), "path": "0001.jpg"}, {"bytes": None, "path": "local.png"},
              None, {"bytes": b"not a picture at all", "path": "notes"}, {"bytes": _encoded(4, "WEBP"), "path": None}]
    a = pa.table({"image": pa.array(a_pics, type=image),
                  "caption": ["кот на\nдиване", "собака", "пусто", "шум", "красный круг"],
                  "caption_en": ["a cat on a sofa", "a dog", "empty", "noise", "a red circle"]})
    pq.write_table(a, tmp_path / "train-00000-of-00002.parquet", row_group_size=2)
    b_pics = [_encoded(5, "JPEG"), _encoded(6, "GIF"), _encoded(7, "JPEG")]
    b = pa.table({"jpg": pa.array(b_pics, type=pa.binary()), "captions": [["звезда", "жёлтая звезда"], ["ромб"], []],
                  "english": [["a star", "a yellow star"], ["a rhombus"], []]})
    pq.write_table(b, tmp_path / "train-00001-of-00002.parquet")
    return tmp_path, a_pics, b_pics


def _members(tar_path):
    with tarfile.open(tar_path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def test_the_readers_of_paths_refuse_a_table_of_pictures_and_name_the_command(hf_tables, tmp_path):
    """Before, a table of pictures was read whole into memory and every row's bytes taken for a path (all
    failing "not found"); the corpus reader still reads its captions, without the pictures' bytes."""
    from langclip.tokenizer.train import read_texts

    d, _, _ = hf_tables
    f = d / "train-00000-of-00002.parquet"
    for read in (lambda: read_pairs([str(f)]), lambda: read_images([str(f)])):
        with pytest.raises(ValueError, match=r"column 'image' holds the pictures themselves.*langclip data shards "
                                             r"--data .*train-00000-of-00002\.parquet --out shards/"):
            read()
    assert read_texts(f, column="caption") == ["кот на\nдиване", "собака", "пусто", "шум", "красный круг"]


def test_data_shards_writes_the_pictures_as_they_are_and_resumes(hf_tables, capsys, monkeypatch):
    from langclip.shards import write_shards

    d, a_pics, b_pics = hf_tables
    out = d / "shards"
    argv = ["data", "shards", "--data", str(d / "train-{00000..00001}-of-00002.parquet"), "--out", str(out),
            "--shard-size", "3"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    rec = json.loads((out / "shards.json").read_text())
    assert rec["rows"] == 8 and rec["shards"] == 3 and rec["written"] == 6 and rec["done"]
    assert rec["data"] == str(out / "{00000..00002}.tar") and f"--data '{rec['data']}'" in said
    assert [(p["where"].rsplit("/", 1)[1], p["reason"]) for p in rec["problems"]] == [
        ("train-00000-of-00002.parquet:3", "no picture"),
        ("train-00000-of-00002.parquet:4", "bytes of no picture format langclip reads")]
    # what the shards hold, read with tarfile against the tables' own values
    got = {}
    for k in range(3):
        got.update(_members(out / f"{k:05d}.tar"))
    assert got["000000000.jpg"] == a_pics[0]["bytes"] and got["000000001.png"] == (d / "local.png").read_bytes()
    assert got["000000004.webp"] == a_pics[4]["bytes"]
    assert got["000000005.jpg"] == b_pics[0] and got["000000006.gif"] == b_pics[1] and got["000000007.jpg"] == b_pics[2]
    assert got["000000000.txt"].decode() == "кот на диване"                      # one caption a line
    assert got["000000005.txt"].decode() == "звезда\nжёлтая звезда" and "000000007.txt" not in got
    assert json.loads(got["000000000.json"]) == {"source": str(d / "train-00000-of-00002.parquet") + ":1",
                                                 "path": "0001.jpg", "caption_en": "a cat on a sofa"}
    assert not any(n.startswith(("000000002", "000000003")) for n in got)
    # the cache's reader takes them: pictures, captions, English
    pairs = read_pairs([rec["data"]])
    assert len(pairs.images) == 6
    assert sorted((c, e) for _, c, e in pairs.captions)[:3] == [("жёлтая звезда", "a yellow star"), ("звезда", "a star"),
                                                               ("кот на диване", "a cat on a sofa")]
    # an interrupted run: a shard half written, one missing; the rerun writes the same bytes
    digests = {k: hashlib.sha256((out / f"{k:05d}.tar").read_bytes()).hexdigest() for k in range(3)}
    (out / "00001.tar").unlink()
    (out / "00001.tar.tmp").write_bytes(b"half")
    assert main(argv) == 0
    rec = json.loads((out / "shards.json").read_text())
    assert rec["resumed_shards"] == 2 and rec["written"] == 2 and not (out / "00001.tar.tmp").exists()
    assert {k: hashlib.sha256((out / f"{k:05d}.tar").read_bytes()).hexdigest() for k in range(3)} == digests
    assert main(argv) == 0   # all complete: nothing written again, the skipped rows still recorded
    rec = json.loads((out / "shards.json").read_text())
    assert (rec["written"], rec["resumed_shards"], len(rec["problems"])) == (0, 3, 2)
    # a run stopped before its first shard was complete keeps what the complete shards skipped
    (out / "00002.tar").unlink()
    with monkeypatch.context() as m:
        m.setattr("langclip.shards.tarfile.open", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            write_shards([str(d / "train-{00000..00001}-of-00002.parquet")], out, shard_size=3, progress=False)
    assert main(argv) == 0 and len(json.loads((out / "shards.json").read_text())["problems"]) == 2
    # `langclip info` names the folder and the table (a table is no langclip folder: what to do with it)
    assert main(["info", str(out), str(d / "train-00000-of-00002.parquet")]) == 2
    said = capsys.readouterr().out
    assert "webdataset shards written by `langclip data shards`" in said and "8 rows in 3 shards, 2 skipped" in said
    assert "a table (5 rows; columns image, caption, caption_en)" in said and "column 'image' holds the pictures" in said
    # other settings into the same folder: refused, nothing overwritten
    assert "holds shards of other tables or settings" in _fails(argv[:-1] + ["4"], capsys)
    assert {k: hashlib.sha256((out / f"{k:05d}.tar").read_bytes()).hexdigest() for k in range(3)} == digests


def _fails(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def test_data_shards_names_what_it_cannot_read(hf_tables, tmp_path, capsys):
    d, _, _ = hf_tables
    pq.write_table(pa.table({"image": ["a.jpg"], "caption": ["кот"]}), tmp_path / "paths.parquet")
    err = _fails(["data", "shards", "--data", str(tmp_path / "paths.parquet"), "--out", str(tmp_path / "s1")], capsys)
    assert "paths.parquet: no column holds pictures" in err and "['image', 'caption']" in err
    err = _fails(["data", "shards", "--data", str(d / "train-00000-of-00002.parquet"), "--image-column", "caption",
                  "--out", str(tmp_path / "s2")], capsys)
    assert "column 'caption' holds string, not pictures' bytes" in err
    (tmp_path / "a.csv").write_text("image,caption\na.jpg,кот\n")
    err = _fails(["data", "shards", "--data", str(tmp_path / "a.csv"), "--out", str(tmp_path / "s3")], capsys)
    assert "a.csv: `data shards` reads Parquet tables" in err
    assert not any((tmp_path / n).exists() for n in ("s1", "s2", "s3"))
