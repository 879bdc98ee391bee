"""`langclip data shards`: tables that hold their pictures (Hugging Face `datasets`' Parquet files, whose image
column is a struct of the encoded `bytes` and the original `path`, or plain binary) written out as webdataset
tar shards, as img2dataset writes them — `key.jpg` (the bytes as they are: nothing decoded or re-encoded),
`key.txt` (the captions, one a line) and `key.json` (the English caption as `caption_en`, the row's table and
number, the picture's original name) — which `cache build`, `index build` and open_clip's training read.

Streamed a batch of rows at a time (a table larger than memory is fine); each shard is written under a
temporary name and renamed when complete, so an interrupted run resumes after its last complete shard.
A row whose struct holds no bytes but the path of a file that exists (`datasets` keeps local files so) takes
that file's bytes. A row without a picture, or with bytes in no format langclip reads, is skipped and named."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from .files import atomic_write_text, check_out_dir, progress_bar
from .pairs import CAPTION_COLUMNS, ENGLISH_COLUMNS, IMAGE_COLUMNS, IMAGE_EXTS, expand
from .tables import pick_column, picture_bytes

RECORD = "shards.json"
MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
         (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def picture_ext(data: bytes, name: str | None = None) -> str | None:
    """The extension a picture's bytes call for (by their first bytes; WebP, HEIC and AVIF by their
    containers), else the original name's if it is a picture's; None for bytes of no format langclip reads."""
    for magic, ext in MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[4:8] == b"ftyp":
        return ".avif" if data[8:12] in (b"avif", b"avis") else ".heic"
    ext = os.path.splitext(name or "")[1].lower()
    return ext if ext in IMAGE_EXTS else None


def _tables(data: list[str]) -> list[Path]:
    files = [Path(f).expanduser() for spec in data for f in expand(spec)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"table not found: {f}")
        if f.suffix.lower() != ".parquet":
            raise ValueError(f"{f}: `data shards` reads Parquet tables that hold their pictures (as Hugging Face "
                             f"datasets store them); a table of paths is read by `cache build` as it is")
    if not files:
        raise ValueError("no --data given")
    return files


def _columns(f: Path, image_column, caption_column, english_column) -> tuple[str, str | None, str | None]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(f)
    kinds = {x.name: picture_bytes(x.type) for x in schema}
    ic = image_column or next((c for c in (*IMAGE_COLUMNS, "jpg", "png", "webp") if kinds.get(c)), None) or \
        next((c for c, k in kinds.items() if k), None)
    if ic is None or ic not in kinds:
        raise ValueError(f"{f}: no column holds pictures (a struct with `bytes`, or binary); columns are "
                         f"{schema.names}" + (f"; no column {ic!r}" if ic else ""))
    if not kinds[ic]:
        raise ValueError(f"{f}: column {ic!r} holds {schema.field(ic).type}, not pictures' bytes; a table of paths "
                         f"is read by `cache build` as it is")
    cc = pick_column(f, schema.names, caption_column, CAPTION_COLUMNS, "--caption-column", "caption", required=False)
    ec = pick_column(f, schema.names, english_column, ENGLISH_COLUMNS, "--english-column", "english", required=False)
    return ic, cc, ec


def _lines(v) -> list[str]:
    """A caption cell as the .txt's lines: one caption a line (a list: each), line breaks inside one as spaces."""
    items = v if isinstance(v, (list, tuple)) else [v]
    return [" ".join(str(c).split()) for c in items if isinstance(c, str) and c.strip()]


def _stamp(files: list[Path], shard_size: int, columns) -> dict:
    return json.loads(json.dumps({"tables": [{"path": str(f.resolve()), "size": f.stat().st_size, "mtime_ns":
                                  f.stat().st_mtime_ns} for f in files], "shard_size": shard_size, "columns": columns}))


