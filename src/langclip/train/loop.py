"""Stage 3: train the text tower on cached image embeddings (LiT: locked image, unlocked text).

    >>> from langclip.config import load_config, TrainConfig
    >>> cfg = load_config(TrainConfig, "configs/ru-vitb32-clip-init.yaml", ["epochs=3"], validate=False)
    >>> cfg.epochs
    3

`train(cfg)` reads as setup -> epoch -> step -> validate -> checkpoint. Batches: each epoch takes one
caption per image (a fresh random choice every epoch), so an image never appears twice in a batch and
never serves as a negative of itself. Losses (`losses.py`): InfoNCE against the cached image
embeddings with the pretrained temperature, optionally distillation towards English CLIP's text
embedding and English replay. Under torchrun DDP averages the gradients.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..build import build_student
from ..cache import check_cache_matches, load_cache, read_captions, read_manifest
from ..config import ConfigError, TrainConfig
from ..coverage import count_tokens, load_counts, pretrained_kind, save_counts, summary as coverage_summary, summary_text
from ..dist import init_from_env
from ..files import atomic_write_text, check_out_dir, pick_device, progress_bar
from ..runfolder import (parent_split_note, save_model_files, split_by_image, split_record, student_from_run,
                         tokenizer_for)
from ..pretrained import clip_weights
from .batches import CaptionGroups, TokenTable, epoch_order, to_device
from .checkpoint import (apply_optim_settings, check_resumable, checkpoint_path, diverged, divergence_error,
                         load_text_weights, resume_keys, rng_state, save_checkpoint, set_rng_state, truncate_metrics)
from .losses import compile_tower, compute_loss, global_values, make_tower
from .precision import optimizer_step
from .tokens import caption_tables
from .report import MetricsLog, finish, validate_epoch
from .stop import StopRequest, Stopped, exit_code
from .zeroshot import zero_shot_sets

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What a training run holds between steps."""
    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    bf16: bool
    out: Path
    tok: object
    data: object                 # CacheData (captions dropped once tokenized)
    model: object                # LangCLIP
    ref: object                  # ImageTowerRef
    meta: dict                   # model.json's extras (init, cache, split)
    val_idx: torch.Tensor
    groups: CaptionGroups
    steps_per_epoch: int
    total: int
    keys: dict                   # what a resume must share (checkpoint.resume_keys)
    tokens: TokenTable | None = None
    tokens_en: TokenTable | None = None
    en_val: tuple | None = None  # (TokenTable, image rows) of the held-out images' English captions
    images: torch.Tensor | None = None
    teacher_all: bool = True     # every caption has an English teacher embedding (no mask needed)
    pad_id: int | None = None
    cut: int = 8                 # batches are cut to their longest text, rounded up to this
    compiled: bool = False       # cfg.compile, unless torch.compile cannot build here (losses.compile_tower)
    fwd: object = None           # the (compiled) tower a step calls
    twin: object = None          # Bf16Weights under precision bf16-weights: the tower runs on its bf16 copy
    opt: object = None
    sched: object = None
    step: int = 0
    epoch: int = 0
    best: float = -1.0
    bad_steps: torch.Tensor | None = None   # non-finite losses so far, counted on the device
    logger: MetricsLog | None = None
    bar: object = None
    clock: tuple = (0.0, 0)      # (time, step) of the last log line, for pairs/s
    coverage: dict | None = None  # which tokens the training captions use (coverage.summary; rank 0)
    stop: StopRequest | None = None  # Ctrl-C / SIGTERM: stop after a step, with a checkpoint (stop.py)
    zeroshot: list = field(default_factory=list)   # benchmarks measured each epoch (zeroshot.py; rank 0)

    @property
    def done(self) -> bool:
        return self.step >= self.total


# -- setup ----------------------------------------------------------------------------------------
def _environment(cfg: TrainConfig) -> tuple[int, int, torch.device, bool]:
    rank, world = init_from_env()   # a group it starts ends when the process exits
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    # bf16: autocast in training and validation; bf16-weights: a bf16 twin trains, validation autocasts
    return rank, world, device, cfg.precision.startswith("bf16") or (cfg.precision == "auto" and device.type == "cuda")


