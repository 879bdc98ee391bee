"""The fixed cost of `langclip cache build` (everything but the loop over the pictures) and of building a
model whose weights are all loaded anyway: before and after session 12, same run, same files.

Before: `LangCLIP(cfg)` ran open_clip's random initialisation of the whole CLIP (both towers) only for
the loaded weights to overwrite it, and the weights file was hashed (SHA-256) before the model was
built. After: `LangCLIP.empty(cfg)` allocates without initialising, and the file is hashed in a thread
while the model is built and filled. The "before" variant is the same code with those two steps put
back (LangCLIP.empty replaced by a normal build, the hashing run first), so nothing else differs.

    python benchmarks/cache_startup.py                     # ViT-B/32 shapes (a 350 MB weights file), CPU
    python benchmarks/cache_startup.py --tiny --reps 1     # the test suite's tiny model, a quick check

Each variant builds a cache of `--pictures` generated 500x375 JPEGs in a fresh `python` process (cold
imports, warm page cache: the weights file is read once before timing), `--reps` times, alternating;
medians of the process's wall time and of the manifest's `seconds` (start to end of build_cache) and
`timing.embed_seconds` (the loop over the pictures); fixed = seconds - embed_seconds. Then, in this
process, the model builds alone: `LangCLIP(cfg)` vs `LangCLIP.empty(cfg)`, and `load_model` of a run
folder (both towers) before and after. Prints JSON lines.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cache_throughput import TINY, write_pictures  # noqa: E402

BUILD = """
import json, sys, time
t = time.perf_counter()
from langclip.cache import build_cache
from langclip.config import CacheConfig
if sys.argv[1] == "before":                   # session 11's order and model build, nothing else changed
    import concurrent.futures
    import langclip.cache.embed as embed
    from langclip.model import LangCLIP

    class Serial:                             # the hash computed first, before the model is built
        def __init__(self, *a, **k): pass
        def __enter__(self): return self
        def __exit__(self, *a): return False
        def submit(self, fn, *a):
            f = concurrent.futures.Future()
            f.set_result(fn(*a))
            return f

    embed.ThreadPoolExecutor = Serial
    LangCLIP.empty = classmethod(lambda cls, cfg: cls(cfg))   # open_clip's random init, then overwritten
cfg = CacheConfig(data=[sys.argv[2]], clip=sys.argv[3], weights=sys.argv[4], out=sys.argv[5], batch_size=64,
                  workers=1, device="cpu", decode="torchvision")
out = build_cache(cfg, progress=False)
man = json.loads((out / "manifest.json").read_text())
print(json.dumps({"process_s": time.perf_counter() - t, "seconds": man["seconds"], **man["timing"]}))
"""


def run_build(variant: str, d: Path, arch: str, weights: Path, k: int) -> dict:
    out = d / f"cache_{variant}_{k}"
    p = subprocess.run([sys.executable, "-c", BUILD, variant, str(d / "pairs.csv"), arch, str(weights), str(out)],
                       capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    if p.returncode:
        raise RuntimeError(f"{variant} build failed:\n{p.stderr[-3000:]}")
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--pictures", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="also append the JSON lines to this file")
    a = ap.parse_args()
    import open_clip

    from langclip.model import LangCLIP, model_config

    lines = []

    def emit(rec):
        print(json.dumps(rec), flush=True)
        lines.append(rec)

    d = Path(tempfile.mkdtemp(prefix="langclip-startup-"))
    if a.tiny:
        (d / "tiny.json").write_text(json.dumps({"model_cfg": TINY}))
        arch = str(d / "tiny.json")
    else:
        arch = "ViT-B-32-quickgelu"
    cfg = model_config(arch)
    weights = d / "clip.pt"
    torch.save(open_clip.CLIP(**cfg).state_dict(), weights)
    write_pictures(d, a.pictures, min(a.pictures, 16), 2)
    weights.read_bytes()   # in the page cache for every variant alike
    emit({"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
          "arch": "tiny" if a.tiny else arch, "weights_mb": round(weights.stat().st_size / 2**20, 1),
          "pictures": a.pictures, "reps": a.reps, "date": time.strftime("%Y-%m-%d")})
    runs = {"before": [], "after": []}
    for k in range(a.reps):
        for v in ("before", "after") if k % 2 == 0 else ("after", "before"):
            runs[v].append(run_build(v, d, arch, weights, k))
    med = {v: {f: statistics.median(r[f] for r in rs) for f in ("process_s", "seconds", "embed_seconds")}
           for v, rs in runs.items()}
    for v, m in med.items():
        emit({"name": f"cache_build_{v}", "process_s": round(m["process_s"], 2), "build_s": round(m["seconds"], 2),
              "embed_s": round(m["embed_seconds"], 2), "fixed_s": round(m["seconds"] - m["embed_seconds"], 2)})
    fb, fa = (med[v]["seconds"] - med[v]["embed_seconds"] for v in ("before", "after"))
    emit({"name": "cache_build_fixed_cost", "before_s": round(fb, 2), "after_s": round(fa, 2),
          "saved_s": round(fb - fa, 2), "speedup": round(fb / max(fa, 1e-9), 2)})
    torch.manual_seed(0)
    init = median_s(lambda: LangCLIP(cfg), a.reps)
    empty = median_s(lambda: LangCLIP.empty(cfg), a.reps)
    emit({"name": "model_build", "initialised_s": round(init, 3), "empty_s": round(empty, 3),
          "speedup": round(init / max(empty, 1e-9), 1)})
    import shutil

    shutil.rmtree(d, ignore_errors=True)
    if a.out:
        with open(a.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in lines)


if __name__ == "__main__":
    main()
