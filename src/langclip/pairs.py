"""Readers for image–caption pairs: tables, webdataset tar shards, folders with sidecar captions.

Every reader yields the same thing: a list of distinct images (`ImageRef`) and a list of captions
pointing at them, plus a list of problems (file, line/member, reason) for what was skipped."""
from __future__ import annotations

import functools
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .folders import NOT_UTF8, SKIPPED_FOLDERS, files_under, is_text, shown_path, unfinished_cache, walk
from .pixels import RAW_EXTS, allow_large_photos, eight_bit, is_raw, raw_preview
from .tables import URL_PROBLEM, local_path, pick_column, picture_columns, refuse_picture_bytes, table_rows, url_hint

IMAGE_EXTS = (".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".hif",
              ".avif")   # .jfif: a JPEG a browser saved on Windows; .hif: a Canon, Fujifilm or Sony camera's HEIF
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")   # phones' HEIC
IMAGE_COLUMNS = ("image", "image_path", "path", "filepath", "file", "filename", "img", "url", "URL")   # URLs: refused, saying how to download
CAPTION_COLUMNS = ("caption", "text", "query", "captions", "caption_ru", "texts", "TEXT")
ENGLISH_COLUMNS = ("caption_en", "english", "text_en")


@dataclass(frozen=True)
class ImageRef:
    path: str                 # image file, or the tar shard holding it
    member: str = ""          # tar member name ("" for plain files)
    offset: int = -1          # byte offset of the member's data in the shard
    size: int = -1

    @property
    def key(self) -> str:
        return f"{self.path}::{self.member}" if self.member else self.path


@dataclass
class Pairs:
    images: list[ImageRef] = field(default_factory=list)
    captions: list[tuple[int, str, str | None]] = field(default_factory=list)  # (image row, caption, english)
    problems: list[dict] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def image_row(self, ref: ImageRef) -> int:
        row = self._index.get(ref.key)
        if row is None:
            row = self._index[ref.key] = len(self.images)
            self.images.append(ref)
        return row

    def add(self, ref: ImageRef, caps: list, english: list | None, where: str) -> None:
        row = self.image_row(ref)
        english = english or []
        for i, c in enumerate(caps):
            en = english[i] if i < len(english) else (english[0] if len(english) == 1 else None)
            if not isinstance(c, str) or not c.strip():
                self.problems.append({"where": where, "reason": "empty caption"})
                continue
            self.captions.append((row, c.strip(), en.strip() if isinstance(en, str) and en.strip() else None))


def _listify(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, str) and v.startswith("[") and v.endswith("]"):
        try:
            return list(json.loads(v))
        except json.JSONDecodeError:
            pass
    return [v]


def read_table(path: str | Path, pairs: Pairs, image_column=None, caption_column=None, english_column=None) -> None:
    path = Path(path)
    parquet = path.suffix.lower() == ".parquet"   # only the needed columns, column by column (large tables)
    if parquet:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        names, pictures = schema.names, picture_columns(schema)
    else:
        (names, rows), pictures = table_rows(path, pairs.problems), []
    ic = pick_column(path, names, image_column, IMAGE_COLUMNS, "--image-column", "image")
    refuse_picture_bytes(path, ic, pictures)
    cc = pick_column(path, names, caption_column, CAPTION_COLUMNS, "--caption-column", "caption")
    ec = pick_column(path, names, english_column, ENGLISH_COLUMNS, "--english-column", "english", required=False)
    if parquet:
        t = pq.read_table(path, columns=[c for c in dict.fromkeys((ic, cc, ec)) if c])
        cols, lines = [t.column(c).to_pylist() if c else None for c in (ic, cc, ec)], range(1, t.num_rows + 1)
    else:
        cols, lines = [[r.get(c) for r in rows] if c else None for c in (ic, cc, ec)], rows.lines
    imgs, caps, ens = cols
    parent = path.parent
    resolved: dict[str, str] = {}   # each distinct path string resolved once (an image has many rows)
    tars: dict[str, dict] = {}      # "shard.tar::member" values: each shard's members, listed once
    index = pairs._index
    for i, (p, c) in enumerate(zip(imgs, caps)):
        if not p:
            pairs.problems.append({"where": f"{path}:{lines[i]}", "reason": f"empty {ic}"})
            continue
        p = p if isinstance(p, str) else str(p)
        key = resolved.get(p)
        if key is None:
            key = local_path(p, parent)
            if key is None:
                pairs.problems.append({"where": f"{path}:{lines[i]}", "reason": URL_PROBLEM})
                continue
            resolved[p] = key
        e = ens[i] if ens is not None else None
        if isinstance(c, str) and not c.startswith("[") and (e is None or isinstance(e, str) and not e.startswith("[")):
            row = index.get(key)    # the common case, inline: one caption, at most one English text
            if row is None:
                row = pairs.image_row(_ref(key, tars))
            cs = c.strip()
            if cs:
                pairs.captions.append((row, cs, (e.strip() or None) if e else None))
            else:
                pairs.problems.append({"where": f"{path}:{lines[i]}", "reason": "empty caption"})
        else:
            pairs.add(_ref(key, tars), _listify(c), _listify(e) if ens is not None else None, f"{path}:{lines[i]}")