def _checkpoint_to_resume(cfg: TrainConfig, out: Path, keys: dict) -> tuple[Path | None, dict | None]:
    """Before anything is written: a finished or interrupted run in `out` is never overwritten, and a
    checkpoint of another run is never continued."""
    ck = checkpoint_path(out, cfg.resume) if cfg.resume else None
    if ck is not None:
        st = torch.load(ck, map_location="cpu", weights_only=True)
        check_resumable(st.get("run", {}), keys, ck)
        return ck, st
    if not cfg.resume and (out / "checkpoints" / "latest.json").is_file():
        done = json.loads((out / "checkpoints" / "latest.json").read_text())
        raise ConfigError(f"{out} already holds a run (checkpoint at step {done.get('step')}): continue it with "
                          f"--resume latest, or give another `out` folder")
    return None, None


def _load_data(cfg: TrainConfig):
    data = load_cache(cfg.cache, texts=False)     # token ids come from train/tokens.py
    for w in ("distill", "english"):
        if getattr(cfg.loss, w) > 0 and (data.teacher is None or data.has_en is None):
            raise ConfigError(f"loss.{w} > 0 but cache {cfg.cache} has no English captions and teacher "
                              f"embeddings (build it with an English caption column)")
    if data.text_only and cfg.loss.contrastive > 0:
        raise ConfigError(f"cache {cfg.cache} is a text-only parallel corpus (no images): set loss.contrastive=0 "
                          f"and loss.distill>0 (distillation towards the English CLIP text embeddings)")
    return data


def setup(cfg: TrainConfig, progress: bool = True) -> tuple[Run, Path | None, dict | None]:
    """Everything before the first step; nothing is written before every check has passed."""
    cfg.validate()
    rank, world, device, bf16 = _environment(cfg)
    out = check_out_dir(cfg.out, "run", ("model.json", "checkpoints", "config.yaml", "zeroshot"))
    manifest = read_manifest(cfg.cache)
    m = cfg.model
    tok = tokenizer_for(m)
    if m.lang and tok.kind == "hf":
        tok.meta["language"] = m.lang   # recorded in model.json (the encoder's tokenizer has no place for it)
    keys = resume_keys(cfg, manifest, tok)
    ck, st = _checkpoint_to_resume(cfg, out, keys)
    weights = clip_weights(m.clip, m.weights, m.pretrained)
    data = _load_data(cfg)
    train_idx, val_idx = split_by_image(data, cfg.val_fraction, cfg.seed)
    groups = CaptionGroups(train_idx, data.caption_image)
    spe = len(groups) // cfg.batch_size
    if spe < 1:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {len(groups)} training images in {cfg.cache}")
    total = spe * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, spe * cfg.epochs)
    model, ref, info = (student_from_run(m.init[4:], m.clip, weights, m.pretrained) if m.init.startswith("run:")
                        else build_student(m.clip, weights, tok, m.init, m.context_length, m.text_overrides or None,
                                           seed=cfg.seed, pretrained=m.pretrained))
    check_cache_matches(manifest, ref.__dict__, where=f"cache {cfg.cache}")   # before anything is written
    meta = {"init": info, "cache": str(Path(cfg.cache).resolve()),
            "split": split_record(data, val_idx, cfg.val_fraction, cfg.seed)}   # travels with the run
    if rank == 0 and (warning := parent_split_note(meta)):
        log.warning("%s", warning)
    run = Run(cfg, rank, world, device, bf16, out, tok, data, model.to(device), ref, meta, val_idx, groups, spe,
              total, keys)
    run.zeroshot = zero_shot_sets(run, progress)   # its datasets read before anything is written
    if rank == 0:
        import yaml

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(asdict(cfg), allow_unicode=True, sort_keys=False))
        save_model_files(out, model, tok, ref, meta)
    _tokenize(run, progress)
    _optimizer(run)
    return run, ck, st


