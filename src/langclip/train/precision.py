"""`precision: bf16-weights`: the text tower's forward and backward run on a bfloat16 copy of its
weights, with a bfloat16 residual stream and no autocast, while the float32 model keeps the master
weights that AdamW (float32 states) updates — Megatron's "main params". Checkpoints, validation,
divergence checks and the saved model all read the float32 model, so nothing downstream changes.

Against `bf16` (autocast over float32 weights) this saves the per-step weight casts and float32
residual/layer-norm traffic (on an H200 at context 77, the all-bf16 step ran 9% faster:
benchmarks/results/h200_train_throughput.jsonl); against an all-bf16 model it keeps updates smaller
than bf16's resolution (~0.4% of a weight), which would otherwise round away.

    twin = Bf16Weights(model)        # model: LangCLIP, float32
    tower = make_tower(twin.model, ...)
    loss.backward(); optimizer_step(opt, twin, params, grad_clip)
"""
from __future__ import annotations

import copy

import torch


class Bf16Weights:
    """A bfloat16 twin of `master`'s text tower (the image tower is left out: training never runs it).
    The temperature is shared, not copied: it stays float32 and gets its gradient directly."""

    def __init__(self, master):
        visual = master.clip.visual
        master.clip.visual = torch.nn.Identity()   # not copied: a ViT-B/32 image tower is 88M parameters
        try:
            twin = copy.deepcopy(master)
        finally:
            master.clip.visual = visual
        twin.to(torch.bfloat16)
        twin.clip.logit_scale = master.clip.logit_scale   # one float32 parameter, shared
        self.model = twin
        mp, tp = master.text_parameters(), twin.text_parameters()
        names = [n for n in mp if tp[n] is not mp[n]]
        self.master = [mp[n] for n in names]
        self.twin = [tp[n] for n in names]
        self._grads = None   # float32 gradient buffers, allocated once

    @torch.no_grad()
    def grads_to_master(self) -> None:
        """The twin's bf16 gradients, as float32, become the master's (the twin's are released)."""
        if self._grads is None:
            self._grads = [torch.empty_like(m) for m in self.master]
        for m, t, g in zip(self.master, self.twin, self._grads):
            if t.grad is None or not m.requires_grad:
                m.grad = None
                continue
            g.copy_(t.grad)
            m.grad = g
            t.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        """After the optimizer step (or a resume): the twin takes the master weights, rounded to bf16."""
        if hasattr(torch, "_foreach_copy_"):
            torch._foreach_copy_(self.twin, self.master)   # one launch per group, not one per tensor
        else:
            for t, m in zip(self.twin, self.master):
                t.copy_(m)


def optimizer_step(opt, twin: Bf16Weights | None = None, params=None, grad_clip: float = 0.0) -> None:
    """After backward: (under bf16-weights) the twin's gradients to the float32 masters, gradient-norm
    clipping of `params` when `grad_clip` > 0, the optimizer step, gradients released, and (bf16-weights)
    the updated masters back to the twin. The training loop's step and the benchmarks' bare steps."""
    if twin is not None:
        twin.grads_to_master()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if twin is not None:
        twin.master_to_model()


def fp32_allreduce_hook(state, bucket):
    """DDP communication hook: average the (bf16) gradient bucket in float32, so that summing over
    ranks adds no bf16 rounding of its own; the result is rounded to bf16 once."""
    import torch.distributed as dist

    buf = bucket.buffer()
    world = dist.get_world_size(state)
    t = buf.float().div_(world)
    fut = dist.all_reduce(t, group=state, async_op=True).get_future()

    def back(f):
        buf.copy_(f.value()[0])
        return buf

    return fut.then(back)