def _ref(key: str, tars: dict) -> ImageRef:
    """A table's image value: a file, or "shard.tar::member" (a picture inside a tar shard, as
    `langclip data translations` writes them); a member that is not there fails at decoding, counted."""
    shard, sep, member = key.partition("::")
    if not sep or not shard.endswith(".tar"):
        return ImageRef(key)
    if shard not in tars:
        listing = Pairs()
        if Path(shard).is_file():
            read_tar(shard, listing)
        tars[shard] = {r.member: r for r in listing.images}
    return tars[shard].get(member) or ImageRef(shard, member, 0, -1)


def _decode_caption(b: bytes) -> list[str]:
    return [ln for ln in b.decode("utf-8", errors="replace").splitlines() if ln.strip()] or [""]


def read_tar(path: str | Path, pairs: Pairs, sidecars: dict | None = None) -> None:
    """A webdataset shard as img2dataset writes it: key.jpg + key.txt [+ key.json]. `sidecars`, if given,
    receives each picture's parsed .json by its reference key (img2dataset's extra columns live there)."""
    path = Path(path)
    size = path.stat().st_size
    groups: dict[str, dict] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, mode="r") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = os.path.basename(m.name)
                key, _, ext = base.partition(".")
                key = os.path.join(os.path.dirname(m.name), key)
                g = groups.get(key)
                if g is None:
                    g = groups[key] = {}
                    order.append(key)
                ext = "." + ext.lower()
                if ext in IMAGE_EXTS:
                    g["image"] = (m.name, m.offset_data, m.size)
                elif ext == ".txt":
                    g["txt"] = tf.extractfile(m).read()
                elif ext == ".json":
                    g["json"] = tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        pairs.problems.append({"where": str(path), "reason": f"truncated or corrupt shard after {len(order)} keys ({e})"})
    for key in order:
        g = groups[key]
        where = f"{path}::{key}"
        if not is_text(where):
            pairs.problems.append({"where": shown_path(where), "reason": "member name is not UTF-8: tables cannot hold it"})
            continue
        if "image" not in g:
            pairs.problems.append({"where": where, "reason": "no image in sample"})
            continue
        name, off, n = g["image"]
        if off + n > size:
            pairs.problems.append({"where": where, "reason": "image data cut off (truncated shard)"})
            continue
        meta = {}
        if "json" in g:
            try:
                meta = json.loads(g["json"])
            except (json.JSONDecodeError, UnicodeDecodeError):
                pairs.problems.append({"where": where, "reason": "invalid .json sidecar"})
        caps = _decode_caption(g["txt"]) if "txt" in g else _listify(meta.get("caption"))
        en = _listify(meta.get("caption_en") or meta.get("english"))
        ref = ImageRef(str(path), name, off, n)
        pairs.add(ref, caps or [""], en or None, where)
        if sidecars is not None:
            sidecars[ref.key] = meta


