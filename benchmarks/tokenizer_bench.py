"""Tokenizer benchmark: training time of 32k Russian merges (wordfreq), tokens per word, and batch
encoding throughput against open_clip's SimpleTokenizer on distinct sentences (same run, a ratio).

    python benchmarks/tokenizer_bench.py [--merges 32000] [--sentences 20000]
Prints one JSON object per measurement and the machine.
"""
import argparse
import json
import os
import platform
import random
import tempfile
import time

import torch


def sentences(lang, n, seed=0):
    import wordfreq

    rng = random.Random(seed)
    words = wordfreq.top_n_list(lang, 30000)
    out = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))))
    return sorted(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merges", type=int, default=32000)
    ap.add_argument("--sentences", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1, help="torch/rayon threads for training (1 = one core)")
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    torch.set_num_threads(a.threads)
    from open_clip.tokenizer import SimpleTokenizer

    from langclip.tokenizer import Tokenizer
    from langclip.tokenizer_train import TokenizerTrainConfig, tokens_per_word, train_tokenizer

    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "threads": a.threads, "python": platform.python_version()}))
    tok_dir = tempfile.mkdtemp()
    t0 = time.perf_counter()
    tok = train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, merges=a.merges, out=tok_dir), progress=False)
    train_s = time.perf_counter() - t0
    clip = Tokenizer.clip()
    print(json.dumps({"name": "train_ru_wordfreq", "merges": tok.num_added_merges, "seconds": round(train_s, 1),
                      "tokens_per_word_ru_top100k_weighted": round(tokens_per_word(tok, "ru")["weighted"], 3),
                      "clip_tokens_per_word_ru_top100k_weighted": round(tokens_per_word(clip, "ru")["weighted"], 3),
                      "clip_tokens_per_word_ru_top50k_weighted": round(tokens_per_word(clip, "ru", 50000)["weighted"], 3)}))
    for lang in ("en", "ru"):
        texts = sentences(lang, a.sentences)
        # fresh objects: both memoise per-word BPE, and both start empty here
        ref, tok = SimpleTokenizer(), Tokenizer.load(tok_dir)
        t0 = time.perf_counter(); ref(texts); ref_s = time.perf_counter() - t0
        t0 = time.perf_counter(); tok(texts); ours_s = time.perf_counter() - t0
        print(json.dumps({"name": f"encode_distinct_{lang}", "sentences": len(texts),
                          "open_clip_per_s": round(len(texts) / ref_s), "langclip_per_s": round(len(texts) / ours_s),
                          "speedup": round(ref_s / ours_s, 1)}))


if __name__ == "__main__":
    main()
