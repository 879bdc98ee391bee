"""Two costs session 33 added to search, each against its baseline in the same run:

1. Listing a photo folder: `folders.files_under` (which enters linked folders, each real folder once, and shows
   a count on a slow share) against the bare `os.walk` listing it replaced, on a generated tree of `--folders`
   folders of `--files` empty .jpg files each (the page cache warm: the Python work, not the disk).
2. Each picture once: `search.copies.distinct` (hits asked until k distinct pictures are known with their copies)
   against the bare top-k search, on `--pictures` random 512-d unit vectors in an in-memory index with exact
   search (NumPy, float32 as Index.search), 1% of them copies of another (equal vectors and thumbnails), at k = 10 and 100.

    python benchmarks/search_listing.py > benchmarks/results/cpu_search_listing.jsonl

Prints JSON lines: the machine, then one line per measurement (median of `--repeats`), with the ratio.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class MemoryIndex:
    """What copies.distinct reads of an Index: len, vector(id), thumbnail(id), and an exact search."""

    def __init__(self, n: int, dim: int = 512, copies: float = 0.01, seed: int = 0):
        rng = np.random.default_rng(seed)
        v = rng.standard_normal((n, dim)).astype(np.float32)
        self.thumbs = [i.to_bytes(4, "little") for i in range(n)]
        for i in rng.choice(n, int(n * copies), replace=False):   # a copy of another picture
            j = int(rng.integers(n))
            v[i], self.thumbs[i] = v[j], self.thumbs[j]
        self.emb = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16)
        self.f32 = self.emb.astype(np.float32)   # as Index.search's exact search keeps them

    def __len__(self):
        return len(self.emb)

    def vector(self, i):
        return self.emb[i].astype(np.float32)

    def thumbnail(self, i):
        return self.thumbs[i]

    def search(self, q, k):
        s = self.f32 @ np.asarray(q, dtype=np.float32)
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top])]
        return [[(int(i), float(s[i])) for i in top]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folders", type=int, default=2000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--pictures", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    from langclip.folders import files_under
    from langclip.search.copies import distinct

    print(json.dumps({"machine": platform.machine(), "cpu": platform.processor() or platform.machine(),
                      "cores": os.cpu_count(), "python": platform.python_version()}))
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.folders):
            f = os.path.join(d, f"{i // 100:03d}", f"{i:05d}")
            os.makedirs(f)
            for j in range(a.files):
                open(os.path.join(f, f"{j}.jpg"), "w").close()
        bare = lambda: sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.endswith(".jpg"))  # noqa: E731
        assert files_under(d, (".jpg",)) == bare()
        t_new, t_old = median_time(lambda: files_under(d, (".jpg",)), a.repeats), median_time(bare, a.repeats)
        print(json.dumps({"what": "list a photo folder", "files": a.folders * a.files, "folders": a.folders,
                          "files_under_s": round(t_new, 4), "os_walk_s": round(t_old, 4),
                          "ratio": round(t_new / t_old, 2)}))
    ix = MemoryIndex(a.pictures)
    rng = np.random.default_rng(1)
    queries = [ix.vector(int(i)) + 0.5 * rng.standard_normal(512).astype(np.float32) for i in rng.integers(0, len(ix), 20)]
    queries = [q / np.linalg.norm(q) for q in queries]
    for k in (10, 100):
        t_new = median_time(lambda: [distinct(ix, lambda n, q=q: ix.search(q, n)[0], k) for q in queries], a.repeats)
        t_old = median_time(lambda: [ix.search(q, k) for q in queries], a.repeats)
        folded = sum(len(c) for q in queries for _, _, c in distinct(ix, lambda n, q=q: ix.search(q, n)[0], k))
        print(json.dumps({"what": "each picture once", "pictures": a.pictures, "k": k, "queries": len(queries),
                          "distinct_ms_per_query": round(1e3 * t_new / len(queries), 3),
                          "search_ms_per_query": round(1e3 * t_old / len(queries), 3),
                          "ratio": round(t_new / t_old, 2), "copies_folded": folded}))


if __name__ == "__main__":
    main()
