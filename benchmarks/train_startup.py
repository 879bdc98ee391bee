"""A training run's start on a large cache: reading the captions and tokenizing them, as every process of
a run did before session 9 (all caption strings read, every caption and English caption tokenized in
each process, at each start and resume), against langclip's token tables kept beside the cache
(train/tokens.py): the first run tokenizes once and keeps the ids; later runs and resumes memory-map
them and read no caption strings. Each case runs in a fresh process; wall time and peak RSS of the
process (its captions, ids and Python objects; the image embeddings are memory-mapped in all cases).

    python benchmarks/train_startup.py                          # 740k images x 5 captions = 3.7M
    python benchmarks/train_startup.py --images 20000 --merges 300    # a quick check
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def peak_rss_mib() -> int:
    """VmHWM: this process's peak resident memory (getrusage's ru_maxrss keeps the parent's peak across
    fork + exec on Linux, so it would report the benchmark driver's)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return -1


def case(name: str, cache: str, tok: str, ctx: int, out: str) -> None:
    """One start, in this (fresh) process: what `_load_data` + `_tokenize` do, English replay on."""
    import torch

    from langclip.cache import load_cache
    from langclip.tokenizer import Tokenizer
    from langclip.train.batches import TokenTable
    from langclip.train.tokens import caption_tables

    t0 = time.perf_counter()
    tk = Tokenizer.load(tok)
    t = time.perf_counter()
    if name == "baseline_strings_tokenized_each_start":
        data = load_cache(cache)
        tabs = {"caption": TokenTable.encode(tk, data.captions, ctx),
                "caption_en": TokenTable.encode(tk, [e or "" for e in data.captions_en], ctx)}
        data.captions = data.captions_en = None
    else:
        data = load_cache(cache, texts=False)
        tabs = caption_tables(cache, out, data, tk, ctx, None, ["caption", "caption_en"])
    n = sum(len(x) for x in tabs.values())
    checksum = int(sum(int(x.lengths.long().sum()) for x in tabs.values()))
    g = torch.Generator().manual_seed(0)
    b = tabs["caption"].batch(torch.randint(0, len(tabs["caption"]), (1024,), generator=g))
    print(json.dumps({"name": name, "seconds": round(time.perf_counter() - t, 2),
                      "seconds_with_tokenizer_load": round(time.perf_counter() - t0, 2),
                      "peak_rss_mib": peak_rss_mib(),
                      "tables_rows": n, "ids_checksum": checksum, "batch_shape": list(b.shape)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=740_000)
    ap.add_argument("--per-image", type=int, default=5)
    ap.add_argument("--merges", type=int, default=32000)
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        return case(a.case[0], a.case[1], a.case[2], a.context, a.case[3])
    import open_clip
    import torch

    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer.train import train_tokenizer
    from train_loop import TINY, write_cache

    tmp = Path(tempfile.mkdtemp(prefix="langclip-startup-"))
    (tmp / "arch.json").write_text(json.dumps(TINY))
    torch.save(open_clip.CLIP(**TINY).state_dict(), tmp / "clip.pt")
    t = time.perf_counter()
    write_cache(tmp / "cache", str(tmp / "arch.json"), tmp / "clip.pt", a.images, a.per_image, TINY["embed_dim"])
    train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, merges=a.merges, out=str(tmp / "tok")), progress=False)
    print(json.dumps({"machine": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                      "images": a.images, "captions": a.images * a.per_image, "context": a.context,
                      "merges": a.merges, "setup_seconds": round(time.perf_counter() - t, 1)}), flush=True)
    rows = []
    for name in ("baseline_strings_tokenized_each_start", "langclip_first_run_tokenizes_and_keeps",
                 "langclip_later_run_maps_kept_ids"):
        r = subprocess.run([sys.executable, __file__, "--context", str(a.context), "--case", name,
                            str(tmp / "cache"), str(tmp / "tok"), str(tmp / "run")],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base, later = rows[0], rows[2]
    assert len({r["ids_checksum"] for r in rows}) == 1, "the three starts gave different ids"
    print(json.dumps({"name": "summary", "later_run_speedup": round(base["seconds"] / max(later["seconds"], 1e-3), 1),
                      "later_run_rss_saving_mib": base["peak_rss_mib"] - later["peak_rss_mib"],
                      "kept_on_disk_mib": round(sum(f.stat().st_size for f in (tmp / "cache" / "tokens").rglob("*")
                                                    if f.is_file()) / 2**20)}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
