"""Each picture once in the results: copies of one file in a collection (Google Takeout puts every photo of an
album in the album's folder and again in its year's; a folder copied twice; a phone backed up again) used to
fill a search's results with the same picture. A copy is a hit whose embedding lies within SAME of a better hit's
and whose thumbnail is byte for byte that hit's (so the same pixels, decoded and scaled alike): it is folded into
that hit, which lists it. A picture saved again otherwise (another quality, another size) is not a copy."""
from __future__ import annotations

import numpy as np

SAME = 0.999   # cosine between the embeddings of two candidates (copies: 1 but for float16 rounding)
MARGIN = 1e-3  # a copy's score and its picture's differ by float16 rounding only (~1e-5); more hits are asked only
               # while the last one asked scores within this of the k-th picture (bench: search_listing.py)


def distinct(ix, ranked, k: int, drop: int | None = None) -> list[tuple[int, float, list[int]]]:
    """The best `k` distinct pictures as (id, score, ids of its copies); `ranked(n)` -> the best n hits
    [(id, score)], asked for more until `k` distinct ones are known with all their copies (a copy scores as its
    picture does, within float16 rounding: within MARGIN). `drop`: a picture left out with its copies (a search
    for pictures like it)."""
    n = min(len(ix), 2 * k + 8)
    while True:
        hits = ranked(n)
        if drop is not None:
            hits = [(drop, 1.0)] + [h for h in hits if h[0] != drop]
        out = fold(ix, hits)[1 if drop is not None else 0:]
        if n >= len(ix) or len(out) >= k and hits[-1][1] < out[k - 1][1] - MARGIN:
            return out[:k]
        n = min(len(ix), 2 * n)


def fold(ix, hits) -> list[tuple[int, float, list[int]]]:
    """`hits` (best first) with each copy folded into the first hit it copies."""
    if not hits:
        return []
    vecs = np.stack([ix.vector(i) for i, _ in hits])
    near = vecs @ vecs.T >= SAME   # candidates; a copy also has its picture's thumbnail, byte for byte
    thumbs: dict[int, bytes] = {}

    def thumb(i):
        if i not in thumbs:
            thumbs[i] = ix.thumbnail(i)
        return thumbs[i]

    kept: list[tuple[int, float, list[int]]] = []
    at: list[int] = []   # each kept hit's position in `hits`
    for p, (i, s) in enumerate(hits):
        j = next((j for j, q in enumerate(at) if near[p, q] and thumb(i) and thumb(i) == thumb(hits[q][0])), None)
        if j is None:
            kept.append((i, s, []))
            at.append(p)
        else:
            kept[j][2].append(i)
    return kept
