"""Tokenizer benchmark: training time of 32k Russian merges (wordfreq), tokens per word, and batch
encoding throughput against open_clip's SimpleTokenizer on distinct sentences (same run, a ratio).

    python benchmarks/tokenizer_bench.py [--lang ru] [--merges 32000] [--sentences 20000 100000] [--repeats 3]

Encoding: one thread, fresh tokenizer objects for every measurement (both tokenizers memoise words,
and both start empty, so the cost of every new word is inside the timing). Two kinds of text:
`uniform` draws 3-12 words uniformly from the top 30k of wordfreq's list (the worst case for
memoisation: most words are rare), `zipf` draws them by their wordfreq frequency, as in real text,
both joined with spaces; `running` draws 3-10 by frequency and writes them as the language does
(`tokenizer stats`' running text: Chinese and Japanese without spaces, so every text is one new chunk).
The two tokenizers run alternately; the median of the repeats is reported. For a script written with
combining marks (Hindi, Bengali, Tamil: `marks_as_letters` > 0) or with joiners inside words (Persian:
`joiners_inside_words`) the training line also gives the same recipe under CLIP's own pre-tokenizer
pattern (`*_clip_pattern`), which cuts words at every mark and joiner.
Prints one JSON object per measurement and the machine.
"""
import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time

import torch


def sentences(lang, n, seed=0, kind="uniform"):
    import wordfreq

    if kind == "running":   # 3-10 words by frequency, written as the language writes them (zh/ja: no spaces)
        from langclip.tokenizer.train import running_text

        texts, m = [], n
        while len(texts) < n:   # a draw can repeat a short text: draw more until n are distinct
            texts = list(dict.fromkeys(running_text(lang, m, seed=seed)[0]))[:n]
            m += n - len(texts) + 100
        return texts
    rng = random.Random(seed)
    items = sorted(wordfreq.get_frequency_dict(lang, wordlist="best").items(), key=lambda kv: -kv[1])[:30000]
    words = [w for w, _ in items]   # (word_frequency would re-tokenize each word: Chinese needs jieba)
    weights = [f for _, f in items] if kind == "zipf" else None
    out = set()
    while len(out) < n:
        k = rng.randint(3, 12)
        out.add(" ".join(rng.choices(words, weights, k=k) if weights else (rng.choice(words) for _ in range(k))))
    texts = sorted(out)
    rng.shuffle(texts)
    return texts


def encode_rates(texts: list[str], tok_dir: str, repeats: int) -> dict:
    """SimpleTokenizer and langclip's tokenizer (from `tok_dir`) alternately on `texts`, fresh objects each
    repeat (both memoise words): texts/s of each (medians) and the ratio."""
    from open_clip.tokenizer import SimpleTokenizer

    from langclip.tokenizer import Tokenizer

    ref_t, ours_t = [], []
    for _ in range(repeats):
        ref, tok = SimpleTokenizer(), Tokenizer.load(tok_dir)
        t0 = time.perf_counter(); ref(texts); ref_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); tok(texts); ours_t.append(time.perf_counter() - t0)
    ref_s, ours_s = statistics.median(ref_t), statistics.median(ours_t)
    return {"sentences": len(texts), "open_clip_per_s": round(len(texts) / ref_s),
            "langclip_per_s": round(len(texts) / ours_s), "speedup": round(ref_s / ours_s, 1),
            "speedups_each_repeat": [round(r / o, 1) for r, o in zip(ref_t, ours_t)]}


