"""Stage 3: train the text tower on cached image embeddings (LiT: locked image, unlocked text).

    cfg = load_config(TrainConfig, "configs/ru-vitb32-clip-init.yaml", ["epochs=3"])
    run_dir = train(cfg)

Batches: each epoch takes one caption per image (a fresh random choice every epoch), so an image
never appears twice in a batch and never serves as a negative of itself. Loss: symmetric InfoNCE
between text features and the cached (normalised) image embeddings with a learnable temperature
initialised from the pretrained CLIP, plus optionally distillation towards the cached English CLIP
text embedding (cosine or MSE). Under torchrun features are gathered across ranks with gradient
(like open_clip's ClipLoss(gather_with_grad=True)), and DDP averages the gradients.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from .batches import CaptionGroups, TokenTable, epoch_order, to_device
from .cache import check_cache_matches, load_cache, read_manifest, split_by_image, split_record
from .config import ConfigError
from .dist import init_from_env
from .files import check_out_dir
from .evaluate import recall_at_k  # noqa: F401  (re-exported: part of this stage's API)
from .runs import atomic_write_text, build_student, save_model_files
from .tokenizer import HFTextTokenizer, Tokenizer

log = logging.getLogger(__name__)


@dataclass
class ModelSection:
    clip: str = "ViT-B-32-quickgelu"        # open_clip architecture of the pretrained CLIP
    weights: str = ""                        # its weights file (the image tower's, and `clip` init's), or:
    pretrained: str = ""                     # open_clip's pretrained tag (e.g. openai), through its download cache
    tokenizer: str = ""                      # tokenizer folder (`langclip tokenizer train`); hf: init: optional
    init: str = "clip"                       # clip | scratch | hf:<name-or-folder> (a pretrained HF encoder)
    context_length: int = 77
    text_overrides: dict = field(default_factory=dict)  # scratch only: width/heads/layers of the text tower


@dataclass
class OptimSection:
    lr: float = 5e-4
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 500
    grad_clip: float = 1.0                   # 0: off


@dataclass
class LossSection:
    contrastive: float = 1.0                 # weight of the CLIP loss
    distill: float = 0.0                     # weight of distillation towards the English CLIP text embedding
    distill_type: Literal["cosine", "mse"] = "cosine"
    english: float = 0.0                     # English replay: the student's embedding of the English caption
                                             # distilled to English CLIP's (keeps English working)


@dataclass
class TrainConfig:
    cache: str = ""
    out: str = "runs/run"
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    epochs: int = 10
    batch_size: int = 1024                   # global batch (all ranks together)
    val_fraction: float = 0.02               # of images, held out for recall@k
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"   # auto: bf16 on GPU, fp32 on CPU
    compile: bool = False
    compile_mode: Literal["default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead"] = "default"
    device: str | None = None
    checkpoint_every: int = 0                # steps; 0: at epoch end only
    keep_checkpoints: int = 2
    log_every: int = 50
    max_steps: int = 0                       # stop after this many steps (0: all epochs)
    resume: str | None = None                # 'latest' or a checkpoint path
    tensorboard: bool = True

    def validate(self) -> None:
        m = self.model
        hf = m.init.startswith("hf:")
        if m.weights and m.pretrained:
            raise ConfigError("give model.weights (a file) or model.pretrained (a tag), not both")
        for what, p in (("cache", self.cache), ("model.weights", m.weights), ("model.tokenizer", m.tokenizer)):
            if hf and what == "model.tokenizer" and not p:
                continue  # an hf: text tower brings its own tokenizer
            if what == "model.weights" and m.pretrained:
                continue  # resolved through open_clip's download cache
            if not p:
                raise ConfigError(f"{what} is required")
            if not Path(p).exists():
                raise ConfigError(f"{what}: not found: {p}")
        if self.loss.contrastive <= 0 and self.loss.distill <= 0 and self.loss.english <= 0:
            raise ConfigError("loss: contrastive, distill and english weights are all 0")
        if min(self.loss.contrastive, self.loss.distill, self.loss.english) < 0:
            raise ConfigError("loss: weights must be >= 0")
        if self.batch_size < 2 or self.epochs < 1:
            raise ConfigError("batch_size must be >= 2 and epochs >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction must be in [0, 1)")
        if m.init not in ("clip", "scratch") and not (hf and len(m.init) > 3):
            raise ConfigError(f"model.init must be clip, scratch or hf:<name-or-folder>, got {m.init!r}")
        if hf and m.text_overrides:
            raise ConfigError("model.text_overrides apply to scratch init only (an hf: tower has its own shape)")


# -- pieces -------------------------------------------------------------------------------------
class TextTower(torch.nn.Module):
    """What DDP wraps: tokens -> normalised text features, plus the temperature."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.encode_text(tokens, normalize=True)


