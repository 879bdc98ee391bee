"""Search: the index (build from folders, tables, tar shards or a cache; update by path, size and mtime;
exact and approximate search), the query model's tower check, the command line, and the HTTP API with
every bad request it must refuse."""
import io
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_dng, make_image
from langclip.cli import main
from langclip.config import IndexConfig
from langclip.search import Index, QueryModel, build_index, update_index


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "photos"
    (d / "2024" / "summer").mkdir(parents=True)
    for i in range(24):
        make_image(d / ("2024/summer" if i % 3 == 0 else "") / f"{i:02d}.jpg", i, size=(48, 36))
    make_image(d / "scan.png", 99)
    (d / "broken.jpg").write_bytes(b"not a picture")
    (d / "notes.txt").write_text("not an image")
    return d


def _build(photos, tiny_arch, tiny_clip, out, **kw):
    return build_index(IndexConfig(data=[str(photos)], out=str(out), clip=tiny_arch, weights=tiny_clip[1], workers=0,
                                   **kw), progress=False)


def test_a_photo_folders_hidden_thumbnail_and_recycle_folders_are_left_out(tmp_path, tiny_arch, tiny_clip, capsys):
    """A NAS's photo share holds, besides the photos, Synology's thumbnails of each (@eaDir), a recycle bin and
    snapshots (every photo again), hidden folders (.thumbnails, .git) and macOS's AppleDouble files ("._a.jpg",
    metadata named like the photo): indexed, they filled the results with copies and the failures with files
    that are no pictures. They are left out and named; --exclude leaves out more, exclude=[] enters every folder
    (as rclip's --exclude-dir); `index update` keeps the build's choice."""
    root = tmp_path / ".album"   # the folder given is entered even when hidden
    pictures = ["a.jpg", "2024/b.png", "2024/Screens/c.jpg", "#recycled-not/d.jpg", "x@eaDir/e.jpg"]
    skipped = ["@eaDir/a.jpg/SYNOPHOTO_THUMB_M.jpg", "#recycle/old.jpg", "#snapshot/GMT+03_2026-01-01/a.jpg",
               ".thumbnails/large/f.png", "2024/.git/g.jpg", "$RECYCLE.BIN/S-1-5/h.jpg", "__MACOSX/i.jpg",
               "2024/@eaDir/b.png/SYNOFILE_THUMB_S.jpg"]
    for i, rel in enumerate(pictures + skipped):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make_image(root / rel, i, size=(40, 30))
    (root / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "2024" / "._b.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")

    def build(out, *extra):
        assert main(["index", "build", "--data", str(root), "--out", str(tmp_path / out), "--clip", tiny_arch,
                     "--weights", tiny_clip[1], "--workers", "0", *extra]) == 0
        idx = Index(tmp_path / out)
        return sorted(os.path.relpath(idx.source(i), root) for i in idx.ids), idx.manifest["num_failures"]

    assert build("idx") == (sorted(pictures), 0)
    err = capsys.readouterr().err
    assert "8 folders left out" in err and os.path.join(str(root), "#recycle") in err
    assert build("more", "--exclude", "Screens", "--exclude", "#rec*") == \
        (sorted(set(pictures) - {"2024/Screens/c.jpg", "#recycled-not/d.jpg"}), 0)
    assert build("all", "exclude=[]") == (sorted(pictures + skipped), 0)
    shutil.rmtree(root / "#snapshot")
    make_image(root / "#recycle" / "new.jpg", 50, size=(40, 30))
    assert update_index(tmp_path / "idx", progress=False)["added"] == 0
    assert update_index(tmp_path / "all", progress=False)["added"] == 1
    assert update_index(tmp_path / "all", progress=False, exclude=["#*"])["count"] == len(pictures + skipped) - 3
    for bad in ("@eaDir", ["2024/Screens"]):
        with pytest.raises(ValueError, match="exclude is a list of folder names"):
            _build(root, tiny_arch, tiny_clip, tmp_path / "bad", exclude=bad)


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch, capsys):
    """A share's folder the user may not list (another user's, a NAS permission) was passed over in silence by
    os.walk; its pictures were simply missing. It is named, and the rest is listed. (Tests run as root, whom
    permissions do not stop: the listing is refused by a stand-in for os.scandir.)"""
    from langclip.folders import files_under

    for rel in ("a.jpg", "private/b.jpg", "open/c.jpg"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        make_image(tmp_path / rel, 1)
    scandir = os.scandir

    def refuse(path):
        if os.path.basename(str(path)) == "private":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    assert files_under(tmp_path, (".jpg",)) == [str(tmp_path / "a.jpg"), str(tmp_path / "open" / "c.jpg")]
    assert f"{tmp_path / 'private'}: not read (Permission denied); its pictures are left out" in capsys.readouterr().err


def test_a_picture_whose_name_is_not_utf8_is_left_out_and_named(tmp_path, tiny_arch, tiny_clip):
    """A folder copied from an older system keeps names in its encoding ("кот.jpg" in cp1251): Python reads
    them with stand-ins that no table, JSON file or page can hold, and `index build` failed after embedding
    every picture ("surrogates not allowed"), the same again on resume. Such a picture (a file, a folder's
    sidecar pair, a tar member) is now left out as a problem that names its bytes and what to do; the rest
    is indexed."""
    from langclip.pairs import read_pairs

    ph = tmp_path / "ph"
    ph.mkdir()
    make_image(ph / "ok.jpg", 1, size=(40, 30))
    make_image(ph / "x.jpg", 2, size=(40, 30))
    cp1251 = bytes(ph) + "/кот.jpg".encode("cp1251")
    os.rename(bytes(ph / "x.jpg"), cp1251)
    (ph / "ok.txt").write_text("кот", encoding="utf-8")
    open(cp1251[:-4] + b".txt", "w").write("кот")
    with tarfile.open(tmp_path / "s.tar", "w", format=tarfile.GNU_FORMAT, encoding="cp1251") as tf:
        for name in ("кот.jpg", "a.jpg"):
            tf.add(ph / "ok.jpg", arcname=name)
    out = tmp_path / "idx"
    assert main(["index", "build", "--data", str(ph), str(tmp_path / "s.tar"), "--out", str(out), "--clip", tiny_arch,
                 "--weights", tiny_clip[1], "--workers", "0"]) == 0
    idx = Index(out)
    assert sorted(os.path.basename(idx.source(i)) for i in idx.ids) == ["ok.jpg", "s.tar::a.jpg"]
    named = {f["where"]: f["reason"] for f in idx.manifest["failures"]}
    file, member = str(ph) + "/\\xea\\xee\\xf2.jpg", str(tmp_path / "s.tar") + "::\\xea\\xee\\xf2"
    assert sorted(named) == [file, member] and named[member] == "member name is not UTF-8: tables cannot hold it"
    assert named[file].startswith("its name is not UTF-8") and "convmv -r -f cp1251 -t utf-8" in named[file]
    assert update_index(out, progress=False)["count"] == 2
    pairs = read_pairs([str(ph)])   # a training folder of pictures with sidecar captions
    assert [r.path for r in pairs.images] == [str(ph / "ok.jpg")]
    assert [p["where"] for p in pairs.problems] == [str(ph) + "/\\xea\\xee\\xf2.jpg"]


def test_raw_photos_are_indexed_through_the_picture_they_hold(tmp_path, tiny_arch, tiny_clip, monkeypatch, capsys):
    """A photographer's folder holds RAW photos (DNG, CR2, NEF, ARW, ...), which were not listed at all. A RAW
    photo is indexed through the JPEG preview the camera embedded (turned upright by the camera's orientation),
    or LibRaw's development where that preview is too small; one beside a JPEG of its name (a camera writing
    both) is left to the JPEG, as rclip does. The DNGs are written by hand (conftest.make_dng); the reference is
    the same preview saved as a plain JPEG and indexed as one."""
    rng = np.random.default_rng(3)
    pics = {n: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for n in ("a", "b", "o")}
    ph, ref = tmp_path / "ph", tmp_path / "ref"
    ph.mkdir(), ref.mkdir()
    (ref / "a.jpg").write_bytes(make_dng(ph / "a.DNG", pics["a"]))
    make_dng(ph / "b.nef", pics["b"])
    make_image(ph / "b.jpg", 5, size=(40, 30))                       # RAW + JPEG: the JPEG is the photo
    make_dng(ph / "o.dng", pics["o"], orientation=6)                  # a portrait: turned upright
    small = io.BytesIO()
    Image.fromarray(pics["a"]).resize((64, 48)).save(small, "JPEG")
    make_dng(ph / "s.cr2", pics["a"], preview=small.getvalue())        # an old camera's thumbnail: developed
    idx = Index(_build(ph, tiny_arch, tiny_clip, tmp_path / "idx"))
    by_name = {os.path.basename(idx.source(i)): i for i in idx.ids}
    assert sorted(by_name) == ["a.DNG", "b.jpg", "o.dng", "s.cr2"] and idx.manifest["num_failures"] == 0
    plain = Index(_build(ref, tiny_arch, tiny_clip, tmp_path / "ref_idx"))
    assert np.allclose(idx.vector(by_name["a.DNG"]), plain.vector(plain.ids[0]), atol=2e-3)
    assert Image.open(io.BytesIO(idx.thumbnail(by_name["o.dng"]))).size[0] < Image.open(
        io.BytesIO(idx.thumbnail(by_name["a.DNG"]))).size[0]             # portrait vs landscape
    assert idx.image_bytes(by_name["a.DNG"])[:3] == b"\xff\xd8\xff"          # the page shows the preview
    capsys.readouterr()   # a RAW photo as the query (search --image; predict, similarity: expand_images)
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", tiny_clip[1], "--arch", tiny_arch,
                 "--image", str(ph / "o.dng"), "-k", "1", "--paths"]) == 0
    assert capsys.readouterr().out.strip() == str(ph / "o.dng")
    from langclip.pictures import expand_images
    assert expand_images([str(ph / "s.cr2")]) == ([str(ph / "s.cr2")], 0)
    # without rawpy: a folder of RAW photos stops with what to install; allowed to go on, each is skipped
    monkeypatch.setitem(sys.modules, "rawpy", None)
    with pytest.raises(ValueError, match=r"(?s)3 of the first 4 images could not be read.*needs rawpy"):
        _build(ph, tiny_arch, tiny_clip, tmp_path / "idx2")
    idx = Index(_build(ph, tiny_arch, tiny_clip, tmp_path / "idx3", max_failure_rate=1.0))
    assert len(idx) == 1 and idx.manifest["num_failures"] == 3
    assert all("needs rawpy (pip install 'langclip[search]')" in f["reason"] for f in idx.manifest["failures"])


