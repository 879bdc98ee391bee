"""Checkpoints and resume: where they are, what a resumed run must share with its checkpoint, the
random states, strict loading, the metrics log cut back to the checkpoint, rotation that keeps the
last good one, and the divergence check that guarantees it holds finite weights."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ConfigError, OptimSection, TrainConfig
from ..files import atomic_write, atomic_write_text


# -- the job ------------------------------------------------------------------------------------
def checkpoint_path(out: Path, resume: str) -> Path | None:
    if resume == "latest":
        p = out / "checkpoints" / "latest.json"
        return out / "checkpoints" / json.loads(p.read_text())["file"] if p.is_file() else None
    if not Path(resume).is_file():
        raise ConfigError(f"resume: checkpoint not found: {resume}")
    return Path(resume)


def resume_keys(cfg: TrainConfig, manifest: dict, tok) -> dict:
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


def check_resumable(saved: dict, now: dict, ck: Path) -> None:
    """Refuse a checkpoint whose `resume_keys` differ from this run's (`now`), naming each field."""
    diff = [f"{k}: checkpoint {saved[k]!r}, now {now[k]!r}" for k in now if k in saved and saved[k] != now[k]]
    if diff:
        longer = any(k in ("epochs", "max_steps") and saved[k] != now[k] for k in now if k in saved)
        raise ConfigError(f"resume: {ck} was written by a different run ({'; '.join(diff)}); resuming would not "
                          f"continue it. Use the same settings, or a new `out` folder to start afresh"
                          + (f" (to train on from its weights with a schedule of its own: model.init=run:"
                             f"{ck.parent.parent} and a new out)" if longer else ""))


def apply_optim_settings(opt, sched, o: OptimSection) -> list[str]:
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
    last = checkpoint_path(out, "latest")
    return FloatingPointError(
        f"training diverged: non-finite loss or weights by step {step} (lr {lr:.3g}); "
        + (f"the last checkpoint, {last}, holds finite weights (continue from it with --resume {last} after "
           f"lowering optim.lr). " if last else "no checkpoint was written yet. ")
        + "Lower optim.lr, raise optim.warmup_steps or keep optim.grad_clip on")


def save_checkpoint(out: Path, state: dict, keep: int) -> Path:
    """checkpoints/step_<N>.pt (atomic), then latest.json, then rotation: only after a checkpoint is
    safely written are older ones deleted, so the last good one is always there."""
    d = out / "checkpoints"
    d.mkdir(exist_ok=True)
    name = f"step_{state['step']:08d}.pt"
    atomic_write(d / name, lambda tmp: torch.save(state, tmp))
    atomic_write_text(d / "latest.json", json.dumps({"file": name, "step": state["step"]}))
    for old in sorted(d.glob("step_*.pt"))[: -keep]:
        old.unlink()
    return d / name
