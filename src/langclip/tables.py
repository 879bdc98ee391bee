"""Tables (CSV/TSV/Parquet/JSONL): the one reader every stage uses (`table_rows`, errors naming the file and
line), the choice of a column (`pick_column`), a row's picture as a local path (`local_path`, `url_hint`), and a
Parquet column that holds the pictures themselves (`picture_bytes`, `refuse_picture_bytes`: Hugging Face
`datasets`' Image feature), which `langclip data shards` writes out as webdataset shards."""
from __future__ import annotations

import os
from array import array
from pathlib import Path

from .files import read_utf8


def picture_bytes(t) -> bool:
    """A Parquet (Arrow) column type that holds encoded pictures: Hugging Face `datasets`' Image feature (a
    struct with a binary `bytes` field, and `path`), or plain binary."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        i = t.get_field_index("bytes")
        return i >= 0 and picture_bytes(t.field(i).type)
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def picture_columns(schema) -> list[str]:
    """The columns of a Parquet schema that hold pictures' bytes (`picture_bytes`)."""
    return [f.name for f in schema if picture_bytes(f.type)]


def refuse_picture_bytes(path: Path, column: str, pictures) -> None:
    """The error for a table whose image column (`column`, among `pictures`: the columns `picture_bytes`
    finds) holds the pictures, not paths to them: what it is and the command that makes it readable."""
    if column in pictures:
        raise ValueError(f"{path}: column {column!r} holds the pictures themselves (as Hugging Face datasets store "
                         f"them), not paths to them: write them out as webdataset shards first, `langclip data "
                         f"shards --data {path} --out shards/`, then pass the shards it names (--data "
                         f"'shards/{{00000..000NN}}.tar')")


class TableRows(list):
    """A table's rows (dicts) with `lines`: where each row starts in the file (1-based; a CSV row with a
    quoted line break spans several), or its number in a Parquet file; `pictures`: the columns that hold
    pictures' bytes (left out of the rows, see `picture_bytes`)."""
    lines: "array | range"
    pictures: list = []