def test_build_searches_itself_first_and_refuses_another_tower(tmp_path, photos, tiny_arch, tiny_clip, trained_run):
    idx = Index(_build(photos, tiny_arch, tiny_clip, tmp_path / "idx"))
    assert len(idx) == 25 and idx.manifest["num_failures"] == 1 and "broken.jpg" in idx.manifest["failures"][0]["source"]
    assert idx.manifest["change_detection"] == "path + size + mtime_ns" and idx.manifest["ann"] is None
    assert idx.tower_sha256 and idx.embeddings.dtype == np.float16
    assert np.allclose(np.linalg.norm(np.asarray(idx.embeddings, np.float32), axis=1), 1, atol=2e-3)
    # the embeddings are the frozen tower's, as the cache computes them
    clip, _ = tiny_clip
    from langclip.model import image_transform, preprocess_cfg, LangCLIP, model_config

    tf = image_transform(preprocess_cfg(LangCLIP(model_config(tiny_arch))))
    i = idx.items["source"].index(str(photos / "05.jpg"))
    with torch.no_grad():
        want = torch.nn.functional.normalize(clip.encode_image(tf(Image.open(photos / "05.jpg"))[None]), dim=-1)[0]
    assert np.abs(idx.vector(idx.items["id"][i]) - want.numpy()).max() < 2e-3
    hits = idx.search(idx.vector(7), 5)[0]
    assert hits[0][0] == 7 and hits[0][1] == pytest.approx(1, abs=2e-3) and len(hits) == 5
    assert [h[1] for h in hits] == sorted((h[1] for h in hits), reverse=True)
    assert Image.open(io.BytesIO(idx.thumbnail(7))).size[0] <= 256
    # a text tower trained on this image tower may query it; another tower is refused, both digests named
    QueryModel(trained_run).check(idx)
    other = torch.load(tiny_clip[1])
    other["visual.proj"] = other["visual.proj"] * 2
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=idx.tower_sha256[:12]):
        QueryModel(tmp_path / "other.pt", arch=tiny_arch).check(idx)


def test_update_embeds_only_what_changed(tmp_path, photos, tiny_arch, tiny_clip):
    out = _build(photos, tiny_arch, tiny_clip, tmp_path / "idx")
    before = Index(out)
    ids = dict(zip(before.items["source"], before.items["id"]))
    v3 = before.vector(ids[str(photos / "04.jpg")])
    t3 = before.thumbnail(ids[str(photos / "04.jpg")])
    before.close()
    (photos / "01.jpg").unlink()                                  # deleted
    make_image(photos / "new.jpg", 500, size=(48, 36))            # new
    p = photos / "2024" / "summer" / "00.jpg"                     # changed content, newer mtime
    make_image(p, 777, size=(48, 36))
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    r = update_index(out, progress=False, workers=0)
    assert (r["added"], r["changed"], r["removed"], r["embedded"], r["failed"]) == (1, 1, 1, 2, 0)
    assert r["kept"] == 23 and r["count"] == 25                    # broken.jpg, unchanged, is not tried again
    after = Index(out)
    now = dict(zip(after.items["source"], after.items["id"]))
    assert now[str(photos / "04.jpg")] == ids[str(photos / "04.jpg")]          # ids are stable
    assert np.array_equal(after.vector(now[str(photos / "04.jpg")]), v3)      # kept rows are not recomputed
    assert after.thumbnail(now[str(photos / "04.jpg")]) == t3                    # thumbnails appended, not redone
    assert all(Image.open(io.BytesIO(after.thumbnail(i))).size[0] > 0 for i in now.values())
    assert now[str(photos / "new.jpg")] >= 26 and str(photos / "01.jpg") not in now
    assert now[str(p)] != ids[str(p)]                                          # a changed picture gets a new id
    assert after.search(after.vector(now[str(p)]), 1)[0][0][0] == now[str(p)]
    assert update_index(out, progress=False, workers=0)["embedded"] == 0         # nothing changed: nothing done


def test_update_after_most_pictures_are_deleted_compacts_the_thumbnails(tmp_path, photos, tiny_arch, tiny_clip):
    """When more than half of the thumbnail file would be left unreferenced, `index update` rewrites it
    compactly: the kept pictures keep their thumbnails byte for byte, a new one gets its own, and the
    file shrinks."""
    out = _build(photos, tiny_arch, tiny_clip, tmp_path / "idx")
    before = Index(out)
    thumbs = {src: before.thumbnail(i) for src, i in zip(before.items["source"], before.items["id"])}
    before.close()
    files = [f for f in out.iterdir() if f.is_file()]
    size_before = {f.name: f.stat().st_size for f in files}
    keep = {str(photos / "04.jpg"), str(photos / "10.jpg"), str(photos / "scan.png")}
    for src in thumbs:
        if src not in keep:
            Path(src).unlink()
    make_image(photos / "new.jpg", 500, size=(48, 36))
    r = update_index(out, progress=False, workers=0)
    assert (r["added"], r["removed"], r["count"]) == (1, len(thumbs) - 3, 4)
    after = Index(out)
    now = dict(zip(after.items["source"], after.items["id"]))
    assert sorted(now) == sorted(keep | {str(photos / "new.jpg")})
    assert all(after.thumbnail(now[src]) == thumbs[src] for src in keep)
    new = Image.open(io.BytesIO(after.thumbnail(now[str(photos / "new.jpg")])))
    assert new.size == (48, 36) and new.format == "JPEG"
    shrunk = [n for n, b in size_before.items() if (out / n).is_file() and (out / n).stat().st_size < b / 2]
    assert shrunk, size_before                      # the thumbnail file was rewritten, not appended to
    assert not list(out.glob("*.tmp"))