def _tokenize(run: Run, progress: bool) -> None:
    """Every caption's ids as ragged tables, tokenized once (Rust) and kept on disk (train/tokens.py);
    English ones too when replayed in training."""
    cfg, data, tok = run.cfg, run.data, run.tok
    ctx = cfg.model.context_length
    run.pad_id = getattr(tok, "pad_token_id", 0) if run.model.is_hf else None
    names = ["caption"] + (["caption_en"] if data.has_en is not None and cfg.loss.english > 0 else [])
    tabs = caption_tables(cfg.cache, run.out, data, tok, ctx, run.pad_id, names, run.rank, run.world,
                          progress and run.rank == 0)
    run.tokens, run.tokens_en = tabs["caption"], tabs.get("caption_en")
    if run.rank == 0:   # the tokens training sees, kept in the run (coverage.py: predict/search name words it never did)
        counts = count_tokens(list(tabs.values()), run.val_idx, tok.vocab_size)
        parent = load_counts(run.meta["init"].get("from_run"))   # run: init: what its run trained counts too
        if parent is not None and len(parent) == len(counts):
            counts = counts + parent
        save_counts(run.out, counts, tok.digest(), names, pretrained_kind(run.meta["init"]))
        run.coverage = coverage_summary(counts, getattr(tok, "num_added_merges", None))
    if data.has_en is not None:
        ev = run.val_idx[data.has_en[run.val_idx]]   # is English kept? the held-out images' English captions
        if len(ev):
            t = run.tokens_en.subset(ev) if run.tokens_en is not None else \
                TokenTable.encode(tok, read_captions(cfg.cache, data.caption_rows[ev]), ctx, run.pad_id)
            run.en_val = (t, data.caption_image[ev])
    # text-only caches: validation retrieves each held-out text's English teacher embedding instead
    run.images = data.teacher if data.text_only else data.image_emb   # (N, D) fp16
    run.teacher_all = data.teacher is None or data.teacher_has is None or bool(data.teacher_has.all())


