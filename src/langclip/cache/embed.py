"""Stage 2: the image-embedding cache. The image tower is frozen, so each distinct image is embedded
once and every epoch reuses the result. Building: decoding workers, image shards (resumable, split
across torchrun ranks), the English teacher's text embeddings, then the consolidated arrays
(`store.py` holds the folder format)."""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

from ..config import CacheConfig
from ..dist import init_from_env
from ..files import (atomic_write, atomic_write_text, check_out_dir, compile_problem, pick_device, progress_bar,
                     sha256_file, usable_cores)
from ..pairs import ImageDataset, collate_images, read_pairs, read_parallel
from .decode import (WARNED, DecodedImages, DevicePreprocess, EncodedImages, Normalize255, collate_encoded,
                     decode_ahead, uint8_transform)
from .store import CACHE_FORMAT, same_arch, write_manifest, write_normalized, write_tables, write_teacher_dense

log = logging.getLogger(__name__)


def save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def auto_workers() -> int:
    """Image-decoding processes for this rank: the cores it may use (its share of the node under
    torchrun) minus one for the main process; 0 on a single core."""
    cores = usable_cores()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, cores // max(local, 1) - 1)


def _check_build_state(out: Path, cfg: CacheConfig, pairs, sha: str, rank: int, world: int) -> None:
    """A rerun resumes only the same build: the shards already written are rows of *this* image list at
    *this* shard size, embedded by *this* tower. Anything else would mix silently, so it is refused."""
    import hashlib

    def digest(texts) -> str:   # one encode and one hash call for millions of entries
        return hashlib.sha1("".join(t + "\n" for t in texts).encode("utf-8", "surrogatepass")).hexdigest()

    state = {"format": CACHE_FORMAT, "arch": cfg.clip, "weights_sha256": sha, "shard_size": cfg.shard_size,
             "teacher_shard_size": cfg.teacher_shard_size, "text_only": cfg.text_only,
             "images": len(pairs.images), "images_sha1": digest(r.key for r in pairs.images),
             "english_sha1": digest(en or "" for _, _, en in pairs.captions), "decode": cfg.decode,
             "exif_orientation": cfg.exif_orientation}
    f = out / "emb" / "build.json"
    if f.is_file():
        old = {"decode": "pil", "exif_orientation": False,                     # builds from before these
               **json.loads(f.read_text(encoding="utf-8"))}
        diff = [k for k in state if old.get(k) != state[k] and not (k == "arch" and same_arch(old.get(k), state[k]))]
        if diff:
            what = {"images": "the list of images", "images_sha1": "the list of images",
                    "english_sha1": "the English captions", "weights_sha256": "the weights file"}
            names = sorted({what.get(k, k) for k in diff})
            raise ValueError(f"{out} holds part of another cache build ({', '.join(names)} differ"
                             + "".join(f"; {k}: was {old.get(k)}, now {state[k]}" for k in diff
                                       if k in ("shard_size", "teacher_shard_size", "arch", "text_only", "images", "decode"))
                             + "): resuming would mix them. Use the same --data and options, or another --out")
    elif rank == 0:
        atomic_write_text(f, json.dumps(state, indent=1))
    if world > 1:
        torch.distributed.barrier()


def build_cache(cfg: CacheConfig, progress: bool = True, pairs=None) -> Path:
    """Embed every distinct image of `cfg.data` once; write the cache folder; return its path.
    `pairs`: an already read list (a search index passes its images; `cfg.data` then only names them)."""
    from ..build import load_image_tower
    from ..folders import pin_arch
    from ..model import LangCLIP, model_config
    from ..clip_arch import infer_arch
    from ..pretrained import clip_weights
    from ..weights import load_state_dict

    cfg.validate()
    rank, world = init_from_env()
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    out = check_out_dir(cfg.out, "cache", ("manifest.json", "emb"))
    t0 = time.perf_counter()
    if pairs is None:
        pairs = (read_parallel(cfg.data, cfg.caption_column, cfg.english_column) if cfg.text_only else
                 read_pairs(cfg.data, cfg.image_column, cfg.caption_column, cfg.english_column))
    weights = clip_weights(cfg.clip, cfg.weights, cfg.pretrained)
    sd = None
    if not cfg.clip:   # the architecture the weights hold (recorded in the manifest); the tensors read once
        sd = load_state_dict(weights)
        cfg = replace(cfg, clip=infer_arch(weights, sd))
        if rank == 0:
            print(f"--clip not given: {cfg.weights} holds {cfg.clip}")
    cfg = replace(cfg, clip=pin_arch(cfg.clip))   # a JSON file or folder: absolute, found from anywhere
    with ThreadPoolExecutor(1) as pool:    # the file is hashed while the model is built and filled
        sha = pool.submit(sha256_file, weights)
        model = LangCLIP.empty(model_config(cfg.clip, cfg.pretrained))   # a tag's own preprocessing
        rest = load_image_tower(model, weights, cfg.clip, sd)
        sha = sha.result()
    del sd
    (out / "emb").mkdir(parents=True, exist_ok=True)   # only now: a refused table, tag or file leaves no folder
    _check_build_state(out, cfg, pairs, sha, rank, world)
    model.to(device).eval()
    t1 = time.perf_counter()
    embedded = _embed_images(model, pairs, cfg, out, device, rank, world, progress)
    timing = {"embed_seconds": round(time.perf_counter() - t1, 2), "images_embedded": embedded}   # rank 0's
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
        _consolidate(out, cfg, pairs, model, teacher, sha, dict(timing, seconds=round(time.perf_counter() - t0, 1)),
                     weights)
    if world > 1:
        torch.distributed.barrier()   # (a process group init_from_env starts ends when the process exits)
    return out


