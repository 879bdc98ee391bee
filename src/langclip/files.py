"""Leaf I/O shared by every stage: progress bars that stay readable in a log, the rule that a command
never writes into a folder or onto a file that is not its own, atomic writes, UTF-8 text and the one
table reader (CSV/TSV/Parquet/JSONL), the memoised file SHA-256, the device choice and whether
torch.compile can build on it."""
from __future__ import annotations

import functools
import sys
from array import array
from pathlib import Path

LOG_INTERVAL_S = 30.0   # progress updates in a log file (no terminal): one per this many seconds


def progress_bar(*args, **kwargs):
    """tqdm, but in a non-terminal (a log file, CI) it writes an update every LOG_INTERVAL_S seconds
    instead of several a second (a 2-minute demo's log held thousands of updates)."""
    from tqdm import tqdm

    stream = kwargs.get("file") or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(*args, **kwargs)
    kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL_S)
    kwargs["maxinterval"] = max(float(kwargs.get("maxinterval", 10.0)), kwargs["mininterval"])
    kwargs.setdefault("ncols", 100)
    return _log_bar_class()(*args, **kwargs)


def _log_bar_class():
    from tqdm import tqdm

    class LogBar(tqdm):
        """In a log each drawing of the bar is a line of its own, and a message is just a line: no
        carriage returns, no clearing and redrawing of the bar around it."""

        def display(self, msg=None, pos=None):
            text = self.__str__() if msg is None else msg
            if text:   # tqdm clears with an empty message: nothing to clear in a log
                self.fp.write(text + "\n")
                self.fp.flush()
            return True

        @classmethod
        def write(cls, s, file=None, end="\n", nolock=False):
            fp = file if file is not None else sys.stderr
            fp.write(s + end)
            fp.flush()

    return LogBar


class OutputError(ValueError):
    """A command was asked to write where it must not (a foreign folder, a file)."""


def check_out_dir(path: str | Path, what: str, markers: tuple[str, ...]) -> Path:
    """`path` may be written as a `what` folder: missing, empty, or already one (holds a marker file).
    A file there, or a non-empty folder of something else, is refused: nothing of the user's is mixed
    into or overwritten."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: is a file; the output must be a folder ({what}). Give another --out")
    if p.is_dir() and any(p.iterdir()) and not any((p / m).exists() for m in markers):
        shown = ", ".join(sorted(x.name for x in p.iterdir())[:5])
        raise OutputError(f"{p}: a non-empty folder that is not a langclip {what} folder (holds {shown}…); "
                          f"refusing to write into it. Give a new or empty --out")
    return p


def check_out_file(path: str | Path, what: str, ours) -> Path:
    """`path` may be written as a `what` file: missing, or written by langclip before (`ours(path)`)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a folder; expected a file path for the {what}")
    if p.exists() and not ours(p):
        raise OutputError(f"{p}: exists and was not written by langclip; refusing to overwrite it. "
                          f"Give another --out")
    return p


