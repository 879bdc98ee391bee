"""Pictures with more than 8 bits a sample (16-bit greyscale PNG/TIFF, float TIFF): PIL's
convert("RGB") clips them (a 16-bit scan comes out white, a float picture black); langclip scales them
to 8 bits first, in every path that reads a picture."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from langclip.pairs import ImageRef, decode_image, open_image
from langclip.config import IndexConfig
from langclip.search import Index, build_index


def _gradient(h=48, w=64):
    """0..255 over the picture, every value a multiple of 257 at 16 bits (so / 257 is exact)."""
    return (np.arange(h * w).reshape(h, w) * 256 // (h * w)).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_greyscale_opens_as_its_eight_bit_values(tmp_path, fmt):
    g = _gradient()
    p = tmp_path / f"scan.{fmt.lower()}"
    Image.fromarray(g.astype(np.uint16) * 257).save(p, format=fmt)
    assert Image.open(p).mode.startswith("I")                           # what PIL opens it as
    assert np.asarray(Image.open(p).convert("RGB")).mean() > 250        # what convert("RGB") makes of it
    for im in (open_image(ImageRef(str(p))), decode_image(p.read_bytes()), open_image(ImageRef(str(p)), orient=True)):
        assert np.array_equal(np.asarray(im.convert("RGB"))[..., 0], g)


def test_other_deep_modes_scale_as_documented(tmp_path):
    rng = np.random.default_rng(0)
    unit = rng.random((20, 30)).astype(np.float32)                       # float in 0..1: x 255
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    got = np.asarray(open_image(ImageRef(str(tmp_path / "unit.tif"))))
    assert np.abs(got.astype(int) - np.rint(unit * 255)).max() <= 1
    wide = (rng.random((20, 30)) * 4000 - 1000).astype(np.float32)     # any other range: min..max
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    got = np.asarray(open_image(ImageRef(str(tmp_path / "wide.tif")))).astype(int)
    want = np.rint((wide.astype(np.float64) - wide.min()) / (wide.max() - wide.min()) * 255)
    assert np.abs(got - want).max() <= 1 and got.min() == 0 and got.max() == 255
    small = rng.integers(0, 256, (20, 30)).astype(np.int32)              # 32-bit integers within 0..255: as they are
    Image.fromarray(small).save(tmp_path / "small.tif")
    assert np.array_equal(np.asarray(open_image(ImageRef(str(tmp_path / "small.tif")))), small)
    from langclip.benchsets import Labeled                                # eval's benchmark readers too
    Image.fromarray(_gradient().astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert np.array_equal(Labeled([str(tmp_path / "deep.png")], None, np.asarray)[0][0][..., 0], _gradient())
    rgb = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))   # 8-bit modes: untouched
    rgb.save(tmp_path / "rgb.png")
    assert np.array_equal(np.asarray(open_image(ImageRef(str(tmp_path / "rgb.png")))), np.asarray(rgb))


@pytest.mark.parametrize("decode", ["torchvision", "pil"])
def test_a_sixteen_bit_scan_is_indexed_like_its_eight_bit_copy(tmp_path, tiny_arch, tiny_clip, trained_run, decode):
    """Index, thumbnail and the Python API: a 16-bit PNG embeds as its 8-bit copy does (without the
    scaling it embedded as a white picture)."""
    import langclip

    d = tmp_path / "scans"
    d.mkdir()
    g = _gradient()
    Image.fromarray(g.astype(np.uint16) * 257).save(d / "deep.png")
    Image.fromarray(g).save(d / "flat.png")
    Image.new("L", (64, 48), 255).save(d / "white.png")
    idx = Index(build_index(IndexConfig(data=[str(d)], out=str(tmp_path / "idx"), clip=tiny_arch, weights=tiny_clip[1],
                                        workers=0, decode=decode), progress=False))
    vec = {name: idx.vector(idx.items["id"][idx.items["source"].index(str(d / name))])
           for name in ("deep.png", "flat.png", "white.png")}
    assert np.array_equal(vec["deep.png"], vec["flat.png"])
    assert np.abs(vec["deep.png"] - vec["white.png"]).max() > 1e-2
    thumb = idx.thumbnail(idx.items["id"][idx.items["source"].index(str(d / "deep.png"))])
    assert np.asarray(Image.open(io.BytesIO(thumb))).mean() < 200    # a gradient, not white
    if decode == "pil":     # a picture query uploaded to `langclip serve`
        from fastapi.testclient import TestClient

        from langclip.search import QueryModel
        from langclip.search.server import create_app

        c = TestClient(create_app(idx, QueryModel(trained_run), token="t"))
        hits = [c.post("/api/search/image", files={"file": (n, (d / n).read_bytes())}, params={"k": 3},
                       headers={"Authorization": "Bearer t"}).json()["results"] for n in ("deep.png", "flat.png")]
        assert [(h["id"], h["score"]) for h in hits[0]] == [(h["id"], h["score"]) for h in hits[1]]
    idx.close()
    if decode != "pil":
        return
    m = langclip.load(trained_run, device="cpu")
    deep = Image.open(d / "deep.png")
    e = m.encode_image([deep, Image.open(d / "flat.png"), d / "deep.png"])
    assert torch.allclose(e[0], e[1], atol=1e-6) and torch.allclose(e[2], e[1], atol=1e-6)
