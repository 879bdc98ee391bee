"""Continued byte-level BPE training: learn new merges *on top of* CLIP's merge state.

CLIP's tokenizer applies its 48,894 merges by rank. Merges learned elsewhere (the origin project
glued a translation model's merges onto CLIP's) often never fire, because CLIP's own merges have
already cut the word differently. Here every word of the target-language corpus is first segmented
by CLIP's BPE exactly as the encoder would, and training continues from that state: each new merge
joins two symbols that really are adjacent after all earlier merges, so each one fires on the corpus.

Given `PreTokens` (text), the learner makes that cut itself: CLIP's merges applied in rank order to
all words at once equal CLIP's BPE run word by word, because a merge's pieces are made only by merges
of lower rank (so within a word the merges that fire do so in rank order). A test checks it against
`tokenizers` on Russian, English and Japanese words.

A new merge whose result string already exists in the vocabulary is skipped: if it were allowed, an
earlier (lower-rank) merge could become applicable after it, and encoding would no longer reproduce
the training segmentation. Skips are counted and reported.

A merge may also be *protected* against (`protected(symbol)` true for both of its sides and for
the two joined): such a pair is never counted, so it can never be learned. langclip protects every
symbol that could occur in text CLIP already handles (see `tokenizer.scripts.ScriptGuard`), which
makes English ids unchanged by construction: a new merge always holds, in its two pieces together,
bytes that such text cannot contain. (Together, not in one piece: Vietnamese "ủ" is the bytes E1 BB
A7, and neither E1 nor BB alone is only a Latin letter's, but E1 BB begins only Latin letters.)
Pairs may also be banned outright (`banned_pairs`): CLIP's merges rank first, so a new merge can only
fire on a word's finished CLIP cut, and a word whose adjacent pieces are all banned keeps that cut
(`english_words`: the adjacent pieces of wordfreq's most frequent English words).

Example (hand-checkable): words {"aaab": 3, "ab": 1} with start symbols a|a|a|b and a|b:
pair counts (a,a)=6, (a,b)=4 -> merge (a,a) -> aa|a|b (count 3), then (aa,a)=3 vs (a,b)=4 -> merge
(a,b) -> aa|ab and ab, and so on.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np


@dataclass
class BPEResult:
    merges: list[tuple[str, str]]          # new merges, in rank order
    skipped_existing: int = 0              # candidate merges skipped: result already in the vocabulary
    protected_pairs: int = 0               # distinct pairs never counted: both sides protected
    exhausted: bool = False                # True when fewer merges were possible than asked
    pair_counts: list[int] = field(default_factory=list)  # weighted count of each merge when learned


@dataclass
class PreTokens:
    """Pre-tokens as text, to be cut by CLIP's BPE inside the learner (at numpy speed): `texts[i]` has
    weight `weights[i]`; `word_end[i]` is False for a form standing inside a longer pre-token (CLIP's
    cut then has no end-of-word suffix on its last character)."""
    texts: list[str]
    weights: list[int]
    word_end: list[bool]


def segment(pre: PreTokens) -> list[list[str]]:
    """CLIP's BPE cut of each pre-token, in CLIP's byte-level symbols, as the learner starts from it:
    "кот" at a word's end -> ['Ðº', 'Ð¾', 'Ñ', 'Ĥ</w>'], inside a pre-token -> ['Ðº', 'Ð¾ÑĤ']."""
    return _Linked.from_text(pre, 1, None).segmentation()


