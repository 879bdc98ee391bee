"""Pictures whose pixels need care: more than 8 bits a sample, brought to 8 bits before anything converts them
to RGB; and RAW photos, seen through the picture they hold for viewers (`raw_preview`).

CLIP's preprocessing (open_clip's `_convert_to_rgb`, CLIP_benchmark, most pipelines) calls PIL's
`convert("RGB")`, which *clips* integer samples above 255 and floats outside 0..255: a 16-bit
greyscale PNG or TIFF (a scanner's or a microscope's; PIL opens it as "I;16" or "I") comes out almost
white, a floating-point TIFF (mode "F", values in 0..1) black, and both would be embedded and indexed
without a word. langclip scales them as viewers show them:

- 16-bit ("I;16", "I;16B", …; "I" read from a PNG, which holds at most 16 bits): value / 257;
- other 32-bit integers ("I"): as they are when all fit 0..255, / 257 when they fit 0..65535,
  else stretched from their minimum to their maximum;
- floats ("F"): × 255 when all lie in 0..1, else stretched from their minimum to their maximum.

Every other mode (8-bit greyscale, palette, RGB(A), CMYK, ...) is returned unchanged.
"""
from __future__ import annotations

import functools

# PIL refuses a picture over twice Image.MAX_IMAGE_PIXELS (89.5 million: 179 million) as a "decompression bomb",
# and warns above it: a 200-megapixel phone photo (16320 x 12240, Samsung's Ultra models) was skipped as one and a
# 108-megapixel one warned about. Pictures langclip reads are the user's own (an upload to the server has its
# own cap, checked before decoding): it raises the limit to 2**29 (537 million; refused above 1.07 billion).
MAX_PIXELS = 1 << 29


@functools.lru_cache(maxsize=1)   # once a process: it is asked on the decoding path, a picture at a time
def allow_large_photos() -> None:
    """PIL's decompression-bomb limit raised to MAX_PIXELS (never lowered), for this process."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def eight_bit(img, fmt: str | None = None):
    """`img` with its samples in 8 bits (mode "L") when PIL holds them in 16/32-bit integers or floats;
    otherwise `img` itself. `fmt`: the file's format, where `img` no longer says it (a turned copy)."""
    mode, fmt = img.mode, fmt or img.format
    if not (mode.startswith("I") or mode == "F"):
        return img
    import numpy as np
    from PIL import Image

    a = np.asarray(img, dtype=np.float64)
    if a.size == 0:
        return img
    lo, hi = float(a.min()), float(a.max())
    if mode.startswith("I;16") or (mode == "I" and fmt == "PNG"):
        scaled = a / 257.0
    elif mode == "I" and lo >= 0 and hi <= 255:
        scaled = a
    elif mode == "I" and lo >= 0 and hi <= 65535:
        scaled = a / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = a * 255.0
    else:
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    out = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    out.info = dict(img.info)
    return out


# RAW photos (LibRaw's formats as cameras write them): indexed through the picture they hold for viewers
RAW_EXTS = (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef",
            ".srw", ".3fr", ".erf", ".kdc", ".mrw", ".x3f", ".iiq", ".rwl")
SMALLEST_PREVIEW = 224   # a preview whose shorter side is smaller (an old camera's thumbnail) is not enough for CLIP


def is_raw(path: str) -> bool:
    import os

    return os.path.splitext(path)[1].lower() in RAW_EXTS


def raw_preview(path) -> bytes:
    """The encoded picture a RAW photo is seen as: the JPEG preview the camera embedded (LibRaw adds the
    camera's orientation to its EXIF, so it is turned upright as any JPEG is), or, where there is none or it is
    smaller than CLIP's input, LibRaw's half-size development (upright) as PNG. Needs rawpy (the `search`
    extra); raises OSError where it is missing or LibRaw cannot read the file."""
    import io

    try:
        import rawpy
    except ImportError:
        raise OSError("a RAW photo: reading it needs rawpy (pip install 'langclip[search]')") from None
    from PIL import Image

    try:
        with rawpy.imread(str(path)) as r:
            try:
                thumb = r.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG and \
                    min(Image.open(io.BytesIO(thumb.data)).size) >= SMALLEST_PREVIEW:
                return bytes(thumb.data)
            rgb = r.postprocess(half_size=True, use_camera_wb=True)
    except rawpy.LibRawError as e:
        raise OSError(f"LibRaw cannot read this RAW photo ({type(e).__name__}: {e})") from None
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()
