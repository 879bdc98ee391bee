"""Every caption's token ids, computed once per (captions, tokenizer, context, padding) and kept on disk:
in the cache folder (`<cache>/tokens/<key>/`, shared by every run on that cache) or, where the cache is
read-only, in the run folder. A run that finds them reads no caption strings at all and memory-maps the
ids, so the processes of a node share one copy in the page cache; at the origin's scale (18.5M
captions) that skips ~90 s of tokenizing a process and ~1.5 GB of Python strings in each. Under
torchrun rank 0 tokenizes and writes while the others wait, then every rank maps the same files.

A table is three files: `<name>.flat.npy` (int32 ids, ragged), `<name>.lengths.npy` (int32) and
`<name>.json`, written last: a table without its json (a run killed while writing) is made again.
Temporary files carry the writer's host and process id; the next writer on that host removes those
whose process is gone (a killed run's), never a live writer's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path

import numpy as np
import torch

from .batches import TokenTable

log = logging.getLogger(__name__)
TOKENS_FORMAT = 1


def tokens_key(cache: str | Path, rows: torch.Tensor, tok, context_length: int, pad_id: int | None) -> str:
    """Names what the ids depend on: the captions file's bytes, which of its rows are used (captions of
    images that failed are not), the tokenizer, the context and the padding."""
    from ..files import sha256_file

    what = {"format": TOKENS_FORMAT, "captions": sha256_file(Path(cache) / "captions.parquet"),
            "rows": hashlib.sha256(rows.numpy().astype("<i8").tobytes()).hexdigest(),
            "tokenizer": tok.digest(), "context_length": int(context_length), "pad_id": pad_id}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def token_dirs(cache: str | Path, out: str | Path, key: str) -> list[Path]:
    return [Path(cache) / "tokens" / key, Path(out) / "tokens" / key]


def find_table(dirs: list[Path], name: str) -> Path | None:
    return next((d for d in dirs if (d / f"{name}.json").is_file()), None)


def load_table(d: Path, name: str) -> TokenTable:
    meta = json.loads((d / f"{name}.json").read_text(encoding="utf-8"))
    flat = torch.from_numpy(np.load(d / f"{name}.flat.npy", mmap_mode="c"))     # shared page cache
    lengths = torch.from_numpy(np.load(d / f"{name}.lengths.npy"))
    if len(lengths) != meta["rows"] or len(flat) != meta["ids"]:
        raise ValueError(f"{d / name}: {len(lengths)} rows and {len(flat)} ids, its json says {meta['rows']} and "
                         f"{meta['ids']}; delete {d} and train again")
    return TokenTable(flat, lengths, meta["pad_id"], meta["context_length"])


def _writer() -> str:
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # exists, another user's
        return True
    return True


def sweep_stale(d: Path) -> int:
    """Remove the temporary files in `d` that a killed writer on this host left (its process is gone);
    another host's, or a live process's, stay. Returns how many went."""
    host, gone = _writer().rsplit("-", 1)[0], 0
    for f in d.glob("*.tmp.*"):
        parts = f.name.split(".")
        w = parts[-3] if len(parts) >= 4 else ""
        h, _, pid = w.rpartition("-")
        if h == host and pid.isdigit() and not _alive(int(pid)):
            f.unlink(missing_ok=True)
            gone += 1
    return gone


def save_table(dirs: list[Path], name: str, t: TokenTable) -> Path | None:
    """Write a table into the first folder that takes it; None (a warning) where none does."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            if sweep_stale(d):
                log.info("removed what a killed run left half-written in %s", d)
            for part, x in (("flat", t.flat), ("lengths", t.lengths)):
                tmp = d / f"{name}.{part}.{_writer()}.tmp.npy"
                np.save(tmp, x.numpy())
                os.replace(tmp, d / f"{name}.{part}.npy")
            meta = {"rows": len(t), "ids": int(t.flat.numel()), "pad_id": t.pad_id, "context_length": t.context_length}
            tmp = d / f"{name}.{_writer()}.tmp.json"
            tmp.write_text(json.dumps(meta), encoding="utf-8")
            os.replace(tmp, d / f"{name}.json")
            return d
        except OSError as e:
            log.warning("token ids not kept in %s (%s)", d, e)
    return None


def caption_tables(cache, out, data, tok, context_length: int, pad_id: int | None, names: list[str],
                   rank: int = 0, world: int = 1, progress: bool = False) -> dict[str, TokenTable]:
    """{name: TokenTable} for `names` ("caption", "caption_en": every caption's English one, "" where
    none), row i for the cache caption `data.caption_rows[i]`: read from disk where kept, else rank 0
    reads that column's strings, tokenizes and keeps them. Memory-mapped tables, or under one process
    the tables just made."""
    from ..cache import read_captions

    dirs = token_dirs(cache, out, tokens_key(cache, data.caption_rows, tok, context_length, pad_id))
    made = {}
    if rank == 0:
        for name in names:
            if find_table(dirs, name) is None:
                texts = [e or "" for e in read_captions(cache, data.caption_rows, name)]
                made[name] = TokenTable.encode(tok, texts, context_length, pad_id, progress=progress)
                save_table(dirs, name, made[name])
    if world > 1:
        torch.distributed.barrier()          # rank 0 has written what was missing
        made = {}                            # every rank maps the same files
    out_tables = {}
    for name in names:
        if name in made:
            out_tables[name] = made[name]
            continue
        d = find_table(dirs, name)
        if d is None:
            raise RuntimeError(f"rank {rank}: no {name} token ids in {dirs}: rank 0 could write them nowhere")
        out_tables[name] = load_table(d, name)
    return out_tables
