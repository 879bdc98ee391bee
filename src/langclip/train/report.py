"""What a training run reports: metrics.jsonl and TensorBoard, held-out recall each epoch (and the
English captions' recall), the best weights, the closing summary."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ..metrics import recall_at_k
from ..runfolder import save_model_files

log = logging.getLogger(__name__)


class MetricsLog:
    """metrics.jsonl (+ TensorBoard) on rank 0; nothing elsewhere."""

    def __init__(self, out: Path, rank: int, tensorboard: bool, step: int):
        self.f = open(out / "metrics.jsonl", "a", encoding="utf-8") if rank == 0 else None
        self.writer = None
        if rank == 0 and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tb"), purge_step=step + 1 if step else None)
            except ImportError:
                log.warning("tensorboard not installed: metrics go to metrics.jsonl only")

    def __call__(self, rec: dict) -> None:
        if self.f is None:
            return
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if self.writer:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.writer.add_scalar(k, v, rec["step"])

    def close(self) -> None:
        for h in (self.f, self.writer):
            if h is not None:
                h.close()


# -- validation -----------------------------------------------------------------------------------
def validate_epoch(run) -> None:
    """Held-out recall (and the English captions' recall) of a `loop.Run`, and zero-shot accuracy on the
    benchmarks the config names (zeroshot.py), logged; the best weights kept (by held-out recall)."""
    from .zeroshot import zero_shot_epoch

    val = _held_out(run) if len(run.val_idx) > 0 else {}
    zs = zero_shot_epoch(run) if run.zeroshot else {}
    if not val and not zs:
        return
    run.logger({"step": run.step, "epoch": run.epoch + 1, **val, **zs})
    run.bar.write(f"epoch {run.epoch + 1}: " + "  ".join(
        [f"{k[4:]} {v:.3f}" for k, v in val.items() if not k.startswith("val/en_") or k.endswith("@1")] +
        [f"{k[9:-5]} acc@1 {v:.3f}" for k, v in zs.items() if k.endswith("/acc1")]))
    if val and val["val/mean_recall"] > run.best:
        run.best = val["val/mean_recall"]
        save_model_files(run.out, run.model, run.tok, run.ref, {**run.meta, "best": {"step": run.step, **val}},
                         weights_name="text_tower_best.safetensors")


def _held_out(run) -> dict:
    data = run.data
    val = validate(run.model, run.tokens, run.images, data.caption_image, run.val_idx, run.device, run.bf16,
                   data.text_only)
    if run.en_val is not None:  # is English kept? the same held-out images, their English captions
        toks, rows = run.en_val
        en = validate(run.model, toks, run.images, rows, torch.arange(len(rows)), run.device, run.bf16, data.text_only)
        val.update({f"en_{k}": v for k, v in en.items() if k != "mean_recall"})
    if data.text_only:  # text -> its English teacher embedding, and back
        val = {k.replace("t2i", "to_en").replace("i2t", "from_en"): v for k, v in val.items()}
    return {f"val/{k}": v for k, v in val.items()}


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


def finish(run, seconds: float, step0: int) -> None:
    if run.rank != 0:
        return
    save_model_files(run.out, run.model, run.tok, run.ref, {**run.meta, "steps": run.step, "best_mean_recall": run.best})
    print(f"run {run.out}: {run.step} steps in {seconds:.1f} s ({(run.step - step0) * run.cfg.batch_size / max(seconds, 1e-9):,.0f} "
          f"pairs/s with validation); "
          + (f"best held-out mean recall {run.best:.3f} (text_tower_best.safetensors); " if run.best >= 0 else "")
          + f"text tower in {run.out / 'text_tower.safetensors'}")