def param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.text_parameters().items():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embedding" in n or "logit_scale" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def _optimizer(run: Run) -> None:
    cfg, model = run.cfg, run.model
    if cfg.precision == "bf16-weights":
        from .precision import Bf16Weights, fp32_allreduce_hook

        run.twin = Bf16Weights(model)
    tower = make_tower(run.twin.model if run.twin else model, cfg, run.world, run.device)
    if run.twin and run.world > 1:
        tower.register_comm_hook(None, fp32_allreduce_hook)   # gradients summed over ranks in float32
    run.fwd, run.compiled = compile_tower(tower, cfg, run.device, run.world, run.rank)
    # compiled: one static graph per bucketed length (at most ~6 buckets, under dynamo's recompile limit)
    run.cut = max(16, -(-cfg.model.context_length // 6 // 8) * 8) if run.compiled else 8
    o = cfg.optim
    run.opt = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                **({"fused": True} if run.device.type == "cuda" else {}))
    run.sched = torch.optim.lr_scheduler.LambdaLR(
        run.opt, lr_lambda(run.total, min(o.warmup_steps, max(1, run.total // 10))))
    run.bad_steps = torch.zeros((), dtype=torch.long, device=run.device)


def resume(run: Run, ck: Path | None, st: dict | None) -> None:
    if ck is None:
        if run.cfg.resume and run.rank == 0:
            print(f"no checkpoint in {run.out / 'checkpoints'}: starting from scratch")
        return
    load_text_weights(run.model, st["text"], ck)
    if run.twin:
        run.twin.master_to_model()
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    changed = apply_optim_settings(run.opt, run.sched, run.cfg.optim)
    run.step, run.epoch, run.best = st["step"], st["epoch"], st["best"]
    set_rng_state(st["rng"])
    if run.rank == 0:
        truncate_metrics(run.out / "metrics.jsonl", run.step)   # what was logged after the checkpoint is redone
        print(f"resumed from {ck} at step {run.step} (epoch {run.epoch + 1})"
              + (f"; new optimizer settings from this step: {', '.join(changed)}" if changed else ""))


def _start_summary(run: Run) -> None:
    if run.rank != 0:
        return
    cfg, data = run.cfg, run.data
    n_par = sum(p.numel() for p in run.model.text_parameters().values() if p.requires_grad)
    n_val = int(data.caption_image[run.val_idx].unique().numel()) if len(run.val_idx) else 0
    what = "text pairs (text-only)" if data.text_only else "images"
    print(f"train: {len(run.groups):,} {what} / {len(run.groups.caps):,} captions -> {run.steps_per_epoch:,} steps "
          f"an epoch x {cfg.epochs} = {run.total:,} steps (batch {cfg.batch_size:,}, {run.world} "
          f"process{'es' * (run.world > 1)}); held out: {n_val:,} {what} / {len(run.val_idx):,} captions; text tower "
          f"{n_par / 1e6:.1f}M parameters ({cfg.model.init} init); image tower {Path(run.ref.arch).name} "
          f"({run.ref.tower_sha256[:12]}); {run.device.type}, "
          f"{'bf16 weights' if run.twin else 'bf16' if run.bf16 else 'fp32'}{', compiled' if run.compiled else ''}",
          flush=True)
    print(f"tokens: {summary_text(run.coverage)}", flush=True)
    if 0 < n_val < 20:
        print(f"note: held-out recall over {n_val} {what} says little (recall@10 of {n_val} is "
              f"{'always 1' if n_val <= 10 else 'near 1'}); raise val_fraction for a measure", flush=True)


# -- the job --------------------------------------------------------------------------------------
def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train the text tower; returns the run folder (loadable with `langclip.load`)."""
    import torch.distributed as dist

    out = _train(cfg, progress)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()         # every rank is done before any returns (the group ends at exit: dist.py)
    return out


def _train(cfg: TrainConfig, progress: bool) -> Path:
    run, ck, st = setup(cfg, progress)
    resume(run, ck, st)
    run.logger = MetricsLog(run.out, run.rank, cfg.tensorboard, run.step)
    try:
        _start_summary(run)
        t0, step0 = time.perf_counter(), run.step
        run.bar = progress_bar(total=run.total, initial=run.step, unit="step", desc="train",
                               disable=not progress or run.rank != 0)
        run.clock = (time.perf_counter(), run.step)
        with StopRequest() as run.stop:
            while not run.done and run.epoch < cfg.epochs:
                run_epoch(run)
        run.bar.close()
        finish(run, time.perf_counter() - t0, step0)
    finally:
        run.logger.close()
    return run.out


def run_epoch(run: Run) -> None:
    """The epoch's steps (from where a resumed run stopped), then validation and a checkpoint."""
    cfg = run.cfg
    order = epoch_order(run.groups, cfg.seed, run.epoch)
    local = cfg.batch_size // run.world
    run.model.train()
    for s in range(run.step - run.epoch * run.steps_per_epoch, run.steps_per_epoch):
        lo = s * cfg.batch_size + run.rank * local
        loss, parts = train_step(run, order[lo: lo + local])
        after_step(run, loss, parts)
        if run.done:
            break
    epoch_done = run.epoch + 1 if run.step % run.steps_per_epoch == 0 else run.epoch
    if diverged(run.bad_steps, run.model, run.world, weights=True):   # nothing non-finite is validated or saved
        raise divergence_error(run.out, run.step, run.sched.get_last_lr()[0])
    if run.rank == 0:
        validate_epoch(run)   # held-out recall, zero-shot benchmarks: what there is of them
    checkpoint(run, epoch_done)
    run.epoch += 1


def train_step(run: Run, cap: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """One step on captions `cap` (this rank's share); the batch is assembled on the host (no device
    sync) and copied from pinned memory asynchronously. -> (loss, its parts), still on the device."""
    cfg, data, dev = run.cfg, run.data, run.device
    tk = to_device(run.tokens.batch(cap, run.cut), dev)
    img = None if data.text_only else to_device(run.images[data.caption_image[cap]], dev)
    tch = has = tk_en = None
    if data.teacher is not None and (cfg.loss.distill > 0 or cfg.loss.english > 0):
        tch = to_device(data.teacher[cap], dev)
        has = None if run.teacher_all else to_device(data.teacher_has[cap], dev)
    if cfg.loss.english > 0:   # the first ceil(f*B) pairs of a shuffled batch: a random share of it
        k = len(cap) if cfg.loss.english_fraction >= 1 else max(1, math.ceil(cfg.loss.english_fraction * len(cap)))
        tk_en = to_device(run.tokens_en.batch(cap[:k], run.cut), dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=run.bf16 and not run.twin):
        loss, parts = compute_loss(run.fwd, tk, img, tch, cfg, run.world, has, tk_en, run.pad_id or 0)
    run.bad_steps += ~torch.isfinite(loss.detach())   # counted on the device: no sync per step
    loss.backward()
    optimizer_step(run.opt, run.twin, run.model.text_parameters().values(), cfg.optim.grad_clip)
    run.sched.step()
    with torch.no_grad():   # the temperature is shared with a bf16 twin, not copied: clamped once here
        run.model.logit_scale.clamp_(0, math.log(100))
    return loss, parts


def after_step(run: Run, loss: torch.Tensor, parts: dict) -> None:
    """Count the step; at log and checkpoint steps check for divergence, log, checkpoint."""
    cfg = run.cfg
    run.step += 1
    run.bar.update(1)
    log_now = run.step % cfg.log_every == 0 or run.done
    ck_now = bool(cfg.checkpoint_every) and run.step % cfg.checkpoint_every == 0 and run.step % run.steps_per_epoch != 0
    if (log_now or ck_now) and diverged(run.bad_steps, run.model, run.world, weights=ck_now):
        raise divergence_error(run.out, run.step, run.sched.get_last_lr()[0])
    if log_now:
        now = time.perf_counter()
        rate = (run.step - run.clock[1]) * cfg.batch_size / max(now - run.clock[0], 1e-9)
        run.clock = (now, run.step)
        vals = global_values(loss, parts, run.world).tolist()
        run.logger({"step": run.step, "epoch": run.epoch + 1, "loss": vals[0], **dict(zip(parts, vals[1:])),
                    "lr": run.sched.get_last_lr()[0], "logit_scale": float(run.model.logit_scale.detach().exp()),
                    "pairs_per_s": rate})
        run.bar.set_postfix(loss=f"{vals[0]:.3f}", pairs_s=f"{rate:,.0f}", refresh=False)
    if ck_now:
        checkpoint(run, run.epoch)
    if run.stop is not None and (sig := run.stop.agreed(run.world, run.device, log_now)):
        if diverged(run.bad_steps, run.model, run.world, weights=True):
            raise divergence_error(run.out, run.step, run.sched.get_last_lr()[0])
        checkpoint(run, run.epoch)   # resumes mid-epoch, as a checkpoint_every one does
        if run.world > 1:
            torch.distributed.barrier()   # rank 0 has written it before any rank ends
        run.bar.close()
        raise Stopped(f"training stopped by {StopRequest.name(sig)} after step {run.step}: checkpoint saved in "
                      f"{run.out / 'checkpoints'}; continue it with --resume latest", exit_code(sig))


def checkpoint(run: Run, epoch_done: int) -> None:
    if run.rank != 0:
        return
    save_checkpoint(run.out, {"text": run.model.text_state_dict(), "optimizer": run.opt.state_dict(),
                              "scheduler": run.sched.state_dict(), "step": run.step, "epoch": epoch_done,
                              "best": run.best, "rng": rng_state(), "run": run.keys}, run.cfg.keep_checkpoints)


