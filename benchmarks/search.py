"""Search benchmark, all on this machine's CPU in one run (`python benchmarks/search.py --demo DIR`):

1. query latency end to end (the student encodes a Russian query, then top-10) at 10k, 100k and 1M
   pictures: langclip's `Index.search` exact and approximate (faiss IVF), against an rclip-style baseline
   (a numpy product with every embedding, then a full sort) on the same vectors and queries;
   recall@10 of the approximate search against exact;
2. memory per picture (resident growth when an index is loaded and queried);
3. `index build` on 10,000 generated pictures on disk, then `index update` after 100 new ones (with
   `--build-arch ViT-B-32-quickgelu`: a real-sized image tower with random weights, for the timing);
4. `langclip serve`'s app under load on loopback: 16 concurrent clients, 25 queries each;
5. `index tune` on the largest size: recall@10 per nprobe for the student's Russian text queries and for
   picture-to-picture queries (the index's own pictures), and the nprobe each needs for 0.95.

The vectors are real model outputs, not random: the demo's English teacher CLIP (its frozen image tower,
64-d) embeds `--pictures` freshly rendered pictures of the demo world (cached in --vectors); the
queries are encoded by the demo's `clip`-init Russian student. Prints JSON lines.
"""
import argparse
import json
import os
import random
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vectors(demo: Path, n: int, cache: Path) -> np.ndarray:
    """Teacher embeddings of n rendered demo-world pictures (float16, normalised), cached on disk."""
    if cache.is_file():
        v = np.load(cache, mmap_mode="r")
        if len(v) >= n:
            return np.asarray(v[:n])
    from langclip.demo.world import render, sample_scenes
    from langclip.model import LangCLIP, model_config, preprocess_cfg
    from langclip.weights import load_state_dict

    arch = str(demo / "teacher" / "arch.json")
    m = LangCLIP(model_config(arch))
    m.clip.load_state_dict(load_state_dict(next((demo / "teacher").glob("*.pt"))))
    m.eval()
    pp = preprocess_cfg(m)      # the pictures are rendered at the tower's size: only scaling and normalising
    mean, std = torch.tensor(pp["mean"]).view(1, 3, 1, 1), torch.tensor(pp["std"]).view(1, 3, 1, 1)
    out = np.zeros((n, m.clip.visual.output_dim), np.float16)
    from multiprocessing import Pool

    t = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        for s in range(0, n, 8192):
            scenes = sample_scenes(min(8192, n - s), seed=10_000 + s)
            arr = np.stack(pool.map(render, scenes, chunksize=256))
            x = (torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255 - mean) / std
            with torch.no_grad():
                out[s: s + len(x)] = torch.nn.functional.normalize(m.encode_image(x), dim=-1).numpy()
    print(json.dumps({"name": "vectors", "pictures": n, "dim": int(out.shape[1]),
                      "seconds": round(time.perf_counter() - t, 1)}), flush=True)
    np.save(cache, out)
    return out


