"""`langclip search` from a cold process, as a user runs it from a shell: wall time and peak memory of
one text query as the command runs it now (since session 12: the run's text tower alone, built without
importing open_clip), against the same query through open_clip's model classes (sessions 7-11: the text
tower alone) and with both towers loaded (before session 7: `QueryModel(image=True)`), and a query by
picture (which needs both), same run, same files; plus the bare imports of either path.

    python benchmarks/search_cold_start.py                 # ViT-B/32 shapes, CLIP's BPE + 32k Russian merges
    python benchmarks/search_cold_start.py --tiny          # the test suite's tiny model, for a quick check

The model: a ViT-B/32-quickgelu-shaped CLIP with random weights saved in OpenAI's layout (float16, as
OpenAI ships it) and a `clip`-init student run on it with a wordfreq tokenizer (`--merges`, 32,000 by
default: the recipe's vocabulary of 81,408 ids). The index: `--pictures` generated JPEGs (its size does
not matter here: a text query over a small index is all model loading). Each variant runs `--reps`
times in a fresh `python` process; the medians are reported, with the peak resident memory of the
process (`ru_maxrss` from wait4). Prints JSON lines.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TINY = json.loads((Path(__file__).parent / "tiny_clip.json").read_text())

THROUGH_OPEN_CLIP = """
import runpy, sys
import langclip.runfolder
langclip.runfolder.text_only_clip = lambda cfg: None   # the text tower alone, through open_clip (sessions 7-11)
sys.argv = ["langclip", "search", "--index", sys.argv[1], "--model", sys.argv[2], sys.argv[3]]
runpy.run_module("langclip", run_name="__main__")
"""

BEFORE = """
import sys
from langclip.search.index import Index
from langclip.search.query import QueryModel
idx = Index(sys.argv[1])
m = QueryModel(sys.argv[2], image=True)   # both towers, as `langclip search` loaded them before
m.check(idx)
hits = idx.search(m.encode_text([sys.argv[3]])[0], 10)[0]
print("\\n".join(f"{n:>3}  {s:.4f}  {idx.source(i)}" for n, (i, s) in enumerate(hits, 1)))
"""


def timed_rusage(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one fresh process, reaped with wait4 so that its own peak
    is read (not the largest of every child so far)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return wall, ru.ru_maxrss / 1024, out


def make_world(d: Path, tiny: bool, merges: int, pictures: int) -> tuple[Path, Path, Path]:
    """(run folder, index folder, a picture) on a random CLIP in OpenAI's layout."""
    import open_clip
    import torch
    from PIL import Image

    from langclip.build import build_student
    from langclip.config import TokenizerTrainConfig
    from langclip.runfolder import save_model_files
    from langclip.tokenizer.train import train_tokenizer

    torch.manual_seed(0)
    arch = d / "arch.json"
    arch.write_text(json.dumps({"model_cfg": TINY if tiny else open_clip.get_model_config("ViT-B-32-quickgelu")}))
    clip = open_clip.CLIP(**json.loads(arch.read_text())["model_cfg"])
    torch.save({k: v.half() for k, v in clip.state_dict().items()}, d / "ViT-B-32.pt")   # OpenAI ships fp16
    del clip
    tok = train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, merges=merges, out=str(d / "tok")), progress=False)
    model, ref, info = build_student(str(arch), d / "ViT-B-32.pt", tok, init="clip", context_length=32)
    run = save_model_files(d / "run", model, tok, ref, {"init": info})
    del model
    rng = np.random.default_rng(0)
    (d / "photos").mkdir()
    for i in range(pictures):
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(d / "photos" / f"{i:03d}.jpg")
    from langclip.config import IndexConfig
    from langclip.search.index import build_index

    idx = build_index(IndexConfig(data=[str(d / "photos")], out=str(d / "idx"), model=str(run), workers=0), progress=False)
    return run, idx, d / "photos" / "000.jpg"


def setup(d: Path, tiny: bool, merges: int, pictures: int) -> None:
    """`--setup DIR`, in a process of its own, so that the measuring process stays small (a child's peak
    resident memory counts what it inherited at fork)."""
    import torch

    t = time.perf_counter()
    run, idx, pic = make_world(d, tiny, merges, pictures)
    vocab = json.loads((run / "model.json").read_text())["model_cfg"]["text_cfg"]["vocab_size"]
    print(json.dumps({"machine": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                      "python": platform.python_version(), "model": "tiny" if tiny else "ViT-B-32-quickgelu",
                      "vocab_size": vocab, "clip_file_mib": round((d / "ViT-B-32.pt").stat().st_size / 2**20, 1),
                      "setup_s": round(time.perf_counter() - t, 1)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--merges", type=int, default=32000)
    ap.add_argument("--pictures", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--setup", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.setup:
        return setup(Path(a.setup), a.tiny, 200 if a.tiny else a.merges, a.pictures)
    d = Path(tempfile.mkdtemp(prefix="langclip-cold-"))
    try:
        made = subprocess.run([sys.executable, __file__, "--setup", str(d), "--merges", str(a.merges),
                               "--pictures", str(a.pictures)] + (["--tiny"] if a.tiny else []),
                              stdout=subprocess.PIPE, text=True, check=True)
        print(made.stdout.strip().splitlines()[-1], flush=True)
        run, idx, pic = d / "run", d / "idx", d / "photos" / "000.jpg"
        query = "две красные звезды"
        cli = [sys.executable, "-m", "langclip", "search", "--index", str(idx), "--model", str(run)]
        variants = {"text_query_text_tower_only": cli + [query],
                    "text_query_through_open_clip": [sys.executable, "-c", THROUGH_OPEN_CLIP, str(idx), str(run), query],
                    "text_query_both_towers_before": [sys.executable, "-c", BEFORE, str(idx), str(run), query],
                    "picture_query": cli + ["--image", str(pic)],
                    "python_imports_only": [sys.executable, "-c", "import langclip.cli, open_clip, torch"],
                    "python_imports_text_path": [sys.executable, "-c", "import langclip.cli, torch"]}
        outs, rows = {}, {}
        for _ in range(a.reps):          # interleaved, so that a slow moment of the machine hits every variant
            for name, cmd in variants.items():
                wall, rss, out = timed_rusage(cmd)
                rows.setdefault(name, []).append((wall, rss))
                outs[name] = out
        assert outs["text_query_text_tower_only"] == outs["text_query_both_towers_before"] \
            == outs["text_query_through_open_clip"], "the answers differ"
        for name, r in rows.items():
            print(json.dumps({"name": name, "wall_s_median": round(statistics.median(x[0] for x in r), 2),
                              "wall_s": [round(x[0], 2) for x in r],
                              "peak_rss_mib_median": round(statistics.median(x[1] for x in r)), "reps": a.reps}),
                  flush=True)
        med = {k: (statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)) for k, r in rows.items()}
        new = med["text_query_text_tower_only"]
        for before in ("text_query_through_open_clip", "text_query_both_towers_before"):
            old = med[before]
            print(json.dumps({"name": f"text_query_vs_{before[11:]}", "wall_ratio": round(old[0] / new[0], 2),
                              "seconds_saved": round(old[0] - new[0], 2), "rss_mib_saved": round(old[1] - new[1]),
                              "same_answer": True}), flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