class _Shards:
    """Image embeddings and failures of this rank's shards, buffered until a shard is complete, then
    written atomically (shard k holds rows [k*S, (k+1)*S))."""

    def __init__(self, out: Path, pairs, todo: list[int], size: int, dim: int):
        self.out, self.pairs, self.pending, self.S, self.dim = out, pairs, list(todo), size, dim
        self.n = len(pairs.images)
        self.emb: dict[int, torch.Tensor] = {}
        self.fail: dict[int, str] = {}
        self.damaged: dict[int, str] = {}   # decoded despite damaged data: libjpeg's warning

    def add(self, rows, oks, feats, reasons) -> None:
        for r, e in zip([r for r, o in zip(rows, oks) if o], feats if feats is not None else ()):
            self.emb[r] = e
        for r, o, why in zip(rows, oks, reasons):
            if not o:
                self.fail[r] = why
            elif why.startswith(WARNED):
                self.damaged[r] = why[len(WARNED):]

    def flush_done(self, last_row: int | None = None) -> None:
        """Write every pending shard whose last row has been seen (all of them when `last_row` is None)."""
        while self.pending and (last_row is None or last_row >= min(self.n, (self.pending[0] + 1) * self.S) - 1):
            self._write(self.pending.pop(0))

    def _write(self, k: int) -> None:
        lo, hi = k * self.S, min(self.n, (k + 1) * self.S)
        emb = torch.zeros(hi - lo, self.dim, dtype=torch.float16)
        ok = torch.zeros(hi - lo, dtype=torch.bool)
        for r in range(lo, hi):
            if r in self.emb:
                emb[r - lo] = self.emb.pop(r)
                ok[r - lo] = True
        fails = [{"row": r, "source": self.pairs.images[r].key, "reason": self.fail.pop(r)}
                 for r in range(lo, hi) if r in self.fail]
        (self.out / "emb" / f"shard_{k:05d}.failures.json").write_text(json.dumps(fails, ensure_ascii=False))
        damaged = [{"row": r, "source": self.pairs.images[r].key, "warning": self.damaged.pop(r)}
                   for r in range(lo, hi) if r in self.damaged]
        if damaged:
            (self.out / "emb" / f"shard_{k:05d}.damaged.json").write_text(json.dumps(damaged, ensure_ascii=False))
        save_tensors({"emb": emb, "ok": ok}, self.out / "emb" / f"shard_{k:05d}.safetensors")