def index_dir(v: np.ndarray, path: Path, ann: bool, nprobe: int) -> Path:
    """An index folder over precomputed vectors (the files `index build` writes, minus thumbnails)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from langclip.search.ann import build_ann
    from langclip.search.index import INDEX_FORMAT

    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "embeddings.npy", v)
    n = len(v)
    pq.write_table(pa.table({"id": np.arange(n), "source": [f"pic{i}.png" for i in range(n)]}), path / "items.parquet")
    spec = build_ann(v, list(range(n)), path / "ann.faiss", nprobe) if ann else None
    (path / "manifest.json").write_text(json.dumps({"format": INDEX_FORMAT, "dim": int(v.shape[1]), "count": n,
                                                    "ann": spec, "tower_sha256": ""}))
    return path


def queries(k: int = 200) -> list[str]:
    from langclip.demo.world import COLOURS, SHAPES, captions

    rng = random.Random(0)
    return [captions(rng.randint(1, 4), rng.choice(list(COLOURS)), rng.choice(SHAPES), None, rng)[1][0] for _ in range(k)]


def tune(demo: Path, all_v: np.ndarray, n: int, tmp: Path):
    from langclip.search.tune import tune_index

    d = index_dir(np.ascontiguousarray(all_v[:n]), tmp / f"tune{n}", True, 32)
    for label, kw in (("text", {"model": str(demo / "runs" / "clip"), "queries": queries(), "device": "cpu"}),
                      ("picture", {})):
        r = tune_index(d, target=0.95, write=False, **kw)
        print(json.dumps({"name": f"tune_{label}_queries", "pictures": n, "queries": r["queries"], "target": 0.95,
                          "nprobe": r["nprobe"], "recall@10": r["recall@10"], "ms_p50": r["ms_p50"],
                          "nlist": json.loads((d / "manifest.json").read_text())["ann"]["nlist"], "table": r["table"]}),
              flush=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def latency(demo: Path, all_v: np.ndarray, sizes, tmp: Path, nprobe: int):
    from langclip.search import Index, QueryModel

    model = QueryModel(demo / "runs" / "clip", device="cpu")
    qs = queries()
    for n in sizes:
        v = np.ascontiguousarray(all_v[:n])
        for mode in ("exact", "approximate"):
            if mode == "approximate" and n < 100_000:
                continue
            r0 = rss_mib()
            idx = Index(index_dir(v, tmp / f"{mode}{n}", mode == "approximate", nprobe))
            times, res = [], []
            for q in qs:
                t = time.perf_counter()
                vec = model.encode_text([q])[0]
                res.append(idx.search(vec, 10, exact=mode == "exact")[0])
                times.append(time.perf_counter() - t)
            row = {"name": f"query_{mode}", "pictures": n, "p50_ms": round(pct(times, 50) * 1e3, 2),
                   "p95_ms": round(pct(times, 95) * 1e3, 2), "rss_growth_mib": round(rss_mib() - r0, 1),
                   "bytes_per_picture_ram": round((rss_mib() - r0) * 2**20 / n, 1)}
            if mode == "approximate":
                exact = Index(tmp / f"exact{n}") if (tmp / f"exact{n}").exists() else idx
                qv = model.encode_text(qs)
                ex = exact.search(qv, 10, exact=True)
                row["recall@10_vs_exact"] = round(float(np.mean([len({i for i, _ in a} & {i for i, _ in b}) / 10
                                                                 for a, b in zip(res, ex)])), 4)
                row.update(nlist=idx.manifest["ann"]["nlist"], nprobe=idx.manifest["ann"]["nprobe"])
            print(json.dumps(row), flush=True)
            del idx
        # the rclip-style baseline: every similarity in numpy, then a full sort
        f32 = v.astype(np.float32)
        times = []
        for q in qs[:50]:
            t = time.perf_counter()
            vec = model.encode_text([q])[0]
            s = f32 @ vec
            order = np.argsort(-s)[:10]
            times.append(time.perf_counter() - t)
        print(json.dumps({"name": "query_baseline_numpy_full_sort", "pictures": n,
                          "p50_ms": round(pct(times, 50) * 1e3, 2), "p95_ms": round(pct(times, 95) * 1e3, 2),
                          "top1": int(order[0])}), flush=True)
        del f32


def build_update(demo: Path, tmp: Path, n: int, add: int, arch_name: str = ""):
    from PIL import Image

    from langclip.config import IndexConfig
    from langclip.demo.world import render, sample_scenes
    from langclip.search import build_index, update_index

    d = tmp / "photos"
    d.mkdir()
    for i, sc in enumerate(sample_scenes(n, seed=77)):
        Image.fromarray(render(sc)).save(d / f"{i:06d}.png")
    arch, w = str(demo / "teacher" / "arch.json"), str(next((demo / "teacher").glob("*.pt")))
    if arch_name:          # a real-sized tower (random weights: the throughput, not the search, is measured)
        import open_clip

        arch, w = arch_name, str(tmp / "tower.pt")
        torch.save(open_clip.create_model(arch_name).state_dict(), w)
    t = time.perf_counter()
    build_index(IndexConfig(data=[str(d)], out=str(tmp / "idx"), clip=arch, weights=w, thumb_size=128), progress=False)
    full = time.perf_counter() - t
    for i, sc in enumerate(sample_scenes(add, seed=78)):
        Image.fromarray(render(sc)).save(d / f"new{i:04d}.png")
    t = time.perf_counter()
    r = update_index(tmp / "idx", progress=False)
    upd = time.perf_counter() - t
    print(json.dumps({"name": "index_build", "tower": arch_name or "demo teacher (64 px, 2 layers)", "pictures": n,
                      "seconds": round(full, 2), "pictures_per_s": round(n / full)}))
    print(json.dumps({"name": "index_update", "added": r["added"], "embedded": r["embedded"], "seconds": round(upd, 2),
                      "fraction_of_full_build": round(upd / full, 4),
                      "disk_bytes_per_picture": round(sum(f.stat().st_size for f in (tmp / "idx").iterdir()
                                                          if f.is_file()) / (n + add), 1)}), flush=True)
    return tmp / "idx"


def load_test(demo: Path, index: Path, clients: int, per_client: int):
    import httpx
    import uvicorn

    from langclip.search import Index, QueryModel
    from langclip.search.server import create_app

    app = create_app(Index(index), QueryModel(demo / "runs" / "clip", device="cpu"))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=8931, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        time.sleep(0.05)
    qs = queries(clients * per_client)
    lat, errors = [], []
    with httpx.Client() as c:   # warm-up
        c.get("http://127.0.0.1:8931/api/search", params={"q": qs[0], "k": 24})
    r0 = rss_mib()

    def client(j):
        with httpx.Client(timeout=30) as c:
            for q in qs[j * per_client: (j + 1) * per_client]:
                t = time.perf_counter()
                r = c.get("http://127.0.0.1:8931/api/search", params={"q": q, "k": 24})
                lat.append(time.perf_counter() - t)
                if r.status_code != 200 or len(r.json()["results"]) != 24:
                    errors.append(r.status_code)

    rss = []
    ths = [threading.Thread(target=client, args=(j,)) for j in range(clients)]
    t = time.perf_counter()
    for x in ths:
        x.start()
    while any(x.is_alive() for x in ths):
        rss.append(rss_mib())
        time.sleep(0.2)
    wall = time.perf_counter() - t
    srv.should_exit = True
    print(json.dumps({"name": "server_load", "clients": clients, "queries": len(lat), "errors": len(errors),
                      "p50_ms": round(pct(lat, 50) * 1e3, 1), "p99_ms": round(pct(lat, 99) * 1e3, 1),
                      "queries_per_s": round(len(lat) / wall, 1), "rss_mib_before": round(r0, 1),
                      "rss_mib_max": round(max(rss + [r0]), 1), "rss_mib_after": round(rss_mib(), 1)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, help="a `langclip demo` folder (teacher, students)")
    ap.add_argument("--pictures", type=int, default=1_000_000)
    ap.add_argument("--vectors", default="/tmp/langclip-search-vectors.npy")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--build", type=int, default=10_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["latency", "build", "load", "tune"])
    ap.add_argument("--build-arch", default="", help="build/update with this open_clip tower (random weights), "
                                                     "e.g. ViT-B-32-quickgelu, instead of the demo teacher")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    demo = Path(a.demo)
    print(json.dumps({"machine": os.uname().machine, "cores": os.cpu_count(), "torch": torch.__version__}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="langclip-search-bench-"))
    if "latency" not in a.skip:
        v = vectors(demo, a.pictures, Path(a.vectors))
        sizes = [n for n in (10_000, 100_000, 1_000_000) if n <= a.pictures]
        latency(demo, v, sizes, tmp, a.nprobe)
    if "tune" not in a.skip:
        v = vectors(demo, a.pictures, Path(a.vectors))
        tune(demo, v, max(n for n in (10_000, 100_000, 1_000_000) if n <= a.pictures), tmp)
    idx = build_update(demo, tmp, a.build, 100, a.build_arch) if "build" not in a.skip else None
    if "load" not in a.skip and idx is not None:
        load_test(demo, idx, 16, 25)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
