"""The confusion-matrix picture `langclip eval` draws for each dataset: the code before session 23
(laid out at the figure's 100 dpi, then laid out again by savefig before drawing at 110 dpi) vs
`pictures.plot_confusion` (laid out once, at the dpi it is drawn at). Russian class names shipped with
langclip (CIFAR-10, CIFAR-100, Caltech101), a random confusion matrix, same process, alternating,
median of 3; the installed matplotlib is named in each line.

    python benchmarks/confusion_picture.py > benchmarks/results/cpu_confusion_picture.jsonl
"""
import json
import os
import platform
import statistics
import tempfile
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langclip.datasets import shipped_classnames  # noqa: E402
from langclip.pictures import plot_confusion  # noqa: E402


def before(conf, names, path, title=""):
    """plot_confusion as it was before session 23, kept here as the baseline."""
    conf = np.asarray(conf, dtype=float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    n = len(names)
    size = max(4.0, 0.45 * n + 2) if n <= 30 else 0.17 * n + 3
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8 if n < 30 else 5)
    ax.set_yticks(range(n), names, fontsize=8 if n < 30 else 5)
    ax.set_xlabel("предсказано / predicted")
    ax.set_ylabel("верно / true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(im, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    from PIL import Image

    d = tempfile.mkdtemp()
    for ds in ("cifar10", "cifar100", "caltech101"):
        names = shipped_classnames(ds, "ru")
        n = len(names)
        conf = np.random.default_rng(0).integers(0, 6, (n, n)) * (np.random.default_rng(1).random((n, n)) < 0.1)
        conf += np.diag(np.full(n, 20))
        times = {"before": [], "now": []}
        for _ in range(3):
            for name, fn in (("before", before), ("now", plot_confusion)):
                t = time.perf_counter()
                fn(conf, names, os.path.join(d, f"{name}.png"), title=ds)
                times[name].append(time.perf_counter() - t)
        sizes = [Image.open(os.path.join(d, f"{k}.png")).size for k in times]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({"dataset": ds, "classes": n, "before_s": round(med["before"], 3), "now_s": round(med["now"], 3),
                          "speedup": round(med["before"] / med["now"], 2), "png_sizes": sizes,
                          "each_repeat_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
                          "matplotlib": matplotlib.__version__, "machine": {"arch": platform.machine(), "cpus": os.cpu_count()}}),
              flush=True)


if __name__ == "__main__":
    main()
