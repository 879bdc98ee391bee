"""Leaf I/O shared by every stage: progress bars that stay readable in a log, the rule that a command
never writes into a folder or onto a file that is not its own, atomic writes, UTF-8 text, the memoised file
SHA-256, the device choice and whether torch.compile can build on it. (Tables: tables.py.)"""
from __future__ import annotations

import functools
import sys
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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity; else the machine's)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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


HUB_PREFIX = "hf-hub:"   # open_clip's way of naming a model on the Hugging Face Hub


def hub_model(ref):
    """A model named as open_clip names one on the Hugging Face Hub ("hf-hub:owner/name": an export uploaded with
    `--hub-id`) -> the folder of its download (huggingface_hub's cache: fetched once, offline after); any other
    reference as it is."""
    if not str(ref).startswith(HUB_PREFIX):
        return ref
    from huggingface_hub import snapshot_download

    repo = str(ref)[len(HUB_PREFIX):]
    try:
        return snapshot_download(repo)
    except Exception as e:   # noqa: BLE001 - offline and not downloaded, no such repository, no access
        raise FileNotFoundError(f"{ref}: the model could not be fetched from the Hugging Face Hub ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); with no network, download it where "
                                f"there is one (`hf download {repo}`) into the cache this machine reads "
                                f"($HF_HUB_CACHE)") from None
