"""Image-embedding cache build throughput vs the bare image-tower forward on the same batch size.

    python benchmarks/cache_throughput.py [--images 8192] [--arch ViT-B-32-quickgelu] [--workers 16]
    python benchmarks/cache_throughput.py --arch tiny --images 256 --device cpu   # CPU mode

Writes random weights and generated JPEGs (320x240) to a temporary folder, builds the cache with
`langclip.cache.build_cache` (decoding in DataLoader workers), and compares images/s with the bare
forward pass on preprocessed tensors already on the device. Prints JSON lines.
"""
import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TINY = json.loads((Path(__file__).parent / "tiny_clip.json").read_text())  # the CPU-mode model, shared


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--arch", default="ViT-B-32-quickgelu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    a = ap.parse_args()
    import open_clip
    from PIL import Image

    from langclip.cache import build_cache
    from langclip.config import CacheConfig
    from langclip.build import load_image_tower
    from langclip.model import LangCLIP, model_config

    d = Path(tempfile.mkdtemp())
    arch = a.arch
    if arch == "tiny":
        (d / "tiny.json").write_text(json.dumps({"model_cfg": TINY}))
        arch = str(d / "tiny.json")
    cfg = model_config(arch)
    torch.save(open_clip.CLIP(**cfg).state_dict(), d / "w.pt")
    rng = np.random.default_rng(0)
    (d / "img").mkdir()
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i in range(a.images):
            base = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
            Image.fromarray(base).resize((320, 240)).save(d / "img" / f"{i}.jpg", quality=90)
            w.writerow([f"img/{i}.jpg", f"caption {i}"])
    print(json.dumps({"device": torch.cuda.get_device_name(0) if a.device == "cuda" else platform.machine(),
                      "cpus": os.cpu_count(), "workers": a.workers, "images": a.images, "arch": a.arch}), flush=True)
    m = LangCLIP(cfg)
    load_image_tower(m, d / "w.pt", arch)
    m.to(a.device).eval()
    S = cfg["vision_cfg"]["image_size"]
    x = torch.randn(a.batch, 3, S, S, device=a.device)
    amp = torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.device == "cuda")
    with torch.inference_mode(), amp:
        for _ in range(3):
            m.clip.visual(x)
        if a.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        reps = max(1, a.images // a.batch)
        for _ in range(reps):
            m.clip.visual(x)
        if a.device == "cuda":
            torch.cuda.synchronize()
        bare = reps * a.batch / (time.perf_counter() - t)
    print(json.dumps({"name": "bare_image_tower_forward", "images_per_s": round(bare)}), flush=True)
    t = time.perf_counter()
    build_cache(CacheConfig(data=[str(d / "pairs.csv")], clip=arch, weights=str(d / "w.pt"), out=str(d / "cache"),
                            batch_size=a.batch, workers=a.workers, shard_size=4096, device=a.device), progress=False)
    sec = time.perf_counter() - t
    man = json.loads((d / "cache" / "manifest.json").read_text())
    print(json.dumps({"name": "cache_build_end_to_end", "images_per_s": round(a.images / sec),
                      "seconds": round(sec, 1), "ratio_to_bare_forward": round(a.images / sec / bare, 3),
                      "failed": man["num_images_failed"],
                      "note": "includes reading the table, model load + SHA-256, JPEG decoding and resizing in workers"}), flush=True)


if __name__ == "__main__":
    main()
