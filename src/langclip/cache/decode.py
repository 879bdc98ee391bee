"""JPEG decoding with the PyTorch ecosystem's kernels (TorchCodec's or torchvision's `decode_jpeg`,
torchvision's resize): on the build device (`cache build --decode nvjpeg`), or in the CPU workers
(`--decode torchvision`).

With many cores, the default path (PIL in DataLoader workers: decode, resize, crop) keeps up with the
image tower. With few cores per GPU it does not, so this path moves the work: workers only read the
encoded bytes; the main process decodes a whole batch with `decode_jpeg` (see jpeg_decoder) on the device
(nvJPEG on CUDA; libjpeg-turbo on CPU), resizes each group of equal-size pictures in one call
(bicubic/bilinear with antialiasing, torchvision's tensor counterpart of PIL's), centre-crops and
normalises there. Anything that is not a baseline/progressive JPEG (PNG, WebP, CMYK JPEGs, corrupt
data) falls back to PIL for that picture alone, so the result set is the same as the default path's.

The pixels differ slightly from PIL's (another IDCT, tensor resampling): embeddings agree to a cosine
of about 0.999 (tests/test_cache_decode.py measures it), so a cache is built with one path or the
other, and the manifest records which.

`--decode torchvision` keeps the work in the CPU workers but does it with torchvision's kernels: the
same libjpeg-turbo decode as PIL (identical pixels), then the antialiased resize on uint8 tensors, far
cheaper than PIL's; each worker hands over uint8 pictures (a quarter of the float32 bytes) and
the build device normalises them. Every pixel is within two grey levels of PIL's, 99.5 % identical
(tests/test_cache_decode.py). On 500×375 JPEGs a worker spends 1.36 ms a picture against PIL's 2.59 ms,
and a 2-core build runs 1.86× faster end to end (benchmarks/results/cpu_cache_throughput.jsonl).
"""
from __future__ import annotations

import functools
import os

import torch

from ..pairs import ImageRef, decode_image, open_image, read_image_bytes
from .libjpeg import quiet_libjpeg

_JPEG = b"\xff\xd8\xff"
JPEG_DECODERS = ("torchcodec", "torchvision")
WARNED = "decoded despite libjpeg's warning: "   # a picture's reason when it worked but libjpeg warned


@functools.lru_cache(maxsize=None)
def jpeg_decoder(name: str | None = None):
    """(name, decode): `decode(src, device)` turns a 1-D uint8 tensor of JPEG bytes (or a list of them,
    one batched call) into uint8 RGB (3, H, W) on `device` (libjpeg-turbo on CPU, nvJPEG on CUDA), and
    raises RuntimeError on data it cannot decode. TorchCodec's `decode_jpeg` (>= 0.16), the successor of
    torchvision's, which torchvision 0.29 deprecates, when it loads with this torch; else torchvision's.
    Both give the same pixels on CPU (tested), except that TorchCodec turns a JPEG with an EXIF
    orientation upright: decode_rgb hands such JPEGs to PIL. `name` (or LANGCLIP_JPEG_DECODER) picks one."""
    name = name or os.environ.get("LANGCLIP_JPEG_DECODER") or None
    if name not in (None, *JPEG_DECODERS):
        raise ValueError(f"LANGCLIP_JPEG_DECODER must be one of {', '.join(JPEG_DECODERS)}, got {name!r}")
    if name in (None, "torchcodec"):
        try:
            from torchcodec.decoders import decode_jpeg as tc
        except Exception as e:   # not installed, or its libraries do not load with this torch
            if name:
                raise ImportError(f"TorchCodec's JPEG decoder is not available here: {e}") from None
        else:
            return "torchcodec", lambda src, device="cpu": tc(src, mode="RGB", device=device)
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg as tv

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)    # once, not per call (threads decode too)
    return "torchvision", lambda src, device="cpu": tv(src, mode=ImageReadMode.RGB, device=device)


class EncodedImages(torch.utils.data.Dataset):
    """Rows → (row, encoded bytes as a uint8 tensor or None, reason): only file reading in workers."""

    def __init__(self, refs: list[ImageRef], rows: list[int]):
        self.refs, self.rows = refs, rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        try:
            return row, torch.frombuffer(bytearray(read_image_bytes(self.refs[row])), dtype=torch.uint8), ""
        except Exception as e:  # missing, truncated: skipped and counted like the default path
            return row, None, f"{type(e).__name__}: {str(e)[:200]}"


