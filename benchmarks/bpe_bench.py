"""Merge learner benchmark on the README's real recipe (32k merges on wordfreq's whole Russian list,
708k pre-tokens): the learner before session 16 (CLIP's cut by `tokenizers`, then per-word Python,
copied below from commit 4b83b23) against `bpe.learn_merges` on `bpe.PreTokens` (CLIP's cut and the
new merges in numpy), same run, same pre-tokens; the merges and their counts must be identical.

    python benchmarks/bpe_bench.py [--lang ru] [--merges 32000]

Stages timed: `cut` (CLIP's BPE over every pre-token: `tokenizers.encode_batch` and its tokens, against
`bpe.segment`), `learn` (the whole learner: old = its own symbol tables and merges on the cut words;
new = cut and merges), and `train_tokenizer` (the whole command, new code). The pre-tokens are made
once, outside the timings; one thread. Prints one JSON object per measurement and the machine.
"""
import argparse
import hashlib
import heapq
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from typing import Callable, Iterable

import torch

from langclip.tokenizer import bpe


def old_learn_merges(
    segmented: Iterable[tuple[list[str], int]],
    num_merges: int,
    existing_tokens: set[str],
    suffix: str = "</w>",
    progress: Callable[[int], None] | None = None,
    protected: Callable[[str], bool] | None = None,
) -> bpe.BPEResult:
    """The learner of commit 4b83b23, verbatim but for this docstring: per-word Python throughout."""
    if num_merges < 1:
        raise ValueError("num_merges must be >= 1")
    sym_id: dict[str, int] = {}   # token string -> int symbol
    sym_str: list[str] = []       # int symbol -> token string
    prot: list[bool] = []         # int symbol -> protected (a pair of two protected symbols never merges)

    def sid(s: str) -> int:
        i = sym_id.get(s)
        if i is None:
            i = sym_id[s] = len(sym_str)
            sym_str.append(s)
            prot.append(bool(protected and protected(s)))
        return i

    words: list[list[int]] = []
    weights: list[int] = []
    for symbols, w in segmented:
        if len(symbols) < 2 or w <= 0:
            continue  # a single symbol has no pair to merge
        words.append([sid(s) for s in symbols])
        weights.append(int(w))

    stats: dict[tuple[int, int], int] = defaultdict(int)     # pair -> weighted count
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> word indices (may be stale)
    banned: set[tuple[int, int]] = set()
    for wi, (word, w) in enumerate(zip(words, weights)):
        for p in zip(word, word[1:]):
            if prot[p[0]] and prot[p[1]]:
                banned.add(p)
                continue
            stats[p] += w
            where[p].add(wi)
    # max-heap by count; ties broken by the pair's strings so the result is deterministic
    heap = [(-c, sym_str[a], sym_str[b], a, b) for (a, b), c in stats.items()]
    heapq.heapify(heap)
    known = set(existing_tokens)
    result = bpe.BPEResult(merges=[], protected_pairs=len(banned))
    while len(result.merges) < num_merges:
        if not heap:
            result.exhausted = True
            break
        negc, _, _, a, b = heapq.heappop(heap)
        cur = stats.get((a, b), 0)
        if cur <= 0:
            continue
        if cur != -negc:  # stale entry: re-queue with its current count
            heapq.heappush(heap, (-cur, sym_str[a], sym_str[b], a, b))
            continue
        new_str = sym_str[a] + sym_str[b]
        if new_str in known:  # result exists already (see module docstring)
            stats[(a, b)] = 0
            result.skipped_existing += 1
            continue
        known.add(new_str)
        c = sid(new_str)
        result.merges.append((sym_str[a], sym_str[b]))
        result.pair_counts.append(cur)
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for wi in where.pop((a, b), ()):
            _merge_word(words, wi, a, b, c, weights[wi], delta, where)
        stats[(a, b)] = 0
        for p, d in delta.items():
            if d == 0 or (prot[p[0]] and prot[p[1]]):
                continue
            cnt = stats.get(p, 0) + d
            if cnt > 0:
                stats[p] = cnt
                if d > 0:
                    heapq.heappush(heap, (-cnt, sym_str[p[0]], sym_str[p[1]], p[0], p[1]))
            else:
                stats.pop(p, None)
        if progress is not None:
            progress(len(result.merges))
    return result


