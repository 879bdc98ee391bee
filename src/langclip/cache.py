"""Stage 2: the image-embedding cache. The image tower is frozen, so each distinct image is embedded
once and every epoch reuses the result.

Folder layout:
    manifest.json            written last: architecture, weights SHA-256, preprocessing, dim, dtype,
                             counts, failures (what was skipped and why)
    images.parquet           row -> image source
    captions.parquet         caption, image_row, caption_en (nullable)
    emb/build.json           what the shards belong to (image list, tower, shard sizes): a rerun
                             with anything else is refused instead of mixing
    emb/shard_00000.safetensors   "emb" (n, D) float16, "ok" (n,) bool — rows [k*S, (k+1)*S)
    emb/shard_00000.failures.json
    emb/normalized.npy, ok.npy    all rows, L2-normalised (zeros where failed): memory-mapped by
                             `load_cache`, so a node's training processes share one copy
    teacher/shard_00000.safetensors   original CLIP text embeddings of the English captions (when
                             present): "idx" caption rows, "emb" (n, D) float16
    teacher/dense.npy, has.npy    the same in `load_cache`'s caption order, memory-mapped

Shards are written atomically; a rerun skips complete shards (resume). Under torchrun each rank
builds the shards k with k % world == rank, so the result does not depend on the number of processes.
The consolidated .npy files are written last, by rank 0, from the shards.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .data import ImageRef, open_image, read_pairs, read_parallel
from .dist import init_from_env
from .files import check_out_dir

log = logging.getLogger(__name__)
CACHE_FORMAT = "langclip-cache/1"


@dataclass
class CacheConfig:
    data: list[str] = field(default_factory=list)
    clip: str = "ViT-B-32-quickgelu"
    weights: str = ""                        # a CLIP weights file, or:
    pretrained: str = ""                     # open_clip's pretrained tag (e.g. openai), through its download cache
    out: str = "cache"
    image_column: str | None = None
    caption_column: str | None = None
    english_column: str | None = None
    batch_size: int = 256
    workers: int = -1                        # decoding processes per rank; -1: the cores / local ranks, minus one
    shard_size: int = 8192
    teacher_shard_size: int = 65536         # English captions per teacher-embedding shard
    text_only: bool = False                 # a parallel corpus (target text + English), no images
    device: str | None = None
    max_failure_rate: float = 0.5           # stop when more images than this fail (after the first 100):
                                            # a wrong base folder, not a few corrupt files

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no --data given")
        if self.weights and self.pretrained:
            raise ValueError("give either --weights FILE or --pretrained TAG, not both")
        if not self.weights and not self.pretrained:
            raise ValueError("the CLIP weights are required: --weights FILE or --pretrained TAG (e.g. openai)")
        if self.weights and not Path(self.weights).is_file():
            raise FileNotFoundError(f"CLIP weights file not found: {self.weights}")
        if self.workers < -1:
            raise ValueError(f"workers must be >= 0 (or -1: automatic), got {self.workers}")
        if not 0 < self.max_failure_rate <= 1:
            raise ValueError(f"max_failure_rate must be in (0, 1], got {self.max_failure_rate}")
        if self.batch_size < 1 or self.shard_size < 1 or self.teacher_shard_size < 1:
            raise ValueError("batch_size, shard_size and teacher_shard_size must be >= 1")


class _Images(torch.utils.data.Dataset):
    def __init__(self, refs: list[ImageRef], rows: list[int], transform):
        self.refs, self.rows, self.transform = refs, rows, transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        try:
            x = self.transform(open_image(self.refs[row]))
            return row, x, ""
        except Exception as e:  # corrupt, missing, truncated, decompression bomb: skipped and counted
            return row, None, f"{type(e).__name__}: {str(e)[:200]}"


def auto_workers() -> int:
    """Image-decoding processes for this rank: the cores it may use (its share of the node under
    torchrun) minus one for the main process; 0 on a single core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, cores // max(local, 1) - 1)


