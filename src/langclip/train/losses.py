"""The losses of a training step: symmetric InfoNCE against the cached image embeddings (gathered
across ranks with gradient, like open_clip's ClipLoss(gather_with_grad=True)), distillation towards
English CLIP's text embedding, English replay; and the module DDP wraps, compiled where torch.compile
can build."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..files import compile_problem

log = logging.getLogger(__name__)


# -- pieces -------------------------------------------------------------------------------------
class TextTower(torch.nn.Module):
    """What DDP wraps: tokens -> normalised text features, plus the temperature."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.encode_text(tokens, normalize=True)


class _GatherWithGrad(torch.autograd.Function):
    """Every rank's (b, D) rows, concatenated in rank order; the gradient of this rank's rows is the sum of
    all ranks' gradients of them (what torch.distributed.nn's all_gather did; it is deprecated since torch
    2.9). One path for every backend — gloo has no reduce-scatter — so the path tested on gloo is the one
    NCCL runs; the all-reduced tensor is the (B, D) text features' gradient, small beside a step."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist

        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, g):
        import torch.distributed as dist

        g = g.contiguous().clone()
        dist.all_reduce(g)
        return g[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def clip_loss(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor, world: int = 1) -> torch.Tensor:
    """Symmetric InfoNCE. text (b, D) local with grad, image (b, D) local, both normalised."""
    if world > 1:
        import torch.distributed as dist

        text = _GatherWithGrad.apply(text)
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
        feats, feats_en = tower(both).split([tokens.shape[0], tokens_en.shape[0]])
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
        k = feats_en.shape[0]          # English replay may cover only the batch's first k pairs
        parts["english"] = distill_loss(feats_en, teacher[:k], cfg.loss.distill_type,
                                        None if teacher_has is None else teacher_has[:k], world)
        loss = loss + cfg.loss.english * parts["english"]
    return loss, {k: v.detach() for k, v in parts.items()}  # tensors: reading them waits for the device


def global_values(loss: torch.Tensor, parts: dict, world: int) -> torch.Tensor:
    """[loss, *parts] over the global batch: under DDP the contrastive part is already global on every
    rank and distillation is each rank's share times world, so the mean over ranks is the global value."""
    v = torch.stack([loss.detach().float(), *[p.float() for p in parts.values()]])
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(v)
        v = v / world
    return v


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


def compile_tower(tower, cfg: TrainConfig, device: torch.device, world: int, rank: int) -> tuple[object, bool]:
    """(the module a step calls, whether it is compiled). `compile: true` where torch.compile cannot
    build here (compile_problem) warns with the reason and returns the eager tower (the same results);
    every rank decides alike."""
    if not cfg.compile:
        return tower, False
    why = compile_problem(device)
    ok = torch.tensor([why is None], dtype=torch.int32, device=device)
    if world > 1:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    if not ok.item():
        if rank == 0:
            log.warning("compile: true, but torch.compile cannot build on %s here (%s): training without it "
                        "(slower, same results); set compile: false to skip this check", device,
                        why or "on another rank")
        return tower, False
    return torch.compile(tower, mode=None if cfg.compile_mode == "default" else cfg.compile_mode, dynamic=False), True
