"""Zero-shot class weights: one call of the text tower a class (langclip before session 22, and
CLIP_benchmark's way) vs all classes' texts sorted by length, up to 256 of one length a call
(`metrics.zero_shot_weights`; `--batch-texts` sets the size), same process, alternating, median of 3. Towers with random weights: the suite's tiny
one (2 layers, width 32) and a ViT-B/32-shaped one (12 layers, width 512); Russian names from langclip's
shipped lists, its 6 Russian templates (and CLIP_benchmark-sized sets of 18 and 80 made from them).

    python benchmarks/zero_shot_weights.py > benchmarks/results/cpu_zero_shot_weights.jsonl
"""
import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from langclip.datasets import shipped_classnames, shipped_templates
from langclip.metrics import fill, zero_shot_weights
from langclip.model import LangCLIP, trim_tokens
from langclip.tokenizer import Tokenizer


def one_class_a_call(model, tokenizer, classnames, templates):
    """The previous code of zero_shot_weights, kept here as the baseline."""
    out = []
    for c in classnames:
        t = trim_tokens(tokenizer([fill(tp, c) for tp in templates], context_length=model.context_length))
        e = F.normalize(model.encode_text(t).float(), dim=-1).mean(0)
        out.append(F.normalize(e, dim=-1))
    return torch.stack(out)


def tower(width: int, layers: int) -> LangCLIP:
    torch.manual_seed(0)
    cfg = {"embed_dim": 512 if width == 512 else 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": max(2, width // 64),
                        "layers": layers}}
    return LangCLIP(cfg).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-texts", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                      "threads": a.threads, "batch_texts": a.batch_texts}), flush=True)
    several = lambda *args: zero_shot_weights(*args, batch_texts=a.batch_texts)
    batched = f"{a.batch_texts} texts a call"
    tok = Tokenizer.clip()   # CLIP's BPE: Russian in bytes, longer texts than a langclip tokenizer's
    base = shipped_templates("ru")
    names = shipped_classnames("cifar100", "ru")
    for arch, width, layers, n_classes in (("tiny", 32, 2, 1000), ("ViT-B-32-shaped", 512, 12, 20)):
        model = tower(width, layers)
        classes = [names[i % len(names)] for i in range(n_classes)]
        for n_tpl in (6, 18, 80):
            templates = [base[i % len(base)] + ("" if i < len(base) else f" ({i})") for i in range(n_tpl)]
            if arch != "tiny" and n_tpl == 80:
                continue
            times = {"one class a call": [], batched: []}
            with torch.no_grad():
                want = one_class_a_call(model, tok, classes, templates)   # warm-up, and the reference
                got = several(model, tok, classes, templates)
                for _ in range(3):
                    for how, f in (("one class a call", one_class_a_call), (batched, several)):
                        t = time.perf_counter()
                        f(model, tok, classes, templates)
                        times[how].append(time.perf_counter() - t)
            s = {k: statistics.median(v) for k, v in times.items()}
            print(json.dumps({"name": "zero_shot_weights", "tower": arch, "classes": n_classes, "templates": n_tpl,
                              **{f"seconds_{k.replace(' ', '_')}": round(v, 3) for k, v in s.items()},
                              "speedup": round(s["one class a call"] / s[batched], 2),
                              "max_abs_diff": float((got - want).abs().max())}), flush=True)


if __name__ == "__main__":
    main()