def read_folder(path: str | Path, pairs: Pairs) -> None:
    """Images with sidecar captions: cat.jpg + cat.txt (one caption a line)."""
    for p in sorted(Path(root, f) for root, files in walk(path) for f in files):   # linked folders too (folders.walk)
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            if not is_text(str(p)):
                pairs.problems.append({"where": shown_path(str(p)), "reason": NOT_UTF8})
                continue
            txt = p.with_suffix(".txt")
            if not txt.is_file():
                pairs.problems.append({"where": str(p), "reason": "no sidecar .txt caption"})
                continue
            pairs.add(ImageRef(str(p)), _decode_caption(txt.read_bytes()), None, str(txt))


def expand(spec: str) -> list[str]:
    from braceexpand import braceexpand

    return list(braceexpand(spec))


def read_pairs(specs: list[str], image_column=None, caption_column=None, english_column=None) -> Pairs:
    """Read every spec: a table, a tar shard pattern ('shards/{00000..00009}.tar') or an image folder."""
    pairs = Pairs()
    for spec in specs:
        for s in expand(spec):
            p = Path(s).expanduser()
            if p.is_dir() and (why := unfinished_cache(p)):   # a cache to finish, not a folder of pictures
                raise ValueError(f"{p} is {why}")
            if p.is_dir():
                read_folder(p, pairs)
            elif not p.exists():
                if p.suffix == ".tar":
                    pairs.problems.append({"where": str(p), "reason": "shard not found"})
                    continue
                raise FileNotFoundError(f"data not found: {p}")
            elif p.suffix.lower() == ".tar":
                read_tar(p, pairs)
            elif p.suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl", ".json"):
                read_table(p, pairs, image_column, caption_column, english_column)
            else:
                raise ValueError(f"{p}: unknown data format; expected a table (.csv/.tsv/.parquet/.jsonl), "
                                 f".tar shards or a folder of images with .txt captions")
    if not pairs.images:
        raise ValueError(f"no image–caption pairs found in {', '.join(specs)}{url_hint(pairs.problems)}")
    return pairs


def read_images(specs: list[str], image_column=None, skip=SKIPPED_FOLDERS) -> Pairs:
    """Images only, for a search index: every image file under a folder (recursive; not in the folders `skip`
    names, see `folders.files_under`), the image column of a table, or the images of tar shards. Captions are
    not needed and not kept."""
    pairs = Pairs()
    for spec in specs:
        for s in expand(spec):
            p = Path(s).expanduser()
            if p.is_dir():
                for f in files_under(p, IMAGE_EXTS + RAW_EXTS, skip, pairs.problems):
                    pairs.image_row(ImageRef(f))
            elif p.suffix.lower() == ".tar":
                if not p.exists():
                    pairs.problems.append({"where": str(p), "reason": "shard not found"})
                    continue
                read_tar(p, pairs)
            elif p.suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl", ".json"):
                names, rows = table_rows(p, pairs.problems)
                ic = pick_column(p, names, image_column, IMAGE_COLUMNS, "--image-column", "image")
                refuse_picture_bytes(p, ic, rows.pictures)
                for i, r in zip(rows.lines, rows):
                    v = r.get(ic)
                    if not v:
                        pairs.problems.append({"where": f"{p}:{i}", "reason": f"empty {ic}"})
                        continue
                    q = local_path(str(v), p.parent)
                    if q is None:
                        pairs.problems.append({"where": f"{p}:{i}", "reason": URL_PROBLEM})
                    else:
                        pairs.image_row(ImageRef(q))
            elif not p.exists():
                raise FileNotFoundError(f"data not found: {p}")
            else:
                raise ValueError(f"{p}: expected an image folder, a table (.csv/.tsv/.parquet/.jsonl) or .tar shards")
    pairs.captions.clear()
    pairs.problems = [x for x in pairs.problems if x["reason"] != "empty caption"]
    if not pairs.images:
        raise ValueError(f"no images found in {', '.join(specs)}{url_hint(pairs.problems)}")
    return pairs


