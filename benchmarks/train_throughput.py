"""Training-step throughput: langclip's text-tower step on cached image embeddings vs open_clip's
locked-image step (image forward every step, images already on the device), in the same run.

    python benchmarks/train_throughput.py                  # GPU: ViT-B-32, batch 1024, bf16
    python benchmarks/train_throughput.py --tiny --device cpu --batch 64   # CPU mode, tiny model
    python benchmarks/train_throughput.py --ctx 77 --compile-mode default max-autotune   # modes compared

Prints one JSON line per measurement: pairs/s, step ms, TFLOP/s achieved (FLOPs counted with
torch.utils.flop_counter on the same step run eagerly), peak memory, and the ratio to the baseline.
"""
import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

TINY = json.loads((Path(__file__).parent / "tiny_clip.json").read_text())  # the CPU-mode model, shared


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def timeit(step, dev, n, warm):
    for _ in range(warm):
        step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(n):
        step()
    sync(dev)
    return (time.perf_counter() - t) / n


def flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def report(name, B, sec, fl, base=None, dev="cpu", **extra):
    d = {"name": name, "batch": B, "step_ms": round(sec * 1e3, 2), "pairs_per_s": round(B / sec)}
    if fl:
        d["tflop_per_step"] = round(fl / 1e12, 4)
        x = fl / sec / 1e12
        d["achieved_tflops"] = round(x, 1) if x >= 10 else float(f"{x:.3g}")   # CPU mode: small numbers
    if base:
        d["speedup_vs_open_clip"] = round(base / sec, 2)
    if dev == "cuda":
        d["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    d.update(extra)
    print(json.dumps(d), flush=True)
    return sec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=81408, help="bilingual vocabulary (CLIP + 32k merges)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-mode", nargs="+", default=["default"],
                    choices=["default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead"],
                    help="torch.compile mode(s) for langclip's step, each measured in turn (the 300 TFLOP/s "
                         "target at context 77 was missed by 4%% with 'default'; 'max-autotune' is next)")
    ap.add_argument("--ctx", type=int, nargs="+", default=[32, 77],
                    help="text lengths to measure (training cuts each batch to its longest text, in buckets "
                         "of 16 when compiled: a short-query batch runs at 16 or 32)")
    ap.add_argument("--n", type=int, default=20)
    a = ap.parse_args()
    import open_clip
    from open_clip.loss import ClipLoss

    from langclip.model import LangCLIP
    from langclip.train import clip_loss
    from langclip.train.loop import param_groups

    dev, B = a.device, a.batch
    torch.backends.cuda.matmul.allow_tf32 = True
    info = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else platform.processor() or platform.machine(),
            "torch": torch.__version__, "open_clip": open_clip.__version__, "batch": B, "tiny": a.tiny}
    print(json.dumps(info), flush=True)
    cfg = json.loads(json.dumps(TINY if a.tiny else open_clip.get_model_config("ViT-B-32-quickgelu")))
    amp = dict(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda")
    n, warm = (a.n, 5) if dev == "cuda" else (3, 1)

    # baseline: open_clip, locked image tower, image forward every step, context 77, CLIP vocabulary
    m = open_clip.CLIP(**cfg).to(dev)
    m.lock_image_tower()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, **({"fused": True} if dev == "cuda" else {}))
    S = cfg["vision_cfg"]["image_size"]
    imgs = torch.randn(B, 3, S, S, device=dev)
    toks = torch.randint(1, 49407, (B, 77), device=dev)
    toks[:, -1] = 49407
    lossf = ClipLoss()

    def base_step():
        with torch.autocast(**amp):
            with torch.no_grad():
                fi = F.normalize(m.encode_image(imgs), dim=-1)
            ft = F.normalize(m.encode_text(toks), dim=-1)
            loss = lossf(fi, ft, m.logit_scale.exp())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    base = report("open_clip_locked_image_ctx77", B, timeit(base_step, dev, n, warm), flops(base_step), dev=dev)
    del m, opt, imgs
    if dev == "cuda":
        torch.cuda.empty_cache()

    modes = a.compile_mode if (dev == "cuda" and not a.no_compile) else ["default"]  # CPU: eager only
    for mode, ctx in [(m_, c_) for m_ in modes for c_ in a.ctx]:
        torch._dynamo.reset()
        c = json.loads(json.dumps(cfg))
        c["text_cfg"].update(vocab_size=a.vocab, context_length=ctx)
        model = LangCLIP(c).to(dev)
        model.clip.visual = None  # training never touches it: embeddings come from the cache
        opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-4, **({"fused": True} if dev == "cuda" else {}))
        D = cfg["embed_dim"]
        fi = F.normalize(torch.randn(B, D, device=dev), dim=-1).half()
        tk = torch.randint(1, a.vocab - 2, (B, ctx), device=dev)
        tk[:, -1] = a.vocab - 1                      # full-length texts: no padding to cut

        def loss_fn(tk, fi):
            with torch.autocast(**amp):
                ft = model.encode_text(tk)
                return clip_loss(ft, fi, model.logit_scale)

        compiled = (torch.compile(loss_fn, mode=None if mode == "default" else mode, dynamic=False)
                    if (dev == "cuda" and not a.no_compile) else loss_fn)

        def step(f=compiled):
            f(tk, fi).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        fl = flops(lambda: step(loss_fn))
        t0 = time.perf_counter()
        step()
        sync(dev)
        tag = "" if compiled is loss_fn else "_compiled" + ("" if mode == "default" else f"_{mode}")
        report(f"langclip_cached_ctx{ctx}{tag}", B,
               timeit(step, dev, n, warm), fl, base, dev, first_step_s=round(time.perf_counter() - t0, 1))
        del model, opt
        if dev == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