def _collate(batch):
    rows = [b[0] for b in batch]
    ok = [b[1] is not None for b in batch]
    xs = [b[1] for b in batch if b[1] is not None]
    return rows, ok, (torch.stack(xs) if xs else None), [b[2] for b in batch]


def _save_atomic(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def _check_build_state(out: Path, cfg: CacheConfig, pairs, sha: str, rank: int, world: int) -> None:
    """A rerun resumes only the same build: the shards already written are rows of *this* image list at
    *this* shard size, embedded by *this* tower. Anything else would mix silently, so it is refused."""
    import hashlib

    def digest(texts) -> str:   # one encode and one hash call for millions of entries
        return hashlib.sha1("".join(t + "\n" for t in texts).encode("utf-8", "surrogatepass")).hexdigest()

    state = {"format": CACHE_FORMAT, "arch": cfg.clip, "weights_sha256": sha, "shard_size": cfg.shard_size,
             "teacher_shard_size": cfg.teacher_shard_size, "text_only": cfg.text_only,
             "images": len(pairs.images), "images_sha1": digest(r.key for r in pairs.images),
             "english_sha1": digest(en or "" for _, _, en in pairs.captions)}
    f = out / "emb" / "build.json"
    if f.is_file():
        old = json.loads(f.read_text(encoding="utf-8"))
        diff = [k for k in state if old.get(k) != state[k]]
        if diff:
            what = {"images": "the list of images", "images_sha1": "the list of images",
                    "english_sha1": "the English captions", "weights_sha256": "the weights file"}
            names = sorted({what.get(k, k) for k in diff})
            raise ValueError(f"{out} holds part of another cache build ({', '.join(names)} differ"
                             + "".join(f"; {k}: was {old.get(k)}, now {state[k]}" for k in diff
                                       if k in ("shard_size", "teacher_shard_size", "arch", "text_only", "images"))
                             + "): resuming would mix them. Use the same --data and options, or another --out")
    elif rank == 0:
        tmp = f.with_name(f.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        os.replace(tmp, f)
    if world > 1:
        torch.distributed.barrier()


def build_cache(cfg: CacheConfig, progress: bool = True) -> Path:
    """Embed every distinct image of `cfg.data` once; write the cache folder; return its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from .files import progress_bar

    from .model import LangCLIP, load_image_tower, model_config
    from .runs import image_transform, preprocess_cfg
    from .weights import clip_weights, sha256_file

    cfg.validate()
    rank, world, own_pg = init_from_env()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    out = check_out_dir(cfg.out, "cache", ("manifest.json", "emb"))
    (out / "emb").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pairs = (read_parallel(cfg.data, cfg.caption_column, cfg.english_column) if cfg.text_only else
             read_pairs(cfg.data, cfg.image_column, cfg.caption_column, cfg.english_column))
    weights = clip_weights(cfg.clip, cfg.weights, cfg.pretrained)
    sha = sha256_file(weights)
    _check_build_state(out, cfg, pairs, sha, rank, world)
    model = LangCLIP(model_config(cfg.clip, cfg.pretrained))   # a tag's own preprocessing
    rest = load_image_tower(model, weights, cfg.clip)
    model.to(device).eval()
    pp = preprocess_cfg(model)
    transform = image_transform(pp)
    n = len(pairs.images)
    S = cfg.shard_size
    shards = [k for k in range((n + S - 1) // S) if k % world == rank]
    todo = [k for k in shards if not (out / "emb" / f"shard_{k:05d}.safetensors").is_file()]
    rows = [r for k in todo for r in range(k * S, min(n, (k + 1) * S))]
    dim = model.clip.visual.output_dim
    workers = cfg.workers if cfg.workers >= 0 else auto_workers()
    loader = torch.utils.data.DataLoader(
        _Images(pairs.images, rows, transform), batch_size=cfg.batch_size, num_workers=workers,
        collate_fn=_collate, pin_memory=device.type == "cuda", persistent_workers=False)
    bar = progress_bar(total=len(rows), unit="img", desc=f"cache[{rank}]" if world > 1 else "cache",
               disable=not progress, initial=0, smoothing=0.1)
    if len(todo) < len(shards):
        bar.write(f"resuming: {len(shards) - len(todo)} of {len(shards)} shards already complete")
    buf_emb: dict[int, torch.Tensor] = {}
    buf_fail: dict[int, str] = {}
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def flush(k: int) -> None:
        lo, hi = k * S, min(n, (k + 1) * S)
        emb = torch.zeros(hi - lo, dim, dtype=torch.float16)
        ok = torch.zeros(hi - lo, dtype=torch.bool)
        for r in range(lo, hi):
            if r in buf_emb:
                emb[r - lo] = buf_emb.pop(r)
                ok[r - lo] = True
        fails = [{"row": r, "source": pairs.images[r].key, "reason": buf_fail.pop(r)} for r in range(lo, hi) if r in buf_fail]
        (out / "emb" / f"shard_{k:05d}.failures.json").write_text(json.dumps(fails, ensure_ascii=False))
        _save_atomic({"emb": emb, "ok": ok}, out / "emb" / f"shard_{k:05d}.safetensors")

    pending = list(todo)
    seen = failed = 0
    with torch.inference_mode():
        for brows, bok, x, reasons in loader:
            seen += len(brows)
            failed += len(brows) - sum(bok)
            if failed > cfg.max_failure_rate * seen and seen >= min(len(rows), 100):
                for r, o, why in zip(brows, bok, reasons):
                    if not o:
                        buf_fail[r] = why
                raise ValueError(_failure_message(cfg, pairs, buf_fail, failed, seen, out, len(todo) == len(pending)))
            if x is not None:
                with amp:
                    f = model.clip.visual(x.to(device, non_blocking=True))
                f = f.float().cpu().to(torch.float16)
                for r, e in zip([r for r, o in zip(brows, bok) if o], f):
                    buf_emb[r] = e
            for r, o, why in zip(brows, bok, reasons):
                if not o:
                    buf_fail[r] = why
            bar.update(len(brows))
            last = brows[-1]
            while pending and last >= min(n, (pending[0] + 1) * S) - 1:
                flush(pending.pop(0))
    for k in pending:
        flush(k)
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    teacher = (_teacher(model, rest, pairs, device, out, rank, world, progress, cfg.teacher_shard_size)
               if any(c[2] for c in pairs.captions) else False)
    if cfg.text_only and not teacher:
        raise ValueError(f"{weights}: a text-only cache needs the CLIP's text tower (the teacher), "
                         f"and this file has none")
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        _write_tables(out, pairs, pa, pq)
        ok = write_normalized(out, (n + S - 1) // S, n, dim)
        if teacher:   # kept: captions whose image was embedded (all of them in a text-only cache)
            keep = torch.ones(len(pairs.captions), dtype=torch.bool) if cfg.text_only else \
                torch.from_numpy(ok)[torch.tensor([c[0] for c in pairs.captions], dtype=torch.long)]
            write_teacher_dense(out, keep)
        _write_manifest(out, cfg, pairs, pp, dim, teacher, sha, time.perf_counter() - t0, weights, model.tower_sha256)
    if world > 1:
        torch.distributed.barrier()
        if own_pg:
            torch.distributed.destroy_process_group()
    return out


def _failure_message(cfg: CacheConfig, pairs, fails: dict, failed: int, seen: int, out: Path, nothing_done: bool) -> str:
    """A build where most images fail is a wrong path, not corrupt files: say where paths were looked
    for and show the first failures. Complete shards stay; with none, the build record goes too, so a
    corrected rerun is not refused as "another build"."""
    if nothing_done:
        (out / "emb" / "build.json").unlink(missing_ok=True)
    tables = [s for s in cfg.data if Path(s).suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl", ".json")]
    base = (f"relative image paths are resolved against the table's folder "
            f"({', '.join(sorted({str(Path(t).expanduser().resolve().parent) for t in tables}))}); "
            if tables else "")
    first = [f"  {pairs.images[r].key}: {fails[r]}" for r in sorted(fails)[:5]]
    return (f"cache build stopped: {failed} of the first {seen} images could not be read (more than "
            f"max_failure_rate {cfg.max_failure_rate:.0%}) — a wrong base folder or image column, not a few "
            f"corrupt files. {base}first failures:\n" + "\n".join(first) +
            "\n(complete shards are kept; --max-failure-rate 1 builds anyway)")


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


def _write_tables(out: Path, pairs, pa, pq) -> None:
    pq.write_table(pa.table({"row": list(range(len(pairs.images))), "source": [r.key for r in pairs.images]}),
                   out / "images.parquet")
    pq.write_table(pa.table({"caption": [c[1] for c in pairs.captions], "image_row": [c[0] for c in pairs.captions],
                             "caption_en": [c[2] for c in pairs.captions]}), out / "captions.parquet")


def _teacher(model, rest: dict, pairs, device, out: Path, rank: int = 0, world: int = 1, progress: bool = True,
             chunk: int = 65536) -> bool:
    """Original CLIP text embeddings of the English captions (the distillation teacher), written as
    teacher/shard_k.safetensors ("idx": caption rows, "emb": (n, D) float16). Like the image shards:
    written atomically, skipped when complete (resume), shard k made by rank k % world; bf16 on GPU."""
    from .files import progress_bar

    from .model import trim_tokens
    from .tokenizer import Tokenizer

    missing, _ = model.clip.load_state_dict(rest, strict=False)
    if [k for k in missing if not k.startswith("visual.")]:
        log.warning("the CLIP file has no complete text tower: no teacher embeddings cached")
        return False
    tok = Tokenizer.clip()
    idx = [i for i, c in enumerate(pairs.captions) if c[2]]
    d = out / "teacher"
    d.mkdir(exist_ok=True)
    todo = [k for k in range((len(idx) + chunk - 1) // chunk)
            if k % world == rank and not (d / f"shard_{k:05d}.safetensors").is_file()]
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = progress_bar(total=sum(min(chunk, len(idx) - k * chunk) for k in todo), unit="text",
               desc=f"teacher[{rank}]" if world > 1 else "teacher (English CLIP)", disable=not progress)
    with torch.inference_mode():
        for k in todo:
            part = idx[k * chunk: (k + 1) * chunk]
            embs = []
            for s in range(0, len(part), 1024):
                t = tok([pairs.captions[i][2] for i in part[s: s + 1024]], context_length=model.clip.context_length)
                with amp:
                    embs.append(model.encode_text(trim_tokens(t).to(device), normalize=True).float().cpu().half())
                bar.update(len(t))
            _save_atomic({"idx": torch.tensor(part, dtype=torch.long), "emb": torch.cat(embs)},
                         d / f"shard_{k:05d}.safetensors")
    bar.close()
    return True


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


def _write_manifest(out: Path, cfg: CacheConfig, pairs, pp: dict, dim: int, teacher: bool, sha: str, secs: float,
                    weights: Path, tower_sha256: str) -> None:
    fails = []
    for f in sorted((out / "emb").glob("shard_*.failures.json")):
        fails += json.loads(f.read_text(encoding="utf-8"))
    n = len(pairs.images)
    man = {"format": CACHE_FORMAT, "arch": cfg.clip, "weights": str(Path(weights).resolve()), "weights_sha256": sha,
           "tower_sha256": tower_sha256, "pretrained": cfg.pretrained,
           "preprocess": pp, "dim": dim, "dtype": "float16", "shard_size": cfg.shard_size,
           "num_shards": (n + cfg.shard_size - 1) // cfg.shard_size, "num_images": n,
           "num_images_ok": n - len(fails), "num_images_failed": len(fails), "num_captions": len(pairs.captions),
           "teacher": teacher, "text_only": cfg.text_only, "failures": fails, "skipped": pairs.problems, "data": cfg.data,
           "seconds": round(secs, 1), "config": asdict(cfg)}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(man, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    if cfg.text_only:
        print(f"cache {out}: text-only, {len(pairs.captions):,} text pairs with English teacher embeddings, "
              f"{len(pairs.problems)} input problems, in {secs:.1f} s")
        return
    print(f"cache {out}: {man['num_images_ok']:,} images embedded, {len(fails)} failed, "
          f"{len(pairs.problems)} input problems, {len(pairs.captions):,} captions, in {secs:.1f} s")


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


def read_manifest(path: str | Path) -> dict:
    f = Path(path) / "manifest.json"
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a complete langclip cache (no manifest.json); "
                                f"build or resume it with `langclip cache build`")
    return json.loads(f.read_text(encoding="utf-8"))


def check_cache_matches(manifest: dict, ref: dict, where: str = "cache") -> None:
    """Refuse a cache made with another image tower. `ref`: the model's tower (arch, tower_sha256 — the
    digest of its tensors — and sha256, its file's bytes). Caches and runs from before tensor digests
    are compared by the file's SHA-256."""
    both = manifest.get("tower_sha256") and ref.get("tower_sha256")
    key, label = ("tower_sha256", "image-tower digest") if both else ("weights_sha256", "weights SHA-256")
    theirs, ours = str(manifest.get(key)), str(ref.get("tower_sha256" if both else "sha256"))
    if manifest.get("arch") != ref.get("arch") or theirs != ours:
        raise ValueError(f"{where} was built with image tower {manifest.get('arch')} ({label} {theirs[:12]}…), but "
                         f"the model uses {ref.get('arch')} ({ours[:12]}…); rebuild the cache with the same "
                         f"--clip and weights")


def load_cache(path: str | Path) -> CacheData:
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
    cap = pq.read_table(path / "captions.parquet").to_pydict()
    rows = torch.tensor(cap["image_row"], dtype=torch.long)
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
        t = _load_teacher(path, len(cap["caption"])) if man.get("teacher") else None
        if t is not None:
            teacher, has = t[0][idx], t[1][idx]
    keep = idx.tolist()
    en = [cap["caption_en"][i] for i in keep] if "caption_en" in cap and any(cap["caption_en"]) else None
    return CacheData(man, emb, ok, [cap["caption"][i] for i in keep], rows[idx], teacher, has, text_only, en)


def split_record(data: CacheData, val_idx: torch.Tensor, val_fraction: float, seed: int) -> dict:
    """What identifies a run's held-out split, stored in the run folder and every export: fraction,
    seed, and a digest of the held-out image rows, so evaluation can prove it scores the same images."""
    import hashlib

    rows = data.caption_image[val_idx].unique().to(torch.int64).numpy()
    return {"val_fraction": val_fraction, "seed": seed, "val_images": int(len(rows)),
            "cache_images": int(data.image_emb.shape[0]), "cache_captions": len(data.caption_image),
            "val_images_sha256": hashlib.sha256(rows.tobytes()).hexdigest()}


def split_by_image(data: CacheData, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption indices (train, val); all captions of an image fall on the same side."""
    imgs = data.caption_image.unique()
    g = torch.Generator().manual_seed(seed)
    perm = imgs[torch.randperm(len(imgs), generator=g)]
    n_val = int(round(len(imgs) * val_fraction))
    val_imgs = torch.zeros(max(int(data.image_emb.shape[0]), int(imgs.max()) + 1 if len(imgs) else 0), dtype=torch.bool)
    val_imgs[perm[:n_val]] = True
    is_val = val_imgs[data.caption_image]
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()
