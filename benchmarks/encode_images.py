"""`langclip encode --images`: pictures decoded and preprocessed in this process (`--workers 0`, how the
command worked until session 11) against worker processes (`--workers N`), same run, same pictures,
alternating, the median of `--reps` calls of `encode_cli` each.

    python benchmarks/encode_images.py                       # the tiny tower: decoding is the work
    python benchmarks/encode_images.py --arch ViT-B-32-quickgelu --images 256   # ViT-B/32 shapes

The pictures: photo-like 500x375 JPEGs of about 100 KB (cache_throughput.py's `photo`), `--distinct` of
them each written under several names. The model: a random CLIP of `--arch` saved in OpenAI's layout
and a `clip`-init student on it with a tokenizer of a few lines (the text side does not matter here).
Prints JSON lines; the embeddings of the two ways are compared too (they must be equal).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cache_throughput import TINY, write_pictures  # noqa: E402


def make_run(d: Path, arch: str) -> Path:
    import open_clip

    from langclip.build import build_student
    from langclip.config import TokenizerTrainConfig
    from langclip.runfolder import save_model_files
    from langclip.tokenizer.train import train_tokenizer

    torch.manual_seed(0)
    cfg = TINY if arch == "tiny" else open_clip.get_model_config(arch)
    (d / "arch.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(open_clip.CLIP(**cfg).state_dict(), d / "clip.pt")
    (d / "corpus.txt").write_text("две красные звезды\nсиний круг\nфото кота\n" * 50, encoding="utf-8")
    tok = train_tokenizer(TokenizerTrainConfig(lang="ru", corpus=[str(d / "corpus.txt")], wordfreq=False, merges=50,
                                               out=str(d / "tok")), progress=False)
    model, ref, info = build_student(str(d / "arch.json"), d / "clip.pt", tok, init="clip", context_length=32)
    return save_model_files(d / "run", model, tok, ref, {"init": info})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="tiny", help="tiny (benchmarks/tiny_clip.json) or an open_clip name")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--distinct", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="append the JSON lines to this file too")
    a = ap.parse_args()
    from langclip.encode import encode_cli, read_embeddings

    d = Path(tempfile.mkdtemp(prefix="langclip-encode-"))
    lines = []

    def emit(rec):
        print(json.dumps(rec), flush=True)
        lines.append(rec)

    try:
        kb = write_pictures(d, a.images, a.distinct, os.cpu_count() or 1) / 1024
        run = make_run(d, a.arch)
        emit({"bench": "encode_images", "machine": platform.machine(), "cores": os.cpu_count(),
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "arch": a.arch,
              "images": a.images, "picture": "500x375 JPEG", "mean_kb": round(kb, 1), "device": "cpu"})
        times = {w: [] for w in a.workers}
        for _ in range(a.reps):
            for w in a.workers:
                out = d / f"w{w}.npy"
                t = time.perf_counter()
                encode_cli(str(run), str(out), images=[str(d / "img")], device="cpu", workers=w, progress=False)
                times[w].append(time.perf_counter() - t)
        embs = {w: read_embeddings(d / f"w{w}.npy") for w in a.workers}
        base = a.workers[0]
        for w in a.workers:
            s = statistics.median(times[w])
            emit({"case": f"workers_{w}", "seconds_median": round(s, 2), "images_per_s": round(a.images / s, 1),
                  "speedup_vs_workers_%d" % base: round(statistics.median(times[base]) / s, 2),
                  "seconds_all": [round(x, 2) for x in times[w]],
                  "same_rows": embs[w][1] == embs[base][1],
                  "max_abs_diff_vs_workers_%d" % base: float(np.abs(embs[w][0] - embs[base][0]).max())})
        if a.out:
            with open(a.out, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in lines)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