def learn_merges(
    segmented: "Iterable[tuple[list[str], int]] | PreTokens",
    num_merges: int,
    existing_tokens: set[str],
    progress: Callable[[int], None] | None = None,
    protected: Callable[[str], bool] | None = None,
    banned_pairs: "Iterable[tuple[str, str]]" = (),
) -> BPEResult:
    """Continue BPE training.

    segmented: (symbols, weight) per distinct pre-token, symbols being the word's current
    segmentation under the base tokenizer, e.g. (["пр", "ив", "ет</w>"], 120); or `PreTokens`,
    which the learner cuts with CLIP's BPE itself.
    existing_tokens: every token string already in the vocabulary.
    protected: symbol -> whether it could occur in text whose cut must not change; a merge of two
    such symbols whose joined string is such a symbol too is forbidden (None: nothing is).
    banned_pairs: pairs of symbols that must never merge, whatever `protected` says (the adjacent
    pieces of words whose cut must not change: `english_words`).
    Returns the new merges; their result strings are new tokens, in order.

    The words live in numpy arrays (`_Linked`): a merge rewrites all its occurrences in a few vector
    operations, found through an index of where each pair was made, so its cost follows the number of
    occurrences at C speed (on Russian's 708k words the first 100 merges rewrite 2.7M of them).
    """
    if num_merges < 1:
        raise ValueError("num_merges must be >= 1")
    engine = (_Linked.from_text(segmented, num_merges, protected) if isinstance(segmented, PreTokens)
              else _Linked.from_symbols(segmented, num_merges, protected))
    ban, S = engine.ban(banned_pairs), engine.S
    sym_str, prot = engine.sym_str, engine.prot
    stats, banned = engine.initial_stats()
    # max-heap by count; ties broken by the pair's strings so the result is deterministic
    heap = [(-c, sym_str[a], sym_str[b], a, b) for (a, b), c in stats.items()]
    heapq.heapify(heap)
    known = set(existing_tokens)
    result = BPEResult(merges=[], protected_pairs=banned)
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
        c = engine.add_symbol(new_str, protected)
        result.merges.append((sym_str[a], sym_str[b]))
        result.pair_counts.append(cur)
        delta = engine.merge(a, b, c)
        stats[(a, b)] = 0
        for p, d in delta.items():
            if d == 0 or (prot[p[0]] and prot[p[1]] and engine.banned(*p)):   # inline first: a hot loop
                continue
            if ban and p[0] * S + p[1] in ban:
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


