"""Run under torchrun (2 processes, gloo, CPU): one loss/gradient computation on a fixed global batch;
rank 0 saves loss and gradients to argv[1]. Also importable for the 1-process reference."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))


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


def loss_cfg():
    from langclip.train import LossSection, TrainConfig

    return TrainConfig(loss=LossSection(contrastive=1.0, distill=0.5, english=0.3))


def main(out):
    import torch.distributed as dist

    from langclip.train import TextTower, compute_loss

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, tok, ims, tch, has, tok_en = batch()
    b = tok.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    tower = torch.nn.parallel.DistributedDataParallel(TextTower(model))
    loss, _ = compute_loss(tower, tok[sl], ims[sl], tch[sl], loss_cfg(), world, has[sl], tok_en[sl])
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)  # the contrastive part is global on every rank; distillation is each rank's share
    if rank == 0:
        torch.save({"loss": float(total) / world, "grads": {n: p.grad for n, p in model.text_parameters().items()
                                                   if p.grad is not None}}, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