def _embed_images(model, pairs, cfg: CacheConfig, out: Path, device, rank: int, world: int, progress: bool) -> int:
    """This rank's incomplete shards (k % world == rank), decoded by workers and embedded in batches;
    stops early when most images fail (a wrong base folder). -> the number of images it went through."""
    from ..model import image_transform, preprocess_cfg

    n, S = len(pairs.images), cfg.shard_size
    shards = [k for k in range((n + S - 1) // S) if k % world == rank]
    todo = [k for k in shards if not (out / "emb" / f"shard_{k:05d}.safetensors").is_file()]
    rows = [r for k in todo for r in range(k * S, min(n, (k + 1) * S))]
    pp, on_device, normalize, collate = preprocess_cfg(model), None, None, collate_images
    if cfg.decode == "nvjpeg":   # workers read bytes; the device decodes, resizes and crops
        on_device = DevicePreprocess(pp, device, pairs.images, threads=cfg.decode_threads, orient=cfg.exif_orientation)
        data, collate = EncodedImages(pairs.images, rows), collate_encoded
    elif cfg.decode == "torchvision":   # workers decode and resize to uint8; the device normalises
        data, normalize = DecodedImages(pairs.images, rows, pp, cfg.exif_orientation), Normalize255(pp, device)
    else:   # PIL in the workers, open_clip's transform; uint8 handed over where it allows (the same numbers)
        tf = image_transform(pp)
        head = uint8_transform(tf, pp)
        data = ImageDataset(pairs.images, rows, head or tf, cfg.exif_orientation)
        normalize = Normalize255(pp, device) if head else None
    loader = torch.utils.data.DataLoader(
        data, batch_size=cfg.batch_size, num_workers=cfg.workers if cfg.workers >= 0 else auto_workers(),
        collate_fn=collate, pin_memory=device.type == "cuda" and on_device is None, persistent_workers=False)
    bar = progress_bar(total=len(rows), unit="img", desc=f"cache[{rank}]" if world > 1 else "cache",
                       disable=not progress, initial=0, smoothing=0.1)
    if len(todo) < len(shards):
        bar.write(f"resuming: {len(shards) - len(todo)} of {len(shards)} shards already complete")
    shards_out = _Shards(out, pairs, todo, S, model.clip.visual.output_dim)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    tower = image_tower(model, cfg.compile, device)
    compiled = tower is not model.clip.visual
    seen = failed = 0
    batches = (loader if on_device is None else decode_ahead(loader, on_device, device) if cfg.decode_ahead
               else (on_device(*b) for b in loader))
    with torch.inference_mode():
        for brows, bok, x, reasons in batches:
            seen, failed = seen + len(brows), failed + len(brows) - sum(bok)
            if failed > cfg.max_failure_rate * seen and seen >= min(len(rows), 100):
                shards_out.add(brows, bok, None, reasons)
                raise ValueError(_failure_message(cfg, pairs, shards_out.fail, failed, seen, out,
                                                  len(shards_out.pending) == len(todo)))
            feats = None
            if x is not None:
                x = x.to(device, non_blocking=True)
                with amp:
                    feats = embed_batch(tower, normalize(x) if normalize else x, cfg.batch_size if compiled else 0)
                feats = feats.float().cpu().to(torch.float16)
            shards_out.add(brows, bok, feats, reasons)
            bar.update(len(brows))
            shards_out.flush_done(brows[-1])
    shards_out.flush_done()
    bar.close()
    if on_device is not None and on_device.fallbacks:
        log.info("--decode nvjpeg: %d pictures were not baseline JPEGs and were decoded with PIL", on_device.fallbacks)
    return len(rows)


def image_tower(model, compile_: bool, device: torch.device):
    """The image tower a build calls: compiled with `compile` where torch.compile can build on `device`
    (else eager, with a warning that says why). dynamic=False, and `embed_batch` pads a run's last, smaller
    batch to the batch size: one graph in all."""
    if not compile_:
        return model.clip.visual
    why = compile_problem(device)
    if why:
        log.warning("compile: true, but torch.compile cannot build on %s here (%s): embedding without it", device, why)
        return model.clip.visual
    return torch.compile(model.clip.visual, dynamic=False)


def embed_batch(tower, x: torch.Tensor, full: int = 0) -> torch.Tensor:
    """tower(x); with `full`, a batch of fewer than `full` pictures is padded with zeros to `full` and
    the padding's rows dropped, so a compiled tower (static shapes) runs the graph it already has instead
    of compiling one more for the last batch (pictures are embedded independently: padding changes no row)."""
    n = x.shape[0]
    if full > n:
        x = torch.cat([x, x.new_zeros((full - n, *x.shape[1:]))])
    return tower(x)[:n]


def _consolidate(out: Path, cfg: CacheConfig, pairs, model, teacher: bool, sha: str, timing: dict, weights) -> None:
    """Rank 0, last: the tables, the consolidated (memory-mapped) arrays, and the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..model import preprocess_cfg

    n, S, dim = len(pairs.images), cfg.shard_size, model.clip.visual.output_dim
    write_tables(out, pairs, pa, pq)
    ok = write_normalized(out, (n + S - 1) // S, n, dim)
    if teacher:   # kept: captions whose image was embedded (all of them in a text-only cache)
        keep = torch.ones(len(pairs.captions), dtype=torch.bool) if cfg.text_only else \
            torch.from_numpy(ok)[torch.tensor([c[0] for c in pairs.captions], dtype=torch.long)]
        write_teacher_dense(out, keep)
    write_manifest(out, cfg, pairs, preprocess_cfg(model), dim, teacher, sha, timing, weights, model.tower_sha256)


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


def _teacher(model, rest: dict, pairs, device, out: Path, rank: int = 0, world: int = 1, progress: bool = True,
             chunk: int = 65536) -> bool:
    """Original CLIP text embeddings of the English captions (the distillation teacher), written as
    teacher/shard_k.safetensors ("idx": caption rows, "emb": (n, D) float16). Like the image shards:
    written atomically, skipped when complete (resume), shard k made by rank k % world; bf16 on GPU."""
    from ..files import progress_bar

    from ..model import trim_tokens
    from ..tokenizer import Tokenizer

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
            save_tensors({"idx": torch.tensor(part, dtype=torch.long), "emb": torch.cat(embs)},
                         d / f"shard_{k:05d}.safetensors")
    bar.close()
    return True