def read_parallel(specs: list[str], caption_column=None, english_column=None) -> Pairs:
    """A text-only parallel corpus: tables of (target-language text, English text), no images. The
    result has no images; each caption's image row is -1 and every kept caption has its English."""
    pairs = Pairs()
    for spec in specs:
        for s in expand(spec):
            path = Path(s).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"data not found: {path}")
            if path.suffix.lower() not in (".csv", ".tsv", ".parquet", ".jsonl", ".json"):
                raise ValueError(f"{path}: a parallel corpus is a table (.csv/.tsv/.parquet/.jsonl) with a "
                                 f"target-language column and an English column")
            names, rows = table_rows(path, pairs.problems)
            cc = pick_column(path, names, caption_column, CAPTION_COLUMNS, "--caption-column", "caption")
            ec = pick_column(path, names, english_column, ENGLISH_COLUMNS, "--english-column", "english")
            for i, r in zip(rows.lines, rows):
                caps, en = _listify(r.get(cc)), _listify(r.get(ec))
                for j, c in enumerate(caps):
                    e = en[j] if j < len(en) else (en[0] if len(en) == 1 else None)
                    if not isinstance(c, str) or not c.strip():
                        pairs.problems.append({"where": f"{path}:{i}", "reason": f"empty {cc}"})
                    elif not isinstance(e, str) or not e.strip():
                        pairs.problems.append({"where": f"{path}:{i}", "reason": f"empty {ec} (no English to distil from)"})
                    else:
                        pairs.captions.append((-1, c.strip(), e.strip()))
    if not pairs.captions:
        raise ValueError(f"no text pairs found in {', '.join(specs)}")
    return pairs


def open_image(ref: ImageRef, draft: int = 0, orient: bool = False):
    """PIL image of a reference (file or tar member); raises on unreadable data. `draft`: a JPEG whose
    sides are both at least twice `draft` is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, as
    PIL's own `thumbnail` does), keeping both sides >= `draft`: a 12-megapixel photo then costs a
    fraction of a full decode. `orient`: turned upright by its EXIF orientation, as viewers show it."""
    if ref.member or is_raw(ref.path):   # (a RAW photo: the picture it holds for viewers)
        return decode_image(read_image_bytes(ref), draft, orient)
    if os.path.getsize(ref.path) == 0:
        raise OSError("zero-byte file")
    with open(ref.path, "rb") as f:
        return _loaded(_pil_open(ref.path, f.read(12)), draft, orient)


def decode_image(data: bytes, draft: int = 0, orient: bool = False):
    """PIL image of encoded bytes (see open_image)."""
    return _loaded(_pil_open(io.BytesIO(data), data[:12]), draft, orient)


def _pil_open(fp, head: bytes):
    """PIL's Image.open (to pixels.MAX_PIXELS); a phone's HEIC via pillow-heif (`search` extra) or an error saying so."""
    from PIL import Image

    allow_large_photos()
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS and not heif_support():
        raise OSError("a HEIC/HEIF picture: reading it needs pillow-heif (pip install 'langclip[search]')")
    return Image.open(fp)


@functools.lru_cache(maxsize=1)
def heif_support() -> bool:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    return register_heif_opener() or True


def _loaded(img, draft: int, orient: bool = False):
    from PIL import ImageOps
    if draft and img.format == "JPEG":
        img.draft(None, (draft, draft))
    img.load()
    return eight_bit(ImageOps.exif_transpose(img) if orient else img, img.format)   # 16-bit, float: as viewers show them


def read_image_bytes(ref: ImageRef) -> bytes:
    """The encoded bytes of a reference (file, tar member, a RAW photo's preview); raises on missing or cut data."""
    if ref.member:
        if ref.size < 0:
            raise OSError(f"{ref.member} is not in {ref.path}")
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.size)
        if len(data) != ref.size:
            raise OSError("truncated image data")
        return data
    data = raw_preview(ref.path) if is_raw(ref.path) else Path(ref.path).read_bytes()
    if not data:
        raise OSError("zero-byte file")
    return data


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, refs: list[ImageRef], rows: list[int], transform, orient: bool = False):
        self.refs, self.rows, self.transform, self.orient = refs, rows, transform, orient

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        try:
            return row, self.transform(open_image(self.refs[row], orient=self.orient)), ""
        except Exception as e:  # corrupt, missing, truncated, decompression bomb: skipped and counted
            return row, None, f"{type(e).__name__}: {str(e)[:200]}"


def collate_images(batch):
    rows, ok = [b[0] for b in batch], [b[1] is not None for b in batch]
    xs = [b[1] for b in batch if b[1] is not None]
    return rows, ok, (torch.stack(xs) if xs else None), [b[2] for b in batch]