def collate_encoded(batch):
    """One flat byte tensor per batch (built in the worker): a worker hands the main process one
    shared-memory block, not one per picture — per-picture tensors made the transfer the bottleneck
    (1,789 images/s end to end against 10,084 on the device, H200, 15 workers)."""
    datas = [b[1] for b in batch]
    sizes = [0 if d is None else len(d) for d in datas]
    flat = torch.cat([d for d in datas if d is not None]) if any(sizes) else torch.zeros(0, dtype=torch.uint8)
    return [b[0] for b in batch], (flat, sizes), [b[2] for b in batch]


def split_encoded(flat: torch.Tensor, sizes: list[int]) -> list:
    """The batch's pictures as views of the flat tensor (None where reading failed)."""
    out, at = [], 0
    for n in sizes:
        out.append(flat[at: at + n] if n else None)
        at += n
    return out


def geometry(pp: dict, mode: str) -> tuple[tuple[int, int], object]:
    """(crop size, torchvision interpolation) of open_clip's eval transform, which the tensor paths
    reproduce: resize_mode 'shortest' with bicubic or bilinear resampling, then a centre crop."""
    size = pp["size"]
    if pp.get("resize_mode", "shortest") != "shortest" or pp.get("interpolation") not in ("bicubic", "bilinear"):
        raise ValueError(f"--decode {mode} supports resize_mode 'shortest' with bicubic or bilinear "
                         f"resampling; this model's preprocessing is {pp.get('resize_mode')}/"
                         f"{pp.get('interpolation')}: use --decode pil")
    from torchvision.transforms import InterpolationMode

    interp = InterpolationMode.BICUBIC if pp["interpolation"] == "bicubic" else InterpolationMode.BILINEAR
    return ((size, size) if isinstance(size, int) else tuple(size)), interp


def resize_crop_uint8(x: torch.Tensor, size: tuple[int, int], interp) -> torch.Tensor:
    """uint8 (…, 3, H, W) on the CPU → shorter side to min(size), centre crop: torchvision's kernel
    that matches PIL's antialiased resampling (within a grey level or two)."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(x, [min(size)], interpolation=interp, antialias=True), list(size))


def decode_rgb(data: bytes, draft: int = 0, orient: bool = False) -> torch.Tensor:
    """Encoded bytes → uint8 (3, H, W) RGB on the CPU: libjpeg-turbo (jpeg_decoder) for a JPEG,
    PIL for anything else or a JPEG it refuses (raises, as PIL does, on unreadable data). `draft`: a
    JPEG with both sides >= 2 × draft is decoded by PIL at a reduced scale instead (see open_image).
    A JPEG with an EXIF orientation goes through PIL too: as stored, or upright with `orient` (TorchCodec
    turns such a JPEG upright by itself, torchvision does not: PIL gives one answer either way)."""
    import io

    from PIL import Image

    from ..pixels import allow_large_photos

    allow_large_photos()   # a 200-megapixel phone photo too
    if data[:3] == _JPEG and jpeg_orientation(data) == 1:
        try:
            if not draft or min(Image.open(io.BytesIO(data)).size) < 2 * draft:   # reads the header only
                return jpeg_decoder()[1](torch.frombuffer(bytearray(data), dtype=torch.uint8))
        except (RuntimeError, OSError, ValueError):
            pass
    return rgb_tensor(decode_image(data, draft, orient))


def jpeg_orientation(data) -> int:
    """A JPEG's EXIF orientation (1..8; 1: none): its marker segments are walked up to the pixel data,
    and only an APP1 Exif segment is read (by PIL's EXIF reader); nothing is copied but that segment.
    `data`: bytes, or anything with the buffer protocol (a NumPy view of a batch's bytes)."""
    from PIL import Image

    v = memoryview(data).cast("B")
    i, n = 2, len(v)
    try:
        while i + 4 <= n and v[i] == 0xFF:
            marker = v[i + 1]
            if marker == 0xFF:                 # a fill byte
                i += 1
                continue
            if marker in (0xD9, 0xDA):         # end of image, start of scan: no EXIF before the pixels
                return 1
            length = v[i + 2] << 8 | v[i + 3]
            if marker == 0xE1 and v[i + 4: i + 10].tobytes() == b"Exif\x00\x00":
                exif = Image.Exif()
                exif.load(v[i + 4: i + 2 + length].tobytes())
                o = exif.get(0x0112, 1)
                return o if o in range(1, 9) else 1
            i += 2 + length
    except Exception:   # a damaged header or EXIF block: as stored (the decoder decides the rest)
        return 1
    return 1


def rgb_tensor(img) -> torch.Tensor:
    """PIL image → uint8 (3, H, W) RGB tensor on the CPU."""
    import numpy as np

    return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)


class DecodedImages(torch.utils.data.Dataset):
    """`--decode torchvision`: rows → (row, uint8 (3, S, S) picture resized and cropped, or None, reason),
    decoded in the workers; the build device normalises (`Normalize255`). A JPEG of at least 4 × S a
    side (a camera's photo) is decoded at a reduced scale that keeps >= 2 × S (see open_image)."""

    def __init__(self, refs: list[ImageRef], rows: list[int], pp: dict, orient: bool = False):
        self.refs, self.rows, self.orient = refs, rows, orient
        self.size, self.interp = geometry(pp, "torchvision")
        self.draft = 2 * min(self.size)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        try:   # libjpeg's warnings on a damaged JPEG it decodes anyway: counted and named, not printed
            pic, warned = quiet_libjpeg(decode_rgb, read_image_bytes(self.refs[row]), self.draft, self.orient)
            return row, resize_crop_uint8(pic, self.size, self.interp), (f"{WARNED}{warned[0]}" if warned else "")
        except Exception as e:  # corrupt, missing, truncated: skipped and counted like the PIL path
            return row, None, f"{type(e).__name__}: {str(e)[:200]}"


class Normalize255:
    """uint8 pictures → open_clip's normalised float input, on their device: torchvision's ToTensor and
    Normalize as float32 operations in their order (/255, -mean, /std), so the PIL path's pictures come
    out bit for bit as open_clip's transform makes them (tested)."""

    def __init__(self, pp: dict, device: torch.device):
        self.mean = torch.tensor(pp["mean"], dtype=torch.float32, device=device).view(3, 1, 1)
        self.std = torch.tensor(pp["std"], dtype=torch.float32, device=device).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255).sub_(self.mean).div_(self.std)