class _Linked:
    """Every word in one int32 array `F`, -1 after each word (and one -1 more at the end, which index
    -1 also reads). A merge keeps its left slot and empties the right one (F = -2), so positions never
    move; `nxt` and `prv` link each word's live slots. `where` maps a pair's code (left * S + right) to
    the positions it was made at (some may be stale by now, so they are checked when used)."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, weights: np.ndarray, sym_str: list[str],
                 num_merges: int, protected: Callable[[str], bool] | None):
        """ids: every word's symbols concatenated (ids into `sym_str`); lengths, weights: per word."""
        self.sym_str, self.S = sym_str, len(sym_str) + num_merges + 1
        ends = np.cumsum(lengths + 1) - 1
        n = int(ends[-1]) + 1 if lengths.size else 0
        self.F = np.full(n + 1, -1, np.int32)
        body = np.ones(n + 1, bool)
        body[ends] = body[n] = False
        self.F[body] = ids
        self.pos = np.int32 if n < 2**31 - 2 else np.int64   # positions: int32 below 2 GiB of symbols
        self.nxt = np.minimum(np.arange(1, n + 2, dtype=self.pos), n)
        self.prv = np.arange(-1, n, dtype=self.pos)
        self.weight = weights.astype(np.int64)                                     # per word
        self.wid = np.append(np.repeat(np.arange(lengths.size, dtype=np.int32), lengths + 1), 0)  # per position
        self.protected = np.zeros(self.S, bool)
        self.prot: list[bool] = [False] * len(sym_str)
        self._banned: dict[int, bool] = {}   # pair code of two protected symbols -> their join is too
        self._ban_codes = np.zeros(0, np.int64)   # pair codes banned outright (`ban`), sorted
        self._ban_set: set[int] = set()           # the same, for the learner's hot loop
        self._ban_ids: dict[str, int] = {}        # symbol string -> id, while bans wait
        self._ban_wait: dict[str, list[tuple[str, str]]] = {}   # a symbol not made yet -> its banned pairs
        self._protect(protected, ids)
        self.where: dict[int, np.ndarray] = {}

    def _protect(self, protected: Callable[[str], bool] | None, ids: np.ndarray) -> None:
        """Mark the protected symbols among `ids` (only symbols present can ever be in a pair)."""
        self.is_protected = protected
        if protected is not None:
            for i in np.unique(ids).tolist():
                self.prot[i] = self.protected[i] = bool(protected(self.sym_str[i]))

    @classmethod
    def from_symbols(cls, segmented: Iterable[tuple[list[str], int]], num_merges: int,
                     protected: Callable[[str], bool] | None) -> "_Linked":
        segs = [(s, int(w)) for s, w in segmented if len(s) >= 2 and w > 0]   # one symbol: no pair
        flat = list(itertools.chain.from_iterable(s for s, _ in segs))
        sym_str = list(dict.fromkeys(flat))
        sym_id = {s: i for i, s in enumerate(sym_str)}
        return cls(np.fromiter(map(sym_id.__getitem__, flat), np.int32, len(flat)),
                   np.fromiter((len(s) for s, _ in segs), np.int64, len(segs)),
                   np.fromiter((w for _, w in segs), np.int64, len(segs)), sym_str, num_merges, protected)

    @classmethod
    def from_text(cls, pre: "PreTokens", num_merges: int, protected: Callable[[str], bool] | None) -> "_Linked":
        """Each pre-token's UTF-8 bytes as CLIP's byte symbols (the last one with `</w>` at a word's
        end), then CLIP's merges applied in rank order to every word at once."""
        from .vocab import SUFFIX, bytes_to_unicode, clip_base_vocab, clip_merges

        vocab = clip_base_vocab()
        index = {t: i for i, t in enumerate(vocab)}
        u = bytes_to_unicode()
        plain = np.array([index[u[b]] for b in range(256)], np.int32)
        end = np.array([index[u[b] + SUFFIX] for b in range(256)], np.int32)
        raw = [t.encode("utf-8") for t in pre.texts]
        lengths = np.fromiter(map(len, raw), np.int64, len(raw))
        data = np.frombuffer(b"".join(raw), np.uint8)
        ids = plain[data]
        last = np.cumsum(lengths) - 1
        at_end = np.asarray(pre.word_end, bool) & (lengths > 0)
        ids[last[at_end]] = end[data[last[at_end]]]
        self = cls(ids, lengths, np.asarray(pre.weights, np.int64), list(vocab), num_merges, None)
        self._index(*self._pairs(np.flatnonzero(self.F >= 0).astype(self.pos))[::3])
        for rank, (x, y) in enumerate(clip_merges()):     # each merge's pieces are made by earlier ones
            if index[x] * self.S + index[y] in self.where:
                self.merge(index[x], index[y], 512 + rank, counts=False)
        self.where = {}
        self._protect(protected, self.F[self.F >= 0])
        return self

    def ban(self, pairs: "Iterable[tuple[str, str]]") -> set[int]:
        """Ban these pairs of symbol strings outright; returns the banned pair codes, a set that grows
        when a symbol of a waiting pair is made by a merge (`add_symbol`)."""
        self._ban_ids = {s: i for i, s in enumerate(self.sym_str)}
        self._ban_add(pairs)
        if not self._ban_wait:
            self._ban_ids = {}
        return self._ban_set

    def _ban_add(self, pairs: "Iterable[tuple[str, str]]") -> None:
        ids, codes = self._ban_ids, []
        for a, b in pairs:
            if a in ids and b in ids:
                codes.append(ids[a] * self.S + ids[b])
            else:
                self._ban_wait.setdefault(a if a not in ids else b, []).append((a, b))
        if codes:
            self._ban_set.update(codes)
            self._ban_codes = np.array(sorted(self._ban_set), np.int64)

    def add_symbol(self, s: str, protected: Callable[[str], bool] | None) -> int:
        """A symbol made by a new merge: its id (bans waiting on it take effect)."""
        c = len(self.sym_str)
        self.sym_str.append(s)
        self.prot.append(bool(protected and protected(s)))
        if s in self._ban_wait:
            self._ban_ids[s] = c
            self._ban_add(self._ban_wait.pop(s))
        return c

    def segmentation(self) -> list[list[str]]:
        """Each word's current symbols (words of one symbol included), for inspection and tests."""
        out: list[list[str]] = [[] for _ in range(self.weight.size)]
        for pos in np.flatnonzero(self.F >= 0).tolist():
            out[self.wid[pos]].append(self.sym_str[self.F[pos]])
        return out

    def _pairs(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(codes, weights, banned, positions) of the pairs inside one word that start at `starts`."""
        left, right = self.F[starts], self.F[self.nxt[starts]]
        inside = (left >= 0) & (right >= 0)
        starts = starts[inside]
        left, right = left[inside].astype(np.int64), right[inside].astype(np.int64)
        codes = left * self.S + right
        banned = self.protected[left] & self.protected[right]
        if banned.any():   # both sides protected: banned unless the two joined are not
            both = codes[banned]
            free = [c for c in set(both.tolist()) if not self._code_banned(c)]
            if free:
                banned[banned] = ~np.isin(both, free)
        if self._ban_codes.size:   # sorted: a binary search each (np.isin would sort the ban each call)
            ban = self._ban_codes
            banned |= ban[np.minimum(np.searchsorted(ban, codes), ban.size - 1)] == codes
        return codes, self.weight[self.wid[starts]], banned, starts

    def banned(self, a: int, b: int) -> bool:
        """Whether the pair a, b may never be learned: both symbols and their join are protected."""
        return self.prot[a] and self.prot[b] and self._code_banned(a * self.S + b)

    def _code_banned(self, code: int) -> bool:
        got = self._banned.get(code)
        if got is None:
            a, b = divmod(code, self.S)
            got = self._banned[code] = bool(self.is_protected(self.sym_str[a] + self.sym_str[b]))
        return got

    def _sums(self, codes: np.ndarray, w: np.ndarray) -> dict[tuple[int, int], int]:
        """{pair: summed weight} of the codes."""
        if not codes.size:
            return {}
        order = np.argsort(codes, kind="stable")
        codes, w = codes[order], w[order]
        first = _firsts(codes)
        u, sums = codes[first], np.add.reduceat(w, first)
        return {(c // self.S, c % self.S): n for c, n in zip(u.tolist(), sums.tolist())}

    def _index(self, codes: np.ndarray, positions: np.ndarray) -> None:
        """Record where each pair was made. A pair is made only when one of its symbols is (a symbol is
        made by one merge and changes a neighbour only into itself), so a code is recorded once."""
        if not codes.size:
            return
        order = np.argsort(codes, kind="stable")
        codes, positions = codes[order], positions[order]
        first = _firsts(codes)
        bounds = first.tolist() + [codes.size]
        where = self.where
        for code, s, e in zip(codes[first].tolist(), bounds, bounds[1:]):
            where[code] = positions[s:e]

    def initial_stats(self) -> tuple[dict[tuple[int, int], int], int]:
        """(weighted count of every pair not banned, number of distinct banned pairs); indexes them."""
        codes, w, banned, pos = self._pairs(np.flatnonzero(self.F >= 0).astype(self.pos))
        self._index(codes[~banned], pos[~banned])
        return self._sums(codes[~banned], w[~banned]), int(np.unique(codes[banned]).size)

    def merge(self, a: int, b: int, c: int, counts: bool = True) -> dict[tuple[int, int], int]:
        """Rewrite every non-overlapping (a, b), left to right, as c; return the pair count changes
        (counts=False: only rewrite, as when applying the base tokenizer's merges)."""
        F, nxt, prv = self.F, self.nxt, self.prv
        if counts:
            self.protected[c] = self.prot[c]
        p = self.where.pop(a * self.S + b, np.zeros(0, self.pos))
        q = nxt[p]
        ok = (F[p] == a) & (F[q] == b)   # still there
        p, q = p[ok], q[ok]
        if a == b and p.size > 1:        # in a run a a a, only the first two merge
            i = np.arange(p.size)
            run_start = np.maximum.accumulate(np.where(np.concatenate(([True], p[1:] != q[:-1])), i, 0))
            keep = (i - run_start) % 2 == 0
            p, q = p[keep], q[keep]
        before = self._pairs(_sorted_set(prv[p], p, q)) if counts else None
        r = nxt[q]
        F[p], F[q] = c, -2
        nxt[p], prv[r] = r, p
        after = self._pairs(_sorted_set(prv[p], p))
        self._index(after[0][~after[2]], after[3][~after[2]])
        if before is None:
            return {}
        return self._sums(np.concatenate([before[0], after[0]]), np.concatenate([-before[1], after[1]]))


def _sorted_set(*arrays: np.ndarray) -> np.ndarray:
    """The distinct values of a few int arrays, sorted (np.unique hashes; sorting nearly sorted data is faster)."""
    v = np.sort(np.concatenate(arrays))
    return v[_firsts(v)]


def _firsts(v: np.ndarray) -> np.ndarray:
    """Index of the first of each run of equal values in a sorted array."""
    if not v.size:
        return np.zeros(0, np.intp)
    first = np.empty(v.size, bool)
    first[0] = True
    np.not_equal(v[1:], v[:-1], out=first[1:])
    return np.flatnonzero(first)