def test_a_macos_photos_library_gives_its_originals_once(tmp_path, tiny_arch, tiny_clip, capsys):
    """~/Pictures on a Mac holds "Photos Library.photoslibrary": the photos as imported (originals/, or Masters/ in
    an iPhoto library) beside Photos' resized copies of each (resources/derivatives, .../masters), its edit renders
    and caches. Indexed whole, every photo came back two to four times. Only the originals are entered now (named
    with the folders left out); exclude=[] enters everything."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    root = tmp_path / "Pictures"
    lib = root / "Photos Library.photoslibrary"
    originals = ["originals/0/0A1B.heic", "originals/5/5C2D.jpeg"]
    copies = ["resources/derivatives/0/0A1B_1_105_c.jpeg", "resources/derivatives/masters/5/5C2D_4_5005_c.jpeg",
              "resources/renders/0/0A1B_1_201_a.jpeg", "private/com.apple.photoanalysisd/x.jpg", "scopes/s.jpg"]
    old = root / "iPhoto Library.photolibrary"
    for n, f in enumerate([lib / x for x in originals + copies] + [old / "Masters/2012/IMG_1.JPG", old / "Thumbnails/t.jpg",
                                                                   root / "trip/a.jpg"]):
        f.parent.mkdir(parents=True, exist_ok=True)
        make_image(f, n, size=(48, 36))
    (lib / originals[0]).unlink()
    Image.open(make_image(tmp_path / "h.png", 0, size=(48, 36))).save(lib / originals[0], "HEIF", quality=90)
    out = _build(root, tiny_arch, tiny_clip, tmp_path / "idx")
    names = sorted(os.path.relpath(x, root) for x in Index(out).items["source"])
    assert names == sorted([f"{lib.name}/{x}" for x in originals] + [f"{old.name}/Masters/2012/IMG_1.JPG", "trip/a.jpg"])
    assert f"{lib / 'resources'}" in capsys.readouterr().err
    everything = _build(root, tiny_arch, tiny_clip, tmp_path / "all", exclude=[])
    assert len(Index(everything).items["source"]) == len(originals + copies) + 3


def test_a_photo_folders_linked_folders_are_indexed_once(tmp_path, tiny_arch, tiny_clip, capsys):
    """~/Pictures/phone -> /mnt/nas/phone: os.walk does not enter a folder that is a symbolic link, and the
    pictures behind one were left out without a word. A linked folder is entered now, under the link's path;
    each real folder once, so a second link to it, a link into the folder itself and a link that loops add
    nothing twice, nor does one to a folder above it; a broken link (a NAS not mounted) is named."""
    root, nas = tmp_path / "Pictures", tmp_path / "nas"
    for f in ("a.jpg", "2024/b.jpg"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        make_image(root / f, len(f))
    for f in ("phone/c.jpg", "phone/DCIM/d.jpg"):
        (nas / f).parent.mkdir(parents=True, exist_ok=True)
        make_image(nas / f, len(f) + 10)
    os.symlink(nas / "phone", root / "phone")             # outside the folder: entered
    os.symlink(nas / "phone", root / "phone-again")       # the same real folder: once
    os.symlink(root / "2024", root / "this-year")         # inside the folder: its pictures where they are
    os.symlink("..", root / "2024" / "up")                # a loop
    os.symlink(tmp_path, root / "2024" / "home")          # above the folder (it holds nas/ and Pictures/ again)
    os.symlink(tmp_path / "nowhere", root / "gone")       # broken
    idx = Index(_build(root, tiny_arch, tiny_clip, tmp_path / "idx"))
    assert sorted(os.path.relpath(x, root) for x in idx.items["source"]) == [
        "2024/b.jpg", "a.jpg", "phone/DCIM/d.jpg", "phone/c.jpg"]
    assert [f["where"] for f in idx.manifest["failures"]] == [str(root / "gone")]   # recorded with the skipped
    idx.close()
    assert f"{root / 'gone'}: not read (a broken link to {tmp_path / 'nowhere'})" in capsys.readouterr().err
    # a training folder (pictures with .txt captions) through a link as well
    from langclip.pairs import read_pairs

    (nas / "phone" / "c.txt").write_text("кот\n", encoding="utf-8")
    (root / "a.txt").write_text("собака\n", encoding="utf-8")
    pairs = read_pairs([str(root)])
    assert sorted((os.path.relpath(pairs.images[i].path, root), c) for i, c, _ in pairs.captions) == [
        ("a.jpg", "собака"), ("phone/c.jpg", "кот")]


def test_an_update_keeps_the_pictures_it_cannot_see(tmp_path, tiny_arch, tiny_clip, capsys, monkeypatch):
    """A NAS not mounted when `index update` runs (a nightly job): the link to it is broken, or its mount point
    is an empty folder. Its pictures were taken for deleted and dropped, and embedded again once it was back
    (hours, for a large collection). Such an update now changes nothing and says why; `search --images` searches
    the index as it is; --drop-unreachable drops them when that is meant."""
    root, nas, mnt = tmp_path / "Pictures", tmp_path / "nas", tmp_path / "mnt"
    for d, names in ((root, ["a.jpg"]), (nas / "phone", ["c.jpg", "d.jpg"]), (mnt, ["m.jpg"])):
        d.mkdir(parents=True)
        for n in names:
            make_image(d / n, ord(n[0]))
    os.symlink(nas / "phone", root / "phone")
    out = build_index(IndexConfig(data=[str(root), str(mnt)], out=str(tmp_path / "idx"), clip=tiny_arch,
                                  weights=tiny_clip[1], workers=0), progress=False)
    before = (out / "manifest.json").read_text()
    (nas).rename(tmp_path / "nas-off")                 # not mounted: the link is broken
    (mnt / "m.jpg").rename(tmp_path / "m.jpg")         # ... and the mount point empty
    capsys.readouterr()
    assert main(["index", "update", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'phone'}: not read (a broken link to {nas / 'phone'}), and the index holds 2 pictures there" in err
    assert f"{mnt}: no picture in it now (a mount point with nothing mounted?), and the index holds 1 picture there" in err
    assert (out / "manifest.json").read_text() == before   # nothing changed
    (tmp_path / "nas-off").rename(nas)
    (tmp_path / "m.jpg").rename(mnt / "m.jpg")
    r = update_index(out, progress=False)                  # back: nothing to embed again
    assert (r["embedded"], r["removed"], r["count"]) == (0, 0, 4)
    (nas).rename(tmp_path / "nas-off")
    r = update_index(out, progress=False, drop_unreachable=True)   # meant: dropped
    assert (r["removed"], r["count"]) == (2, 2)
    # `search --images`: a kept index whose folder's NAS is away is searched as it was
    (tmp_path / "nas-off").rename(nas)
    monkeypatch.setenv("LANGCLIP_INDEX_HOME", str(tmp_path / "home"))
    ask = ["search", "--images", str(root), "--model", tiny_clip[1], "--arch", tiny_arch, "кот", "-k", "5", "--paths"]
    assert main(ask) == 0
    (nas).rename(tmp_path / "nas-off")
    capsys.readouterr()
    assert main(ask) == 0
    got = capsys.readouterr()
    assert "searching the index as it is" in got.err and len(got.out.split()) == 3


def test_a_200_megapixel_phone_photo_is_indexed(tmp_path, tiny_arch, tiny_clip):
    """Samsung's Ultra phones take 200-megapixel photos (16320 x 12240): PIL refused them as a "decompression
    bomb" (over 179 million pixels) and the index skipped them; 108-megapixel ones came with a warning. Such a
    photo is indexed now, from the same pixels as a small copy of it, without a warning."""
    import warnings

    from langclip.model import LangCLIP, image_transform, model_config, preprocess_cfg

    d = tmp_path / "phone"
    d.mkdir()
    Image.new("RGB", (16320, 12240), (200, 40, 90)).save(d / "20251130_101010.jpg", quality=80)
    make_image(d / "small.jpg", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        idx = Index(_build(d, tiny_arch, tiny_clip, tmp_path / "idx"))
    assert idx.manifest["num_failures"] == 0 and len(idx) == 2, idx.manifest["failures"]
    i = idx.items["id"][idx.items["source"].index(str(d / "20251130_101010.jpg"))]
    tf = image_transform(preprocess_cfg(LangCLIP(model_config(tiny_arch))))
    with torch.no_grad():
        want = torch.nn.functional.normalize(tiny_clip[0].encode_image(tf(Image.new("RGB", (400, 300), (200, 40, 90)))[None]), dim=-1)[0]
    assert np.abs(idx.vector(i) - want.numpy()).max() < 2e-2
    idx.close()


def test_a_browsers_and_a_cameras_other_extensions_are_pictures(tmp_path, tiny_arch, tiny_clip):
    """A JPEG a browser saved on Windows (.jfif, .jpe) and a camera's HEIF (.HIF: Canon, Fujifilm, Sony) were not
    taken for pictures: left out of the index without a word."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    d = tmp_path / "downloads"
    d.mkdir()
    make_image(d / "a.jpg", 1)
    for name, fmt in (("b.jfif", "JPEG"), ("c.jpe", "JPEG"), ("DSCF0001.HIF", "HEIF")):
        Image.open(make_image(tmp_path / f"{name}.png", len(name))).save(d / name, fmt, quality=90)
    idx = Index(_build(d, tiny_arch, tiny_clip, tmp_path / "idx"))
    assert sorted(Path(x).name for x in idx.items["source"]) == ["DSCF0001.HIF", "a.jpg", "b.jfif", "c.jpe"]
    assert idx.manifest["num_failures"] == 0
    idx.close()


def test_phone_formats_heic_and_avif_are_indexed(tmp_path, tiny_arch, tiny_clip, monkeypatch, capsys):
    """A phone's photo folder: HEIC (through pillow-heif) and AVIF (Pillow's own) pictures are indexed
    like JPEGs, embedded from the same pixels and given thumbnails; without pillow-heif a HEIC picture
    is skipped with a reason that names it."""
    import pillow_heif

    from langclip import pairs
    from langclip.model import LangCLIP, image_transform, model_config, preprocess_cfg

    pillow_heif.register_heif_opener()
    d = tmp_path / "phone"
    d.mkdir()
    make_image(d / "a.jpg", 1, size=(48, 36))
    for name, seed in (("b.heic", 2), ("c.avif", 3)):
        Image.open(make_image(tmp_path / f"{seed}.png", seed, size=(48, 36))).save(d / name, quality=95)
    idx = Index(_build(d, tiny_arch, tiny_clip, tmp_path / "idx"))
    assert sorted(Path(x).name for x in idx.items["source"]) == ["a.jpg", "b.heic", "c.avif"]
    assert idx.manifest["num_failures"] == 0
    tf = image_transform(preprocess_cfg(LangCLIP(model_config(tiny_arch))))
    for name in ("b.heic", "c.avif"):
        i = idx.items["id"][idx.items["source"].index(str(d / name))]
        with torch.no_grad():
            want = torch.nn.functional.normalize(tiny_clip[0].encode_image(tf(Image.open(d / name))[None]), dim=-1)[0]
        assert np.abs(idx.vector(i) - want.numpy()).max() < 2e-3, name
        assert Image.open(io.BytesIO(idx.thumbnail(i))).size == (48, 36)
    idx.close()
    # a HEIC picture as the query (`langclip search --image`): it finds itself first
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", tiny_clip[1], "--arch", tiny_arch,
                 "--image", str(d / "b.heic"), "-k", "1", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"] == str(d / "b.heic")
    monkeypatch.setattr(pairs, "heif_support", lambda: False)
    no_heif = Index(_build(d, tiny_arch, tiny_clip, tmp_path / "idx2"))
    assert sorted(Path(x).name for x in no_heif.items["source"]) == ["a.jpg", "c.avif"]
    assert "pillow-heif" in no_heif.manifest["failures"][0]["reason"]


@pytest.mark.parametrize("decode", ["torchvision", "pil", "nvjpeg"])
def test_photos_are_indexed_upright_by_their_exif_orientation(tmp_path, tiny_arch, tiny_clip, decode):
    """A phone's portrait photo is stored sideways with EXIF orientation 6: the index embeds and
    thumbnails it upright, as viewers show it, in every decode mode; an index built before this
    (no exif_orientation in its config) keeps adding pictures as stored."""
    from PIL import ImageOps

    from langclip.model import LangCLIP, image_transform, model_config, preprocess_cfg

    d = tmp_path / "phone"
    d.mkdir()
    make_image(d / "plain.jpg", 1, size=(48, 36))
    ex = Image.Exif()
    ex[0x0112] = 6
    Image.open(make_image(tmp_path / "r.png", 2, size=(80, 40))).save(d / "portrait.jpg", quality=95, exif=ex.tobytes())
    out = build_index(IndexConfig(data=[str(d)], out=str(tmp_path / "idx"), clip=tiny_arch, weights=tiny_clip[1],
                                  workers=0, decode=decode), progress=False)
    idx = Index(out)
    i = idx.items["id"][idx.items["source"].index(str(d / "portrait.jpg"))]
    assert Image.open(io.BytesIO(idx.thumbnail(i))).size == (40, 80)            # upright
    tf = image_transform(preprocess_cfg(LangCLIP(model_config(tiny_arch))))
    with torch.no_grad():
        up = ImageOps.exif_transpose(Image.open(d / "portrait.jpg"))
        want = torch.nn.functional.normalize(tiny_clip[0].encode_image(tf(up)[None]), dim=-1)[0]
    assert np.abs(idx.vector(i) - want.numpy()).max() < 2e-3
    idx.close()
    if decode != "torchvision":
        return
    man = json.loads((out / "manifest.json").read_text())
    del man["config"]["exif_orientation"]                          # as an index from before wrote it
    (out / "manifest.json").write_text(json.dumps(man))
    Image.open(make_image(tmp_path / "r2.png", 3, size=(80, 40))).save(d / "later.jpg", quality=95, exif=ex.tobytes())
    assert update_index(out, progress=False, workers=0)["added"] == 1
    idx = Index(out)
    j = idx.items["id"][idx.items["source"].index(str(d / "later.jpg"))]
    assert Image.open(io.BytesIO(idx.thumbnail(j))).size == (80, 40)            # as stored, like its others


