"""The search index: a folder holding one embedding per picture, made by a frozen CLIP image tower.

    idx/manifest.json     format, image tower (arch, file, tensor digest), dim, count, build settings,
                          change detection, failures, approximate index settings
    idx/embeddings.npy    (N, D) float16, L2-normalised, memory-mapped when loaded
    idx/items.parquet     id (stable across updates), source (file path or shard::member), file, member,
                          offset, length, stat_size, stat_mtime_ns, thumb_offset, thumb_length
    idx/thumbs.bin        JPEG thumbnails, back to back (made at index time)
    idx/ann.faiss         an IVF index (faiss, inner product) when N >= ann_threshold

Embedding goes through `cache.build_cache` (the same decoding workers, failure handling, resumable shards
and torchrun split as the training cache) into idx/work/, removed once the index is written. An
existing langclip cache can be indexed without embedding anything again.
`update_index` compares each picture's path, size and mtime (nanoseconds) with the index: new and
changed pictures are embedded, deleted ones dropped, the rest kept as they are.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..config import IndexConfig
from ..files import atomic_write_text, check_out_dir, read_parquet
from ..folders import unfinished_cache
from .tower import index_tower

log = logging.getLogger(__name__)
INDEX_FORMAT = "langclip-index/1"
CHANGE_DETECTION = "path + size + mtime_ns"
SMALL = 512       # fewer pictures than this (an update's new ones) are decoded in the main process


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _stat(ref) -> tuple[int, int]:
    st = os.stat(ref.path)
    return (ref.size if ref.member else st.st_size), st.st_mtime_ns


def _embed(refs, cfg: IndexConfig, work: Path, progress: bool):
    """Embed `refs` through the cache builder into `work`; -> (embeddings (n, D) float16 normalised for
    the pictures that worked, their positions in `refs`, cache manifest); (None, None, None) on a torchrun
    rank other than 0."""
    from ..cache import build_cache, load_cache
    from ..config import CacheConfig
    from ..pairs import Pairs

    arch, weights, pretrained = index_tower(cfg)
    pairs = Pairs()
    for r in refs:
        pairs.image_row(r)
    ccfg = CacheConfig(data=list(cfg.data), clip=arch, weights=weights, pretrained=pretrained, out=str(work),
                       batch_size=cfg.batch_size, workers=cfg.workers if len(refs) >= SMALL else 0,  # a few: no processes
                       shard_size=cfg.shard_size, device=cfg.device, decode=cfg.decode,
                       decode_threads=cfg.decode_threads, decode_ahead=cfg.decode_ahead, compile=cfg.compile,
                       exif_orientation=cfg.exif_orientation,
                       max_failure_rate=cfg.max_failure_rate)
    done = build_cache(ccfg, progress=progress, pairs=pairs)
    if _rank() != 0:   # under torchrun every rank embedded its shards; rank 0 alone reads them and writes
        return None, None, None
    data = load_cache(done)
    ok = data.image_ok.numpy()
    return np.asarray(data.image_emb.numpy()[ok], dtype=np.float16), np.flatnonzero(ok), data.manifest


def build_index(cfg: IndexConfig, progress: bool = True) -> Path:
    """Build an index of `cfg.data` (image folders, tables, tar shards, or one langclip cache)."""
    cfg.validate()
    out = check_out_dir(cfg.out, "index", ("manifest.json", "work"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if len(cfg.data) == 1 and (Path(cfg.data[0]) / "manifest.json").is_file():
        refs, emb, man = _from_cache(Path(cfg.data[0]))
        failures = man.get("failures", [])
    else:
        from ..pairs import read_images

        pairs = read_images(cfg.data, cfg.image_column, cfg.exclude)
        emb, keep, man = _embed(pairs.images, cfg, out / "work", progress)
        if emb is None:                               # a torchrun rank other than 0: rank 0 writes
            return out
        refs = [pairs.images[i] for i in keep]
        failures = _failed(pairs.images, keep, man) + pairs.problems
    ids = list(range(len(refs)))
    _write(out, cfg, refs, emb, ids, man, failures, time.perf_counter() - t0, progress, old=None)
    shutil.rmtree(out / "work", ignore_errors=True)
    return out


def _failed(refs, keep, man: dict) -> list[dict]:
    """The pictures that could not be read, with their size and mtime: an update retries one only when
    it changed."""
    ok = set(int(i) for i in keep)
    why = {f["source"]: f["reason"] for f in man.get("failures", [])}
    out = []
    for i, r in enumerate(refs):
        if i not in ok:
            try:
                st = _stat(r)
            except OSError:
                st = (-1, -1)
            out.append({"source": r.key, "reason": why.get(r.key, "unreadable"), "stat": list(st)})
    return out


def _from_cache(path: Path):
    """The pictures and normalised embeddings of an existing cache (nothing is embedded again)."""
    from ..cache import load_cache
    from ..pairs import ImageRef, Pairs, read_tar

    data = load_cache(path)
    sources = read_parquet(path / "images.parquet", ["source"]).column("source").to_pylist()
    tars: dict[str, dict] = {}
    refs, rows = [], []
    for row in np.flatnonzero(data.image_ok.numpy()):
        key = sources[row]
        shard, sep, member = key.partition("::")
        if sep and shard.endswith(".tar"):
            if shard not in tars:
                p = Pairs()
                read_tar(Path(shard), p)
                tars[shard] = {r.key: r for r in p.images}
            ref = tars[shard].get(key)
            if ref is None:
                continue
        else:
            ref = ImageRef(key)
        refs.append(ref)
        rows.append(row)
    return refs, np.asarray(data.image_emb.numpy()[rows], dtype=np.float16), data.manifest


def _write(out: Path, cfg: IndexConfig, refs, emb, ids, man: dict, failures, secs, progress, old=None) -> None:
    """Write embeddings, items, thumbnails, the approximate index and the manifest (last)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .thumbs import make_thumbnails

    stats = [_stat(r) for r in refs]
    reuse = old or {}
    new = len(refs) - len((reuse.get("thumbs") or {}).get("rows", []))
    offs, lens = make_thumbnails(refs, out / "thumbs.bin", cfg.thumb_size, cfg.workers if new >= SMALL else 0, progress,
                                 reuse=reuse.get("thumbs"), orient=cfg.exif_orientation)
    np.save(out / "embeddings.tmp.npy", emb)
    os.replace(out / "embeddings.tmp.npy", out / "embeddings.npy")
    pq.write_table(pa.table({
        "id": ids, "source": [r.key for r in refs], "file": [r.path for r in refs], "member": [r.member for r in refs],
        "offset": [r.offset for r in refs], "length": [r.size for r in refs], "stat_size": [s for s, _ in stats],
        "stat_mtime_ns": [m for _, m in stats], "thumb_offset": offs, "thumb_length": lens}), out / "items.tmp.parquet")
    os.replace(out / "items.tmp.parquet", out / "items.parquet")
    ann = None
    if len(ids) >= cfg.ann_threshold:
        from .ann import build_ann

        ann = build_ann(emb, ids, out / "ann.faiss", cfg.ann_nprobe)
    else:
        (out / "ann.faiss").unlink(missing_ok=True)
    doc = {"format": INDEX_FORMAT, "arch": man.get("arch"), "weights": man.get("weights"),
           "weights_sha256": man.get("weights_sha256"), "tower_sha256": man.get("tower_sha256"),
           "pretrained": man.get("pretrained", ""), "preprocess": man.get("preprocess", {}), "dim": int(emb.shape[1]),
           "dtype": "float16", "count": len(ids), "next_id": max(ids, default=-1) + 1, "data": list(cfg.data),
           "change_detection": CHANGE_DETECTION, "thumb_size": cfg.thumb_size, "ann": ann,
           "failures": failures, "num_failures": len(failures), "seconds": round(secs, 2),
           "built": (old or {}).get("built") or time.strftime("%Y-%m-%dT%H:%M:%S"),
           "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": asdict(cfg), "cache_stamp": _cache_stamp(cfg)}
    atomic_write_text(out / "manifest.json", json.dumps(doc, indent=1, ensure_ascii=False))
    print(f"index {out}: {len(ids):,} pictures, {len(failures)} skipped, dim {emb.shape[1]}"
          + (f", approximate search (IVF, {ann['nlist']} lists)" if ann else ", exact search") + f", in {secs:.1f} s")