def table_rows(path: str | Path, problems: list | None = None) -> tuple[list[str], TableRows]:
    """(column names, rows) of a CSV/TSV/Parquet/JSONL table — the one table reader; errors name the
    file and line. A CSV/TSV row with another number of fields than the header is skipped and added to
    `problems` ({"where": "file:line", "reason": ...}), or an error where `problems` is None; a quoted
    field that is never closed is an error naming the line it opens on (it would swallow every row
    after it)."""
    import json

    path = Path(path)
    suf = path.suffix.lower()
    if suf == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        pictures = picture_columns(schema)   # never read into Python objects here
        t = pq.ParquetFile(str(path)).read(columns=[n for n in schema.names if n not in pictures])
        rows = TableRows(t.to_pylist())
        rows.lines, rows.pictures = range(1, len(rows) + 1), pictures
        return schema.names, rows
    text = read_utf8(path)
    if suf in (".csv", ".tsv"):
        return _csv_rows(path, text, suf == ".tsv", problems)
    if (doc := _json_document(path, text)) is not None:
        return doc
    rows = TableRows()
    rows.lines = array("q")              # 8 bytes a row, not a Python int each
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object ({{\"image\": ..., \"caption\": ...}}), "
                                 f"got {type(row).__name__}")
            rows.append(row)
            rows.lines.append(i)
    names = sorted({k for r in rows for k in r})
    return names, rows


def _json_document(path: Path, text: str) -> tuple[list[str], TableRows] | None:
    """A .json/.jsonl file that is one JSON document rather than JSON lines, as rows: an array of row objects
    (item N is "line" N), or COCO's captions file (`images` + `annotations`: a row per caption, the picture by
    its `file_name`, looked for beside the file, then in the folder the file's name gives — captions_train2017.json
    -> ../train2017/, COCO's layout). None for JSON lines (one object a line; a single row is one too)."""
    import json
    import re

    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("images"), list) and isinstance(doc.get("annotations"), list):
        m = re.search(r"(train|val|test)\d{4}", path.stem)
        homes = [path.parent] + ([path.parent.parent / m.group(0), path.parent / m.group(0)] if m else [])
        found: dict = {}

        def where(name):
            if name not in found:
                found[name] = next((str(d / name) for d in homes if (d / name).is_file()), str(path.parent / name))
            return found[name]

        files = {im.get("id"): im.get("file_name") for im in doc["images"] if isinstance(im, dict)}
        doc = [{"image": where(files[a["image_id"]]) if files.get(a.get("image_id")) else None,
                "caption": a.get("caption"), "image_id": a.get("image_id")} for a in doc["annotations"] if isinstance(a, dict)]
    if isinstance(doc, dict) and text.strip().count("\n"):   # one object over several lines: not a row a line
        raise ValueError(f"{path}: one JSON document (keys {sorted(doc)[:8]}); langclip reads JSON lines (a row object "
                         f"a line), a JSON array of row objects, or COCO's captions file (images + annotations)")
    if not isinstance(doc, list):
        return None
    bad = next((i for i, r in enumerate(doc) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: item {bad + 1} of its JSON array is a {type(doc[bad]).__name__}, not a row object "
                         f"({{\"image\": ..., \"caption\": ...}})")
    rows = TableRows(doc)
    rows.lines = range(1, len(doc) + 1)
    return sorted({k for r in doc for k in r}), rows


def _csv_rows(path: Path, text: str, tsv: bool, problems: list | None) -> tuple[list[str], TableRows]:
    """CSV strictly (a stray quote is an error); TSV leniently, as img2dataset's and pandas' TSVs
    are read ('"quoted" words' at a field's start stay words)."""
    import csv
    import io

    r = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",", strict=not tsv)
    names, rows, start = None, TableRows(), 1
    last = text.count("\n") + (not text.endswith("\n"))    # lines in the file (no copy of them)
    rows.lines = array("q")              # 8 bytes a row, not a Python int each
    try:
        for fields in r:
            if fields and names is None:
                names = fields
            elif fields and len(fields) == len(names):
                rows.append(dict(zip(names, fields)))
                rows.lines.append(start)
            elif fields:
                msg = f"{len(fields)} field{'s' * (len(fields) != 1)} where the header has {len(names)}"
                if problems is None:
                    raise ValueError(f"{path}:{start}: {msg}")
                problems.append({"where": f"{path}:{start}", "reason": f"{msg} (row skipped)"})
            if (r.line_num > start and r.line_num >= last
                    and "".join(text.splitlines()[start - 1:]).count('"') % 2):   # (split only here, once)
                raise csv.Error("unexpected end of data")     # lenient mode: an odd quote ran to the end
            start = r.line_num + 1
    except csv.Error as e:
        why = ("a quoted field opens here and is never closed" if "end of data" in str(e) else
               f"{e} (a quoted field ends at its closing quote; a quote inside one is doubled: \"\")")
        raise ValueError(f"{path}:{start}: {why}") from None
    return names or [], rows




URL_PROBLEM = "a URL: langclip reads local pictures (download them first, e.g. with img2dataset)"




def local_path(value: str, parent: Path) -> str | None:
    """A table's image value as a path (relative ones to the table's folder); None for a URL
    (file:// URLs are paths). A relative path written on Windows ("images\\0001.jpg", a table made there)
    is the file it names here when that exists and no file bears the name as written."""
    if "://" in value[:16] and value.split("://", 1)[0].isalnum():
        if not value.lower().startswith("file://"):
            return None
        from urllib.parse import unquote, urlparse

        value = unquote(urlparse(value).path)
    q = Path(value).expanduser()
    q = q if q.is_absolute() else parent / q
    if "\\" in value and os.sep == "/" and not value.startswith("\\") and ":" not in value[:3] and not q.exists():
        w = parent / Path(*value.split("\\"))
        return str(w if w.exists() else q)
    return str(q)


def url_hint(problems: list[dict]) -> str:
    """For a read that found nothing: what to do when the table listed URLs."""
    urls = [x for x in problems if x["reason"] == URL_PROBLEM]
    if not urls:
        return ""
    table = urls[0]["where"].rsplit(":", 1)[0]
    fmt = {".jsonl": "json", ".json": "json"}.get(Path(table).suffix.lower(), Path(table).suffix.lower().lstrip("."))
    return (f"; {len(urls):,} rows hold URLs (first: {urls[0]['where']}): download them first, e.g. "
            f"`img2dataset --url_list {table} --input_format {fmt} --url_col IMAGE_COLUMN --caption_col CAPTION_COLUMN "
            "--output_format webdataset --output_folder shards`, then --data 'shards/{00000..00099}.tar'")


def pick_column(path: Path, names: list[str], wanted: str | None, defaults: tuple, flag: str, what: str = "",
                required: bool = True) -> str | None:
    """The table column to read: `wanted` (which must exist), else the first of `defaults` present;
    None when nothing fits and the column is optional. Errors name the file, its columns and the
    option that chooses (`flag`)."""
    kind = f"{what} " if what else ""
    if wanted:
        if wanted not in names:
            raise ValueError(f"{path}: no {kind}column {wanted!r}; columns are {names}")
        return wanted
    for d in defaults:
        if d in names:
            return d
    if required:
        raise ValueError(f"{path}: which column holds the {what or 'text'}? pass {flag} (columns: {names})")
    return None