def clip_loss(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor, world: int = 1) -> torch.Tensor:
    """Symmetric InfoNCE. text (b, D) local with grad, image (b, D) local, both normalised."""
    if world > 1:
        import torch.distributed as dist
        import torch.distributed.nn.functional as dnnf

        text = torch.cat(dnnf.all_gather(text))
        imgs = [torch.empty_like(image) for _ in range(world)]
        dist.all_gather(imgs, image)
        image = torch.cat(imgs)
    text, image = _up(text), _up(image).to(_up(text).dtype)
    # autocast would run this product in bf16: at a temperature of 100 that is a 0.25-0.5 resolution
    # on the logits. Similarities and the loss are float32 (or float64), whatever the autocast.
    with torch.autocast(text.device.type, enabled=False):
        logits = _up(logit_scale).exp() * text @ image.T             # (B, B)
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _up(x: torch.Tensor) -> torch.Tensor:
    """Losses in at least float32 (bf16/fp16 features are upcast; float64 stays)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def distill_loss(text: torch.Tensor, teacher: torch.Tensor, kind: str, has: torch.Tensor | None = None,
                 world: int = 1) -> torch.Tensor:
    """Distillation towards the English CLIP text embedding, averaged over the captions that have an
    English one (`has`; all if None) across all ranks: under DDP each rank returns its share scaled so
    that the averaged gradients equal one process's on the global batch."""
    text = _up(text)
    t = F.normalize(teacher.to(text.dtype), dim=-1)
    per = ((text - t) ** 2).mean(-1) if kind == "mse" else 1 - (text * t).sum(-1)
    if has is None and world == 1:
        return per.mean()
    w = has.to(per.dtype) if has is not None else torch.ones_like(per)
    n = w.sum().detach()
    if world > 1:
        import torch.distributed as dist

        n = n.clone()
        dist.all_reduce(n)
    return (per * w).sum() * world / n.clamp_min(1)