def write_shards(data: list[str], out: str | Path, image_column: str | None = None, caption_column: str | None = None,
                 english_column: str | None = None, shard_size: int = 10_000, progress: bool = True) -> dict:
    """Write the pictures (and captions) of Parquet tables `data` (brace patterns allowed) as webdataset shards
    `out/00000.tar`, … of `shard_size` rows each; resumes an interrupted run into the same `out`. -> the record
    it leaves in `out/shards.json`: counts, the problems, and the `--data` pattern that reads the shards."""
    import pyarrow.parquet as pq

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    files = _tables(data)
    out = check_out_dir(out, "shards", (RECORD,))
    cols = [_columns(f, image_column, caption_column, english_column) for f in files]
    stamp = _stamp(files, shard_size, cols)
    rec_f, old = out / RECORD, {}
    if rec_f.is_file():
        old = json.loads(rec_f.read_text(encoding="utf-8"))
        if old.get("input") != stamp:
            raise ValueError(f"{out}: holds shards of other tables or settings ({rec_f}); give another --out")
    out.mkdir(parents=True, exist_ok=True)
    total = sum(pq.ParquetFile(str(f)).metadata.num_rows for f in files)
    n_shards = max(1, -(-total // shard_size))
    complete = {k for k in range(n_shards) if (out / f"{k:05d}.tar").is_file()}
    # the rows a complete shard skipped, as the run that wrote it recorded them (saved with each shard)
    problems = [x for x in old.get("problems") or [] if x.get("shard") in complete]
    record = {"input": stamp, "done": False}
    atomic_write_text(rec_f, json.dumps(dict(record, problems=problems), indent=1, ensure_ascii=False))
    t0, g, written = time.perf_counter(), 0, 0
    state = {"k": None, "tar": None}

    def close():
        if state["tar"] is not None:
            state["tar"].close()
            os.replace(out / f"{state['k']:05d}.tar.tmp", out / f"{state['k']:05d}.tar")
            atomic_write_text(rec_f, json.dumps(dict(record, problems=problems), indent=1, ensure_ascii=False))
        state["k"] = state["tar"] = None

    def add(name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        state["tar"].addfile(info, io.BytesIO(payload))

    bar = progress_bar(total=total, unit="row", desc="shards", disable=not progress)
    for f, (ic, cc, ec) in zip(files, cols):
        n = 0
        for batch in pq.ParquetFile(str(f)).iter_batches(batch_size=256, columns=[c for c in dict.fromkeys((ic, cc, ec)) if c]):
            if all(k in complete for k in range(g // shard_size, (g + batch.num_rows - 1) // shard_size + 1)):
                g, n = g + batch.num_rows, n + batch.num_rows   # a resumed run: rows of complete shards
                bar.update(batch.num_rows)
                continue
            d = batch.to_pydict()
            for i in range(batch.num_rows):
                k, n = g // shard_size, n + 1
                g += 1
                if k in complete:
                    continue
                v = d[ic][i]
                raw, name = (v.get("bytes"), v.get("path")) if isinstance(v, dict) else (v, None)
                if not raw and name and (f.parent / name).is_file():   # the feature keeps a local file's path alone
                    raw = (f.parent / name).read_bytes()
                ext = picture_ext(raw, name) if raw else None
                if ext is None:
                    problems.append({"where": f"{f}:{n}", "shard": k, "reason": "no picture" if not raw else
                                     "bytes of no picture format langclip reads"})
                    continue
                if state["k"] != k:
                    close()
                    state["k"], state["tar"] = k, tarfile.open(out / f"{k:05d}.tar.tmp", "w", format=tarfile.USTAR_FORMAT)
                key = f"{g - 1:09d}"
                add(key + ext, raw)
                caps = _lines(d[cc][i]) if cc else []
                if caps:
                    add(key + ".txt", "\n".join(caps).encode("utf-8"))
                en = _lines(d[ec][i]) if ec else []
                meta = {"source": f"{f}:{n}", **({"path": name} if name else {}), **({"caption_en": en if len(en) > 1 else en[0]} if en else {})}
                add(key + ".json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                written += 1
            bar.update(batch.num_rows)
    close()
    bar.close()
    for k in range(n_shards):   # a shard whose rows were all skipped holds nothing: an empty tar keeps the numbering
        if not (out / f"{k:05d}.tar").is_file():
            tarfile.open(out / f"{k:05d}.tar", "w").close()
    pattern = str(out / (f"{{00000..{n_shards - 1:05d}}}.tar" if n_shards > 1 else "00000.tar"))
    record.update(done=True, rows=total, shards=n_shards, written=written, resumed_shards=len(complete),
                  problems=problems, data=pattern, seconds=round(time.perf_counter() - t0, 1))
    atomic_write_text(rec_f, json.dumps(record, indent=1, ensure_ascii=False))
    print(f"{out}: {written:,} pictures written in this run, {len(complete)} of {n_shards} shards already complete, "
          f"{len(problems)} rows skipped{' (first: ' + problems[0]['where'] + ': ' + problems[0]['reason'] + ')' if problems else ''}; "
          f"read them with --data '{pattern}'")
    return record
