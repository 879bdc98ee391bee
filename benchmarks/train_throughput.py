"""Training-step throughput: langclip's text-tower step on cached image embeddings vs open_clip's
locked-image step (image forward every step, images already on the device), in the same run.

    python benchmarks/train_throughput.py                  # GPU: ViT-B-32, batch 1024, bf16
    python benchmarks/train_throughput.py --tiny --device cpu --batch 64   # CPU mode, tiny model
    python benchmarks/train_throughput.py --runs amp:default:77 amp:max-autotune:77 bf16:default:77   # levers

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


RUN_HELP = ("measurements of langclip's step, each PRECISION:MODE:CTX[:replay[F]]. PRECISION amp = bf16 autocast "
            "over float32 weights (`langclip train`'s precision bf16); bf16w = langclip's precision bf16-weights "
            "(a bf16 twin runs forward and backward, float32 master weights and AdamW states: "
            "train/precision.py); bf16 = weights, residual stream and AdamW states all in bf16 (the lever's "
            "upper bound, not offered: updates below bf16's resolution are lost). MODE: torch.compile mode "
            "(default, max-autotune, ...). replay: English replay of the whole batch (2x the texts a step); "
            "replayF: of a fraction F of it (loss.english_fraction, e.g. replay0.25)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=81408, help="bilingual vocabulary (CLIP + 32k merges)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--runs", nargs="+", default=["amp:default:32", "amp:default:77"], help=RUN_HELP)
    ap.add_argument("--base-ctx", type=int, nargs="+", default=[77, 32],
                    help="contexts of the open_clip baseline (a speed-up is quoted against the same context)")
    ap.add_argument("--n", type=int, default=20)
    a = ap.parse_args()
    import open_clip

    dev, B = a.device, a.batch
    torch.backends.cuda.matmul.allow_tf32 = True
    info = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else platform.processor() or platform.machine(),
            "torch": torch.__version__, "open_clip": open_clip.__version__, "batch": B, "tiny": a.tiny}
    print(json.dumps(info), flush=True)
    cfg = json.loads(json.dumps(TINY if a.tiny else open_clip.get_model_config("ViT-B-32-quickgelu")))
    amp = dict(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda")
    n, warm = (a.n, 5) if dev == "cuda" else (3, 1)
    fused = {"fused": True} if dev == "cuda" else {}

    # baseline: open_clip, locked image tower, image forward every step, CLIP vocabulary
    run = dict(dev=dev, B=B, amp=amp, n=n, warm=warm, fused=fused)
    base = {}
    for ctx in a.base_ctx:
        base[ctx] = baseline(cfg, ctx, **run)
        if dev == "cuda":
            torch.cuda.empty_cache()     # each measurement's model and optimizer went with its function
    for spec in a.runs:
        langclip_step(cfg, spec, a.vocab, base, compile_=dev == "cuda" and not a.no_compile, **run)
        if dev == "cuda":
            torch.cuda.empty_cache()


def baseline(cfg, ctx, dev, B, amp, n, warm, fused):
    """open_clip's locked-image step at context `ctx`: the image forward every step. -> seconds a step."""
    import open_clip
    from open_clip.loss import ClipLoss

    c = json.loads(json.dumps(cfg))
    c["text_cfg"]["context_length"] = ctx
    m = open_clip.CLIP(**c).to(dev)
    m.lock_image_tower()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, **fused)
    S = cfg["vision_cfg"]["image_size"]
    imgs = torch.randn(B, 3, S, S, device=dev)
    toks = torch.randint(1, 49407, (B, ctx), device=dev)
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

    return report(f"open_clip_locked_image_ctx{ctx}", B, timeit(base_step, dev, n, warm), flops(base_step), dev=dev)


def langclip_step(cfg, spec, vocab, base, compile_, dev, B, amp, n, warm, fused):
    """One PRECISION:MODE:CTX[:replay[F]] measurement of langclip's step on cached embeddings."""
    from langclip.model import LangCLIP
    from langclip.train import clip_loss
    from langclip.train.loop import param_groups
    from langclip.train.precision import Bf16Weights, optimizer_step

    prec, mode, ctx, *rest = spec.split(":")
    ctx = int(ctx)
    frac = (float(rest[0][6:] or 1) if rest and rest[0].startswith("replay") else 0.0)   # English replay share
    replay = frac > 0
    torch._dynamo.reset()
    c = json.loads(json.dumps(cfg))
    c["text_cfg"].update(vocab_size=vocab, context_length=ctx)
    model = LangCLIP(c).to(dev)
    model.clip.visual = None  # training never touches it: embeddings come from the cache
    if prec == "bf16":
        model.to(torch.bfloat16)
    twin = Bf16Weights(model) if prec == "bf16w" else None
    fwd = twin.model if twin else model
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-4, **fused)
    fi = F.normalize(torch.randn(B, cfg["embed_dim"], device=dev), dim=-1).half()
    k = max(1, round(frac * B)) if replay else 0
    tk = torch.randint(1, vocab - 2, (B + k, ctx), device=dev)
    tk[:, -1] = vocab - 1                        # full-length texts: no padding to cut

    def loss_fn(tk, fi):
        with torch.autocast(**{**amp, "enabled": amp["enabled"] and prec == "amp"}):
            ft = fwd.encode_text(tk)
            loss = clip_loss(ft[: fi.shape[0]], fi, fwd.logit_scale)
            if replay:                          # English replay: the first k images, their English texts
                loss = loss + clip_loss(ft[fi.shape[0]:], fi[:k], fwd.logit_scale)
            return loss

    compiled = (torch.compile(loss_fn, mode=None if mode == "default" else mode, dynamic=False)
                if compile_ else loss_fn)

    def step(f=compiled):
        f(tk, fi).backward()
        optimizer_step(opt, twin)          # the loop's own (grads to masters, step, masters to twin)

    fl = flops(lambda: step(loss_fn))
    t0 = time.perf_counter()
    step()
    sync(dev)
    tag = ("" if compiled is loss_fn else "_compiled" + ("" if mode == "default" else f"_{mode}"))
    tag += ("" if prec == "amp" else f"_{prec}") + ("" if not replay else "_replay" if frac == 1 else f"_replay{frac:g}")
    report(f"langclip_cached_ctx{ctx}{tag}", B, timeit(step, dev, n, warm), fl, base.get(ctx), dev,
           first_step_s=round(time.perf_counter() - t0, 1), precision=prec, compile_mode=mode,
           **({"english_fraction": frac} if replay else {}))

if __name__ == "__main__":
    main()
