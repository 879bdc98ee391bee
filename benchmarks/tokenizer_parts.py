"""Where encoding time goes for the languages below the 10x target (tokenizer_bench.py: Bengali, Tamil, Hindi,
Chinese, Japanese), per text, one thread, median of 5, same run:
- `cold`: a fresh tokenizer (every chunk new), as tokenizer_bench.py measures;
- `warm`: the same texts again (every chunk memoised): what is left besides new chunks' BPE;
- `nfc_check`: `unicodedata.is_normalized("NFC", text)` alone, which the cleaning fast path ran on every
  non-ASCII text until session 31 (scripts whose marks are NFC "maybe" characters make it normalise; it now
  runs on a batch's new chunks only: `tokenizer_encode.py` measures that change);
- `simple`: open_clip's SimpleTokenizer (the baseline);
- `one_rust_call`: tried, not kept — every new chunk of the batch encoded in one `tokenizers` call (the
  chunks joined by spaces, split back at their offsets) before the memo lookup, instead of one BPE call each.
Tokenizers: 32,000 merges from wordfreq (`langclip tokenizer train --lang L --wordfreq`), trained here.

    python benchmarks/tokenizer_parts.py > benchmarks/results/cpu_tokenizer_parts.jsonl
"""
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
from open_clip.tokenizer import SimpleTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_bench import sentences  # noqa: E402

from langclip.config import TokenizerTrainConfig  # noqa: E402
from langclip.tokenizer import Tokenizer  # noqa: E402
from langclip.tokenizer.clean import clean  # noqa: E402
from langclip.tokenizer.train import train_tokenizer  # noqa: E402

CASES = [("bn", "uniform"), ("bn", "zipf"), ("zh", "running"), ("ja", "running")]


def one_rust_call(tok: Tokenizer, texts: list[str]):
    """The batch's new chunks through `tokenizers` at once, then the usual call (all chunks memoised)."""
    chunks = " ".join(clean(t) for t in texts).split()
    new = [c for c in dict.fromkeys(chunks) if c not in tok._cache and "<|" not in c]
    if new:
        enc = tok.hf.encode(" ".join(new), add_special_tokens=False)
        starts = np.asarray([o[0] for o in enc.offsets], dtype=np.int64)
        lens = np.fromiter(map(len, new), dtype=np.int64, count=len(new))
        bounds = np.append(np.searchsorted(starts, np.concatenate(([0], np.cumsum(lens + 1)[:-1]))), len(enc.ids))
        ids = enc.ids
        for i, c in enumerate(new):
            tok._cache[c] = tuple(ids[bounds[i]:bounds[i + 1]])
    return tok(texts)


def median_us(f, n_texts: int, fresh, n: int = 5) -> float:
    times = []
    for _ in range(n):
        arg = fresh()
        t = time.perf_counter()
        f(arg)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) / n_texts * 1e6, 2)


def main() -> None:
    machine = {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as d:
        for lang in dict.fromkeys(lang for lang, _ in CASES):
            train_tokenizer(TokenizerTrainConfig(lang=lang, wordfreq=True, merges=32_000, out=f"{d}/{lang}"),
                            progress=False)
        for lang, kind in CASES:
            texts = sentences(lang, 20_000, kind=kind)
            n = len(texts)
            warm_tok = Tokenizer.load(f"{d}/{lang}")
            warm_tok(texts)
            cold = median_us(lambda t: t(texts), n, lambda: Tokenizer.load(f"{d}/{lang}"))
            rust = median_us(lambda t: one_rust_call(t, texts), n, lambda: Tokenizer.load(f"{d}/{lang}"))
            assert one_rust_call(Tokenizer.load(f"{d}/{lang}"), texts).equal(warm_tok(texts))
            row = {"lang": lang, "kind": kind, "texts": n, "cold_us": cold,
                   "warm_us": median_us(lambda t: t(texts), n, lambda: warm_tok),
                   "nfc_check_us": median_us(lambda _: [unicodedata.is_normalized("NFC", x) for x in texts], n,
                                             lambda: None),
                   "simple_us": median_us(lambda t: t(texts), n, SimpleTokenizer, n=3),
                   "one_rust_call_us": rust, "machine": machine}
            row["speedup_cold"] = round(row["simple_us"] / cold, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
