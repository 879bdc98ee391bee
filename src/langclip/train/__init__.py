"""Stage 3, text-tower training.

    losses.py      InfoNCE against cached image embeddings, distillation, English replay; the DDP module
    batches.py     captions grouped by image, each epoch's order, the ragged token table
    checkpoint.py  checkpoints, resume checks, random states, divergence
    loop.py        setup -> epoch -> step -> checkpoint: `train(cfg) -> run folder`
    report.py      metrics log, held-out validation each epoch, the best weights, the summary
"""
from .checkpoint import load_text_weights, rng_state, set_rng_state
from .losses import TextTower, clip_loss, compute_loss, distill_loss, make_tower
from .loop import lr_lambda, train
from .report import validate

__all__ = ["TextTower", "clip_loss", "compute_loss", "distill_loss", "load_text_weights", "lr_lambda", "make_tower",
           "rng_state", "set_rng_state", "train", "validate"]
