"""What counting a run's training tokens (coverage.count_tokens, once at each start of `train`) costs at the
origin's scale: 3.7M images x 5 captions = 18.5M captions, ~15 tokens each (a synthetic ragged table of
random ids over a 32k-merge tokenizer's 81,408), 1% of the images held out. Against, in the same run:
one pass over the ids (their sum: what reading the memory-mapped table once costs) and one np.bincount of
the whole table at once (what the chunked count avoids: a 2 GB int64 copy). Seconds are the median of 3;
peak memory is numpy's allocations during the call (tracemalloc).

    python benchmarks/token_counts.py > benchmarks/results/cpu_token_counts.jsonl
    python benchmarks/token_counts.py --captions 100000      # a quick check
"""
import argparse
import json
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np
import torch

from langclip.coverage import count_tokens
from langclip.train.batches import TokenTable

VOCAB = 49408 + 32000


def measure(f) -> tuple[float, int]:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    tracemalloc.start()
    f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return round(statistics.median(times), 3), round(peak / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=18_500_000)
    args = ap.parse_args()
    g = np.random.default_rng(0)
    lengths = g.integers(8, 23, size=args.captions, dtype=np.int32)        # mean 15 with start and end
    flat = g.integers(0, VOCAB, size=int(lengths.sum()), dtype=np.int32)
    table = TokenTable(torch.from_numpy(flat), torch.from_numpy(lengths), None, 77)
    images = args.captions // 5
    val_images = g.choice(images, size=images // 100, replace=False)
    val_idx = torch.from_numpy(np.sort((val_images[:, None] * 5 + np.arange(5)).ravel()))
    want = np.bincount(flat, minlength=VOCAB) - np.bincount(table.subset(val_idx).flat.numpy(), minlength=VOCAB)
    assert np.array_equal(count_tokens([table], val_idx, VOCAB), want)
    base = {"captions": args.captions, "ids": len(flat), "vocab": VOCAB, "val_captions": len(val_idx),
            "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "numpy": np.__version__, "date": time.strftime("%Y-%m-%d")}}
    for name, f in (("count_tokens (chunked, held-out split subtracted)", lambda: count_tokens([table], val_idx, VOCAB)),
                    ("baseline: one pass over the ids (sum)", lambda: flat.sum(dtype=np.int64)),
                    ("baseline: np.bincount of the whole table at once", lambda: np.bincount(flat, minlength=VOCAB))):
        s, mib = measure(f)
        print(json.dumps({"case": name, "seconds": s, "peak_mib": mib, **base}), flush=True)


if __name__ == "__main__":
    main()