def update_index(path: str | Path, data: list[str] | None = None, progress: bool = True, drop_unreachable: bool = False,
                 **overrides) -> dict:
    """Bring an index up to date with its data (or `data`): embed new and changed pictures, drop deleted
    ones, keep the rest. -> counts and seconds. Pictures in a folder it cannot see into now (a NAS not mounted)
    are not taken for deleted: it raises `Unreachable`, changing nothing, unless `drop_unreachable`."""
    from ..folders import Unreachable, unreachable
    from ..pairs import read_images

    t0 = time.perf_counter()
    out = Path(path)
    idx = Index(out)
    # an index from before exif_orientation keeps its pictures as stored: no mix of the two
    cfg = IndexConfig(**{"exif_orientation": False, **idx.manifest["config"], **overrides, "out": str(out)})
    if data:
        cfg.data = list(data)
    items = read_parquet(out / "items.parquet").to_pydict()
    if len(cfg.data) == 1 and (Path(cfg.data[0]) / "manifest.json").is_file():
        return _update_from_cache(out, idx, cfg, items, t0)
    known = {s: (i, sz, mt) for i, (s, sz, mt) in enumerate(zip(items["source"], items["stat_size"], items["stat_mtime_ns"]))}
    pairs = read_images(cfg.data, cfg.image_column, cfg.exclude)
    lost = [] if drop_unreachable else unreachable(pairs.problems, {r.key for r in pairs.images}, items["source"], cfg.data)
    if lost:
        idx.close()
        raise Unreachable(f"{out}: nothing changed: " + "; ".join(f"{w}: {why}, and the index holds {n:,} picture"
                                                                  f"{'s' * (n != 1)} there" for w, n, why in lost)
                          + ". Mount or mend it and update again; to drop those pictures, --drop-unreachable")
    bad = {f["source"]: f for f in idx.manifest.get("failures", []) if "stat" in f}
    keep_rows, keep_refs, todo, still_bad = [], [], [], []
    for r in pairs.images:
        row, st = known.get(r.key), _stat(r)
        if row is not None and (row[1], row[2]) == st:
            keep_rows.append(row[0])
            keep_refs.append(r)
        elif r.key in bad and tuple(bad[r.key]["stat"]) == st:
            still_bad.append(bad[r.key])          # unreadable and unchanged: not tried again
        else:
            todo.append(r)
    removed = len(items["id"]) - len(keep_rows)
    changed = sum(1 for r in todo if r.key in known)
    if not todo and not removed and len(still_bad) == idx.manifest.get("num_failures", 0):
        idx.close()
        res = {"kept": len(keep_rows), "added": 0, "changed": 0, "removed": 0, "embedded": 0, "failed": 0,
               "count": len(keep_rows), "seconds": round(time.perf_counter() - t0, 2)}
        print(json.dumps(res))
        return res                                # nothing changed: nothing is rewritten
    new_emb, new_refs, failures = np.zeros((0, idx.dim), np.float16), [], []
    if todo:   # named by what it embeds: the same folder on every torchrun rank, resumable if interrupted
        digest = hashlib.sha256("\n".join(r.key for r in todo).encode()).hexdigest()[:16]
        new_emb, pos, man = _embed(todo, cfg, out / "work" / f"update-{digest}", progress)
        if new_emb is None:                           # a torchrun rank other than 0: rank 0 writes
            idx.close()
            return {"rank": _rank()}
        new_refs = [todo[i] for i in pos]
        failures = _failed(todo, pos, man)
    failures = still_bad + failures + pairs.problems
    emb = np.concatenate([np.asarray(idx.embeddings[keep_rows]), new_emb]).astype(np.float16)
    nid = idx.manifest["next_id"]
    ids = [items["id"][r] for r in keep_rows] + list(range(nid, nid + len(new_refs)))
    thumbs = {"file": out / "thumbs.bin", "rows": [(items["thumb_offset"][r], items["thumb_length"][r]) for r in keep_rows]}
    man = {k: idx.manifest.get(k) for k in ("arch", "weights", "weights_sha256", "tower_sha256", "pretrained", "preprocess")}
    idx.close()
    _write(out, cfg, keep_refs + new_refs, emb, ids, man, failures, time.perf_counter() - t0, progress,
           old={"thumbs": thumbs, "built": idx.manifest.get("built")})
    shutil.rmtree(out / "work", ignore_errors=True)
    res = {"kept": len(keep_rows), "added": len(todo) - changed, "changed": changed, "removed": removed - changed,
           "embedded": len(new_refs), "failed": len(todo) - len(new_refs), "count": len(ids),
           "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(res))
    return res


def _update_from_cache(out: Path, idx, cfg: IndexConfig, items: dict, t0: float) -> dict:
    """An index of a langclip cache follows the cache's pictures as they are now (nothing is embedded: the
    cache holds the embeddings); a picture it had keeps its id and thumbnail, and an unchanged cache
    rewrites nothing (known by its manifest's digest, without reading the cache)."""
    if idx.manifest.get("cache_stamp") and idx.manifest["cache_stamp"] == _cache_stamp(cfg):
        idx.close()
        res = {"kept": len(items["id"]), "added": 0, "changed": 0, "removed": 0, "embedded": 0, "failed": 0,
               "count": len(items["id"]), "seconds": round(time.perf_counter() - t0, 2)}
        print(json.dumps(res))
        return res
    refs, emb, man = _from_cache(Path(cfg.data[0]))
    row_of = {s: r for r, s in enumerate(items["source"])}
    order = sorted(range(len(refs)), key=lambda n: refs[n].key not in row_of)   # kept ones first, as update_index
    refs, emb = [refs[n] for n in order], emb[order]
    kept = [row_of[r.key] for r in refs if r.key in row_of]
    res = {"kept": len(kept), "added": len(refs) - len(kept), "changed": 0, "removed": len(row_of) - len(kept),
           "embedded": 0, "failed": 0, "count": len(refs)}
    same = (kept == list(range(len(row_of))) and len(refs) == len(row_of)
            and np.array_equal(np.asarray(idx.embeddings), emb))
    nid, built = idx.manifest["next_id"], idx.manifest.get("built")
    idx.close()
    if not same:
        ids = [items["id"][r] for r in kept] + list(range(nid, nid + len(refs) - len(kept)))
        thumbs = {"file": out / "thumbs.bin",
                  "rows": [(items["thumb_offset"][r], items["thumb_length"][r]) for r in kept]}
        _write(out, cfg, refs, emb, ids, man, man.get("failures", []), time.perf_counter() - t0, False,
               old={"thumbs": thumbs, "built": built})
    print(json.dumps(res := {**res, "seconds": round(time.perf_counter() - t0, 2)}))
    return res


def _cache_stamp(cfg: IndexConfig) -> str | None:
    """A digest of the manifest of the one langclip cache an index is made from (None for other data): a
    cache build rewrites its manifest last, so an equal digest is an unchanged cache."""
    f = Path(cfg.data[0]) / "manifest.json" if len(cfg.data) == 1 else None
    return hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f is not None and f.is_file() else None


class Index:
    """A built index, memory-mapped. `search(vectors, k)` -> [[(id, score), ...], ...]."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        f = self.path / "manifest.json"
        if not f.is_file():
            why = unfinished_cache(self.path)
            raise FileNotFoundError(f"{self.path} is {why}" if why else f"{self.path}: not a langclip index (no "
                                    f"manifest.json); build one with `langclip index build`")
        self.manifest = json.loads(f.read_text(encoding="utf-8"))
        if self.manifest.get("format") != INDEX_FORMAT:
            raise ValueError(f"{f}: format {self.manifest.get('format')!r}, expected {INDEX_FORMAT}")
        self.embeddings = np.load(self.path / "embeddings.npy", mmap_mode="r")
        self.items = read_parquet(self.path / "items.parquet").to_pydict()
        count = self.manifest.get("count", len(self.embeddings))
        if not len(self.embeddings) == len(self.items["id"]) == count:
            raise ValueError(f"{self.path}: its files disagree ({len(self.embeddings):,} embeddings, "
                             f"{len(self.items['id']):,} items, manifest.json: {count:,}): an `index update` is "
                             f"writing it now, or one was interrupted — rerun `langclip index update {self.path}`")
        self.ids = np.asarray(self.items["id"], dtype=np.int64)
        self.row_of = {int(i): r for r, i in enumerate(self.items["id"])}
        self._f32 = None
        self._ann = None
        self._thumbs = None

    # -- facts ------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tower_sha256(self) -> str:
        return self.manifest.get("tower_sha256") or ""

    def source(self, id_: int) -> str:
        return self.items["source"][self._row(id_)]

    def _row(self, id_: int) -> int:
        r = self.row_of.get(int(id_))
        if r is None:
            raise KeyError(id_)
        return r

    # -- search -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10, exact: bool | None = None) -> list[list[tuple[int, float]]]:
        """Top-k ids by inner product with L2-normalised `queries` (Q, D) or (D,); approximate (faiss)
        when the index has an approximate part and `exact` is not True."""
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(0, min(int(k), len(self)))
        if k == 0:
            return [[] for _ in q]
        if self.manifest.get("ann") and exact is not True:
            from .ann import load_ann

            if self._ann is None:
                self._ann = load_ann(self.path / "ann.faiss", self.manifest["ann"])
            scores, ids = self._ann.search(q, k)
            return [[(int(i), float(s)) for i, s in zip(ir, sr) if i >= 0] for ir, sr in zip(ids, scores)]
        if self._f32 is None:
            self._f32 = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        out = []
        for row in q @ self._f32.T if len(q) * len(self) <= 1 << 26 else (x @ self._f32.T for x in q):
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([(int(self.ids[t]), float(row[t])) for t in top])
        return out

    def vector(self, id_: int) -> np.ndarray:
        return np.asarray(self.embeddings[self._row(id_)], dtype=np.float32)

    def pinned(self) -> "Index":
        """Open now what `search` and `thumbnail` would open on first use (the thumbnail file, the approximate
        index), so this object answers from one version of the index even when `index update` replaces its
        files later (a long-lived server; search/server.py's LiveIndex loads the new version)."""
        if self._thumbs is None:
            self._thumbs = os.open(self.path / "thumbs.bin", os.O_RDONLY)
        if self.manifest.get("ann") and self._ann is None:
            from .ann import load_ann

            self._ann = load_ann(self.path / "ann.faiss", self.manifest["ann"])
        return self

    # -- files ------------------------------------------------------------------------------------
    def thumbnail(self, id_: int) -> bytes:
        r = self._row(id_)
        if self._thumbs is None:
            self._thumbs = os.open(self.path / "thumbs.bin", os.O_RDONLY)
        return os.pread(self._thumbs, self.items["thumb_length"][r], self.items["thumb_offset"][r])  # thread-safe

    def image_bytes(self, id_: int) -> bytes:
        from ..pairs import ImageRef, read_image_bytes

        r = self._row(id_)
        return read_image_bytes(ImageRef(self.items["file"][r], self.items["member"][r], self.items["offset"][r],
                                         self.items["length"][r]))

    def close(self) -> None:
        if self._thumbs is not None:
            os.close(self._thumbs)
            self._thumbs = None

    def __del__(self):   # a server's replaced version closes its file once no request holds it
        try:
            self.close()
        except Exception:   # noqa: BLE001 - interpreter shutdown
            pass
