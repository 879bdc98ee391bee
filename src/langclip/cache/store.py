"""The image-embedding cache's folder format: writing the consolidated arrays and the manifest, and
reading a cache back (memory-mapped).

Folder layout:
    manifest.json            written last: architecture, tower digest, weights SHA-256 and pretrained
                             tag, preprocessing, dim, dtype,
                             counts, failures (what was skipped and why), damaged (decoded despite
                             libjpeg's warnings, kept)
    images.parquet           row -> image source
    captions.parquet         caption, image_row, caption_en (nullable)
    emb/build.json           what the shards belong to (image list, tower, shard sizes): a rerun
                             with anything else is refused instead of mixing
    emb/shard_00000.safetensors   "emb" (n, D) float16, "ok" (n,) bool — rows [k*S, (k+1)*S)
    emb/shard_00000.failures.json, .damaged.json (only where libjpeg warned)
    emb/normalized.npy, ok.npy    all rows, L2-normalised (zeros where failed): memory-mapped by
                             `load_cache`, so a node's training processes share one copy
    teacher/shard_00000.safetensors   original CLIP text embeddings of the English captions (when
                             present): "idx" caption rows, "emb" (n, D) float16
    teacher/dense.npy, has.npy    the same in `load_cache`'s caption order, memory-mapped
    tokens/<key>/            written by training, not by the build: each caption's token ids for one
                             tokenizer and context (train/tokens.py); safe to delete

Shards are written atomically; a rerun skips complete shards (resume). Under torchrun each rank
builds the shards k with k % world == rank, so the result does not depend on the number of processes.
The consolidated .npy files are written last, by rank 0, from the shards.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import CacheConfig
from ..files import atomic_write_text, read_parquet
from ..folders import unfinished_cache

log = logging.getLogger(__name__)
CACHE_FORMAT = "langclip-cache/1"


def _shard_rows(path: Path, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image shard k's embeddings, L2-normalised (zero rows for images that failed), and its ok mask."""
    from safetensors.torch import load_file

    d = load_file(str(path / "emb" / f"shard_{k:05d}.safetensors"))
    return torch.nn.functional.normalize(d["emb"].float(), dim=-1).half() * d["ok"][:, None], d["ok"]