def compute_loss(tower, tokens, image, teacher, cfg: TrainConfig, world: int = 1,
                 teacher_has: torch.Tensor | None = None, tokens_en: torch.Tensor | None = None,
                 pad_id: int = 0) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the contrastive loss (text vs image), distillation (text vs English CLIP's
    embedding of its English caption) and English replay (the student's embedding of that English
    caption vs the same target). With `tokens_en` both languages go through one forward pass (one
    batch of 2B: one DDP forward per backward)."""
    if tokens_en is not None:
        L = max(tokens.shape[1], tokens_en.shape[1])
        both = torch.cat([F.pad(tokens, (0, L - tokens.shape[1]), value=pad_id),
                          F.pad(tokens_en, (0, L - tokens_en.shape[1]), value=pad_id)])
        feats, feats_en = tower(both).split(tokens.shape[0])
    else:
        feats, feats_en = tower(tokens), None
    scale = tower.module.model.logit_scale if hasattr(tower, "module") else tower.model.logit_scale
    parts = {}
    loss = torch.zeros((), device=feats.device)
    if cfg.loss.contrastive > 0 and image is not None:
        parts["clip"] = clip_loss(feats, image, scale, world)
        loss = loss + cfg.loss.contrastive * parts["clip"]
    if cfg.loss.distill > 0 and teacher is not None:
        parts["distill"] = distill_loss(feats, teacher, cfg.loss.distill_type, teacher_has, world)
        loss = loss + cfg.loss.distill * parts["distill"]
    if cfg.loss.english > 0 and feats_en is not None and teacher is not None:
        parts["english"] = distill_loss(feats_en, teacher, cfg.loss.distill_type, teacher_has, world)
        loss = loss + cfg.loss.english * parts["english"]
    return loss, {k: v.detach() for k, v in parts.items()}  # tensors: reading them waits for the device


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


def make_tower(model, cfg: TrainConfig, world: int, device: torch.device):
    """The module a step calls: TextTower, wrapped in DDP under torchrun. Without the contrastive loss
    the temperature takes no part in the loss, so it is frozen: DDP's reducer fails on a trainable
    parameter that gets no gradient (and find_unused_parameters would cost every step a graph walk)."""
    model.logit_scale.requires_grad_(cfg.loss.contrastive > 0)
    tower = TextTower(model)
    if world > 1:
        tower = torch.nn.parallel.DistributedDataParallel(
            tower, device_ids=[device.index] if device.type == "cuda" else None)
    return tower


def load_text_weights(model, sd: dict, where) -> None:
    """A checkpoint's text tower into `model`, strictly: every text weight present, nothing else."""
    missing, unexpected = model.clip.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("visual.")]
    if missing or unexpected:
        raise ConfigError(f"{where}: its text tower does not fit this model (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}): was it written by another model configuration?")