def uint8_transform(transform, pp: dict):
    """open_clip's eval transform (PIL resize, crop, mode) stopped before its tensor conversion: it hands
    a uint8 picture (a quarter of float32's bytes between processes and into pinned memory), and
    `Normalize255` finishes on the device with the same numbers. None when the transform does not end
    in ToTensor + Normalize with `pp`'s mean and std (then the float path is used as it is)."""
    from torchvision.transforms import Compose, PILToTensor

    ts = list(getattr(transform, "transforms", []))
    if (len(ts) < 2 or type(ts[-2]).__name__ not in ("ToTensor", "MaybeToTensor")
            or type(ts[-1]).__name__ != "Normalize"
            or [float(v) for v in ts[-1].mean] != [float(v) for v in pp["mean"]]
            or [float(v) for v in ts[-1].std] != [float(v) for v in pp["std"]]):
        return None
    return Compose(ts[:-2] + [PILToTensor()])


class DevicePreprocess:
    """Decode + resize + crop + normalise a batch of encoded pictures on `device`, as open_clip's eval
    transform does with PIL (resize_mode 'shortest', then a centre crop)."""

    def __init__(self, pp: dict, device: torch.device, refs: list[ImageRef], threads: int = 1,
                 decoder: str | None = None, orient: bool = False):
        self.orient = orient                    # EXIF orientation, for the JPEGs PIL decodes (decode_rgb)
        self.size, self.mode = geometry(pp, "nvjpeg")
        self.decoder, self._decode_fn = jpeg_decoder(decoder)
        self.device, self.refs = device, refs
        self.normalize = Normalize255(pp, device)
        self.fallbacks = 0
        self.threads = threads
        self._pool = None
        self._local = None

    def __call__(self, rows, datas, reasons):
        """→ (rows, ok flags, float tensor of the decodable pictures or None, reasons). `datas`: a list of
        uint8 tensors (None: unreadable) or collate_encoded's (flat tensor, sizes)."""
        if isinstance(datas, tuple):
            datas = split_encoded(*datas)
        pics: dict[int, torch.Tensor] = {}                      # batch position → uint8 CHW on device
        jpeg = [i for i, d in enumerate(datas)          # an EXIF-oriented JPEG: PIL (see decode_rgb)
                if d is not None and bytes(d[:3].tolist()) == _JPEG and jpeg_orientation(d.numpy()) == 1]
        if jpeg:
            pics.update(self._decode([datas[i] for i in jpeg], jpeg))
        reasons = list(reasons)
        for i, d in enumerate(datas):
            if d is not None and i not in pics:                # not a JPEG, or nvJPEG refused it: PIL
                try:
                    pics[i] = self._pil(rows[i])
                    self.fallbacks += 1
                except Exception as e:
                    reasons[i] = f"{type(e).__name__}: {str(e)[:200]}"
        ok = [i in pics for i in range(len(rows))]
        return rows, ok, self._resize([pics[i] for i in range(len(rows)) if i in pics]), reasons

    def _decode(self, datas, where) -> dict:
        """Decode a batch: in one call, or split over `threads` (each part on its own CUDA stream, which
        the current stream then waits for)."""
        if self.threads <= 1 or len(datas) < 2 * self.threads:
            return self._decode_part(datas, where)
        import threading
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool, self._local = ThreadPoolExecutor(self.threads, thread_name_prefix="decode"), threading.local()
        k = -(-len(datas) // self.threads)
        parts = [(datas[i: i + k], where[i: i + k]) for i in range(0, len(datas), k)]
        got, cuda = {}, self.device.type == "cuda"
        main = torch.cuda.current_stream(self.device) if cuda else None
        for pics, done in self._pool.map(lambda p: self._decode_on_stream(*p, main), parts):
            if cuda:
                main.wait_event(done)
                for t in pics.values():
                    t.record_stream(main)   # freed memory is not reused by a decode stream while main reads it
            got.update(pics)
        return got

    def _decode_on_stream(self, datas, where, main):
        if main is None:
            return self._decode_part(datas, where), None
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        stream.wait_stream(main)         # the bytes were copied to the device on the main stream, if at all
        with torch.cuda.stream(stream):
            out = self._decode_part(datas, where)
            done = torch.cuda.Event()
            done.record(stream)
        return out, done

    def _decode_part(self, datas, where) -> dict:
        decode = self._decode_fn
        try:
            return dict(zip(where, decode(datas, self.device)))
        except (RuntimeError, ValueError):   # one bad picture fails the batched call: one by one
            got = {}
            for i, d in zip(where, datas):
                try:
                    got[i] = decode(d, self.device)
                except (RuntimeError, ValueError):
                    pass
            return got

    def _pil(self, row: int) -> torch.Tensor:
        return rgb_tensor(open_image(self.refs[row], orient=self.orient)).to(self.device)

    def _resize(self, pics: list[torch.Tensor]):
        from torchvision.transforms.v2 import functional as TF

        if not pics:
            return None
        out = [None] * len(pics)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(pics):
            groups.setdefault(tuple(p.shape), []).append(i)
        for idx in groups.values():                  # one resize call per picture size
            x = torch.stack([pics[i] for i in idx])
            if x.is_cuda:      # antialiased bicubic runs on float tensors there; clamp as PIL does
                x = TF.resize(x.float(), [min(self.size)], interpolation=self.mode, antialias=True).clamp_(0, 255)
                x = TF.center_crop(x, list(self.size))
            else:              # uint8 on CPU: torchvision's PIL-matching kernel
                x = resize_crop_uint8(x, self.size, self.mode)
            x = self.normalize(x)
            for j, i in enumerate(idx):
                out[i] = x[j]
        return torch.stack(out)


def decode_ahead(batches, prep, device: torch.device):
    """Yield `prep(*batch)` for each batch, preparing batch i+1 in a thread while the caller embeds batch
    i: the CPU's part of a batch's decode (reading the bytes, nvJPEG's Huffman decoding in its hybrid
    backend, the PIL fallbacks, Python) overlaps the forward pass. On CUDA the thread works on a stream
    of its own, which the caller's stream waits for before it reads the result."""
    from concurrent.futures import ThreadPoolExecutor

    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def run(batch):
        with torch.inference_mode():              # thread-local, like the caller's
            if stream is None:
                return prep(*batch), None
            with torch.cuda.stream(stream):
                out, done = prep(*batch), torch.cuda.Event()
                done.record(stream)
            return out, done

    it = iter(batches)
    with ThreadPoolExecutor(1, thread_name_prefix="decode-ahead") as pool:
        first = next(it, None)
        job = pool.submit(run, first) if first is not None else None
        while job is not None:
            out, done = job.result()
            nxt = next(it, None)
            job = pool.submit(run, nxt) if nxt is not None else None
            if done is not None:
                main = torch.cuda.current_stream(device)
                main.wait_event(done)
                if out[2] is not None:
                    out[2].record_stream(main)    # its memory is not reused by the thread's stream too early
            yield out