def _read_shards(path: Path, num_shards: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All image embeddings and the ok mask, from the shards (caches without emb/normalized.npy)."""
    parts = [_shard_rows(path, k) for k in range(num_shards)]
    if not parts:
        return torch.zeros(0, dim, dtype=torch.float16), torch.zeros(0, dtype=torch.bool)
    return torch.cat([e for e, _ in parts]), torch.cat([ok for _, ok in parts])


def _publish(mm, tmp: Path, dst: Path, mask, mask_dst: Path) -> None:
    """Finish a memory-mapped array written at `tmp` and its row mask: mask first, then the array,
    each by an atomic rename (load_cache looks for both)."""
    import numpy as np

    mm.flush()
    mask_tmp = mask_dst.with_name(mask_dst.stem + ".tmp.npy")
    np.save(mask_tmp, mask)
    os.replace(mask_tmp, mask_dst)
    os.replace(tmp, dst)


def write_normalized(path: Path, num_shards: int, n: int, dim: int):
    """emb/normalized.npy + emb/ok.npy: the embeddings as one array, ready to use, which
    `load_cache` memory-maps, so the training processes of a node share one copy in the page cache."""
    import numpy as np

    if n == 0:
        return np.zeros(0, dtype=bool)
    tmp = path / "emb" / "normalized.tmp.npy"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
    oks = np.zeros(n, dtype=bool)
    row = 0
    for k in range(num_shards):   # one shard at a time: never the whole array in memory
        e, ok = _shard_rows(path, k)
        mm[row: row + len(e)] = e.numpy()
        oks[row: row + len(e)] = ok.numpy()
        row += len(e)
    _publish(mm, tmp, path / "emb" / "normalized.npy", oks, path / "emb" / "ok.npy")
    return oks


def write_teacher_dense(path: Path, keep: torch.Tensor) -> None:
    """teacher/dense.npy (C, D) float16 + teacher/has.npy: the teacher embedding of every kept caption
    (`keep`: over all captions; those of failed images are dropped) in `load_cache`'s caption order,
    memory-mapped there like the image embeddings (18.5M captions: 19 GB that every process shared)."""
    import numpy as np
    from safetensors.torch import load_file

    shards = sorted((path / "teacher").glob("shard_*.safetensors"))
    n = int(keep.sum())
    if not shards or n == 0:
        return
    pos = torch.full((len(keep),), -1, dtype=torch.long)
    pos[keep] = torch.arange(n)
    tmp = path / "teacher" / "dense.tmp.npy"
    mm, has = None, np.zeros(n, dtype=bool)
    for f in shards:   # one shard at a time
        t = load_file(str(f))
        if mm is None:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, t["emb"].shape[1]))
        p = pos[t["idx"]]
        m = p >= 0
        mm[p[m].numpy()] = t["emb"][m].numpy()
        has[p[m].numpy()] = True
    _publish(mm, tmp, path / "teacher" / "dense.npy", has, path / "teacher" / "has.npy")


def write_tables(out: Path, pairs, pa, pq) -> None:
    pq.write_table(pa.table({"row": list(range(len(pairs.images))), "source": [r.key for r in pairs.images]}),
                   out / "images.parquet")
    pq.write_table(pa.table({"caption": [c[1] for c in pairs.captions], "image_row": [c[0] for c in pairs.captions],
                             "caption_en": [c[2] for c in pairs.captions]}), out / "captions.parquet")


def write_manifest(out: Path, cfg: CacheConfig, pairs, pp: dict, dim: int, teacher: bool, sha: str, timing: dict,
                    weights: Path, tower_sha256: str) -> None:
    """`timing`: this build's `seconds` (start to end), and rank 0's `embed_seconds` for its `images_embedded`
    (the loop over the pictures: decoding and the image tower, without the start and the consolidation)."""
    fails, damaged = [], []
    for f in sorted((out / "emb").glob("shard_*.failures.json")):
        fails += json.loads(f.read_text(encoding="utf-8"))
    for f in sorted((out / "emb").glob("shard_*.damaged.json")):
        damaged += json.loads(f.read_text(encoding="utf-8"))
    n = len(pairs.images)
    man = {"format": CACHE_FORMAT, "arch": cfg.clip, "weights": str(Path(weights).resolve()), "weights_sha256": sha,
           "tower_sha256": tower_sha256, "pretrained": cfg.pretrained,
           "preprocess": pp, "dim": dim, "dtype": "float16", "shard_size": cfg.shard_size,
           "num_shards": (n + cfg.shard_size - 1) // cfg.shard_size, "num_images": n,
           "num_images_ok": n - len(fails), "num_images_failed": len(fails), "num_captions": len(pairs.captions),
           "teacher": teacher, "text_only": cfg.text_only, "failures": fails, "skipped": pairs.problems,
           "num_images_damaged": len(damaged), "damaged": damaged, "data": cfg.data,
           "seconds": timing["seconds"], "timing": timing, "config": asdict(cfg)}
    atomic_write_text(out / "manifest.json", json.dumps(man, indent=2, ensure_ascii=False))
    if cfg.text_only:
        print(f"cache {out}: text-only, {len(pairs.captions):,} text pairs with English teacher embeddings, "
              f"{len(pairs.problems)} input problems, in {timing['seconds']:.1f} s")
        return
    print(f"cache {out}: {man['num_images_ok']:,} images embedded, {len(fails)} failed, "
          f"{len(pairs.problems)} input problems, {len(pairs.captions):,} captions, in {timing['seconds']:.1f} s"
          + (f" ({timing['images_embedded'] / timing['embed_seconds']:,.0f} images/s while embedding)"
             if timing.get("images_embedded") and timing.get("embed_seconds") else "")
          + (f"; {len(damaged)} decoded despite damaged data (libjpeg's warnings: manifest.json 'damaged', "
             f"first {damaged[0]['source']})" if damaged else ""))


def _load_teacher(path: Path, n_captions: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Dense (C, D) float16 teacher embeddings and the (C,) mask of captions that have one."""
    from safetensors.torch import load_file

    if (path / "teacher.safetensors").is_file():          # caches written before session 3: one dense file
        t = load_file(str(path / "teacher.safetensors"))
        return t["emb"], t["has"]
    shards = sorted((path / "teacher").glob("shard_*.safetensors"))
    if not shards:
        return None
    parts = [load_file(str(f)) for f in shards]
    emb = torch.zeros(n_captions, parts[0]["emb"].shape[1], dtype=torch.float16)
    has = torch.zeros(n_captions, dtype=torch.bool)
    for t in parts:
        emb[t["idx"]] = t["emb"]
        has[t["idx"]] = True
    return emb, has


# -- reading --------------------------------------------------------------------------------------
@dataclass
class CacheData:
    manifest: dict
    image_emb: torch.Tensor          # (N, D) float16, L2-normalised where ok
    image_ok: torch.Tensor           # (N,) bool
    captions: list[str]
    caption_image: torch.Tensor      # (C,) long: image row of each caption
    teacher: torch.Tensor | None     # (C, D) float16 or None
    teacher_has: torch.Tensor | None
    text_only: bool = False          # a parallel corpus: no images; each caption is its own group
    captions_en: list | None = None  # the English caption of each caption (None where there is none)
    has_en: torch.Tensor | None = None    # (C,) bool: the caption has an English one (None: none has)
    caption_rows: torch.Tensor | None = None   # (C,) long: each caption's row in captions.parquet


def read_manifest(path: str | Path) -> dict:
    f = Path(path) / "manifest.json"
    if not f.is_file():
        why = unfinished_cache(path)
        raise FileNotFoundError(f"{path} is {why}" if why else f"{path} is not a complete langclip cache (no "
                                f"manifest.json); build or resume it with `langclip cache build`")
    return json.loads(f.read_text(encoding="utf-8"))


def same_arch(a, b) -> bool:
    """Two --clip values name the same architecture: equal, or the same file or folder (a relative and an
    absolute path to one model-config JSON)."""
    if a == b:
        return True
    try:
        return bool(a and b) and Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return False


def check_cache_matches(manifest: dict, ref: dict, where: str = "cache") -> None:
    """Refuse a cache made with another image tower. `ref`: the model's tower (arch, tower_sha256 — the
    digest of its tensors — and sha256, its file's bytes). Caches and runs from before tensor digests
    are compared by the file's SHA-256."""
    both = manifest.get("tower_sha256") and ref.get("tower_sha256")
    key, label = ("tower_sha256", "image-tower digest") if both else ("weights_sha256", "weights SHA-256")
    theirs, ours = str(manifest.get(key)), str(ref.get("tower_sha256" if both else "sha256"))
    if not same_arch(manifest.get("arch"), ref.get("arch")) or theirs != ours:
        raise ValueError(f"{where} was built with image tower {manifest.get('arch')} ({label} {theirs[:12]}…), but "
                         f"the model uses {ref.get('arch')} ({ours[:12]}…); rebuild the cache with the same "
                         f"--clip and weights")


def load_cache(path: str | Path, texts: bool = True) -> CacheData:
    """A cache's arrays (memory-mapped where they are large) and captions. `texts=False`: the caption
    strings are not read (`captions`/`captions_en` None; `has_en` still says which have English), for a
    training run whose token ids are already on disk — ~1.5 GB of Python strings at 18.5M captions."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    man = read_manifest(path)
    norm = path / "emb" / "normalized.npy"
    if norm.is_file() and (path / "emb" / "ok.npy").is_file():
        import numpy as np

        # copy-on-write map: pages come from the page cache, shared by every process that loads it
        emb = torch.from_numpy(np.load(norm, mmap_mode="c"))
        ok = torch.from_numpy(np.load(path / "emb" / "ok.npy"))
        if tuple(emb.shape) != (man["num_images"], man["dim"]):
            raise ValueError(f"{norm}: shape {tuple(emb.shape)}, the manifest says "
                             f"({man['num_images']}, {man['dim']}); rebuild the cache")
    else:                                                   # caches written before session 3
        emb, ok = _read_shards(path, man["num_shards"], man["dim"])
    names = pq.read_schema(path / "captions.parquet").names
    cap = read_parquet(path / "captions.parquet", None if texts else [c for c in names if c != "caption"])
    rows = torch.from_numpy(cap.column("image_row").to_numpy().astype("int64"))
    text_only = bool(man.get("text_only"))
    if text_only:
        rows = torch.arange(len(rows))  # each text pair its own group (split, sampling)
        idx = rows
    else:
        idx = ok[rows].nonzero().flatten()  # drop captions of images that failed
    teacher = has = None
    dense = path / "teacher" / "dense.npy"
    if man.get("teacher") and dense.is_file() and (path / "teacher" / "has.npy").is_file():
        import numpy as np

        teacher = torch.from_numpy(np.load(dense, mmap_mode="c"))   # shared page cache, as the images
        has = torch.from_numpy(np.load(path / "teacher" / "has.npy"))
        if teacher.shape[0] != len(idx):
            raise ValueError(f"{dense}: {teacher.shape[0]} rows for {len(idx)} captions; rebuild the cache")
    else:
        t = _load_teacher(path, cap.num_rows) if man.get("teacher") else None
        if t is not None:
            teacher, has = t[0][idx], t[1][idx]
    has_en = None
    col = cap.column("caption_en") if "caption_en" in names else None
    if col is not None and str(col.type) in ("string", "large_string"):   # all-null: type null, no English
        has_en = torch.from_numpy(pc.fill_null(pc.greater(pc.utf8_length(col), 0), False)
                                  .to_numpy(zero_copy_only=False).astype(bool))[idx]
        has_en = has_en if bool(has_en.any()) else None
    take = lambda c: cap.column(c).take(idx.numpy()).to_pylist()     # noqa: E731
    return CacheData(man, emb, ok, take("caption") if texts else None, rows[idx], teacher, has, text_only,
                     take("caption_en") if texts and has_en is not None else None, has_en, idx)


def read_captions(path: str | Path, rows: torch.Tensor, column: str = "caption_en") -> list:
    """Some captions' strings by their captions.parquet rows (`CacheData.caption_rows[i]`)."""
    return read_parquet(Path(path) / "captions.parquet", [column]).column(column).take(rows.numpy()).to_pylist()