def rng_state() -> dict:
    """Every random stream a step draws from: the CPU generator and each CUDA device's."""
    st = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st) -> None:
    if isinstance(st, torch.Tensor):   # checkpoints before round 2: the CPU generator only
        st = {"cpu": st}
    torch.set_rng_state(st["cpu"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def truncate_metrics(path: Path, step: int) -> None:
    """On resume: drop the records logged after the checkpoint's step (they are logged again)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = []
    for ln in lines:
        try:
            if json.loads(ln).get("step", 0) > step:
                continue
        except json.JSONDecodeError:   # a line cut by the crash
            continue
        keep.append(ln)
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(keep))


def global_values(loss: torch.Tensor, parts: dict, world: int) -> torch.Tensor:
    """[loss, *parts] over the global batch: under DDP the contrastive part is already global on every
    rank and distillation is each rank's share times world, so the mean over ranks is the global value."""
    v = torch.stack([loss.detach().float(), *[p.float() for p in parts.values()]])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(v)
        v = v / world
    return v


def diverged(bad_steps: torch.Tensor, model, world: int, weights: bool) -> bool:
    """Whether any step since the start had a non-finite loss (`bad_steps`, counted on the device with
    no sync) or, with `weights`, whether any text weight is non-finite, on any rank."""
    bad = bad_steps.detach().float().clone()
    if weights:
        bad = bad + torch.stack([(~p.detach().isfinite()).any() for p in model.text_parameters().values()]).sum()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(bad)
    return bool(bad > 0)


def divergence_error(out: Path, step: int, lr: float) -> FloatingPointError:
    last = _checkpoint_path(out, "latest")
    return FloatingPointError(
        f"training diverged: non-finite loss or weights by step {step} (lr {lr:.3g}); "
        + (f"the last checkpoint, {last}, holds finite weights (continue from it with --resume {last} after "
           f"lowering optim.lr). " if last else "no checkpoint was written yet. ")
        + "Lower optim.lr, raise optim.warmup_steps or keep optim.grad_clip on")


# -- the job ------------------------------------------------------------------------------------
def _checkpoint_path(out: Path, resume: str) -> Path | None:
    if resume == "latest":
        p = out / "checkpoints" / "latest.json"
        return out / "checkpoints" / json.loads(p.read_text())["file"] if p.is_file() else None
    if not Path(resume).is_file():
        raise ConfigError(f"resume: checkpoint not found: {resume}")
    return Path(resume)


def _resume_keys(cfg: TrainConfig, manifest: dict, tok) -> dict:
    """What a resumed run must share with the checkpoint to continue the same sample order, model and
    schedule (the cosine's length follows epochs / max_steps). The cache is named by its content (image
    tower, counts), not its path: it may move between machines; the tokenizer by its vocabulary."""
    m = cfg.model
    cache = (f"{str(manifest.get('weights_sha256'))[:12]}…, {manifest.get('num_images')} images, "
             f"{manifest.get('num_captions')} captions")
    return {"cache": cache, "batch_size": cfg.batch_size, "seed": cfg.seed,
            "val_fraction": cfg.val_fraction, "model.clip": m.clip, "model.init": m.init,
            "model.context_length": m.context_length, "model.text_overrides": dict(m.text_overrides),
            "tokenizer": tok.digest(), "epochs": cfg.epochs, "max_steps": cfg.max_steps}


def _check_resumable(saved: dict, cfg: TrainConfig, manifest: dict, tok, ck: Path) -> None:
    now = _resume_keys(cfg, manifest, tok)
    diff = [f"{k}: checkpoint {saved[k]!r}, now {now[k]!r}" for k in now if k in saved and saved[k] != now[k]]
    if diff:
        raise ConfigError(f"resume: {ck} was written by a different run ({'; '.join(diff)}); resuming would not "
                          f"continue it. Use the same settings, or a new `out` folder to start afresh")


def _apply_optim_settings(opt, sched, o: OptimSection) -> list[str]:
    """After loading a checkpoint's optimizer and scheduler: the config's lr, weight decay, betas and
    eps win (a checkpoint restores its own), so overrides on `--resume` take effect. -> what changed"""
    changed = []
    for i, g in enumerate(opt.param_groups):   # [decayed, not decayed], as param_groups() builds them
        want = {"initial_lr": o.lr, "weight_decay": o.weight_decay if i == 0 else 0.0,
                "betas": (o.beta1, o.beta2), "eps": o.eps}
        for k, v in want.items():
            if (tuple(g[k]) if k == "betas" else g.get(k)) != v:
                changed.append(f"optim.{'lr' if k == 'initial_lr' else k}={v}")
                g[k] = v
    if changed:
        sched.base_lrs = [o.lr] * len(opt.param_groups)
        for g, lam in zip(opt.param_groups, sched.lr_lambdas):
            g["lr"] = o.lr * lam(sched.last_epoch)
    return sorted(set(changed))


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train the text tower; returns the run folder (loadable with `langclip.load`)."""
    from .files import progress_bar

    cfg.validate()
    rank, world, _ = init_from_env()
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    out = check_out_dir(cfg.out, "run", ("model.json", "checkpoints", "config.yaml"))
    manifest = read_manifest(cfg.cache)
    # before anything is written: a finished or interrupted run in `out` is never overwritten
    if cfg.model.init.startswith("hf:"):  # the HF encoder's own tokenizer (or model.tokenizer, if given)
        tok = HFTextTokenizer.load(cfg.model.tokenizer or cfg.model.init[3:], cfg.model.context_length)
    else:
        tok = Tokenizer.load(cfg.model.tokenizer)
    resume_keys = _resume_keys(cfg, manifest, tok)
    ck = _checkpoint_path(out, cfg.resume) if cfg.resume else None
    if ck is not None:
        st = torch.load(ck, map_location="cpu", weights_only=True)
        _check_resumable(st.get("run", {}), cfg, manifest, tok, ck)
    elif not cfg.resume and (out / "checkpoints" / "latest.json").is_file():
        done = json.loads((out / "checkpoints" / "latest.json").read_text())
        raise ConfigError(f"{out} already holds a run (checkpoint at step {done.get('step')}): continue it with "
                          f"--resume latest, or give another `out` folder")
    from .weights import clip_weights

    weights = clip_weights(cfg.model.clip, cfg.model.weights, cfg.model.pretrained)
    data = load_cache(cfg.cache)
    for w in ("distill", "english"):
        if getattr(cfg.loss, w) > 0 and (data.teacher is None or data.captions_en is None):
            raise ConfigError(f"loss.{w} > 0 but cache {cfg.cache} has no English captions and teacher "
                              f"embeddings (build it with an English caption column)")
    if data.text_only and cfg.loss.contrastive > 0:
        raise ConfigError(f"cache {cfg.cache} is a text-only parallel corpus (no images): set loss.contrastive=0 "
                          f"and loss.distill>0 (distillation towards the English CLIP text embeddings)")
    train_idx, val_idx = split_by_image(data, cfg.val_fraction, cfg.seed)
    split = split_record(data, val_idx, cfg.val_fraction, cfg.seed)   # travels with the run and its exports
    groups = CaptionGroups(train_idx, data.caption_image)
    steps_per_epoch = len(groups) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {len(groups)} training images in {cfg.cache}")
    total = steps_per_epoch * cfg.epochs if not cfg.max_steps else min(cfg.max_steps, steps_per_epoch * cfg.epochs)

    model, ref, info = build_student(cfg.model.clip, weights, tok, cfg.model.init, cfg.model.context_length,
                                     cfg.model.text_overrides or None, seed=cfg.seed, pretrained=cfg.model.pretrained)
    check_cache_matches(manifest, ref.__dict__, where=f"cache {cfg.cache}")   # before anything is written
    run_meta = {"init": info, "cache": str(Path(cfg.cache).resolve()), "split": split}   # model.json's extras
    model.to(device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        atomic_write_text(out / "config.yaml", yaml.safe_dump(asdict(cfg), allow_unicode=True, sort_keys=False))
        save_model_files(out, model, tok, ref, run_meta)
    # tokenization off the hot path: every caption once, up front (Rust)
    pad_id = getattr(tok, "pad_token_id", 0) if model.is_hf else None
    tokens = TokenTable.encode(tok, data.captions, cfg.model.context_length, pad_id, progress=progress and rank == 0)
    tokens_en = en_val = None
    if data.captions_en is not None:
        if cfg.loss.english > 0:   # replayed in training: every English caption
            tokens_en = TokenTable.encode(tok, [e or "" for e in data.captions_en], cfg.model.context_length, pad_id)
        has_en = torch.tensor([bool(e) for e in data.captions_en])
        ev = val_idx[has_en[val_idx]]   # validated on (is English kept?): the held-out images' English captions
        if len(ev):
            en_val = (TokenTable.encode(tok, [data.captions_en[i] for i in ev.tolist()], cfg.model.context_length,
                                        pad_id), data.caption_image[ev])
    data.captions = data.captions_en = None   # the ids are all training needs: ~1.5 GB of str at 18.5M
    images = data.image_emb                                  # (N, D) fp16, normalised
    if data.text_only:  # validation retrieves each held-out text's English teacher embedding instead
        images = data.teacher                                # normalised per validated row (validate)
    teacher = data.teacher
    teacher_all = teacher is None or data.teacher_has is None or bool(data.teacher_has.all())
    tower = make_tower(model, cfg, world, device)
    # compiled: one static graph per bucketed length (at most ~6 buckets, under dynamo's recompile limit)
    cut = max(16, -(-cfg.model.context_length // 6 // 8) * 8) if cfg.compile else 8
    fwd = (torch.compile(tower, mode=None if cfg.compile_mode == "default" else cfg.compile_mode, dynamic=False)
           if cfg.compile else tower)
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                            betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
                            **({"fused": True} if device.type == "cuda" else {}))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, min(cfg.optim.warmup_steps, max(1, total // 10))))
    step, start_epoch, best = 0, 0, -1.0
    if ck is not None:
        load_text_weights(model, st["text"], ck)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        changed = _apply_optim_settings(opt, sched, cfg.optim)
        step, start_epoch, best = st["step"], st["epoch"], st["best"]
        set_rng_state(st["rng"])
        if rank == 0:
            truncate_metrics(out / "metrics.jsonl", step)   # what was logged after the checkpoint is redone
            print(f"resumed from {ck} at step {step} (epoch {start_epoch + 1})"
                  + (f"; new optimizer settings from this step: {', '.join(changed)}" if changed else ""))
    elif cfg.resume and rank == 0:
        print(f"no checkpoint in {out / 'checkpoints'}: starting from scratch")
    writer = None
    if rank == 0 and cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=step + 1 if step else None)
        except ImportError:
            log.warning("tensorboard not installed: metrics go to metrics.jsonl only")
    metrics_f = open(out / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None
    fault = int(os.environ.get("LANGCLIP_FAULT_AT_STEP", "0"))  # test hook: SIGKILL itself at that step

    def log_metrics(rec: dict) -> None:
        if metrics_f is None:
            return
        metrics_f.write(json.dumps(rec) + "\n")
        metrics_f.flush()
        if writer:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    writer.add_scalar(k, v, rec["step"])

    def save_checkpoint(epoch_done: int) -> None:
        if rank != 0:
            return
        d = out / "checkpoints"
        d.mkdir(exist_ok=True)
        name = f"step_{step:08d}.pt"
        st = {"text": model.text_state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "step": step, "epoch": epoch_done, "best": best, "rng": rng_state(),
              "run": resume_keys}
        torch.save(st, d / (name + ".tmp"))
        os.replace(d / (name + ".tmp"), d / name)
        atomic_write_text(d / "latest.json", json.dumps({"file": name, "step": step}))
        for old in sorted(d.glob("step_*.pt"))[: -cfg.keep_checkpoints]:
            old.unlink()

    local = cfg.batch_size // world
    if rank == 0:
        n_par = sum(p.numel() for p in model.text_parameters().values() if p.requires_grad)
        n_val_img = int(data.caption_image[val_idx].unique().numel()) if len(val_idx) else 0
        what = "text pairs (text-only)" if data.text_only else "images"
        print(f"train: {len(groups):,} {what} / {len(train_idx):,} captions -> {steps_per_epoch:,} steps an epoch "
              f"x {cfg.epochs} = {total:,} steps (batch {cfg.batch_size:,}, {world} process{'es' * (world > 1)}); "
              f"held out: {n_val_img:,} {what} / {len(val_idx):,} captions; text tower {n_par / 1e6:.1f}M "
              f"parameters ({cfg.model.init} init); {device.type}, {'bf16' if bf16 else 'fp32'}"
              f"{', compiled' if cfg.compile else ''}", flush=True)
    t_start, step_start = time.perf_counter(), step
    bad_steps = torch.zeros((), dtype=torch.long, device=device)
    bar = progress_bar(total=total, initial=step, unit="step", disable=not progress or rank != 0, desc="train")
    t_last, n_last = time.perf_counter(), step
    done = step >= total
    epoch = start_epoch
    while not done and epoch < cfg.epochs:
        order = epoch_order(groups, cfg.seed, epoch)
        first = step - epoch * steps_per_epoch
        model.train()
        for s in range(first, steps_per_epoch):
            cap = order[s * cfg.batch_size + rank * local: s * cfg.batch_size + (rank + 1) * local]
            # batch assembled on the host (no device sync), copied from pinned memory asynchronously
            tk = to_device(tokens.batch(cap, cut), device)
            img = None if data.text_only else to_device(images[data.caption_image[cap]], device)
            tch = has = tk_en = None
            if teacher is not None and (cfg.loss.distill > 0 or cfg.loss.english > 0):
                tch = to_device(teacher[cap], device)
                has = None if teacher_all else to_device(data.teacher_has[cap], device)
            if cfg.loss.english > 0:
                tk_en = to_device(tokens_en.batch(cap, cut), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, parts = compute_loss(fwd, tk, img, tch, cfg, world, has, tk_en, pad_id or 0)
            bad_steps += ~torch.isfinite(loss.detach())   # counted on the device: no sync per step
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.text_parameters().values(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            bar.update(1)
            log_now = step % cfg.log_every == 0 or step == total
            ck_now = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0 and step % steps_per_epoch != 0
            if (log_now or ck_now) and diverged(bad_steps, model, world, weights=ck_now):
                raise divergence_error(out, step, sched.get_last_lr()[0])
            if log_now:
                now = time.perf_counter()
                rate = (step - n_last) * cfg.batch_size / max(now - t_last, 1e-9)
                t_last, n_last = now, step
                vals = global_values(loss, parts, world).tolist()
                log_metrics({"step": step, "epoch": epoch + 1, "loss": vals[0], **dict(zip(parts, vals[1:])),
                             "lr": sched.get_last_lr()[0], "logit_scale": float(model.logit_scale.detach().exp()),
                             "pairs_per_s": rate})
                bar.set_postfix(loss=f"{vals[0]:.3f}", pairs_s=f"{rate:,.0f}", refresh=False)
            if fault and step == fault:
                os.kill(os.getpid(), signal.SIGKILL)
            if ck_now:
                save_checkpoint(epoch)
            if step >= total:
                done = True
                break
        epoch_done = epoch + 1 if step % steps_per_epoch == 0 else epoch
        if diverged(bad_steps, model, world, weights=True):   # nothing non-finite is validated or saved
            raise divergence_error(out, step, sched.get_last_lr()[0])
        if rank == 0 and len(val_idx) > 0:
            val = validate(model, tokens, images, data.caption_image, val_idx, device, bf16, data.text_only)
            if en_val is not None:  # is English kept? the same held-out images, their English captions
                en = validate(model, en_val[0], images, en_val[1], torch.arange(len(en_val[1])), device, bf16,
                              data.text_only)
                val.update({f"en_{k}": v for k, v in en.items() if k != "mean_recall"})
            if data.text_only:  # text -> its English teacher embedding, and back
                val = {k.replace("t2i", "to_en").replace("i2t", "from_en"): v for k, v in val.items()}
            val = {f"val/{k}": v for k, v in val.items()}
            log_metrics({"step": step, "epoch": epoch + 1, **val})
            bar.write(f"epoch {epoch + 1}: " + "  ".join(f"{k[4:]} {v:.3f}" for k, v in val.items()
                                                         if not k.startswith("val/en_") or k.endswith("@1")))
            if val["val/mean_recall"] > best:
                best = val["val/mean_recall"]
                save_model_files(out, model, tok, ref, {**run_meta, "best": {"step": step, **val}},
                                 weights_name="text_tower_best.safetensors")
        save_checkpoint(epoch_done)
        epoch += 1
    bar.close()
    if rank == 0:
        save_model_files(out, model, tok, ref, {**run_meta, "steps": step, "best_mean_recall": best})
        secs = time.perf_counter() - t_start
        print(f"run {out}: {step} steps in {secs:.1f} s ({(step - step_start) * cfg.batch_size / max(secs, 1e-9):,.0f} "
              f"pairs/s with validation); "
              + (f"best held-out mean recall {best:.3f} (text_tower_best.safetensors); " if best >= 0 else "")
              + f"text tower in {out / 'text_tower.safetensors'}")
    if metrics_f:
        metrics_f.close()
    if writer:
        writer.close()
    return out


@torch.no_grad()
def validate(model, tokens, images, caption_image, val_idx, device, bf16: bool, renormalise: bool = False) -> dict:
    """Held-out recall@k. `renormalise`: the targets are teacher embeddings (text-only caches), L2-
    normalised here for the validated rows only, not for the whole (possibly memory-mapped) array."""
    model.eval()
    feats = []
    for s in range(0, len(val_idx), 1024):
        tk = tokens.batch(val_idx[s: s + 1024]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            feats.append(model.encode_text(tk).float())
    text = torch.cat(feats)
    imgs_u, inv = caption_image[val_idx].unique(return_inverse=True)
    target = images[imgs_u]
    if renormalise:
        target = F.normalize(target.float(), dim=-1)   # float32, as eval-retrieval computes it
    out = recall_at_k(text, target.to(device).float(), inv.to(device))
    model.train()
    return out