def english_identity(tok, lang: str = "ru") -> dict:
    """How many words of wordfreq's list for `lang` that CLIP's ids must keep get other ids than
    SimpleTokenizer's: its Latin-script words without a letter of the target script (Russian: no
    Cyrillic; Chinese: no Han), or its ASCII words (a Latin-script language: the tokenizer's target is
    then its non-ASCII letters)."""
    import regex
    import wordfreq
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer()
    words = wordfreq.get_frequency_dict(lang, wordlist="best")
    if tok.meta.get("target_scripts") == ["LATIN"]:
        kind, keep = "ascii", [w for w in words if w.isascii() and regex.search(r"\p{Latin}", w)]
    else:   # Latin-script words: a Latin letter and none of the target's script (CJK is Unicode's Han)
        own = regex.compile("|".join(r"\p{%s}" % ("Han" if s == "CJK" else s.title()) for s in tok.meta["target_scripts"]))
        kind, keep = "latin", [w for w in words if regex.search(r"\p{Latin}", w) and not own.search(w)]
    bad = [w for w, ids in zip(keep, tok.encode_batch(keep)) if ids != ref.encode(w)]
    return {f"{kind}_words_in_{lang}_wordfreq": len(keep), f"{kind}_words_with_other_ids": len(bad),
            "examples_with_other_ids": bad[:10], "target_scripts": tok.meta.get("target_scripts")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lang", default="ru", help="the target language (wordfreq's code): ru, uk, ...")
    ap.add_argument("--merges", type=int, default=32000)
    ap.add_argument("--sentences", type=int, nargs="+", default=[20000, 100000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-train", metavar="TOKENIZER_DIR", help="use this tokenizer instead of training one")
    ap.add_argument("--threads", type=int, default=1, help="torch/rayon threads for training (1 = one core)")
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(a.threads)
    torch.set_num_threads(a.threads)

    from langclip.tokenizer import Tokenizer
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer.train import running_text, tokens_per_word, train_tokenizer

    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "threads": a.threads, "python": platform.python_version()}))
    if a.skip_train:
        tok_dir = a.skip_train
    else:
        tok_dir = tempfile.mkdtemp()
        t0 = time.perf_counter()
        tok = train_tokenizer(TokenizerTrainConfig(lang=a.lang, wordfreq=True, merges=a.merges, out=tok_dir),
                              progress=False)
        train_s = time.perf_counter() - t0
        clip = Tokenizer.clip()
        L = a.lang
        texts, n_words = running_text(L)   # words as the language writes them (Chinese: no spaces)
        running = {f"running_tokens_per_word_{L}": round(sum(map(len, tok.encode_batch(texts))) / n_words, 3),
                   f"clip_running_tokens_per_word_{L}": round(sum(map(len, clip.encode_batch(texts))) / n_words, 3)}
        if tok.meta.get("word_internal_forms"):   # the same run without them: the baseline
            alone = train_tokenizer(TokenizerTrainConfig(lang=L, wordfreq=True, merges=a.merges, word_internal=False,
                                                         out=tempfile.mkdtemp()), progress=False)
            running[f"running_tokens_per_word_{L}_isolated_forms_only"] = round(
                sum(map(len, alone.encode_batch(texts))) / n_words, 3)
            running[f"tokens_per_word_{L}_top100k_weighted_isolated_forms_only"] = round(
                tokens_per_word(alone, L)["weighted"], 3)
        if tok.meta.get("marks_as_letters") or tok.meta.get("joiners_inside_words"):   # the same run with CLIP's
            # pattern (marks and joiners cut words): the baseline
            cut = train_tokenizer(TokenizerTrainConfig(lang=L, wordfreq=True, merges=a.merges, join_marks=False,
                                                       out=tempfile.mkdtemp()), progress=False)
            running.update({f"running_tokens_per_word_{L}_clip_pattern": round(
                                sum(map(len, cut.encode_batch(texts))) / n_words, 3),
                            f"tokens_per_word_{L}_top100k_weighted_clip_pattern": round(tokens_per_word(cut, L)["weighted"], 3),
                            "merges_clip_pattern": cut.num_added_merges})
        print(json.dumps({"name": f"train_{L}_wordfreq", "merges": tok.num_added_merges, "seconds": round(train_s, 1),
                          "word_internal_forms": tok.meta.get("word_internal_forms"),
                          "marks_as_letters": tok.meta.get("marks_as_letters"),
                          "joiners_inside_words": tok.meta.get("joiners_inside_words"), **running,
                          f"tokens_per_word_{L}_top100k_weighted": round(tokens_per_word(tok, L)["weighted"], 3),
                          f"clip_tokens_per_word_{L}_top100k_weighted": round(tokens_per_word(clip, L)["weighted"], 3),
                          f"tokens_per_word_{L}_top50k_weighted": round(tokens_per_word(tok, L, 50000)["weighted"], 3),
                          f"clip_tokens_per_word_{L}_top50k_weighted": round(tokens_per_word(clip, L, 50000)["weighted"], 3),
                          **english_identity(tok, L)}))
    for lang in ("en", a.lang):
        for kind in ("uniform", "zipf", "running"):
            for n in a.sentences:
                texts = sentences(lang, n, kind=kind)
                print(json.dumps({"name": f"encode_distinct_{lang}_{kind}", **encode_rates(texts, tok_dir, a.repeats)}),
                      flush=True)


if __name__ == "__main__":
    main()
