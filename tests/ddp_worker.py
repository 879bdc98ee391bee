"""Run under torchrun (2 processes, gloo, CPU): two training steps on a fixed global batch for every
loss combination; rank 0 saves each step's loss and gradients to argv[1], and the
process's thread count before the group and after it ended. Also importable for the 1-process
reference (same functions, world 1)."""
import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

# every combination of (contrastive, distill, english) weights with at least one loss on
COMBOS = [c for c in itertools.product((0.0, 1.0), (0.0, 0.5), (0.0, 0.3)) if any(c)]
FRACTION_N = 2   # English replay of a fraction: ceil(0.5 * 4) pairs of each rank's 4


def batch():
    from conftest import TINY_CFG

    from langclip.model import LangCLIP

    torch.manual_seed(0)
    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["text_cfg"]["vocab_size"] = 300
    cfg["text_cfg"]["context_length"] = 12
    m = LangCLIP(cfg).double()  # float64: the comparison sees the method, not float32 summation order
    g = torch.Generator().manual_seed(1)
    tok = torch.randint(1, 298, (8, 12), generator=g)
    tok[torch.arange(8), torch.randint(3, 12, (8,), generator=g)] = 299
    ims = torch.nn.functional.normalize(torch.randn(8, 32, generator=g, dtype=torch.float64), dim=-1)
    tch = torch.randn(8, 32, generator=g, dtype=torch.float64)
    has = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool)  # English for 3 + 1 captions: uneven ranks
    tok_en = torch.randint(1, 298, (8, 9), generator=g)             # English captions, another length
    tok_en[torch.arange(8), torch.randint(3, 9, (8,), generator=g)] = 299
    return m, tok, ims, tch, has, tok_en


def loss_cfg(c=1.0, d=0.5, e=0.3):
    from langclip.config import LossSection, TrainConfig

    return TrainConfig(loss=LossSection(contrastive=c, distill=d, english=e))


def two_steps(combo, rank=0, world=1, n_en=None, order=None):
    """Two SGD steps of the combo's loss on this rank's share of the batch, as train() wraps the
    tower (make_tower: DDP under torchrun). -> [(global loss, {name: grad}) per step]
    n_en: English replay of only the first n_en pairs of the share (loss.english_fraction);
    order: a permutation of the batch first (the one-process reference of a fraction under torchrun)."""
    from langclip.train import compute_loss, make_tower

    model, tok, ims, tch, has, tok_en = batch()
    if order is not None:
        tok, ims, tch, has, tok_en = (x[order] for x in (tok, ims, tch, has, tok_en))
    cfg = loss_cfg(*combo)
    b = tok.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    tower = make_tower(model, cfg, world, torch.device("cpu"))
    opt = torch.optim.SGD([p for p in model.text_parameters().values() if p.requires_grad], lr=0.5)
    out = []
    for _ in range(2):   # DDP's reducer checks unused parameters at the second step
        loss, _ = compute_loss(tower, tok[sl], ims[sl], tch[sl], cfg, world, has[sl],
                               tok_en[sl][:n_en] if cfg.loss.english else None)
        loss.backward()
        total = loss.detach().clone()
        if world > 1:   # the contrastive part is global on every rank, distillation each rank's share
            import torch.distributed as dist   # scaled by world: the mean over ranks is the global loss

            dist.all_reduce(total)
        out.append((float(total) / world,
                    {n: p.grad.clone() for n, p in model.text_parameters().items() if p.grad is not None}))
        opt.step()
        opt.zero_grad()
    return out


def threads() -> int:
    """This process's threads (Linux), C++ ones included: gloo's workers and its transport loop."""
    return len(os.listdir("/proc/self/task"))


def main(out):
    import torch.distributed as dist

    from langclip import dist as ldist

    before = threads()
    rank, world = ldist.init_from_env()   # as train() starts its group
    res = {}
    for combo in COMBOS:
        res[str(combo)] = two_steps(combo, rank, world)
    res["fraction"] = two_steps((1.0, 0.5, 0.3), rank, world, n_en=FRACTION_N)   # each rank replays its first 2
    dist.barrier()
    ldist._end_group()   # what runs at exit: the group must end with its threads, before the interpreter
    res["threads"] = (before, threads())
    if rank == 0:
        torch.save(res, out)


if __name__ == "__main__":
    main(sys.argv[1])
