"""What `langclip tokenizer train --corpus` costs on a caption corpus of the origin's size: cleaning and cutting
every distinct text into pre-tokens (tokenizer/train.py's corpus_pretokens, ~17 us a text in Python), in one
process (the baseline: langclip before session 27) and in `workers` forked processes, in the same run; then
the whole `tokenizer train` (32,000 merges) on the same file both ways. The corpus is synthetic: 5-12
words drawn uniformly from wordfreq's 50,000 most frequent Russian words, capitalised, a full stop — every
text distinct, as captions nearly are. Seconds are the median of 3 (the whole train: one run each); the
counts of both ways are checked equal, and so are the two tokenizers' files.

    python benchmarks/tokenizer_corpus.py > benchmarks/results/cpu_tokenizer_corpus.jsonl
    python benchmarks/tokenizer_corpus.py --texts 100000      # a quick check
"""
import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from wordfreq import top_n_list

from langclip.config import TokenizerTrainConfig
from langclip.tokenizer.train import corpus_pretokens, count_workers, train_tokenizer

ORIGIN_CAPTIONS = 18_500_000   # 3.7M images x 5 captions


def median_seconds(f, n: int = 3):
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 2), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=-1, help="-1: the cores")
    args = ap.parse_args()
    workers = count_workers(args.workers)
    words = top_n_list("ru", 50_000)
    rng = random.Random(0)
    texts = [" ".join(rng.choices(words, k=rng.randint(5, 12))).capitalize() + "." for _ in range(args.texts)]
    machine = {"arch": platform.machine(), "cpus": os.cpu_count(), "cores_usable": count_workers(-1),
               "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    base = {"texts": args.texts, "distinct": len(set(texts)), "machine": machine}
    counts = {}
    for w in (1, workers):
        s, counts[w] = median_seconds(lambda: corpus_pretokens(texts, workers=w))
        print(json.dumps({"case": "corpus_pretokens" + (" (baseline: one process)" if w == 1 else f", {w} processes"),
                          "workers": w, "seconds": s, "us_per_text": round(s / args.texts * 1e6, 2),
                          "origin_scale_min": round(s / args.texts * ORIGIN_CAPTIONS / 60, 1),
                          "pretokens": len(counts[w]), **base}), flush=True)
    assert counts[1] == counts[workers]
    with tempfile.TemporaryDirectory() as d:
        corpus = Path(d) / "captions.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        files = {}
        for w in (1, workers):
            cfg = TokenizerTrainConfig(lang="ru", corpus=[str(corpus)], merges=32_000, workers=w, out=f"{d}/tok{w}")
            t = time.perf_counter()
            train_tokenizer(cfg, progress=False)
            s = round(time.perf_counter() - t, 2)
            files[w] = (Path(d) / f"tok{w}" / "tokenizer.json").read_bytes()
            print(json.dumps({"case": "tokenizer train --corpus, 32,000 merges" + (" (baseline: one process)" if w == 1
                              else f", {w} processes"), "workers": w, "seconds": s, **base}), flush=True)
        assert files[1] == files[workers]


if __name__ == "__main__":
    main()
