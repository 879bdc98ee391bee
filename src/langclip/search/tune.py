"""`langclip index tune`: the approximate index's recall, measured on this collection with these queries,
and the smallest nprobe that reaches a target. recall@k is the share of exact search's top k that the
approximate search returns; how high it is at a given nprobe depends on how the collection's embeddings
cluster and where the queries fall (a text query sits across CLIP's modality gap from every picture),
so it is measured here rather than assumed. From the command line:

    langclip index tune idx/ --model runs/ru                      # shipped class names as queries
    langclip index tune idx/ --model runs/ru --queries queries.txt --target 0.98
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

QUERY_DATASETS = ("cifar100", "caltech101", "food101", "flowers102")   # their class names: generic text queries


def default_queries(lang: str) -> list[str]:
    """Typical short searches in `lang`: each shipped class name in the first shipped template's words
    ("фото кота"): a few hundred, in Russian or Ukrainian."""
    from ..datasets import shipped_classnames, shipped_templates
    from ..metrics import fill
    from ..morph import label_forms, template_forms

    tpl = shipped_templates(lang)[0]
    out = []
    for ds in QUERY_DATASETS:
        try:
            names = shipped_classnames(ds, lang)
        except ValueError:        # not every list is in every language
            continue
        for c in names:
            out.append(fill(tpl, c if isinstance(c, dict) else label_forms(c, lang, template_forms([tpl]))))
    return list(dict.fromkeys(out))


def query_vectors(idx, model: str | None, queries: list[str] | None, sample: int, **load) -> tuple[np.ndarray, str]:
    """(vectors, what they are): the texts encoded by `model`'s text tower; with a model and no texts, the
    default queries in its language; without a model, a sample of the collection's own pictures."""
    if model:
        from .query import QueryModel

        m = QueryModel(model, image=False, **load)
        m.check(idx)
        if not queries:
            lang = (getattr(m.tokenizer, "meta", {}) or {}).get("language") or "en"
            try:
                queries = default_queries(lang)
            except ValueError as e:
                raise ValueError(f"{e}: give your own queries with --queries FILE") from None
            what = f"{len(queries)} shipped class names as '{lang}' text queries"
        else:
            what = f"{len(queries)} text queries"
        return m.encode_text(queries), what
    if queries:
        raise ValueError("text queries need --model (the text tower that encodes them)")
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(idx), size=min(sample, len(idx)), replace=False))
    q = np.asarray(idx.embeddings[rows], dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True), (f"{len(rows)} of the collection's own pictures as queries "
                                                          f"(picture-to-picture; text queries usually score lower)")


def recall_table(idx, q: np.ndarray, k: int, target: float, timed: int = 200) -> list[dict]:
    """recall@k against exact search and one-query latency (median over `timed` queries) at nprobe
    1, 2, 4, ... up to the list count; stops once recall is 1, or one doubling after the target is met."""
    from .ann import load_ann

    exact = [{i for i, _ in hits} for hits in idx.search(q, k, exact=True)]
    ivf = load_ann(idx.path / "ann.faiss", idx.manifest["ann"])
    nlist, rows, nprobe = int(idx.manifest["ann"]["nlist"]), [], 1
    while True:
        ivf.nprobe = min(nprobe, nlist)
        _, ids = ivf.search(q, k)
        recall = float(np.mean([len(e & set(r[r >= 0].tolist())) / max(1, len(e)) for e, r in zip(exact, ids)]))
        times = []
        for x in q[:timed]:
            t = time.perf_counter()
            ivf.search(x[None], k)
            times.append(time.perf_counter() - t)
        rows.append({"nprobe": ivf.nprobe, f"recall@{k}": round(recall, 4), "ms_p50": round(1e3 * float(np.median(times)), 3)})
        met = [r for r in rows if r[f"recall@{k}"] >= target]
        if recall >= 1.0 or ivf.nprobe >= nlist or (met and rows[-1] is not met[0]):
            return rows
        nprobe *= 2


def tune_index(index: str | Path, model: str | None = None, queries: list[str] | None = None, k: int = 10,
               target: float = 0.95, write: bool = True, sample: int = 1000, **load) -> dict:
    """Measure recall@k of the index's approximate search per nprobe and store the smallest nprobe that
    reaches `target` (the largest measured, with a warning, where none does). -> the result, also kept in
    the manifest as ann.tuned."""
    from ..files import atomic_write_text
    from .index import Index

    if not 0 < target <= 1 or k < 1:
        raise ValueError(f"--target must be in (0, 1] and -k >= 1, got {target} and {k}")
    idx = Index(index)
    if not idx.manifest.get("ann"):
        raise ValueError(f"{idx.path}: {len(idx):,} pictures, searched exactly (approximate search starts at "
                         f"ann_threshold = {idx.manifest.get('config', {}).get('ann_threshold')} pictures): nothing to tune")
    q, what = query_vectors(idx, model, queries, sample, **load)
    k = min(k, len(idx))
    rows = recall_table(idx, q, k, target)
    met = [r for r in rows if r[f"recall@{k}"] >= target]
    best = met[0] if met else rows[-1]
    res = {"queries": what, "k": k, "target": target, "nprobe": best["nprobe"], f"recall@{k}": best[f"recall@{k}"],
           "ms_p50": best["ms_p50"], "previous_nprobe": int(idx.manifest["ann"]["nprobe"]), "table": rows,
           "reached": bool(met), "written": write, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for r in rows:
        print(f"  nprobe {r['nprobe']:>5}  recall@{k} {r[f'recall@{k}']:.4f}  {r['ms_p50']:8.3f} ms a query")
    print(f"{what}: nprobe {best['nprobe']} gives recall@{k} {best[f'recall@{k}']:.4f}"
          + ("" if met else f", below the target {target} (the most measured)")
          + (f"; stored in {idx.path / 'manifest.json'}" if write else " (not stored: --dry-run)"))
    if write:
        man = idx.manifest
        man["ann"] = dict(man["ann"], nprobe=best["nprobe"], tuned=res)
        man.setdefault("config", {})["ann_nprobe"] = best["nprobe"]       # index update keeps it
        atomic_write_text(idx.path / "manifest.json", json.dumps(man, indent=1, ensure_ascii=False))
    idx.close()
    return res