def _merge_word(words: list[list[int]], wi: int, a: int, b: int, c: int, w: int,
                delta: dict, where: dict) -> bool:
    """Replace every non-overlapping (a, b) in words[wi], left to right, by c, recording the pair
    count changes (weight w) in `delta` and indexing new pairs in `where`.
    [1,2,1,2,2], (1,2)->9 -> [9,9,2]: (2,1) -w, (9,9) +w, (2,2) -w, (9,2) +w.
    Returns False when the pair does not occur (a stale index entry)."""
    word = words[wi]
    out: list[int] = []
    i, n, hit = 0, len(word), False
    while i < n:
        if i < n - 1 and word[i] == a and word[i + 1] == b:
            if out:
                p = out[-1]
                delta[(p, a)] -= w
                delta[(p, c)] += w
                where[(p, c)].add(wi)
            if i + 2 < n:
                nx = word[i + 2]
                delta[(b, nx)] -= w
                delta[(c, nx)] += w
                where[(c, nx)].add(wi)
            out.append(c)
            i += 2
            hit = True
        else:
            out.append(word[i])
            i += 1
    if hit:
        words[wi] = out
    return hit


def pretokens(lang: str):
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer import train
    from langclip.tokenizer.scripts import ScriptGuard, target_scripts
    from langclip.tokenizer.vocab import PRETOKENIZE_PATTERN

    weights, _ = train._pretoken_weights(TokenizerTrainConfig(lang=lang, wordfreq=True, merges=1, out="unused"),
                                         [], PRETOKENIZE_PATTERN)
    return weights, ScriptGuard(target_scripts(weights))


def digest(res) -> str:
    return hashlib.sha256(repr((res.merges, res.pair_counts)).encode()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lang", default="ru")
    ap.add_argument("--merges", type=int, default=32000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer.train import train_tokenizer
    from langclip.tokenizer.vocab import PRETOKENIZE_PATTERN, build_hf_tokenizer, clip_base_vocab, clip_merges

    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
                      "threads": 1, "python": platform.python_version(), "lang": args.lang}), flush=True)
    weights, guard = pretokens(args.lang)
    words = list(weights)
    pre = bpe.PreTokens(words, [weights[w] for w in words], [True] * len(words))
    existing = set(clip_base_vocab())
    clip_merges()
    t0 = time.perf_counter()
    segs = build_hf_tokenizer((), PRETOKENIZE_PATTERN).encode_batch(words, add_special_tokens=False)
    segmented = [(e.tokens, weights[w]) for w, e in zip(words, segs)]
    cut_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    cut = bpe.segment(pre)
    cut_new = time.perf_counter() - t0
    print(json.dumps({"name": "cut", "pretokens": len(words), "old_seconds": round(cut_old, 1),
                      "new_seconds_with_listing": round(cut_new, 1),
                      "same_cut": cut == [s for s, _ in segmented]}), flush=True)
    del cut, segs
    t0 = time.perf_counter()
    old = old_learn_merges(segmented, args.merges, existing, protected=guard.protected)
    learn_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = bpe.learn_merges(pre, args.merges, existing, protected=guard.protected)
    learn_new = time.perf_counter() - t0
    print(json.dumps({"name": "learn", "merges": len(new.merges), "old_seconds": round(learn_old, 1),
                      "old_cut_and_learn_seconds": round(cut_old + learn_old, 1), "new_seconds": round(learn_new, 1),
                      "speedup": round((cut_old + learn_old) / learn_new, 2), "same_merges": digest(old) == digest(new),
                      "merges_sha256": digest(new)}), flush=True)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train_tokenizer(TokenizerTrainConfig(lang=args.lang, wordfreq=True, merges=args.merges, out=d), progress=False)
        print(json.dumps({"name": "train_tokenizer", "merges": args.merges,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