def test_index_from_a_cache_tar_shards_and_table(tmp_path, world_cache, tiny_arch, tiny_clip):
    from langclip.cache import load_cache

    idx = Index(build_index(IndexConfig(data=[str(world_cache)], out=str(tmp_path / "c")), progress=False))
    cache = load_cache(world_cache)
    assert len(idx) == int(cache.image_ok.sum()) == 192
    assert np.array_equal(np.asarray(idx.embeddings), cache.image_emb.numpy()[cache.image_ok.numpy()])  # not recomputed
    shard = tmp_path / "s-000.tar"
    with tarfile.open(shard, "w") as tf:
        for i in range(6):
            buf = io.BytesIO()
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(buf, "JPEG")
            ti = tarfile.TarInfo(f"k{i}.jpg")
            ti.size = len(buf.getvalue())
            tf.addfile(ti, io.BytesIO(buf.getvalue()))
    t = Index(build_index(IndexConfig(data=[str(shard)], out=str(tmp_path / "t"), clip=tiny_arch, weights=tiny_clip[1],
                                      workers=0), progress=False))
    assert len(t) == 6 and t.source(2).endswith("s-000.tar::k2.jpg")
    assert Image.open(io.BytesIO(t.image_bytes(2))).size == (30, 30)


def test_update_of_an_index_of_a_cache_follows_the_cache(tmp_path, pair_data, tiny_arch, tiny_clip, monkeypatch):
    """An index made from a langclip cache, updated (as `search --images CACHE` does on each search): an
    unchanged cache rewrites nothing; a cache of more pictures keeps the known ones' ids, embeddings and
    thumbnails and adds the rest with new ids — nothing embedded either time (before: "no images found")."""
    import csv

    from langclip.cli import main

    rows = list(csv.DictReader(open(pair_data / "pairs.csv", encoding="utf-8")))
    with open(pair_data / "first8.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if int(r["image"][4:6]) < 8)
    for name, table in (("a", "first8.csv"), ("b", "pairs.csv")):
        assert main(["cache", "build", "--data", str(pair_data / table), "--clip", tiny_arch, "--weights", tiny_clip[1],
                     "--out", str(tmp_path / f"cache-{name}"), "--workers", "0"]) == 0
    out = build_index(IndexConfig(data=[str(tmp_path / "cache-a")], out=str(tmp_path / "idx")), progress=False)
    before = Index(out)
    ids = dict(zip(before.items["source"], before.items["id"]))
    thumbs = {s: before.thumbnail(i) for s, i in ids.items()}
    vecs = {s: before.vector(i) for s, i in ids.items()}
    before.close()
    stamp = (out / "items.parquet").stat().st_mtime_ns
    import langclip.search.index as index_module   # an unchanged cache is known by its manifest: not read

    with monkeypatch.context() as m:
        m.setattr(index_module, "_from_cache", lambda p: pytest.fail("an unchanged cache was read again"))
        r = update_index(out, progress=False)
    assert (r["kept"], r["added"], r["removed"], r["embedded"]) == (8, 0, 0, 0)
    assert (out / "items.parquet").stat().st_mtime_ns == stamp          # nothing rewritten
    r = update_index(out, data=[str(tmp_path / "cache-b")], progress=False)
    assert (r["kept"], r["added"], r["removed"], r["embedded"], r["count"]) == (8, 8, 0, 0, 16)
    after = Index(out)
    now = dict(zip(after.items["source"], after.items["id"]))
    assert all(now[s] == i and after.thumbnail(i) == thumbs[s] and np.array_equal(after.vector(i), vecs[s])
               for s, i in ids.items())
    assert sorted(set(now.values()) - set(ids.values())) == list(range(8, 16))


def test_approximate_search_agrees_with_exact(tmp_path, world_cache):
    idx = Index(build_index(IndexConfig(data=[str(world_cache)], out=str(tmp_path / "a"), ann_threshold=100,
                                        ann_nprobe=64), progress=False))
    assert idx.manifest["ann"]["kind"] == "faiss-ivf-flat"
    q = np.asarray(idx.embeddings[:40], np.float32)
    approx, exact = idx.search(q, 10), idx.search(q, 10, exact=True)
    recall = np.mean([len({i for i, _ in a} & {i for i, _ in e}) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95


def _faiss_recall(index_dir, q, k, nprobe):
    """Reference: recall@k of faiss's own IVF file at `nprobe` against a numpy product over embeddings.npy."""
    import faiss

    emb = np.load(Path(index_dir) / "embeddings.npy").astype(np.float32)
    ids = np.asarray(Index(index_dir).ids)
    exact = [set(ids[np.argsort(-row, kind="stable")[:k]].tolist()) for row in q @ emb.T]
    ivf = faiss.read_index(str(Path(index_dir) / "ann.faiss"))
    ivf.nprobe = nprobe
    got = ivf.search(np.ascontiguousarray(q, dtype=np.float32), k)[1]
    return float(np.mean([len(e & set(g.tolist())) / k for e, g in zip(exact, got)]))


def test_index_tune_measures_recall_and_stores_the_smallest_nprobe(tmp_path, world_cache, photos, tiny_arch, tiny_clip,
                                                                  trained_run, capsys):
    """`index tune` measures recall@k per nprobe (picture queries, or text queries through a model) as
    faiss and a numpy product measure it, stores the smallest nprobe reaching the target, search uses it,
    and `index update` keeps it; an exact index or text queries without a model are refused."""
    import langclip
    from langclip.search.tune import default_queries, tune_index

    out = build_index(IndexConfig(data=[str(world_cache)], out=str(tmp_path / "a"), ann_threshold=100), progress=False)
    nlist = Index(out).manifest["ann"]["nlist"]
    res = tune_index(out, target=0.9, write=False)
    rows = np.sort(np.random.default_rng(0).choice(192, size=192, replace=False))
    q = np.asarray(Index(out).embeddings[rows], np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for r in res["table"]:
        assert r["recall@10"] == pytest.approx(_faiss_recall(out, q, 10, r["nprobe"]), abs=1e-3), r
    ref = {n: _faiss_recall(out, q, 10, n) for n in (1, 2, 4, 8, 16, 32, 64) if n <= nlist}
    want = min([n for n, r in ref.items() if r >= 0.9], default=None)
    assert want is not None and res["nprobe"] == want and res["recall@10"] == pytest.approx(ref[want], abs=1e-3)
    assert Index(out).manifest["ann"]["nprobe"] == 32 and not res["written"]           # --dry-run: nothing stored
    # text queries through the model; stored; search then answers as faiss does at that nprobe
    texts = ["красный круг", "две синие звезды", "жёлтое сердце слева", "три зелёных квадрата", "фото кота"]
    (tmp_path / "q.txt").write_text("\n".join(texts), encoding="utf-8")
    assert main(["index", "tune", str(out), "--model", str(trained_run), "--queries", str(tmp_path / "q.txt"),
                 "--target", "0.99", "-k", "5", "--device", "cpu"]) == 0
    assert "5 text queries: nprobe" in capsys.readouterr().out
    man = Index(out).manifest
    tq = langclip.load(trained_run, device="cpu").encode_text(texts).numpy()
    tq /= np.linalg.norm(tq, axis=1, keepdims=True)
    n = man["ann"]["nprobe"]
    assert man["config"]["ann_nprobe"] == n and man["ann"]["tuned"]["k"] == 5
    assert _faiss_recall(out, tq, 5, n) >= 0.99 and (n == 1 or _faiss_recall(out, tq, 5, n // 2) < 0.99)
    import faiss

    ivf = faiss.read_index(str(Path(out) / "ann.faiss"))
    ivf.nprobe = n
    assert [[i for i, _ in h] for h in Index(out).search(tq, 5)] == ivf.search(tq.astype(np.float32), 5)[1].tolist()
    # shipped class names in the model's language are the default text queries
    assert len(default_queries("ru")) > 300 and "фото медведя" in default_queries("ru")
    # index update keeps a tuned nprobe
    p = _build(photos, tiny_arch, tiny_clip, tmp_path / "p", ann_threshold=1)
    tuned = tune_index(p, target=0.5)["nprobe"]
    make_image(photos / "new.jpg", 123, size=(48, 36))
    update_index(p, progress=False)
    assert Index(p).manifest["ann"]["nprobe"] == min(tuned, Index(p).manifest["ann"]["nlist"]) and len(Index(p)) == 26
    # refused: an exact index, text queries without a model, a target outside (0, 1]
    e = _build(photos, tiny_arch, tiny_clip, tmp_path / "e")
    for argv, msg in ((["index", "tune", str(e)], "nothing to tune"),
                      (["index", "tune", str(out), "--queries", "кот"], "need --model"),
                      (["index", "tune", str(out), "--target", "1.5"], "--target must be in")):
        assert main(argv) == 2
        assert msg in capsys.readouterr().err


def test_search_command(tmp_path, photos, tiny_arch, tiny_clip, trained_run, world_cache, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", "--data", str(photos), "--model", str(trained_run), "--out", str(out),
                 "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--model", str(trained_run), "красный круг", "-k", "3", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["rank"] for x in lines] == [1, 2, 3] and all(x["path"].startswith(str(photos)) for x in lines)
    assert main(["search", "--index", str(out), "--model", str(trained_run), "--image", str(photos / "04.jpg"),
                 "-k", "1"]) == 0
    assert capsys.readouterr().out.split()[2] == str(photos / "04.jpg")
    assert main(["search", "--index", str(out), "--model", str(trained_run)]) == 2          # neither text nor image
    assert "give a query text, --image or --add" in capsys.readouterr().err
    # an index build that was interrupted (its cache in work/, no manifest yet) is named, with how to finish it
    import shutil

    shutil.copytree(Path(world_cache) / "emb", tmp_path / "cut" / "work" / "emb")
    assert main(["search", "--index", str(tmp_path / "cut"), "--model", str(trained_run), "кот"]) == 2
    assert f"{tmp_path / 'cut'} is an unfinished index build (" in (err := capsys.readouterr().err), err
    assert f"rerun the same `langclip index build` with --out {tmp_path / 'cut'} to finish it (it resumes)" in err
    # a query picture that is missing or unreadable is named before any model loads
    (photos.parent / "bad.jpg").write_bytes(b"not a picture")
    for pic, msg in ((photos / "nope.jpg", "--image: picture not found: "), (photos.parent / "bad.jpg", "not a readable picture")):
        assert main(["search", "--index", str(out), "--model", "/no/such/run", "--image", str(pic)]) == 2
        assert msg in capsys.readouterr().err


def test_query_terms_read_weights_and_pictures_as_rclip_does(tmp_path):
    from langclip.search.query import combine, query_terms

    make_image(tmp_path / "pool.jpg", 1)
    pool = str(tmp_path / "pool.jpg")
    t = query_terms("собака", None, ["2:" + pool, "бассейн"], ["0.5:ночь", "10:30 утра"])
    assert [(x.value, x.weight, x.picture) for x in t] == [
        ("собака", 1.0, False), (pool, 2.0, True), ("бассейн", 1.0, False), ("ночь", -0.5, False),
        ("10:30 утра", -1.0, False)]                      # a time of day is not a weight
    with pytest.raises(FileNotFoundError, match="--add: picture not found: .*nope.jpg"):
        query_terms("кот", add=[str(tmp_path / "nope.jpg")])
    with pytest.raises(ValueError, match="something to look for"):
        query_terms(subtract=["кот"])
    with pytest.raises(ValueError, match="an empty term"):
        query_terms("кот", add=[" "])
    e = np.eye(3, dtype=np.float32)
    assert np.allclose(combine(e[:2], [1, 1]), [2 ** -0.5, 2 ** -0.5, 0])
    with pytest.raises(ValueError, match="cancel out"):
        combine([e[0], e[0]], [1, -1])


def test_search_combines_texts_and_pictures(tmp_path, photos, trained_run, capsys):
    """`search "…" --add TERM --subtract TERM`: the ranking is the index's embeddings scored against the
    normalised weighted sum of the terms' embeddings (computed here with numpy from each term searched
    alone); a heavily weighted picture brings itself first; `--paths` prints the paths alone."""
    out = tmp_path / "idx"
    assert main(["index", "build", "--data", str(photos), "--model", str(trained_run), "--out", str(out),
                 "--workers", "0"]) == 0
    idx, m = Index(out), QueryModel(trained_run)
    red, circle = m.encode_text(["красный"])[0], m.encode_text(["круг"])[0]
    want = (red - 0.5 * circle) / np.linalg.norm(red - 0.5 * circle)
    scores = np.asarray(idx.embeddings, np.float32) @ want
    order = [idx.items["source"][r] for r in np.argsort(-scores)[:5]]
    capsys.readouterr()
    args = ["search", "--index", str(out), "--model", str(trained_run), "-k", "5"]
    assert main(args + ["красный", "--subtract", "0.5:круг", "--paths"]) == 0
    assert capsys.readouterr().out.splitlines() == order
    pic = str(photos / "04.jpg")
    assert main(args + ["--json", "красный", "--add", "20:" + pic]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["path"] == pic


def test_a_picture_and_its_copies_are_one_result(tmp_path, tiny_arch, tiny_clip, trained_run, capsys):
    """Google Takeout puts every photo of an album in the album's folder and again in its year's: each search
    showed it two or three times. Copies (the same pixels: byte-equal thumbnails, equal embeddings) are one result
    now, which lists them — in the CLI, its JSON, the API and "similar", which leaves out the picture's own copies
    too. A picture saved again at another quality is not a copy."""
    from fastapi.testclient import TestClient

    from langclip.search.server import create_app

    root = tmp_path / "Takeout" / "Google Photos"
    for i in range(6):
        (root / "Photos from 2024").mkdir(parents=True, exist_ok=True)
        make_image(root / "Photos from 2024" / f"IMG_{i}.jpg", 100 + i, size=(64, 48))
    for album in ("Trip", "Best of"):
        (root / album).mkdir()
        shutil.copy(root / "Photos from 2024" / "IMG_0.jpg", root / album / "IMG_0.jpg")
    Image.open(root / "Photos from 2024" / "IMG_1.jpg").save(root / "Trip" / "IMG_1-edited.jpg", quality=60)
    out = _build(root, tiny_arch, tiny_clip, tmp_path / "idx")
    idx = Index(out)
    assert len(idx) == 9
    capsys.readouterr()
    ask = ["search", "--index", str(out), "--model", str(trained_run), "--image", str(root / "Trip" / "IMG_0.jpg")]
    assert main(ask + ["-k", "8", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    paths = [r["path"] for r in rows]
    assert len(rows) == 7 and len(set(paths)) == 7                     # 9 pictures, 7 distinct
    first = rows[0]
    assert sorted([first["path"], *first["copies"]]) == sorted(
        str(root / d / "IMG_0.jpg") for d in ("Photos from 2024", "Trip", "Best of"))
    assert str(root / "Trip" / "IMG_1-edited.jpg") in paths and str(root / "Photos from 2024" / "IMG_1.jpg") in paths
    assert all("copies" not in r for r in rows[1:])
    assert main(ask + ["-k", "1"]) == 0                                # the plain lines name the copies
    plain = capsys.readouterr().out.splitlines()
    assert len(plain) == 3 and all(x.strip().startswith("also ") for x in plain[1:])
    c = TestClient(create_app(idx, QueryModel(trained_run)))
    r = c.get("/api/search", params={"q": "красный круг", "k": 8}).json()["results"]
    assert len(r) == 7 and sum(len(x.get("copies", [])) for x in r) == 2
    zero = idx.items["id"][idx.items["source"].index(str(root / "Photos from 2024" / "IMG_0.jpg"))]
    sim = c.get(f"/api/similar/{zero}", params={"k": 8}).json()["results"]
    assert len(sim) == 6 and not any(x["name"] == "IMG_0.jpg" for x in sim)   # nor its copies
    idx.close()


def test_search_previews_its_results_in_the_terminal(tmp_path, photos, tiny_arch, tiny_clip, trained_run, capsys,
                                                     monkeypatch):
    """`search --preview`, as rclip's: under each result line, its thumbnail inline, through the iTerm2 image
    protocol (ESC ] 1337 ; File=inline=1;… : base64 BEL; iTerm2, WezTerm, Konsole, VS Code) or, in kitty and
    Ghostty, kitty's graphics protocol (PNG in base64 chunks of at most 4096 bytes, ESC _ G … ESC \\). Each
    picture shown is the index's thumbnail of that result."""
    import base64
    import re

    out = _build(photos, tiny_arch, tiny_clip, tmp_path / "idx")
    idx = Index(out)
    ask = ["search", "--index", str(out), "--model", str(trained_run), "красный круг", "-k", "3", "--preview"]
    monkeypatch.delenv("KITTY_WINDOW_ID", raising=False)
    for term, program in (("xterm-256color", "iTerm.app"), ("xterm-kitty", ""), ("xterm-ghostty", "ghostty")):
        monkeypatch.setenv("TERM", term)
        monkeypatch.setenv("TERM_PROGRAM", program)
        assert main(ask + ["--preview-height", "5"]) == 0
        text = capsys.readouterr().out
        paths = re.findall(r"^ +\d+  -?[\d.]+  (.+)$", text, re.M)
        assert len(paths) == 3
        if term == "xterm-256color":
            shown = [base64.b64decode(b) for n, b in re.findall(
                r"\x1b\]1337;File=inline=1;size=(\d+);height=5;preserveAspectRatio=1:([A-Za-z0-9+/=]+)\x07", text)]
            assert [Image.open(io.BytesIO(b)).format for b in shown] == ["JPEG"] * 3
        else:
            seqs = re.findall(r"\x1b_G([^;]*);([A-Za-z0-9+/=]*)\x1b\\", text)
            assert all(len(data) <= 4096 for _, data in seqs) and len(seqs) > 3   # a picture in several chunks
            shown, cur = [], ""
            for ctrl, data in seqs:
                assert ctrl.startswith("a=T,f=100,r=5,") == (cur == "")   # the first chunk carries the keys
                cur += data
                if ctrl.endswith("m=0"):
                    shown.append(base64.b64decode(cur))
                    cur = ""
            assert [Image.open(io.BytesIO(b)).format for b in shown] == ["PNG"] * 3
        for path, b in zip(paths, shown):
            want = Image.open(io.BytesIO(idx.thumbnail(idx.items["id"][idx.items["source"].index(path)])))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), np.asarray(want.convert("RGB")))
    assert main(ask + ["--json"]) == 2 and "--preview" in capsys.readouterr().err
    idx.close()


def test_search_images_names_the_folders_left_out_once(tmp_path, photos, trained_run, capsys, monkeypatch):
    """`search --images FOLDER` lists the folder at every search (its update): the folders it leaves out (a NAS's
    @eaDir, hidden ones) were named on every search. They are named when the index is built, not after."""
    monkeypatch.setenv("LANGCLIP_INDEX_HOME", str(tmp_path / "home"))
    (photos / "@eaDir").mkdir()
    make_image(photos / "@eaDir" / "SYNOPHOTO_THUMB_M.jpg", 1)
    ask = ["search", "--images", str(photos), "красный круг", "--model", str(trained_run), "-k", "2"]
    assert main(ask) == 0
    assert "1 folder left out" in capsys.readouterr().err
    make_image(photos / "new.jpg", 4242, size=(48, 36))   # an update that embeds: it lists the folder again
    assert main(ask) == 0
    err = capsys.readouterr().err
    assert "1 new" in err and "left out" not in err


def test_search_images_keeps_an_index_for_the_folder(tmp_path, photos, trained_run, capsys, monkeypatch):
    """`search --images FOLDER`, as rclip: the first search builds the folder's index in $LANGCLIP_INDEX_HOME
    and answers as `index build` + `search --index` do; a later one embeds only what is new (found at once),
    with any run on the same image tower; --no-update searches the index as it is; standard output holds
    the results alone."""
    monkeypatch.setenv("LANGCLIP_INDEX_HOME", str(tmp_path / "home"))
    out = tmp_path / "idx"
    assert main(["index", "build", "--data", str(photos), "--model", str(trained_run), "--out", str(out),
                 "--workers", "0"]) == 0
    capsys.readouterr()
    q = ["--model", str(trained_run), "-k", "5", "--paths"]
    assert main(["search", "--index", str(out), "красный круг"] + q) == 0
    want = capsys.readouterr().out.splitlines()
    assert main(["search", "--images", str(photos), "красный круг"] + q) == 0
    got = capsys.readouterr()
    assert got.out.splitlines() == want and "indexing" in got.err
    assert len([p for p in (tmp_path / "home").iterdir() if p.is_dir()]) == 1   # one index (and its lock file)
    make_image(photos / "new.jpg", 4242, size=(48, 36))
    import shutil   # another run on the same image tower (a copy here): the same index, its tower embeds the new picture

    other = shutil.copytree(trained_run, tmp_path / "other-run")
    assert main(["search", "--images", str(photos), "--image", str(photos / "new.jpg"), "--model", str(other),
                 "-k", "5", "--paths"]) == 0
    got = capsys.readouterr()
    assert got.out.splitlines()[0] == str(photos / "new.jpg") and "1 new, 0 changed, 0 removed" in got.err
    assert len([p for p in (tmp_path / "home").iterdir() if p.is_dir()]) == 1
    make_image(photos / "newer.jpg", 4343, size=(48, 36))
    assert main(["search", "--images", str(photos), "--image", str(photos / "newer.jpg"), "--no-update"] + q) == 0
    assert str(photos / "newer.jpg") not in capsys.readouterr().out
    assert main(["search", "--images", str(photos), "--index", str(out), "кот"] + q) == 2
    assert "give --index" in capsys.readouterr().err
    import langclip.search.server as server   # `serve --images`: the same kept index, served (serve replaced)

    got = {}
    monkeypatch.setattr(server, "serve", lambda *a, **k: got.update(index=a[0]))
    assert main(["serve", "--images", str(photos), "--model", str(trained_run)]) == 0
    assert [Path(got["index"])] == [p for p in (tmp_path / "home").iterdir() if p.is_dir()]
    from fastapi.testclient import TestClient   # its page names the pictures' folder, not the index's digest

    health = TestClient(server.create_app(Index(got["index"]), QueryModel(trained_run, image=False))).get("/api/health")
    assert health.json()["index"]["path"] == photos.name
    # `index list` names what is kept; with the pictures' folder gone, --prune deletes it
    assert main(["index", "list"]) == 0
    line = capsys.readouterr().out.strip()
    assert "pictures  " in line and line.endswith(str(photos)) and "gone" not in line
    photos.rename(tmp_path / "moved")
    assert main(["index", "list"]) == 0 and f"(gone: {photos})" in capsys.readouterr().out
    assert main(["index", "list", "--prune"]) == 0 and capsys.readouterr().out.startswith("deleted ")
    assert not [p for p in (tmp_path / "home").iterdir()]


def test_a_clip_file_and_its_runs_share_a_folders_index(tmp_path, photos, trained_run, tiny_arch, tiny_clip, capsys,
                                                         monkeypatch):
    """`search --images` keys a CLIP weights file by its image tower's tensor digest, as runs are keyed: the
    file a run was trained from finds the run's index (nothing embedded again), so does a copy of it
    elsewhere, and the file is read for its digest once per version (remembered in the index home). An index
    kept under the old key (path, size, mtime) is moved to the new one, not rebuilt."""
    import shutil

    from langclip.search import folder

    home = tmp_path / "home"
    monkeypatch.setenv("LANGCLIP_INDEX_HOME", str(home))
    kept = lambda: [p for p in home.iterdir() if p.is_dir()]   # noqa: E731
    q = ["--image", str(photos / "07.jpg"), "-k", "3", "--paths", "--device", "cpu"]
    assert main(["search", "--images", str(photos), "--model", str(trained_run)] + q) == 0
    by_run = capsys.readouterr()
    assert "indexing" in by_run.err and len(kept()) == 1
    reads = []   # the digests computed: each a read of the whole file
    import langclip.weights as weights

    monkeypatch.setattr(weights, "load_state_dict", lambda p, _f=weights.load_state_dict: reads.append(p) or _f(p))
    for clip in (Path(tiny_clip[1]), Path(shutil.copy(tiny_clip[1], tmp_path / "elsewhere.pt"))):
        for _ in range(2):
            assert main(["search", "--images", str(photos), "--model", str(clip), "--arch", tiny_arch] + q) == 0
            got = capsys.readouterr()
            assert "indexing" not in got.err and got.out == by_run.out, got.err
    assert len(kept()) == 1 and len(reads) == 2   # each file's tower read once
    memo = json.loads((home / "tower_digests.json").read_text())
    assert {v["tower_sha256"] for v in memo.values()} == {Index(kept()[0]).manifest["tower_sha256"]}
    (home / "tower_digests.json").write_text("[]")   # damaged: computed again, not an error
    assert main(["search", "--images", str(photos), "--model", tiny_clip[1], "--arch", tiny_arch] + q) == 0
    assert capsys.readouterr().out == by_run.out and len(reads) == 3 and len(kept()) == 1
    # an index from before: kept under the old key, found and moved
    paths = [str(photos.resolve())]
    old = home / folder._key(paths, folder._old_file_key(Path(tiny_clip[1])))
    kept()[0].rename(old)
    assert main(["search", "--images", str(photos), "--model", tiny_clip[1], "--arch", tiny_arch] + q) == 0
    got = capsys.readouterr()
    assert "indexing" not in got.err and got.out == by_run.out
    assert kept() == [home / folder._key(paths, folder.tower_key(tiny_clip[1]))]
    # `index list --prune`: the copy gone, its remembered digest goes; the folder is still there, so its index stays
    assert main(["search", "--images", str(photos), "--model", str(tmp_path / "elsewhere.pt"), "--arch", tiny_arch] + q) == 0
    assert len(json.loads((home / "tower_digests.json").read_text())) == 2
    (tmp_path / "elsewhere.pt").unlink()
    capsys.readouterr()
    assert main(["index", "list", "--prune"]) == 0 and capsys.readouterr().out == ""
    memo = json.loads((home / "tower_digests.json").read_text())
    assert list(memo) == [str(Path(tiny_clip[1]).resolve())] and len(kept()) == 1


def test_search_by_text_needs_no_clip_file(tmp_path, photos, tiny_clip, trained_run, capsys):
    """A text query loads the run's text tower alone: with the CLIP weights file gone it answers as with
    it (the digest compared is the run's record); a query by picture needs the file and names it. The
    command, run as a user runs it, answers the same without importing open_clip, torchvision,
    transformers or pandas (seconds of a cold start)."""
    from conftest import run_with_own_clip_file

    run, clip = run_with_own_clip_file(trained_run, tiny_clip[1], tmp_path)
    out = tmp_path / "idx"
    # --images: the product's spelling of --data for this command
    assert main(["index", "build", "--images", str(photos), "--model", str(run), "--out", str(out), "--workers", "0"]) == 0
    query = ["search", "--index", str(out), "--model", str(run), "красный круг", "-k", "5", "--json"]
    capsys.readouterr()
    assert main(query) == 0
    with_file = capsys.readouterr().out
    clip.unlink()
    assert main(query) == 0
    assert capsys.readouterr().out == with_file and len(with_file.splitlines()) == 5
    import subprocess

    code = ("import runpy, sys; sys.argv = ['langclip', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('langclip', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code\n"
            "print(sorted(k for k in ('open_clip', 'torchvision', 'transformers', 'pandas') if k in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, *query], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == with_file.splitlines() + ["[]"], r.stdout
    assert main(["search", "--index", str(out), "--model", str(run), "--image", str(photos / "04.jpg")]) == 2
    assert "clip.pt" in capsys.readouterr().err


def test_index_build_from_a_run_whose_architecture_file_is_not_found_here(tmp_path, photos, tiny_clip, trained_run,
                                                                           capsys):
    """A run that records its image tower's model-config JSON by a path not found from here (recorded relative
    by runs before session 27, or moved) indexes with the run's own model.json as the architecture: the same
    search results as the run that finds its file."""
    from conftest import run_with_own_clip_file

    run, _ = run_with_own_clip_file(trained_run, tiny_clip[1], tmp_path)
    meta = json.loads((run / "model.json").read_text())
    meta["image_tower"]["arch"] = "demo/teacher/arch.json"   # as the demo recorded it, relative to its folder
    (run / "model.json").write_text(json.dumps(meta))
    answers = []
    for model in (trained_run, run):
        out = tmp_path / f"idx_{model.name}"
        assert main(["index", "build", "--images", str(photos), "--model", str(model), "--out", str(out),
                     "--workers", "0"]) == 0
        capsys.readouterr()
        assert main(["search", "--index", str(out), "--model", str(model), "красный круг", "-k", "5", "--json"]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1] and len(answers[0].splitlines()) == 5
    assert json.loads((out / "manifest.json").read_text())["arch"] == str((run / "model.json").resolve())


# -- the HTTP API ------------------------------------------------------------------------------------
@pytest.fixture()
def client(tmp_path, photos, tiny_arch, tiny_clip, trained_run):
    from fastapi.testclient import TestClient

    from langclip.search.server import Limits, create_app

    idx = Index(_build(photos, tiny_arch, tiny_clip, tmp_path / "idx"))
    app = create_app(idx, QueryModel(trained_run), token="s3cret",
                     limits=Limits(max_query=50, max_k=30, max_upload=200_000, max_pixels=1_000_000))
    return TestClient(app), idx


def _png(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "red").save(buf, "PNG")
    return buf.getvalue()


def test_api_answers(client):
    c, idx = client
    h = {"Authorization": "Bearer s3cret"}
    health = c.get("/api/health").json()
    assert "<title>" in c.get("/").text and health["index"]["pictures"] == 25
    assert health["lang"] == "ru"          # the model's language: the page's example query follows it
    assert "/api/search" in c.get("/openapi.json").json()["paths"]
    r = c.get("/api/search", params={"q": "две красные звезды", "k": 5}, headers=h).json()
    assert len(r["results"]) == 5 and r["results"][0]["thumb"].startswith("/thumb/")
    # each result's folder within the indexed folder (two cameras' IMG_0001.JPG told apart), no server path
    every = c.get("/api/search", params={"q": "круг", "k": 30}, headers=h).json()["results"]
    assert {x["name"]: x["folder"] for x in every if x["name"] in ("00.jpg", "01.jpg")} == {"00.jpg": "2024/summer", "01.jpg": ""}
    odd = c.get("/api/search", params={"q": "ꙮꙮ круг", "k": 1}, headers=h).json()["unseen"]   # coverage.py
    assert list(odd) == ["ꙮꙮ"] and c.get("/api/search", params={"q": "круг", "k": 1}, headers=h).json()["unseen"] == {}
    first = r["results"][0]["id"]
    sim = c.get(f"/api/similar/{first}", params={"k": 4}, headers=h).json()["results"]
    assert len(sim) == 4 and first not in [x["id"] for x in sim]
    up = c.post("/api/search/image", files={"file": ("q.jpg", (idx.path.parent / "photos" / "04.jpg").read_bytes())},
                params={"k": 1}, headers=h).json()["results"]
    assert idx.source(up[0]["id"]).endswith("04.jpg")
    assert c.get(f"/thumb/{first}", headers=h).headers["content-type"] == "image/jpeg"
    assert c.get(f"/image/{first}?token=s3cret").content[:3] == b"\xff\xd8\xff"      # <img> tags pass ?token=
    png = next(i for i in idx.ids if idx.source(i).endswith("scan.png"))
    assert c.get(f"/image/{png}", headers=h).headers["content-type"] == "image/png"
    Path(idx.source(first)).unlink()                  # deleted since the index was built: 410, and what to do
    gone = c.get(f"/image/{first}", headers=h)
    assert gone.status_code == 410 and "langclip index update" in gone.json()["detail"]


def test_the_viewer_gets_every_picture_in_a_form_browsers_show(tmp_path, tiny_arch, tiny_clip, trained_run):
    """/image/{id} is what the page's viewer shows. A phone's HEIC and a scanner's TIFF were sent as they are
    (application/octet-stream), which no current browser but Safari shows: the viewer stayed empty. They are now
    sent as a JPEG of their pixels, upright as their thumbnails are; what browsers show (JPEG, PNG, WebP, GIF,
    AVIF, BMP) is sent unchanged, with its type."""
    import pillow_heif
    from fastapi.testclient import TestClient

    from langclip.search.server import create_app

    pillow_heif.register_heif_opener()
    y, x = np.mgrid[0:36, 0:48]
    upright = Image.fromarray(np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8))   # smooth: JPEG keeps it
    d = tmp_path / "phone"
    d.mkdir()
    upright.save(d / "a.heic", quality=95)
    upright.save(d / "b.avif", quality=95)
    upright.save(d / "c.bmp")
    upright.save(d / "d.jpg", quality=95)
    # a scan stored sideways, turned upright by its orientation tag (6: turn 90 degrees clockwise to show)
    upright.transpose(Image.Transpose.ROTATE_90).save(d / "e.tif", tiffinfo={274: 6})
    idx = Index(_build(d, tiny_arch, tiny_clip, tmp_path / "idx"))
    c = TestClient(create_app(idx, QueryModel(trained_run)))
    ids = {Path(idx.source(i)).name: i for i in idx.ids}
    assert sorted(ids) == ["a.heic", "b.avif", "c.bmp", "d.jpg", "e.tif"]
    want = np.asarray(upright).astype(int)
    for name, mime in (("a.heic", "image/jpeg"), ("e.tif", "image/jpeg"), ("b.avif", "image/avif"),
                       ("c.bmp", "image/bmp"), ("d.jpg", "image/jpeg")):
        r = c.get(f"/image/{ids[name]}")
        assert r.status_code == 200 and r.headers["content-type"] == mime, (name, r.headers["content-type"])
        if name in ("b.avif", "c.bmp", "d.jpg"):
            assert r.content == (d / name).read_bytes(), name     # unchanged
        got = Image.open(io.BytesIO(r.content))
        assert got.size == (48, 36) and np.abs(np.asarray(got.convert("RGB")).astype(int) - want).mean() < 4, name
        # ?size=: what the viewer asks, at its screen's size: a picture not larger comes as above
        assert c.get(f"/image/{ids[name]}", params={"size": 64}).content == r.content, name
    # ... and a larger one scaled down, upright, as a JPEG
    big = tmp_path / "big"
    big.mkdir()
    upright.resize((480, 360)).transpose(Image.Transpose.ROTATE_90).save(big / "f.jpg", exif=_orientation_6())
    idx2 = Index(_build(big, tiny_arch, tiny_clip, tmp_path / "idx2"))
    c2 = TestClient(create_app(idx2, QueryModel(trained_run)))
    got = Image.open(io.BytesIO(c2.get(f"/image/{idx2.ids[0]}", params={"size": 100}).content))
    assert got.size == (100, 75) and np.abs(np.asarray(got).astype(int)[::7, ::7] - np.asarray(
        upright.resize((100, 75))).astype(int)[::7, ::7]).mean() < 8                 # upright
    assert c2.get(f"/image/{idx2.ids[0]}").content == (big / "f.jpg").read_bytes()   # the file itself without
    assert c2.get(f"/image/{idx2.ids[0]}", params={"size": 10}).status_code == 422
    idx.close()
    idx2.close()


def _orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6   # turn 90 degrees clockwise to show
    return exif.tobytes()


def test_the_api_behind_a_reverse_proxy_under_a_path(tmp_path, photos, tiny_arch, tiny_clip, trained_run,
                                                     monkeypatch, capsys):
    """`serve --root-path /photos`, behind a proxy that serves the app at https://host/photos/ (and strips the
    path, as nginx's `proxy_pass http://127.0.0.1:8000/;`): the answers' links and the API docs carry the path.
    A root path that is not one is refused before anything is indexed."""
    from fastapi.testclient import TestClient

    from langclip.search.server import create_app

    idx = Index(_build(photos, tiny_arch, tiny_clip, tmp_path / "idx"))
    app = create_app(idx, QueryModel(trained_run))
    # the scope uvicorn --root-path /photos gives a request the proxy stripped of its path: the path put back
    c = TestClient(app, root_path="/photos")
    for params, route in (({"q": "красный круг", "k": 2}, "api/search"), ({"k": 2}, "api/similar/0")):
        r = c.get(f"/photos/{route}", params=params)
        assert r.status_code == 200, (route, r.text)
        first = r.json()["results"][0]
        assert first["thumb"] == f"/photos/thumb/{first['id']}" and first["image"] == f"/photos/image/{first['id']}"
        assert c.get(first["thumb"]).headers["content-type"] == "image/jpeg"
    up = c.post("/photos/api/search/image", files={"file": ("q.jpg", (photos / "04.jpg").read_bytes())}, params={"k": 1})
    assert up.json()["results"][0]["thumb"].startswith("/photos/thumb/")
    assert c.get("/photos/openapi.json").json()["servers"] == [{"url": "/photos"}]   # /docs asks the API under it
    plain = TestClient(app)
    assert plain.get("/api/search", params={"q": "круг", "k": 1}).json()["results"][0]["thumb"].startswith("/thumb/")
    idx.close()
    monkeypatch.setenv("LANGCLIP_INDEX_HOME", str(tmp_path / "home"))
    for bad in ("photos", "/photos?x=1"):
        assert main(["serve", "--images", str(photos), "--model", str(trained_run), "--root-path", bad]) == 2
        assert "--root-path" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()               # refused before the folder was indexed


def test_a_picture_search_leaves_the_server_answering_the_others(client, monkeypatch):
    """A picture search decodes the upload and runs the image tower (a second, on a CPU, for a big photo);
    meanwhile the server answers other requests — before, the upload's route did that work on the event
    loop, and every other request (the page's thumbnails, other users' searches) waited for it."""
    import threading

    c, idx = client
    h = {"Authorization": "Bearer s3cret"}
    started, release, waited = threading.Event(), threading.Event(), {}
    encode = QueryModel.encode_image

    def held(self, images):   # the image tower, held until the test has asked something else
        started.set()
        waited["in time"] = release.wait(10)
        return encode(self, images)

    monkeypatch.setattr(QueryModel, "encode_image", held)
    up = {}
    with c:   # one event loop for every request, as under uvicorn
        t = threading.Thread(target=lambda: up.update(r=c.post(
            "/api/search/image", files={"file": ("q.jpg", (idx.path.parent / "photos" / "04.jpg").read_bytes())},
            params={"k": 1}, headers=h)))
        t.start()
        assert started.wait(10)
        other = c.get("/api/search", params={"q": "круг", "k": 1}, headers=h)
        release.set()
        t.join(30)
    assert other.status_code == 200 and waited["in time"], "the text search waited for the picture search"
    assert idx.source(up["r"].json()["results"][0]["id"]).endswith("04.jpg")


def test_a_running_server_answers_from_the_updated_index(tmp_path, photos, tiny_arch, tiny_clip, trained_run, caplog):
    """`langclip serve` runs for weeks while `index update` runs nightly: the server answers from the new
    version (new pictures found, deleted ones gone, every thumbnail the new version's bytes) — before, it
    answered from the version it started with until restarted. A version whose files disagree (an update
    half written) is refused with what to do, and the server keeps the one it has."""
    import logging

    from fastapi.testclient import TestClient

    from langclip.files import atomic_write_text
    from langclip.search.server import create_app

    out = _build(photos, tiny_arch, tiny_clip, tmp_path / "idx")
    first = Index(out)
    c = TestClient(create_app(first, QueryModel(trained_run), reload_every=0))
    assert c.get("/api/health").json()["index"]["pictures"] == 25
    gone = first.items["id"][first.items["source"].index(str(photos / "01.jpg"))]
    (photos / "01.jpg").unlink()
    for i in range(3):
        make_image(photos / f"new{i}.jpg", 600 + i, size=(48, 36))
    update_index(out, progress=False, workers=0)
    fresh = Index(out)
    assert c.get("/api/health").json()["index"]["pictures"] == len(fresh) == 27
    new = fresh.items["id"][fresh.items["source"].index(str(photos / "new1.jpg"))]
    up = c.post("/api/search/image", files={"file": ("q.jpg", (photos / "new1.jpg").read_bytes())},
                params={"k": 1}).json()["results"]
    assert up[0]["id"] == new and up[0]["name"] == "new1.jpg"
    assert c.get("/api/search", params={"q": "кот", "k": 1}).json()["pictures"] == 27   # the page's count follows
    assert all(c.get(f"/thumb/{i}").content == fresh.thumbnail(i) for i in fresh.ids)
    assert c.get(f"/thumb/{gone}").status_code == 404
    # a manifest that disagrees with the other files: Index names it; the server keeps answering
    man = json.loads((out / "manifest.json").read_text())
    atomic_write_text(out / "manifest.json", json.dumps(dict(man, count=man["count"] + 5)))
    with pytest.raises(ValueError, match="files disagree.*27 embeddings.*manifest.json: 32.*langclip index update"):
        Index(out)
    with caplog.at_level(logging.WARNING, logger="langclip"):
        assert c.get("/api/health").json()["index"]["pictures"] == 27
    assert "changed but was not reloaded" in caplog.text
    assert c.get(f"/thumb/{new}").content == fresh.thumbnail(new)


def test_api_combines_texts_and_never_reads_a_path(client, trained_run):
    """/api/search?q=…&add=…&subtract=…: the weighted sum of the texts' embeddings (a numpy reference from
    each text alone), as `search --add`; a term that looks like a file is a text here (the API never reads
    a file by its path)."""
    c, idx = client
    h = {"Authorization": "Bearer s3cret"}
    m = QueryModel(trained_run, image=False)
    red, circle = m.encode_text(["красный"])[0], m.encode_text(["круг"])[0]
    want = (red - 0.5 * circle) / np.linalg.norm(red - 0.5 * circle)
    order = [int(idx.ids[r]) for r in np.argsort(-(np.asarray(idx.embeddings, np.float32) @ want))[:5]]
    r = c.get("/api/search", params={"q": "красный", "subtract": "0.5:круг", "k": 5}, headers=h).json()
    assert [x["id"] for x in r["results"]] == order
    assert r["terms"] == [{"text": "красный", "weight": 1.0, "searched": "красный"},
                          {"text": "круг", "weight": -0.5, "searched": "круг"}]
    pic = "../../etc/passwd.jpg"
    r = c.get("/api/search", params={"q": "кот", "add": pic, "k": 1}, headers=h)
    assert r.status_code == 200 and r.json()["terms"][1]["text"] == pic
    many = c.get("/api/search", params=[("q", "кот")] + [("add", "кот")] * 9, headers=h)
    assert many.status_code == 422 and "terms" in many.json()["detail"]


def test_api_adds_and_subtracts_pictures_of_the_index(client, trained_run):
    """/api/search?add_id=…&subtract_id=…: pictures of the index by id (weighted "2:ID"), summed with the texts
    as `search --add picture.jpg` sums them (a numpy reference from the stored embeddings); a picture alone
    may be the thing looked for; an id the index lacks, or a malformed one, is refused."""
    c, idx = client
    h = {"Authorization": "Bearer s3cret"}
    m = QueryModel(trained_run, image=False)
    emb = np.asarray(idx.embeddings, np.float32)
    a, b = int(idx.ids[3]), int(idx.ids[7])
    red = m.encode_text(["красный"])[0]
    want = red + 2 * emb[3] - emb[7]
    want /= np.linalg.norm(want)
    order = [int(idx.ids[r]) for r in np.argsort(-(emb @ want))[:5]]
    r = c.get("/api/search", params={"q": "красный", "add_id": f"2:{a}", "subtract_id": str(b), "k": 5}, headers=h).json()
    assert [x["id"] for x in r["results"]] == order
    assert r["terms"][1:] == [{"picture": a, "weight": 2.0}, {"picture": b, "weight": -1.0}]
    only = emb[3] - m.encode_text(["круг"])[0]        # "like this picture, but not a circle": no query text
    order = [int(idx.ids[r]) for r in np.argsort(-(emb @ (only / np.linalg.norm(only))))[:5]]
    r = c.get("/api/search", params={"add_id": str(a), "subtract": "круг", "k": 5}, headers=h).json()
    assert [x["id"] for x in r["results"]] == order and r["searched"] == ""
    alone = c.get("/api/search", params={"add_id": str(a), "k": 2}, headers=h).json()["results"]
    assert alone[0]["id"] == a                         # a picture's nearest is itself
    for params, status, says in (({"subtract_id": str(a)}, 422, "empty"), ({"q": "кот", "add_id": "99999"}, 404, "99999"),
                                 ({"q": "кот", "add_id": "x:1"}, 422, "weight:id"),
                                 ({"add_id": str(a), "subtract_id": str(a)}, 422, "cancel out")):
        r = c.get("/api/search", params={**params, "k": 1}, headers=h)
        assert r.status_code == status and says in r.json()["detail"], (params, r.json())


def test_model_keys_name_each_text_tower():
    """`serve --model A B`: the API's model= key is each model's language where they differ, else its folder's."""
    from types import SimpleNamespace as M

    from langclip.search.server import model_keys

    ru, uk = M(lang="ru", folder=Path("runs/ru"), name="ru"), M(lang="uk", folder=Path("runs/uk"), name="uk")
    assert list(model_keys([ru, uk])) == ["ru", "uk"]
    a, b = M(lang="ru", folder=Path("runs/clip"), name="a"), M(lang="ru", folder=Path("x/clip"), name="b")
    assert list(model_keys([a, b, M(lang="en", folder=None, name="ViT-B-32.pt")])) == ["clip", "clip-2", "ViT-B-32.pt"]


@pytest.mark.parametrize("method,url,kw,status", [
    ("get", "/api/search?q=кот", {}, 401),                                     # no token
    ("get", "/api/search?q=%20", {"auth": True}, 422),                         # empty query
    ("get", "/api/search?q=" + "я" * 51, {"auth": True}, 413),                 # too long
    ("get", "/api/search?q=кот&k=0", {"auth": True}, 422),
    ("get", "/api/search?q=кот&k=31", {"auth": True}, 422),
    ("get", "/api/search?q=кот&model=nope", {"auth": True}, 422),              # a model this server lacks
    ("get", "/api/similar/99999", {"auth": True}, 404),
    ("get", "/thumb/99999", {"auth": True}, 404),
    ("get", "/image/..%2F..%2Fetc%2Fpasswd", {"auth": True}, 404),            # never by path
    ("get", "/image/../../etc/passwd", {"auth": True}, 404),
    ("get", "/thumb/05.jpg", {"auth": True}, 404),
    ("post", "/api/search/image", {"auth": True, "files": {"file": ("x.png", b"\0" * 300_000)}}, 413),  # upload size
    ("post", "/api/search/image", {"auth": True, "files": {"file": ("x.png", _png(1200, 1000))}}, 413),  # pixels
    ("post", "/api/search/image", {"auth": True, "files": {"file": ("x.png", b"not an image")}}, 400),
    ("post", "/api/search", {"auth": True}, 405),                               # read-only
])
def test_api_refuses_bad_requests(client, method, url, kw, status):
    c, _ = client
    headers = {"Authorization": "Bearer s3cret"} if kw.pop("auth", False) else {}
    r = getattr(c, method)(url, headers=headers, **kw)
    assert r.status_code == status, r.text
    if status != 405:
        assert r.json()["detail"]


def test_serve_reads_its_token_from_a_file_or_the_environment(tmp_path, monkeypatch):
    """A token on the command line is visible to every user in `ps`: --token-file and $LANGCLIP_TOKEN keep
    it out of it. `langclip serve` hands the token it read to the server (serve itself replaced here)."""
    import langclip.search.server as server
    from langclip.search.cli import serve_token

    f = tmp_path / "token"
    f.write_text("s3cret\n# a comment line is not the token\n")
    monkeypatch.delenv("LANGCLIP_TOKEN", raising=False)
    assert serve_token(None, None) is None and serve_token("a", None) == "a" and serve_token(None, str(f)) == "s3cret"
    monkeypatch.setenv("LANGCLIP_TOKEN", "from-env")
    assert serve_token(None, None) == "from-env" and serve_token("a", None) == "a"
    with pytest.raises(ValueError, match="not both"):
        serve_token("a", str(f))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="first line is empty"):
        serve_token(None, str(tmp_path / "empty"))
    got = {}
    monkeypatch.setattr(server, "serve", lambda *a, **k: got.update(token=a[4]))
    assert main(["serve", "--index", "idx", "--model", "run", "--token-file", str(f)]) == 0
    assert got["token"] == "s3cret"
    assert main(["serve", "--index", "idx", "--model", "run", "--token-file", str(tmp_path / "none")]) == 2


def test_serve_binds_to_this_machine_by_default():
    import inspect

    from langclip.search.server import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"


@pytest.mark.slow
def test_index_build_and_update_under_torchrun_equal_one_process(tmp_path, photos, tiny_arch, tiny_clip):
    """Under torchrun (2 gloo processes) every rank embeds its shards of the collection and rank 0 alone
    writes the index: `index build` and `index update` give the same index as one process (same pictures,
    ids, embeddings, failures), and every rank embeds (the update's work folder is the same on both)."""
    from conftest import torchrun as launch

    build = ["index", "build", "--data", str(photos), "--clip", tiny_arch, "--weights", tiny_clip[1], "--workers", "0",
             "shard_size=4"]

    def torchrun(args, port):
        r = launch(port, ["-m", "langclip", *args], timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout + r.stderr

    def same(a, b):
        A, B = Index(a), Index(b)
        assert A.items["source"] == B.items["source"] and A.items["id"] == B.items["id"]
        assert np.array_equal(np.asarray(A.embeddings), np.asarray(B.embeddings))
        assert [f["source"] for f in A.manifest["failures"]] == [f["source"] for f in B.manifest["failures"]]
        assert [A.thumbnail(i) for i in A.ids] == [B.thumbnail(i) for i in B.ids]
        A.close(), B.close()

    assert main([*build, "--out", str(tmp_path / "one")]) == 0
    log = torchrun([*build, "--out", str(tmp_path / "two")], 29561)
    import re

    done = {int(r): int(n) for r, n in re.findall(r"cache\[(\d)\]: 100%.*?\| (\d+)/\2 ", log)}
    assert done.get(0, 0) > 0 and done.get(1, 0) > 0 and sum(done.values()) == 26, log[-2000:]   # both ranks embedded
    same(tmp_path / "one", tmp_path / "two")
    for i in range(6):                      # six new pictures: two shards of 4, one for each rank
        make_image(photos / f"new{i}.jpg", 600 + i, size=(48, 36))
    (photos / "04.jpg").unlink()
    assert main(["index", "update", str(tmp_path / "one"), "--workers", "0"]) == 0
    log = torchrun(["index", "update", str(tmp_path / "two"), "--workers", "0"], 29562)
    assert re.search(r"cache\[1\]: 100%.*?\| [1-9]\d*/", log), log[-2000:]
    same(tmp_path / "one", tmp_path / "two")
    assert Index(tmp_path / "two").manifest["count"] == 30 and not (tmp_path / "two" / "work").exists()
