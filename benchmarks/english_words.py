"""`english_words` on Latin-script languages: how much shorter their text gets when their ASCII words may
merge too, and what it costs English — for each language, the real recipe (`langclip tokenizer train
--lang L --wordfreq`, 32,000 merges) under the default rule and with wordfreq's N most frequent English
words kept, same run.

    python benchmarks/english_words.py [--langs de es ...] [--english-words none 10000 100000 1000000] > out.jsonl

Per line: tokens per word of the language (wordfreq's top 100k, frequency-weighted; and running text),
CLIP's for reference, the ASCII words of wordfreq's whole English list (about 316k) that get other ids
than CLIP's and their share of the list's frequency (about the share of running English text's words),
and the share of 3,000 English texts (3-10 words drawn by frequency from the whole list) whose ids change.
One JSON line per (language, setting), after one line naming the machine and the commit's langclip.
"""
import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

LANGS = ["de", "es", "fr", "pl"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", nargs="+", default=LANGS)
    ap.add_argument("--english-words", nargs="+", default=["none", "10000", "100000", "1000000"])
    ap.add_argument("--merges", type=int, default=32000)
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    import langclip
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer import Tokenizer
    from langclip.tokenizer.train import english_changed, running_text, tokens_per_word, train_tokenizer

    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "langclip": str(Path(langclip.__file__).parent)}), flush=True)
    clip = Tokenizer.clip()
    en_texts, _ = running_text("en", n=3000, top=None, seed=1)
    en_clip = clip.encode_batch(en_texts)
    for L in a.langs:
        texts, n_words = running_text(L)
        clip_tpw = tokens_per_word(clip, L)["weighted"]
        for setting in a.english_words:
            n = None if setting == "none" else int(setting)
            t0 = time.perf_counter()
            tok = train_tokenizer(TokenizerTrainConfig(lang=L, wordfreq=True, merges=a.merges, english_words=n,
                                                       out=tempfile.mkdtemp()), progress=False)
            seconds = time.perf_counter() - t0
            changed = english_changed(tok)
            print(json.dumps({
                "lang": L, "english_words": n, "merges": tok.num_added_merges, "train_seconds": round(seconds, 1),
                "english_pairs_banned": tok.meta.get("english_pairs_banned"), "digest": tok.digest(),
                "tokens_per_word_top100k_weighted": round(tokens_per_word(tok, L)["weighted"], 3),
                "clip_tokens_per_word_top100k_weighted": round(clip_tpw, 3),
                "running_tokens_per_word": round(sum(map(len, tok.encode_batch(texts))) / n_words, 3),
                "clip_running_tokens_per_word": round(sum(map(len, clip.encode_batch(texts))) / n_words, 3),
                "english_ascii_words": changed["of"], "english_ascii_words_with_other_ids": changed["words"],
                "english_ascii_frequency_share_with_other_ids": round(changed["weighted"], 6),
                "english_examples": changed["examples"],
                "english_texts_with_other_ids": sum(x != y for x, y in zip(en_clip, tok.encode_batch(en_texts))),
                "english_texts": len(en_texts),
            }, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
