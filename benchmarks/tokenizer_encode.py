"""Batch encoding throughput of distinct sentences against open_clip's SimpleTokenizer, this tree's langclip
vs an older revision's (a `git worktree` of it), on the languages whose encoding was below the 10x target
before session 31 (Bengali, Tamil, Hindi, Chinese, Japanese, Persian) and on Russian and English.

Texts and measurement as in tokenizer_bench.py: 20,000 distinct texts of 3-12 wordfreq words drawn uniformly
from the top 30k (`uniform`, the worst case for memoisation) or by frequency (`zipf`), joined with spaces, or
3-10 words by frequency written as the language writes them (`running`: Chinese and Japanese without spaces);
fresh tokenizer objects for every measurement, one thread, SimpleTokenizer and langclip alternately, the
median of the repeats. One tokenizer per language (`tokenizer train --lang L --wordfreq`, 32,000 merges) is
trained once and read by both trees (the file format is the same); English texts go through the Russian one.
Each (tree, language) runs in a fresh process with that tree's langclip first on the path; the trees
alternate, so both see the same machine load. Each line: the tree, language, kind, both rates and the ratio.

    python benchmarks/tokenizer_encode.py --old 0b3a1c4 > benchmarks/results/cpu_tokenizer_encode.jsonl
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

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("uniform", "zipf", "running")


def worker(tok_dir: str, langs: list[str], n: int, repeats: int) -> None:
    """Measure this process's langclip (the first on sys.path) on each language's texts; JSON lines out."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from open_clip.tokenizer import SimpleTokenizer
    from tokenizer_bench import encode_rates, sentences

    import langclip
    from langclip.tokenizer import Tokenizer

    for lang in langs:
        warm = sentences(lang, n, seed=1)   # imports and compiled patterns, outside the timing
        Tokenizer.load(tok_dir)(warm), SimpleTokenizer()(warm[:1000])
        for kind in KINDS:
            print(json.dumps({"langclip": str(Path(langclip.__file__).resolve()), "lang": lang, "kind": kind,
                              **encode_rates(sentences(lang, n, kind=kind), tok_dir, repeats)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", nargs="+", default=["bn", "ta", "hi", "zh", "ja", "fa", "ru"])
    ap.add_argument("--old", help="the revision to compare with (none: this tree alone)")
    ap.add_argument("--sentences", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tok-dir", help="where the tokenizers are kept (default: a temporary folder)")
    ap.add_argument("--worker", nargs=2, metavar=("TOKENIZER_DIR", "LANG"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        tok_dir, lang = a.worker
        worker(tok_dir, [lang, "en"] if lang == "ru" else [lang], a.sentences, a.repeats)
        return
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "python": platform.python_version(), "tree": rev, "old": a.old}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="tokenizer_encode_"))
    toks = Path(a.tok_dir) if a.tok_dir else tmp / "tok"
    old = tmp / "old"
    if a.old:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), a.old], check=True)
    try:
        from langclip.config import TokenizerTrainConfig
        from langclip.tokenizer.train import train_tokenizer

        for lang in a.langs:
            if not (toks / lang / "tokenizer.json").is_file():
                train_tokenizer(TokenizerTrainConfig(lang=lang, wordfreq=True, merges=32000, out=str(toks / lang)),
                                progress=False)
            for tree in ([ROOT, old] if a.old else [ROOT]):
                env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tree / "src"))
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(toks / lang), lang,
                                      "--sentences", str(a.sentences), "--repeats", str(a.repeats)],
                                     env=env, capture_output=True, text=True, check=True).stdout
                for line in out.splitlines():
                    row = json.loads(line)
                    assert Path(row["langclip"]).is_relative_to(tree.resolve()), (row["langclip"], tree)  # whose code ran
                    row["langclip"] = rev if tree == ROOT else a.old
                    print(json.dumps(row), flush=True)
    finally:
        if a.old:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
