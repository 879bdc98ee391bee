"""Continued byte-level BPE training: learn new merges *on top of* CLIP's merge state.

CLIP's tokenizer applies its 48,894 merges by rank. Merges learned elsewhere (the origin project
glued a translation model's merges onto CLIP's) often never fire, because CLIP's own merges have
already cut the word differently. Here every word of the target-language corpus is first segmented
by CLIP's BPE exactly as the encoder would, and training continues from that state: each new merge
joins two symbols that really are adjacent after all earlier merges, so each one fires on the corpus.

A new merge whose result string already exists in the vocabulary is skipped: if it were allowed, an
earlier (lower-rank) merge could become applicable after it, and encoding would no longer reproduce
the training segmentation. Skips are counted and reported.

A merge may also be *protected* against (`protected(symbol)` true for both of its sides): such a
pair is never counted, so it can never be learned. langclip protects every symbol that could occur
in text CLIP already handles (see `tokenizer.scripts.ScriptGuard`), which makes English ids unchanged
by construction: a new merge always holds a piece that such text cannot contain.

Example (hand-checkable): words {"aaab": 3, "ab": 1} with start symbols a|a|a|b and a|b:
pair counts (a,a)=6, (a,b)=4 -> merge (a,a) -> aa|a|b (count 3), then (aa,a)=3 vs (a,b)=4 -> merge
(a,b) -> aa|ab and ab, and so on.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable


@dataclass
class BPEResult:
    merges: list[tuple[str, str]]          # new merges, in rank order
    skipped_existing: int = 0              # candidate merges skipped: result already in the vocabulary
    protected_pairs: int = 0               # distinct pairs never counted: both sides protected
    exhausted: bool = False                # True when fewer merges were possible than asked
    pair_counts: list[int] = field(default_factory=list)  # weighted count of each merge when learned


def learn_merges(
    segmented: Iterable[tuple[list[str], int]],
    num_merges: int,
    existing_tokens: set[str],
    suffix: str = "</w>",
    progress: Callable[[int], None] | None = None,
    protected: Callable[[str], bool] | None = None,
) -> BPEResult:
    """Continue BPE training.

    segmented: (symbols, weight) per distinct pre-token, symbols being the word's current
    segmentation under the base tokenizer, e.g. (["пр", "ив", "ет</w>"], 120).
    existing_tokens: every token string already in the vocabulary.
    protected: symbol -> whether a merge of two such symbols is forbidden (None: nothing is).
    Returns the new merges; their result strings are new tokens, in order.
    """
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
    result = BPEResult(merges=[], protected_pairs=len(banned))
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
