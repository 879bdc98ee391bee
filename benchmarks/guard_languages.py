"""The same tokenizer recipe on many languages: what `langclip tokenizer train --lang L --wordfreq` gives
each one (merges learned, tokens per word against CLIP's, English ids) — to see a change of the rules
(the script guard, the pre-tokenizer) on every script at once, not on Russian alone.

    python benchmarks/guard_languages.py [--langs vi ru ...] [--merges 32000] > out.jsonl

Run it at two commits (e.g. `PYTHONPATH=<worktree>/src python benchmarks/guard_languages.py`) to
compare them: `digest` is the tokenizer's identity (vocabulary and merges), equal when nothing changed.
One JSON line per language, after one line naming the machine and the commit's langclip.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

LANGS = ["vi", "ru", "uk", "bg", "el", "tr", "pl", "de", "cs", "ro", "hu", "ko", "hi", "bn", "ta", "ur", "fa",
         "ar", "he", "zh", "ja"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", nargs="+", default=LANGS)
    ap.add_argument("--merges", type=int, default=32000)
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    import langclip
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer import Tokenizer
    from langclip.tokenizer.train import running_text, tokens_per_word, train_tokenizer
    from tokenizer_bench import english_identity

    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "langclip": str(Path(langclip.__file__).parent)}), flush=True)
    clip = Tokenizer.clip()
    for L in a.langs:
        t0 = time.perf_counter()
        tok = train_tokenizer(TokenizerTrainConfig(lang=L, wordfreq=True, merges=a.merges, out=tempfile.mkdtemp()),
                              progress=False)
        seconds = time.perf_counter() - t0
        texts, n_words = running_text(L)
        ident = english_identity(tok, L)
        print(json.dumps({
            "lang": L, "merges": tok.num_added_merges, "train_seconds": round(seconds, 1), "digest": tok.digest(),
            "target_scripts": tok.meta.get("target_scripts"), "protected_pairs": tok.meta.get("protected_pairs"),
            "tokens_per_word_top100k_weighted": round(tokens_per_word(tok, L)["weighted"], 3),
            "clip_tokens_per_word_top100k_weighted": round(tokens_per_word(clip, L)["weighted"], 3),
            "running_tokens_per_word": round(sum(map(len, tok.encode_batch(texts))) / n_words, 3),
            "clip_running_tokens_per_word": round(sum(map(len, clip.encode_batch(texts))) / n_words, 3),
            "english_words_checked": next(v for k, v in ident.items() if k.endswith("_wordfreq")),
            "english_words_with_other_ids": next(v for k, v in ident.items() if k.endswith("_with_other_ids")),
        }), flush=True)


if __name__ == "__main__":
    main()
