"""What the search server makes of a picture's bytes: an upload opened as the indexed pictures are read (upright,
8 bits), and a picture of the index in a form and size a browser shows (`/image/{id}`)."""
from __future__ import annotations

import io


def open_upload(data: bytes, max_pixels: int, err):
    """An uploaded query picture, upright and in 8 bits as the indexed ones; `err(status, message)` for a bad one."""
    from PIL import Image

    from ..pairs import heif_support

    heif_support()
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
    except Exception:
        raise err(400, "the upload is not a picture langclip can read (JPEG, PNG, WebP, ...)") from None
    if w * h > max_pixels:
        raise err(413, f"the picture has {w}x{h} pixels, more than {max_pixels:,}")
    try:
        im.load()
    except Exception:
        raise err(400, "the upload is a damaged picture") from None
    from PIL import ImageOps

    from ..pixels import eight_bit

    return eight_bit(ImageOps.exif_transpose(im), im.format)   # upright (as the indexed pictures are), 8 bits


def for_browser(data: bytes, size: int = 0) -> tuple[bytes, str]:
    """A picture's bytes and type as a browser shows them: JPEG, PNG, WebP, GIF, AVIF and BMP as they are;
    any other (a phone's HEIC, a scanner's TIFF) as a JPEG of its pixels, upright, as its thumbnail is.
    `size`: a picture larger than that a side as a JPEG scaled down to it (a 48-megapixel photo: 25 MB to a
    phone's viewer otherwise), upright; a JPEG decoded at a reduced scale."""
    from PIL import Image

    from ..pairs import decode_image
    from ..pixels import allow_large_photos

    allow_large_photos()   # a 200-megapixel photo's header too
    mime = mime_type(data)
    if mime != "application/octet-stream" and (not size or max(Image.open(io.BytesIO(data)).size) <= size):
        return data, mime   # (only the header read)
    im = decode_image(data, draft=size, orient=True).convert("RGB")
    if size:
        im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue(), "image/jpeg"


def mime_type(data: bytes) -> str:
    """The type of a picture every current browser shows; application/octet-stream for any other."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"GIF":
        return "image/gif"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    if data[:2] == b"BM":
        return "image/bmp"
    return "application/octet-stream"
