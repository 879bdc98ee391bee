"""`cache build --decode nvjpeg` (the device-side decoding path: torchvision's decode_jpeg; here on CPU,
the same code as on CUDA) and `--decode torchvision` (the same kernels in the CPU workers) against the
default PIL path."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from langclip.cache import build_cache, load_cache
from langclip.config import CacheConfig


def _photo(w, h, seed):
    """A photo-like picture: smooth gradients and a few discs, not per-pixel noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    a = np.stack([np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)), np.cos(y * rng.uniform(2, 9)),
                  np.sin((x + y) * rng.uniform(2, 9))], -1) * 90 + 128
    for _ in range(4):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, h / max(w, h)), rng.uniform(0.05, 0.2)
        a[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    names = []
    for i, (w, h) in enumerate([(500, 375), (375, 500), (500, 375), (320, 240), (640, 427), (224, 224), (120, 90)]):
        _photo(w, h, i).save(d / f"{i}.jpg", quality=90, progressive=i == 2)
        names.append(f"{i}.jpg")
    _photo(300, 200, 10).convert("L").save(d / "gray.jpg")
    _photo(300, 200, 11).convert("CMYK").save(d / "cmyk.jpg")
    _photo(300, 200, 12).save(d / "png.png")
    (d / "broken.jpg").write_bytes((d / "0.jpg").read_bytes()[:400])
    names += ["gray.jpg", "cmyk.jpg", "png.png", "broken.jpg"]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows([[f"img/{n}", f"фото {n}"] for n in names])
    return tmp_path


def test_device_preprocessing_matches_pil(photos):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from langclip.cache.decode import DevicePreprocess, EncodedImages
    from langclip.model import image_transform
    from langclip.pairs import ImageDataset, read_pairs

    pairs = read_pairs([str(photos / "pairs.csv")])
    pp = {"size": (224, 224), "mode": "RGB", "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD,
          "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}   # ViT-B/32's preprocessing
    rows = list(range(len(pairs.images)))
    enc = [EncodedImages(pairs.images, rows)[i] for i in rows]
    ref = [ImageDataset(pairs.images, rows, image_transform(pp))[i] for i in rows]
    dev = DevicePreprocess(pp, torch.device("cpu"), pairs.images)
    out_rows, ok, x, reasons = dev([e[0] for e in enc], [e[1] for e in enc], [e[2] for e in enc])
    assert out_rows == rows
    assert ok == [r[1] is not None for r in ref]          # the same pictures fail: the truncated one
    assert ok.count(False) == 1 and "broken" in pairs.images[ok.index(False)].path and reasons[ok.index(False)]
    assert dev.fallbacks == 1                              # the PNG went through PIL; CMYK/grey are JPEGs
    want = torch.stack([r[1] for r in ref if r[1] is not None])
    assert x.shape == want.shape == (len(rows) - 1, 3, 224, 224)
    # in 0..255 grey levels. On CPU both paths use libjpeg-turbo; the tensor resampling differs from
    # PIL's by rounding. On CUDA nvJPEG's IDCT differs too (benchmarks/cache_throughput.py measures it)
    diff = ((x - want) * torch.tensor(pp["std"]).view(3, 1, 1) * 255).abs()
    per_image = diff.flatten(1).mean(1)
    assert per_image.max() < 0.5, per_image          # measured: at most 0.005 (libjpeg-turbo both ways on CPU)
    assert diff.flatten(1).quantile(0.99, dim=1).max() < 4
    # decode split over threads (on CUDA a stream each): the same pixels, failures and fallbacks, with the
    # truncated picture in one part (that part's batched call fails and decodes one by one)
    threaded = DevicePreprocess(pp, torch.device("cpu"), pairs.images, threads=3)
    t_rows, t_ok, tx, t_reasons = threaded([e[0] for e in enc], [e[1] for e in enc], [e[2] for e in enc])
    assert threaded._pool is not None                      # it did split
    assert (t_rows, t_ok, t_reasons, threaded.fallbacks) == (out_rows, ok, reasons, 1) and torch.equal(tx, x)


def test_pil_path_hands_uint8_with_open_clips_numbers(photos):
    """The default path's workers stop open_clip's transform before its tensor conversion and hand uint8;
    the device's normalisation then gives open_clip's float input bit for bit (every mode: RGB, grey,
    CMYK, PNG). A transform that does not end as expected keeps the float path."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from langclip.cache.decode import Normalize255, uint8_transform
    from langclip.model import image_transform
    from langclip.pairs import open_image, read_pairs

    pp = {"size": (224, 224), "mode": "RGB", "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD,
          "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
    tf = image_transform(pp)
    head = uint8_transform(tf, pp)
    norm = Normalize255(pp, torch.device("cpu"))
    refs = read_pairs([str(photos / "pairs.csv")]).images[:-1]     # all but the truncated one
    for r in refs:
        x = head(open_image(r))
        assert x.dtype == torch.uint8
        assert torch.equal(norm(x[None])[0], tf(open_image(r))), r.path
    assert uint8_transform(tf, {**pp, "mean": (0.5, 0.5, 0.5)}) is None
    assert uint8_transform(lambda im: im, pp) is None


def test_worker_tensor_decoding_matches_pil(photos):
    """`--decode torchvision`: what a worker hands over (uint8, resized and cropped), normalised as the
    build device does, against open_clip's PIL transform — every pixel within two grey levels, nearly all
    identical (the same libjpeg-turbo decode; the tensor resampling rounds differently now and then); the
    same pictures fail; PNG, greyscale and CMYK come out as PIL's."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from langclip.cache.decode import DecodedImages, Normalize255
    from langclip.model import image_transform
    from langclip.pairs import ImageDataset, read_pairs

    pairs = read_pairs([str(photos / "pairs.csv")])
    pp = {"size": (224, 224), "mode": "RGB", "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD,
          "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
    rows = list(range(len(pairs.images)))
    got = [DecodedImages(pairs.images, rows, pp)[i] for i in rows]
    ref = [ImageDataset(pairs.images, rows, image_transform(pp))[i] for i in rows]
    assert [g[1] is None for g in got] == [r[1] is None for r in ref] == [r == len(rows) - 1 for r in rows]
    assert got[-1][2] and not any(g[2] for g in got[:-1])           # the truncated JPEG, with its reason
    assert all(g[1].dtype == torch.uint8 and g[1].shape == (3, 224, 224) for g in got[:-1])
    x = Normalize255(pp, torch.device("cpu"))(torch.stack([g[1] for g in got[:-1]]))
    want = torch.stack([r[1] for r in ref[:-1]])
    grey = ((x - want) * torch.tensor(pp["std"]).view(3, 1, 1) * 255).abs()
    assert grey.max() < 2.001, grey.max()        # measured: 1 grey level at most in colour, 2 in the grey JPEG
    assert (grey > 0.5).float().mean() < 0.01, (grey > 0.5).float().mean()   # measured: 0.0-0.5 % of pixels


def test_camera_sized_jpegs_decode_at_reduced_scale(tmp_path):
    """A camera's photo (here 2000×1500) is decoded by libjpeg at 1/2 scale (1000×750, both sides still
    >= 2 × 224) in the torchvision path, and within a few grey levels of open_clip's PIL transform of the
    full decode; a picture below 4 × 224 a side goes through decode_jpeg whole. Thumbnails are PIL's own
    `thumbnail` of the file (which drafts by itself), byte for byte."""
    import io

    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from langclip.cache.decode import DecodedImages, Normalize255, decode_rgb
    from langclip.model import image_transform
    from langclip.pairs import ImageDataset, ImageRef
    from langclip.search.thumbs import _Thumbs

    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    _photo(2000, 1500, 1).save(big, quality=92)
    _photo(800, 600, 2).save(small, quality=92)
    assert decode_rgb(big.read_bytes(), 448).shape == (3, 750, 1000)
    assert decode_rgb(small.read_bytes(), 448).shape == (3, 600, 800)
    assert decode_rgb(big.read_bytes()).shape == (3, 1500, 2000)
    pp = {"size": (224, 224), "mode": "RGB", "mean": OPENAI_DATASET_MEAN, "std": OPENAI_DATASET_STD,
          "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
    refs = [ImageRef(str(big)), ImageRef(str(small))]
    got = torch.stack([DecodedImages(refs, [0, 1], pp)[i][1] for i in range(2)])
    want = torch.stack([ImageDataset(refs, [0, 1], image_transform(pp))[i][1] for i in range(2)])
    grey = ((Normalize255(pp, torch.device("cpu"))(got) - want) * torch.tensor(pp["std"]).view(3, 1, 1) * 255).abs()
    assert grey[1].max() < 2.001                                   # full decode: as above
    assert grey[0].mean() < 0.5 and grey[0].max() < 8, (grey[0].mean(), grey[0].max())   # measured: 0.2 / 3
    from PIL import Image

    for f in (big, small):
        ref = Image.open(f)
        ref.thumbnail((256, 256))                    # not loaded yet: PIL drafts by itself
        buf = io.BytesIO()
        ref.convert("RGB").save(buf, "JPEG", quality=85)
        assert _Thumbs([ImageRef(str(f))], 256)[0] == buf.getvalue()


@pytest.mark.parametrize("mode", ["nvjpeg", "torchvision"])
def test_tensor_decoding_caches_equal_pil_cache(tmp_path, photos, tiny_arch, tiny_clip, mode):
    caches = {}
    for m in ("pil", mode):
        caches[m] = load_cache(build_cache(CacheConfig(
            data=[str(photos / "pairs.csv")], clip=tiny_arch, weights=tiny_clip[1], out=str(tmp_path / m),
            batch_size=4, workers=2 if m == "torchvision" else 0, shard_size=5, decode=m), progress=False))
    a, b = caches["pil"], caches[mode]
    assert torch.equal(a.image_ok, b.image_ok) and int(a.image_ok.sum()) == 10
    assert [f["source"] for f in a.manifest["failures"]] == [f["source"] for f in b.manifest["failures"]]
    assert b.manifest["config"]["decode"] == mode
    if mode == "nvjpeg":   # the next batch decoded in a thread meanwhile: the same numbers, the same failures
        ahead = load_cache(build_cache(CacheConfig(
            data=[str(photos / "pairs.csv")], clip=tiny_arch, weights=tiny_clip[1], out=str(tmp_path / "ahead"),
            batch_size=4, workers=0, shard_size=5, decode=mode, decode_ahead=True), progress=False))
        assert torch.equal(ahead.image_ok, b.image_ok) and torch.equal(ahead.image_emb, b.image_emb)
        assert ahead.manifest["failures"] == b.manifest["failures"]
    cos = (a.image_emb[a.image_ok].float() * b.image_emb[b.image_ok].float()).sum(-1)
    assert cos.min() > 0.999, cos
    with pytest.raises(ValueError, match="decode differ|decode: was pil"):      # no mixed resume
        build_cache(CacheConfig(data=[str(photos / "pairs.csv")], clip=tiny_arch, weights=tiny_clip[1],
                                out=str(tmp_path / "pil"), batch_size=4, workers=0, shard_size=5, decode=mode),
                    progress=False)


def test_decode_option_is_checked():
    with pytest.raises(ValueError, match="decode must be"):
        CacheConfig(data=["x"], weights="", pretrained="a-tag", decode="gpu").validate()
    with pytest.raises(ValueError, match="decode_threads must be"):
        CacheConfig(data=["x"], weights="", pretrained="a-tag", decode="nvjpeg", decode_threads=0).validate()


def test_decode_ahead_keeps_order_and_errors():
    """The next batch is prepared in a thread while the caller holds this one: results in order, each
    batch prepared once, and an error in a batch raised where that batch would have been."""
    import threading

    from langclip.cache.decode import decode_ahead

    calls = []

    def prep(i, fail=False):
        calls.append((i, threading.current_thread().name))
        if fail:
            raise ValueError(f"batch {i}")
        return [i], [True], torch.full((1, 2), float(i)), [""]

    dev = torch.device("cpu")
    got = [out[0][0] for out in decode_ahead(((i,) for i in range(5)), prep, dev)]
    assert got == [0, 1, 2, 3, 4] and sorted(c[0] for c in calls) == got
    assert all(name.startswith("decode-ahead") for _, name in calls)
    assert list(decode_ahead(iter([]), prep, dev)) == []
    seen = []
    with pytest.raises(ValueError, match="batch 2"):
        for out in decode_ahead(iter([(0,), (1,), (2, True), (3,)]), prep, dev):
            seen.append(out[0][0])
    assert seen == [0, 1]


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
def test_torchcodec_and_torchvision_jpeg_decoders_agree(photos):
    """TorchCodec's decode_jpeg (preferred: torchvision 0.29 deprecates its own) and torchvision's give
    the same pixels as PIL on every JPEG kind the fixture has, in one call or batched, and both refuse
    the truncated file; the choice can be forced, and a wrong name is refused."""
    from langclip.cache.decode import jpeg_decoder

    assert jpeg_decoder()[0] == "torchcodec"          # installed with langclip where it has wheels
    files = [p for p in sorted((photos / "img").iterdir()) if p.suffix == ".jpg" and p.name != "broken.jpg"]
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    pil = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1) for p in files]
    for name in ("torchcodec", "torchvision"):
        got_name, decode = jpeg_decoder(name)
        assert got_name == name
        one = [decode(d) for d in datas]
        assert all(torch.equal(a, b) for a, b in zip(one, pil)), name     # grey, CMYK, progressive too
        assert all(torch.equal(a, b) for a, b in zip(decode(datas), pil)), name
        with pytest.raises(RuntimeError):
            decode(torch.frombuffer(bytearray((photos / "img" / "broken.jpg").read_bytes()), dtype=torch.uint8))
    with pytest.raises(ValueError, match="LANGCLIP_JPEG_DECODER must be"):
        jpeg_decoder("pil")


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision")
def test_jpeg_decoders_agree_on_corrupt_files(photos):
    """300 damaged JPEGs (truncated, bytes overwritten, headers garbled): TorchCodec's and torchvision's
    decoders refuse the same ones with RuntimeError (which the cache counts as failures) and decode the
    rest to the same pixels; nothing crashes the process."""
    import random

    from langclip.cache.decode import jpeg_decoder

    rng = random.Random(0)
    bases = [(photos / "img" / n).read_bytes() for n in ("0.jpg", "2.jpg", "gray.jpg", "cmyk.jpg")]
    (_, tc), (_, tv) = jpeg_decoder("torchcodec"), jpeg_decoder("torchvision")
    refused = 0
    for _ in range(300):
        d = bytearray(rng.choice(bases))
        r = rng.random()
        if r < 0.3:
            d = d[: rng.randrange(3, len(d))]
        elif r < 0.7:
            for _ in range(rng.randrange(1, 20)):
                d[rng.randrange(2, len(d))] = rng.randrange(256)
        else:
            p = rng.randrange(2, min(len(d), 700))
            d[p: p + 8] = bytes(rng.randrange(256) for _ in range(8))
        got = []
        for decode in (tc, tv):
            try:
                got.append(decode(torch.frombuffer(bytearray(d), dtype=torch.uint8)))
            except RuntimeError:
                got.append(None)
        assert (got[0] is None) == (got[1] is None)
        if got[0] is None:
            refused += 1
        else:
            assert torch.equal(got[0], got[1])
    assert 50 < refused < 250            # both kinds of outcome were exercised


def test_missing_and_empty_files_fail_alike_in_every_decode_mode(tmp_path, tiny_arch, tiny_clip):
    """A missing file and a zero-byte file are skipped and counted, with a reason, by the PIL, torchvision
    and nvjpeg paths alike (the nvjpeg workers only read bytes: their failures are counted there)."""
    d = tmp_path / "img"
    d.mkdir()
    for i in range(3):
        _photo(120, 90, i).save(d / f"{i}.jpg")
    (d / "empty.jpg").write_bytes(b"")
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows([[f"img/{n}", f"фото {n}"] for n in ("0.jpg", "missing.jpg", "1.jpg", "empty.jpg", "2.jpg")])
    fails = {}
    for mode in ("pil", "torchvision", "nvjpeg"):
        c = load_cache(build_cache(CacheConfig(data=[str(tmp_path / "pairs.csv")], clip=tiny_arch, weights=tiny_clip[1],
                                               out=str(tmp_path / mode), batch_size=4, workers=0, shard_size=5,
                                               decode=mode, max_failure_rate=1.0), progress=False))
        assert c.image_ok.tolist() == [True, False, True, False, True], mode
        fails[mode] = {Path(x["source"]).name: x["reason"] for x in c.manifest["failures"]}
    assert all(set(f) == {"missing.jpg", "empty.jpg"} for f in fails.values()), fails
    assert all("zero-byte" in f["empty.jpg"] and ("No such file" in f["missing.jpg"] or "not found" in f["missing.jpg"])
               for f in fails.values()), fails


def test_exif_orientation_turns_pictures_upright_in_every_path(tmp_path):
    """decode_rgb (the torchvision path), the device path and PIL's open_image with `orient` give the
    pixels of PIL's ImageOps.exif_transpose for all eight EXIF orientations; without it, as stored, as
    PIL reads them (TorchCodec alone would turn them upright: such JPEGs go through PIL)."""
    from PIL import ImageOps

    from langclip.cache.decode import DevicePreprocess, decode_rgb
    from langclip.pairs import ImageRef, open_image

    base = _photo(80, 40, 5)
    refs, datas = [], []
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        p = tmp_path / f"o{o}.jpg"
        base.save(p, quality=95, exif=ex.tobytes())
        refs.append(ImageRef(str(p)))
        datas.append(p.read_bytes())
    pp = {"size": (32, 32), "mode": "RGB", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
          "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
    dev = DevicePreprocess(pp, torch.device("cpu"), refs, orient=True)
    _, ok, x, _ = dev(list(range(8)), [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas], [""] * 8)
    assert all(ok)
    for o, (ref, data) in enumerate(zip(refs, datas), 1):
        want = torch.from_numpy(np.asarray(ImageOps.exif_transpose(Image.open(ref.path)).convert("RGB")).copy()).permute(2, 0, 1)
        assert torch.equal(decode_rgb(data, orient=True), want), o
        assert torch.equal(torch.from_numpy(np.asarray(open_image(ref, orient=True)).copy()).permute(2, 0, 1), want), o
        stored = torch.from_numpy(np.asarray(Image.open(ref.path).convert("RGB")).copy()).permute(2, 0, 1)
        assert torch.equal(decode_rgb(data), stored), o                   # without `orient`: as stored (as PIL)
        upright = DevicePreprocess(pp, torch.device("cpu"), refs)._resize([want])[0]
        assert torch.equal(x[o - 1], upright), o                          # the device path: the same pixels


def _extraneous(jpeg: bytes, n: int = 3) -> bytes:
    """A JPEG with `n` stray bytes before its start-of-scan marker: libjpeg decodes it and warns."""
    d = bytearray(jpeg)
    i = d.find(b"\xff\xda")
    d[i:i] = b"\x00" * n
    return bytes(d)


def test_libjpeg_warnings_are_caught_per_picture_and_other_output_passes(capfd):
    """quiet_libjpeg hands back libjpeg's lines for the one decode (which otherwise go straight to file
    descriptor 2), writes anything else printed meanwhile to standard error, and lets errors through."""
    import io
    import os
    import sys

    from langclip.cache.decode import jpeg_decoder
    from langclip.cache.libjpeg import quiet_libjpeg

    b = io.BytesIO()
    _photo(64, 48, 0).save(b, "JPEG")
    bad = torch.frombuffer(bytearray(_extraneous(b.getvalue())), dtype=torch.uint8)
    _, decode = jpeg_decoder()
    decode(bad)
    assert "Corrupt JPEG data: 3 extraneous bytes" in capfd.readouterr().err   # what a build printed before

    def noisy(x):
        print("a python line", file=sys.stderr)
        os.write(2, b"a C library line\n")
        return decode(x)

    pic, warned = quiet_libjpeg(noisy, bad)
    assert pic.shape == (3, 48, 64) and warned == ["Corrupt JPEG data: 3 extraneous bytes before marker 0xda"]
    err = capfd.readouterr().err
    assert "Corrupt JPEG" not in err and err.index("a python line") < err.index("a C library line")
    assert quiet_libjpeg(decode, torch.frombuffer(bytearray(b.getvalue()), dtype=torch.uint8))[1] == []
    with pytest.raises(RuntimeError):
        quiet_libjpeg(decode, bad[:200])
    os.write(2, b"after\n")          # standard error is back where it was
    assert capfd.readouterr().err.endswith("after\n")


@pytest.mark.parametrize("workers", [0, 2])
def test_damaged_jpegs_decoded_anyway_are_counted_not_printed(tmp_path, tiny_arch, tiny_clip, capfd, workers):
    """`--decode torchvision` (the index's default) on a folder with JPEGs that libjpeg decodes despite
    stray bytes: nothing of libjpeg's reaches standard error, the build's summary counts them and the
    manifest lists each (row, file, warning), across shards; their embeddings are the ones PIL's path
    gives (the same pictures)."""
    d = tmp_path / "img"
    d.mkdir()
    names = []
    for i in range(6):
        b = (d / "x.jpg")
        _photo(160, 120, i).save(b, quality=90)
        name = f"{i}{'_damaged' if i in (1, 4) else ''}.jpg"
        (d / name).write_bytes(_extraneous(b.read_bytes()) if i in (1, 4) else b.read_bytes())
        names.append(name)
    (d / "x.jpg").unlink()
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows([[f"img/{n}", f"фото {n}"] for n in names])
    caches = {}
    for mode in ("pil", "torchvision"):
        caches[mode] = load_cache(build_cache(CacheConfig(
            data=[str(tmp_path / "pairs.csv")], clip=tiny_arch, weights=tiny_clip[1], out=str(tmp_path / mode),
            batch_size=4, workers=workers, shard_size=4, decode=mode), progress=False))
    out = capfd.readouterr()
    assert "Corrupt JPEG" not in out.err
    assert "; 2 decoded despite damaged data (libjpeg's warnings: manifest.json 'damaged'" in out.out
    damaged = caches["torchvision"].manifest["damaged"]       # one in each of the two shards
    assert [(d["row"], Path(d["source"]).name) for d in damaged] == [(1, "1_damaged.jpg"), (4, "4_damaged.jpg")]
    assert damaged[0]["warning"] == "Corrupt JPEG data: 3 extraneous bytes before marker 0xda"
    assert caches["torchvision"].manifest["num_images_damaged"] == 2 and caches["pil"].manifest["damaged"] == []
    a, b = caches["pil"], caches["torchvision"]
    assert a.image_ok.all() and b.image_ok.all() and not b.manifest["failures"]
    cos = (a.image_emb.float() * b.image_emb.float()).sum(-1)
    assert cos.min() > 0.999, cos