def atomic_write(path: str | Path, write) -> Path:
    """Write `path` all at once: `write(tmp_path)` fills a temporary file beside it, which then
    replaces `path` by one rename, so a crash never leaves half a file under the real name."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json_dict(path: str | Path) -> dict:
    """A JSON object file's contents; {} when the file is missing, unreadable, damaged or not an object."""
    import json

    try:
        out = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def json_text(obj, level: int = 0) -> str:
    """JSON with one key of an object a line and every list on one line (a list of lists: a row a
    line): a 1,000-class confusion matrix is 1,000 lines written by json's C encoder, not a million
    indented ones (2.3x the bytes with indent=1: benchmarks/suite_costs.py)."""
    import json

    pad = " " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {json_text(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    if isinstance(obj, list) and obj and all(isinstance(x, list) for x in obj):
        return "[\n" + ",\n".join(pad + json.dumps(x, ensure_ascii=False) for x in obj) + "\n" + " " * level + "]"
    return json.dumps(obj, ensure_ascii=False)


def read_utf8(path: str | Path) -> str:
    """A UTF-8 text file's text, without the byte-order mark Excel and Notepad put first ("CSV UTF-8"):
    left in, it would join the first column's name or the first label; otherwise an error naming the
    file, the line and the byte."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8, "
                         f"e.g. `iconv -f cp1251 -t utf-8`") from None


def read_text_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped; an error names the file and line otherwise."""
    lines = [ln.strip() for ln in read_utf8(path).splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: no texts (one text a line)")
    return lines


def comma_list(text: str) -> list[str]:
    """ "кот, собака,,лошадь" -> ["кот", "собака", "лошадь"]: names typed on a command line."""
    return [x.strip() for x in text.split(",") if x.strip()]


LIST_FILE_SUFFIXES = (".txt", ".json", ".lst", ".tsv", ".csv")


def read_names(values: str | list[str], what: str, example: str, commas: bool = True,
               lang: str | None = None, bare_is_file: bool = False) -> list[str]:
    """One reading of a command line's list of names or texts (predict --labels, similarity --texts,
    eval --classnames): a file named alone (plain or as @FILE: one item a line; .json: a list, or
    {lang: list}), @FILE anywhere, or the items themselves — split at commas when `commas` (names),
    one an argument otherwise (texts hold commas). A missing @FILE, or a lone value that looks like a
    file name (a .txt/.json/... suffix; with `bare_is_file`, any value without a comma), is an error
    naming it, not an item."""
    values = [values] if isinstance(values, str) else list(values)
    if len(values) == 1:
        v = values[0]
        f = Path(v[1:] if v.startswith("@") else v).expanduser()
        if f.is_file():
            return _read_list_file(f, what, example, lang)
        if v.startswith("@") or (Path(v).suffix.lower() in LIST_FILE_SUFFIXES and "," not in v) or \
                (bare_is_file and "," not in v):
            raise FileNotFoundError(f"{what} file not found: {f} (give {example})")
    out = []
    for v in values:
        if v.startswith("@"):
            f = Path(v[1:]).expanduser()
            if not f.is_file():
                raise FileNotFoundError(f"{what} file not found: {f} (give {example})")
            out += _read_list_file(f, what, example, lang)
        else:
            out += comma_list(v) if commas else [v.strip()] if v.strip() else []
    if not out:
        raise ValueError(f"no {what} given: give {example}")
    return out


def _read_list_file(f: Path, what: str, example: str, lang: str | None) -> list[str]:
    if f.suffix.lower() != ".json":
        return read_text_lines(f)
    import json

    try:
        items = json.loads(read_utf8(f))
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: not a JSON list of {what} ({e})") from None
    if isinstance(items, dict) and not lang:
        raise ValueError(f"{f}: {what} by language ({', '.join(map(str, items))}): say which with --lang, or give a plain list")
    items = items.get(lang, items) if isinstance(items, dict) else items
    if not isinstance(items, list) or not items or not all(isinstance(x, (str, dict)) for x in items):
        raise ValueError(f"{f}: expected a non-empty JSON list of {what}" + (f" (or {{\"{lang}\": [...]}})" if lang else ""))
    return items


def pick_device(name: str | None = None):
    """torch.device(name), or CUDA when there is one, else the CPU."""
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


_DIGESTS: dict[tuple, str] = {}


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) for the process: a run that reads
    the same 350 MB weights file in several stages hashes it once."""
    import hashlib

    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while b := f.read(chunk):
                h.update(b)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


class TableRows(list):
    """A table's rows (dicts) with `lines`: where each row starts in the file (1-based; a CSV row with a
    quoted line break spans several), or its number in a Parquet file."""
    lines: "array | range"


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

        t = pq.read_table(path)
        rows = TableRows(t.to_pylist())
        rows.lines = range(1, len(rows) + 1)
        return t.column_names, rows
    text = read_utf8(path)
    if suf in (".csv", ".tsv"):
        return _csv_rows(path, text, suf == ".tsv", problems)
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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity; else the machine's)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def local_path(value: str, parent: Path) -> str | None:
    """A table's image value as a path (relative ones to the table's folder); None for a URL
    (file:// URLs are paths)."""
    if "://" in value[:16] and value.split("://", 1)[0].isalnum():
        if not value.lower().startswith("file://"):
            return None
        from urllib.parse import unquote, urlparse

        value = unquote(urlparse(value).path)
    q = Path(value).expanduser()
    return str(q if q.is_absolute() else parent / q)


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


def read_parquet(path: str | Path, columns: list[str] | None = None):
    """A Parquet file langclip wrote, as a pyarrow Table. Read through `ParquetFile`: `pq.read_table`'s
    dataset layer imports pandas (a part of every search's start), which nothing here needs."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).read(columns=columns)


def compile_problem(device) -> str | None:
    """Why torch.compile cannot build a forward and backward pass on `device` (a torch.device) here (no C++
    compiler for the CPU backend, no usable Triton for the GPU), or None. A tiny function, compiled once a
    process; training and the cache's image tower ask before compiling."""
    return _compile_problem(device.type, device.index)


@functools.lru_cache(maxsize=None)
def _compile_problem(kind: str, index) -> str | None:
    import torch

    device = torch.device(kind, index)
    try:
        w = torch.ones(8, 8, device=device, requires_grad=True)   # no random numbers drawn: the run's stay
        f = torch.compile(lambda x: torch.nn.functional.gelu(x @ w).square().sum(), dynamic=False)
        f(torch.ones(4, 8, device=device)).backward()
        return None
    except Exception as e:   # dynamo/inductor raise their own types; the first line says what is missing
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
