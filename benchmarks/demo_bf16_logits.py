"""The effect of float32 contrastive logits under bf16 autocast (round 2's fix), measured on the demo.

Runs `langclip demo --precision bf16` (CPU autocast) twice in one process: with langclip's clip_loss
(similarity and loss in float32) and with the previous behaviour reproduced (the similarity product
left to autocast, i.e. bf16 logits). Writes both summaries' zero-shot rows to
benchmarks/results/cpu_demo_bf16_logits.json.

    python benchmarks/demo_bf16_logits.py [--size small]
"""
import argparse
import json
import os
import platform
import tempfile
import time

import torch
import torch.nn.functional as F


def bf16_logits_clip_loss(text, image, logit_scale, world=1):
    """The pre-fix clip_loss: features upcast, but the product runs under the caller's autocast."""
    text, image = text.float(), image.float()
    logits = logit_scale.exp() * text @ image.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small", choices=["default", "small", "tiny"])
    a = ap.parse_args()
    import langclip.train.losses as tr   # compute_loss looks clip_loss up in this module
    from langclip.demo import DemoConfig, run_demo

    fixed = tr.clip_loss
    out = {"machine": {"date": time.strftime("%Y-%m-%d"), "arch": platform.machine(), "cpus": os.cpu_count()},
           "size": a.size, "precision": "bf16 (CPU autocast)"}
    for name, fn in (("float32_logits", fixed), ("bf16_logits_previous", bf16_logits_clip_loss)):
        tr.clip_loss = fn
        with tempfile.TemporaryDirectory() as d:
            s = run_demo(DemoConfig(out=d, size=a.size, precision="bf16"))
        out[name] = {"seconds": s["seconds"], "zero_shot": s["zero_shot"], "retrieval": s["retrieval"]}
        print(name, json.dumps(s["zero_shot"], ensure_ascii=False), flush=True)
    tr.clip_loss = fixed
    with open(os.path.join(os.path.dirname(__file__), "results", "cpu_demo_bf16_logits.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
