"""Host memory of the image and teacher embeddings when several training processes load one cache
(torchrun's processes on one node), memory-mapped (`emb/normalized.npy`, `teacher/dense.npy`) vs read
from the shards (the way caches written before session 3 load), in the same run. One caption an image,
so images and teacher are 1 GiB each at the default 1M.

Each of N processes calls `load_cache`, gathers every image embedding once (as training does over an
epoch), and reports its proportional set size (PSS: shared pages divided among the processes that map
them) from /proc/self/smaps_rollup. Linux only.

    python benchmarks/cache_memory.py                       # 1M images (1 GiB of fp16), 4 processes
    python benchmarks/cache_memory.py --images 200000 --procs 2
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def pss_mib() -> float:
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(path: str, q, barrier) -> None:
    from langclip.cache import load_cache

    c = load_cache(path)
    s = 0.0
    for i in range(0, c.image_emb.shape[0], 65536):   # touch every row, as an epoch of training does
        s += float(c.image_emb[i: i + 65536].float().sum()) + float(c.teacher[i: i + 65536].float().sum())
    barrier.wait()                                      # all processes hold the cache now
    q.put(pss_mib())
    barrier.wait()


def measure(path: Path, procs: int) -> list[float]:
    ctx = mp.get_context("spawn")
    q, barrier = ctx.Queue(), ctx.Barrier(procs)
    ps = [ctx.Process(target=worker, args=(str(path), q, barrier)) for _ in range(procs)]
    for p in ps:
        p.start()
    out = [q.get() for _ in ps]
    for p in ps:
        p.join()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--procs", type=int, default=4)
    a = ap.parse_args()
    import open_clip

    from langclip.cache import write_normalized, write_teacher_dense
    from train_loop import TINY, write_cache

    tmp = Path(tempfile.mkdtemp(prefix="langclip-mem-"))
    cfg = dict(TINY, embed_dim=512)
    (tmp / "arch.json").write_text(json.dumps(cfg))
    torch.save(open_clip.CLIP(**cfg).state_dict(), tmp / "clip.pt")
    write_cache(tmp / "cache", str(tmp / "arch.json"), tmp / "clip.pt", a.images, 1, 512)
    gib = 2 * a.images * 512 * 2 / 2**30
    print(json.dumps({"machine": platform.machine(), "images": a.images, "embeddings_gib": round(gib, 2),
                      "processes": a.procs}), flush=True)
    base = measure(tmp / "cache", a.procs)                      # no normalized.npy yet: from the shards
    print(json.dumps({"name": "baseline_from_shards", "pss_mib_per_process": [round(x) for x in base],
                      "node_total_mib": round(sum(base))}), flush=True)
    man = json.loads((tmp / "cache" / "manifest.json").read_text())
    write_normalized(tmp / "cache", man["num_shards"], a.images, 512)
    write_teacher_dense(tmp / "cache", torch.ones(a.images, dtype=torch.bool))
    mm = measure(tmp / "cache", a.procs)
    print(json.dumps({"name": "langclip_memory_mapped", "pss_mib_per_process": [round(x) for x in mm],
                      "node_total_mib": round(sum(mm)), "saving": round(sum(base) / sum(mm), 2)}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
