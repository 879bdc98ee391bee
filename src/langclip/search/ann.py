"""The approximate part of a large index: faiss's inverted-file index (IVF, exact inner products within
the lists it visits), keyed by the index's stable ids. nlist ~ 4·sqrt(N); nprobe is stored with it
(benchmarks/search.py measures recall@10 against exact search)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("an index this large uses faiss for approximate search: pip install 'langclip[search]' "
                          "(faiss-cpu)") from None
    return faiss


def build_ann(emb: np.ndarray, ids: list[int], path: Path, nprobe: int) -> dict:
    faiss = _faiss()
    x = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = x.shape
    nlist = max(1, int(4 * np.sqrt(n)))
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = x[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
    ivf.train(sample)
    ivf.add_with_ids(x, np.asarray(ids, dtype=np.int64))
    faiss.write_index(ivf, str(path) + ".tmp")
    Path(str(path) + ".tmp").replace(path)
    return {"kind": "faiss-ivf-flat", "nlist": nlist, "nprobe": min(nprobe, nlist), "metric": "inner_product"}


def load_ann(path: Path, spec: dict):
    faiss = _faiss()
    ivf = faiss.read_index(str(path))
    ivf.nprobe = int(spec.get("nprobe", 32))
    return ivf
