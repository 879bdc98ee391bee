"""Costs the suite pays again and again, each against its baseline in the same run (one thread):

- a fresh process importing torch, torchvision, open_clip and langclip's CLI (what every subprocess
  and torchrun rank of the suite pays), median of 3;
- `pictures.plot_confusion` at 10 and 100 classes (CIFAR-10/100's Russian names), median of 3;
- results.json of a 1,000-class evaluation: `json.dumps(indent=1)` (before session 20) vs
  `files.json_text`, bytes and seconds, median of 3;
- a step of the demo's English teacher: AdamW over the whole 49,408-row token table (before session
  21) vs the captions' rows only, alternating, median of 3 windows of 10 steps.

    python benchmarks/suite_costs.py > benchmarks/results/cpu_suite_costs.jsonl
"""
import json
import platform
import statistics
import subprocess
import sys
import time

import torch


def med(f, n=3):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return round(statistics.median(out), 3)


def imports():
    for m in ("torch", "torchvision", "open_clip", "langclip.cli"):
        s = med(lambda: subprocess.run([sys.executable, "-c", f"import {m}"], check=True))
        print(json.dumps({"name": "import_in_fresh_process", "module": m, "seconds": s}), flush=True)


def confusion():
    import matplotlib
    import numpy as np

    from langclip.datasets import shipped_classnames
    from langclip.pictures import plot_confusion

    for ds in ("cifar10", "cifar100"):
        names = shipped_classnames(ds, "ru")
        conf = np.random.default_rng(0).integers(0, 5, (len(names), len(names)))
        plot_confusion(conf, names, "/tmp/suite_costs_confusion.png")   # warm
        s = med(lambda: plot_confusion(conf, names, "/tmp/suite_costs_confusion.png"))
        print(json.dumps({"name": "plot_confusion", "classes": len(names), "seconds": s,
                          "matplotlib": matplotlib.__version__}), flush=True)


def results_json():
    from langclip.files import json_text

    rng = torch.Generator().manual_seed(0)
    conf = torch.randint(0, 5, (1000, 1000), generator=rng).tolist()
    res = {"imagenet1k": {"acc1": 0.5, "classnames": [f"класс {i}" for i in range(1000)], "confusion": conf}}
    for how, f in (("json.dumps(indent=1)", lambda: json.dumps(res, ensure_ascii=False, indent=1)),
                   ("json_text", lambda: json_text(res))):
        text = f()
        assert json.loads(text) == res
        print(json.dumps({"name": "results_json_1000_classes", "writer": how, "bytes": len(text.encode()),
                          "seconds": med(f)}), flush=True)


def teacher_step():
    import open_clip
    import torch.nn.functional as F

    from langclip.demo.run import TEACHER
    from langclip.train import clip_loss

    def window(compact: bool) -> float:
        torch.manual_seed(0)
        m = open_clip.CLIP(**TEACHER)
        t = torch.randint(1, 400, (128, 24))
        t[:, -1] = 49407
        if compact:
            used = torch.unique(t)
            m.token_embedding = torch.nn.Embedding.from_pretrained(m.token_embedding.weight[used].clone(), freeze=False)
            rest = torch.zeros(49408, 64)
            t = torch.searchsorted(used, t)
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.05)
        x = torch.randn(128, 3, 64, 64)

        def step():
            loss = clip_loss(F.normalize(m.encode_text(t), dim=-1), F.normalize(m.encode_image(x), dim=-1), m.logit_scale)
            loss.backward()
            if compact:
                rest.mul_(1 - 2e-3 * 0.05)
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        s = time.perf_counter()
        for _ in range(10):
            step()
        return (time.perf_counter() - s) / 10

    times = {False: [], True: []}
    for _ in range(3):
        for compact in (False, True):
            times[compact].append(window(compact))
    for compact, how in ((False, "whole 49,408-row table"), (True, "the captions' rows")):
        print(json.dumps({"name": "demo_teacher_step", "adamw_over": how, "ms": round(1000 * statistics.median(times[compact]), 1)}),
              flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({"machine": platform.machine(), "cpus": __import__("os").cpu_count(), "torch": torch.__version__,
                      "python": platform.python_version(), "threads": 1}), flush=True)
    imports()
    confusion()
    results_json()
    teacher_step()
