"""Stage 1: train a bilingual tokenizer (CLIP's BPE + N merges for a language) and measure it.

    >>> cfg = TokenizerTrainConfig(lang="ru", wordfreq=True, wordfreq_top=20000, merges=2000, out="tok/")
    >>> tok = train_tokenizer(cfg, progress=False)       # the real recipe: merges=32000, all of wordfreq
    >>> tok.vocab_size                                    # 49,408 CLIP ids + 2,000 new tokens
    51408
    >>> tokenizer_stats(tok, lang="ru", top=20000)["tokens_per_word_weighted"] < 2.5   # CLIP: ~6
    True
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import time
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from ..config import TokenizerTrainConfig, check_wordfreq_language
from ..files import check_out_dir, read_utf8, usable_cores
from ..tables import pick_column, table_rows
from .bpe import PreTokens, learn_merges
from .clean import WS, clean, pretokenize
from .encode import Tokenizer
from .scripts import ScriptGuard, script_joiners, script_marks, target_scripts
from .vocab import PRETOKENIZE_PATTERN, build_hf_tokenizer, clip_base_vocab, pretokenize_pattern

log = logging.getLogger(__name__)
WEIGHT_MASS = 10**9  # each corpus source is scaled to this total integer weight


CORPUS_COLUMNS = ("caption", "text", "caption_ru", "query", "sentence")


class CorpusError(ValueError):
    """Bad tokenizer corpus: the message names the file, line and problem."""


# -- corpus reading -----------------------------------------------------------------------------
def read_texts(path: str | Path, column: str | None = None) -> list[str]:
    """Texts of one corpus file: plain text (one text a line), or a column of CSV/TSV/Parquet/JSONL."""
    path = Path(path)
    try:
        if path.suffix.lower() not in (".parquet", ".csv", ".tsv", ".jsonl", ".json"):
            return [ln for ln in read_utf8(path).splitlines() if ln.strip()]
        names, rows = table_rows(path)
        col = pick_column(path, names, column, CORPUS_COLUMNS, "--column")
    except ValueError as e:
        raise CorpusError(str(e)) from None
    return [r[col] for r in rows if isinstance(r.get(col), str) and r[col]]


PARALLEL_FROM = 50_000   # distinct texts from which corpus_pretokens spreads over processes


def corpus_pretokens(texts: list[str], pattern: str = PRETOKENIZE_PATTERN, workers: int = 1) -> Counter:
    """Pre-token counts of cleaned texts: ['Два кота', 'два'] -> {'два': 2, 'кота': 1}. Cleaning and cutting
    take ~17 us a text in Python (5 minutes for the origin's 18.5M captions on one core), so from
    PARALLEL_FROM distinct texts on, `workers` forked processes share them (the counts are the same)."""
    items = list(Counter(texts).items())
    if workers > 1 and len(items) >= PARALLEL_FROM and "fork" in mp.get_all_start_methods():
        return _count_forked(items, pattern, workers)
    return _count(items, pattern)


def _count(items, pattern: str) -> Counter:
    counts: Counter = Counter()
    for t, n in items:
        for p in pretokenize(clean(t), pattern):
            counts[p] += n
    return counts


_FORKED: tuple | None = None   # (items, pattern): what forked counting processes inherit, not pickle


def _count_part(k: int, n: int) -> Counter:
    items, pattern = _FORKED
    return _count(items[k::n], pattern)


def _count_forked(items, pattern: str, workers: int) -> Counter:
    global _FORKED
    from concurrent.futures import ProcessPoolExecutor

    _FORKED = (items, pattern)
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
            parts = list(ex.map(_count_part, range(workers), [workers] * workers))
    finally:
        _FORKED = None
    total = parts[0]
    for c in parts[1:]:
        total.update(c)
    return total


def count_workers(workers: int) -> int:
    """-1: the cores this process may use."""
    return max(1, workers) if workers >= 0 else usable_cores()


def wordfreq_pretokens(lang: str, top: int | None = None, pattern: str = PRETOKENIZE_PATTERN) -> Counter:
    """wordfreq's list for `lang` as pre-token weights summing to ~WEIGHT_MASS."""
    import wordfreq

    freqs = wordfreq.get_frequency_dict(lang, wordlist="best")
    items = sorted(freqs.items(), key=lambda kv: -kv[1])[:top] if top else freqs.items()
    total = sum(f for _, f in items)
    counts: Counter = Counter()
    for w, f in items:  # wordfreq's words are already NFC and lower-case: no ftfy needed
        wt = max(1, round(f / total * WEIGHT_MASS))
        if w.isalpha() and max(w) < "\u0530":   # letters of the old, stable blocks, where str.isalpha is
            counts[w.lower()] += wt              # \p{L}: one pre-token under every pattern (most words)
            continue
        for p in pretokenize(WS.sub(" ", w).lower(), pattern):
            counts[p] += wt
    return counts


def _scale(c: Counter) -> Counter:
    total = sum(c.values())
    return Counter({k: max(1, round(v / total * WEIGHT_MASS)) for k, v in c.items()}) if total else c


# -- languages written without spaces ---------------------------------------------------------------
# A sentence of Chinese or Japanese is one pre-token ([\p{L}]+), so a word inside it is cut by CLIP's BPE
# without the end-of-word suffix its isolated form (a wordfreq entry) carries.
NO_SPACE_SCRIPTS = frozenset({"CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"})


def with_word_internal_forms(pre: PreTokens, wf: Counter) -> PreTokens:
    """Each wordfreq word counted half as it ends a pre-token (its `</w>` form, already in `pre`) and
    half as it stands inside one (CLIP's cut without the suffix): merges then also fire in running
    text, where most words of a language without spaces stand."""
    halves = [wf.get(word, 0) // 2 for word in pre.texts]
    inner = [(word, h) for word, h in zip(pre.texts, halves) if h]
    return PreTokens(pre.texts + [word for word, _ in inner],
                     [w - h for w, h in zip(pre.weights, halves)] + [h for _, h in inner],
                     pre.word_end + [False] * len(inner))


def running_text(lang: str, n: int = 3000, top: int = 30_000, seed: int = 0) -> tuple[list[str], int]:
    """`n` texts of 3-10 of wordfreq's `top` words for `lang`, drawn by frequency and written as the
    language writes them (no spaces, for a language that uses none), and their number of words."""
    import random

    import wordfreq

    items = sorted(wordfreq.get_frequency_dict(lang, wordlist="best").items(), key=lambda kv: -kv[1])[:top]
    rng = random.Random(seed)
    words, cum = [w for w, _ in items], list(itertools.accumulate(f for _, f in items))
    picks = [rng.choices(words, cum_weights=cum, k=rng.randint(3, 10)) for _ in range(n)]
    sep = "" if not NO_SPACE_SCRIPTS.isdisjoint(target_scripts(Counter(dict(items)))) else " "
    return [sep.join(p) for p in picks], sum(map(len, picks))


# -- English words kept whole (english_words) -----------------------------------------------------
def english_pairs(top: int, pattern: str = PRETOKENIZE_PATTERN) -> set[tuple[str, str]]:
    """Every pair of adjacent pieces in CLIP's cut of the pre-tokens of wordfreq's `top` most frequent
    English words. CLIP's merges rank first, so a new merge fires on a word only after CLIP's cut is
    finished, and only on two of its adjacent pieces: with all of these banned, these words keep
    CLIP's ids, by construction (a rarer English word may not)."""
    if top <= 0:
        return set()
    words = list(wordfreq_pretokens("en", top, pattern))   # "ʖ" is one character but two pieces
    cuts = (e.tokens for e in build_hf_tokenizer((), pattern).encode_batch(words, add_special_tokens=False))
    return {(a, b) for cut in cuts for a, b in zip(cut, cut[1:])}


def _guard(cfg: TokenizerTrainConfig, weights: Counter) -> ScriptGuard:
    """The English rule for this corpus; with `english_words`, ASCII letters are the target's too."""
    scripts = target_scripts(weights)
    if cfg.english_words is not None and scripts != ["LATIN"]:
        raise ValueError(f"english_words applies to a Latin-script language, whose words are written partly in "
                         f"ASCII; this corpus's letters are {', '.join(scripts)}, which never share a merge "
                         "with English: leave english_words unset")
    return ScriptGuard(scripts, ascii_letters=cfg.english_words is not None)


# -- training -----------------------------------------------------------------------------------
def _corpus_texts(cfg: TokenizerTrainConfig) -> list[str]:
    texts: list[str] = []
    for f in cfg.corpus:
        texts += read_texts(f, cfg.column)
    if cfg.corpus and not texts:
        raise CorpusError(f"empty corpus: no text in {', '.join(cfg.corpus)}")
    return texts


def _pretoken_weights(cfg: TokenizerTrainConfig, texts: list[str], pattern: str) -> tuple[Counter, Counter]:
    """(all pre-token weights, wordfreq's share of them) under a pre-tokenizer `pattern`."""
    weights: Counter = Counter()
    if texts:
        weights.update(_scale(corpus_pretokens(texts, pattern, count_workers(cfg.workers))))
    wf: Counter = wordfreq_pretokens(cfg.lang, cfg.wordfreq_top, pattern) if cfg.wordfreq else Counter()
    weights.update(wf)
    if not weights:
        raise CorpusError("empty corpus: the texts hold no words")
    return weights, wf


def train_tokenizer(cfg: TokenizerTrainConfig, progress: bool = True) -> Tokenizer:
    """Learn `cfg.merges` merges continuing CLIP's BPE on the corpus; save to `cfg.out`."""
    cfg.validate()
    check_out_dir(cfg.out, "tokenizer", ("langclip_tokenizer.json",))
    t0 = time.perf_counter()
    texts = _corpus_texts(cfg)
    weights, wf = _pretoken_weights(cfg, texts, PRETOKENIZE_PATTERN)
    guard = _guard(cfg, weights)
    if guard.ascii_letters:
        log.info("target scripts %s with ASCII letters: wordfreq's %d most frequent English words keep CLIP's ids",
                 guard.scripts, cfg.english_words)
    else:
        log.info("target scripts %s: pre-tokens without their letters keep CLIP's ids", guard.scripts)
    marks = script_marks(weights, guard) if cfg.join_marks else ""
    joined = script_joiners(weights, guard) if cfg.join_marks else ""
    pattern = pretokenize_pattern(marks, joined)
    if marks or joined:   # cut again, each word whole
        log.info("%d combining marks of %s count as letters; joiners inside words: %s", len(marks),
                 guard.scripts, bool(joined))
        weights, wf = _pretoken_weights(cfg, texts, pattern)
    sources = {"corpus_texts": len(texts)} if cfg.corpus else {}
    if cfg.wordfreq:
        sources["wordfreq_words"] = len(wf)
    words = list(weights)
    pre = PreTokens(words, list(weights.values()), [True] * len(words))   # cut by CLIP's BPE in the learner
    inside = bool(wf) and cfg.word_internal and not NO_SPACE_SCRIPTS.isdisjoint(guard.scripts)
    if inside:   # a word list of a language written without spaces: its words mostly stand inside text
        pre = with_word_internal_forms(pre, wf)
    from ..files import progress_bar

    banned = english_pairs(cfg.english_words or 0, pattern)
    bar = progress_bar(total=cfg.merges, desc="merges", unit="merge", disable=not progress, mininterval=0.5)
    res = learn_merges(pre, cfg.merges, set(clip_base_vocab()), progress=lambda n: bar.update(n - bar.n),
                       protected=guard.protected, banned_pairs=banned)
    bar.close()
    if res.exhausted:
        msg = (f"the corpus allows only {len(res.merges)} new merges (asked for {cfg.merges}): "
               f"learned {len(res.merges)}; add text or lower --merges")
        warnings.warn(msg)   # the CLI prints it as one "WARNING ..." line
    meta = {
        "base": "openai-clip-bpe (open_clip bpe_simple_vocab_16e6.txt.gz, 48,894 merges)",
        "language": cfg.lang,
        "merges_requested": cfg.merges,
        "merges_added": len(res.merges),
        "merges_skipped_existing": res.skipped_existing,
        "protected_pairs": res.protected_pairs,   # pairs of CLIP-handled pieces never merged (English ids)
        "target_scripts": guard.scripts,   # a new merge never fires on a pre-token without their letters
        "word_internal_forms": inside,     # wordfreq's words also learned as they stand inside running text
        "marks_as_letters": len(marks),    # combining marks of the target scripts in the pre-tokenizer's letters
        "joiners_inside_words": bool(joined),   # ZWNJ/ZWJ between two target characters: inside the word
        "english_words": cfg.english_words,   # None: all ASCII text keeps CLIP's ids; N: wordfreq's N top English words
        "english_pairs_banned": len(banned),  # adjacent pieces of those words, never merged
        "corpus": {"files": [str(c) for c in cfg.corpus], "column": cfg.column, "wordfreq": cfg.wordfreq,
                   "wordfreq_top": cfg.wordfreq_top, "distinct_pretokens": len(words), **sources},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "config": asdict(cfg),
    }
    tok = Tokenizer.from_merges(res.merges, meta, pattern)
    tok.save(cfg.out)
    return tok


# -- statistics ---------------------------------------------------------------------------------
def tokens_per_word(tok: Tokenizer, lang: str, top: int = 100_000) -> dict[str, float]:
    """Frequency-weighted and plain tokens per word over wordfreq's `top` words of `lang`."""
    import wordfreq

    check_wordfreq_language(lang)
    items = sorted(wordfreq.get_frequency_dict(lang, wordlist="best").items(), key=lambda kv: -kv[1])[:top]
    words = [w for w, _ in items]
    f = [fr for _, fr in items]
    if getattr(tok, "kind", "") == "hf":      # an hf: encoder's own tokenizer, for comparison
        ids = tok.encode_batch(words)
        n = [len(x) for x in ids]
        unk = tok.tok.unk_token_id            # a word it cannot spell costs one token and means nothing
        unknown = sum(fr for x, fr in zip(ids, f) if unk is not None and unk in x) / sum(f)
    else:                                     # byte-level: every word can be spelt
        n, unknown = [len(e.ids) for e in tok.hf.encode_batch(words, add_special_tokens=False)], 0.0
    return {"weighted": sum(a * b for a, b in zip(n, f)) / sum(f), "plain": sum(n) / len(n), "words": len(n),
            "unknown_weighted": unknown}


def english_changed(tok: Tokenizer, top: int | None = None) -> dict:
    """How many of the ASCII words of wordfreq's `top` (None: all) English words this tokenizer cuts
    otherwise than CLIP, and their share of those words' frequency (about the share of running English
    text's words). 0 under the default rule, whatever the language; with `english_words`, the rarer ones."""
    import wordfreq

    items = sorted(wordfreq.get_frequency_dict("en", wordlist="best").items(), key=lambda kv: -kv[1])[:top]
    freq = {w: f for w, f in items if w.isascii()}
    words = list(freq)
    changed = [w for w, a, b in zip(words, Tokenizer.clip().encode_batch(words), tok.encode_batch(words)) if a != b]
    return {"words": len(changed), "of": len(words), "weighted": sum(map(freq.__getitem__, changed)) / sum(freq.values()),
            "examples": changed[:5]}


def tokenizer_stats(tok: Tokenizer, lang: str, top: int = 100_000, corpus: list[str] | None = None,
                    column: str | None = None, context_length: int = 77) -> dict:
    """Tokens per word before (CLIP) and after (this tokenizer), for `lang` and English, and how much
    of the context a typical query fills."""
    base = Tokenizer.clip()
    out: dict = {"lang": lang, "vocab_size": tok.vocab_size, "merges_added": tok.num_added_merges}
    for name, t in (("clip", base), ("langclip", tok)):
        out[name] = {lang: tokens_per_word(t, lang, top)}
        if lang != "en":
            out[name]["en"] = tokens_per_word(t, "en", top)
    out["tokens_per_word_weighted"] = out["langclip"][lang]["weighted"]
    if tok.num_added_merges is not None and lang != "en":
        # with english_words, the whole list: the rarer words are the ones that may change
        out["english_changed"] = english_changed(tok, None if tok.meta.get("english_words") is not None else top)
    texts, n_words = running_text(lang)   # words as text holds them: CJK's stand inside longer pre-tokens
    for name, t in (("clip", base), ("langclip", tok)):
        out[name][lang]["running"] = sum(map(len, t.encode_batch(texts))) / n_words
    if corpus:
        texts = [t for f in corpus for t in read_texts(f, column)]
        enc = tok.encode_batch(texts)
        lens = sorted(len(ids) + 2 for ids in enc)
        base_lens = sorted(len(ids) + 2 for ids in base.encode_batch(texts))
        med, p95 = lens[len(lens) // 2], lens[int(len(lens) * 0.95)]
        out["queries"] = {"texts": len(texts), "median_tokens": med, "p95_tokens": p95,
                          "clip_median_tokens": base_lens[len(base_lens) // 2],
                          "context_share_median": med / context_length,
                          "truncated_share": sum(x > context_length for x in lens) / len(lens),
                          "clip_truncated_share": sum(x > context_length for x in base_lens) / len(lens)}
        if tok.num_added_merges:   # added tokens a training run on these texts would never see (coverage.py)
            import numpy as np

            from ..coverage import summary

            flat = np.fromiter((i for ids in enc for i in ids), dtype=np.int64)
            out["queries"]["coverage"] = summary(np.bincount(flat, minlength=tok.vocab_size), tok.num_added_merges)
    else:  # the origin's data were search queries of ~6 words
        tpw = out["langclip"][lang]["running"]
        out["queries"] = {"assumed_words": 6, "median_tokens": round(6 * tpw + 2, 1),
                          "clip_median_tokens": round(6 * out["clip"][lang]["running"] + 2, 1),
                          "context_share_median": (6 * tpw + 2) / context_length}
    return out


def format_stats(s: dict) -> str:
    lang = s["lang"]
    rows = [f"tokenizer: vocab {s['vocab_size']:,} " + (f"({s['merges_added']:,} merges added)"
                                                       if s["merges_added"] is not None else "(an encoder's own)"),
            f"{'':22}{'CLIP':>10}{'langclip' if s['merges_added'] is not None else 'this one':>10}"]
    for lg in [lang] + (["en"] if lang != "en" else []):
        for k in ("weighted", "plain", "running"):
            if k in s["langclip"][lg]:
                rows.append(f"{lg} tokens/word {k:<9}{s['clip'][lg][k]:>10.2f}{s['langclip'][lg][k]:>10.2f}")
        if s["langclip"][lg]["unknown_weighted"]:
            rows.append(f"{lg} words with unknown{'':3}{0:>10.0%}{s['langclip'][lg]['unknown_weighted']:>10.1%}"
                        "  (weighted; each counted as one token)")
    if "english_changed" in s:
        e = s["english_changed"]
        rows.append(f"ASCII English words cut otherwise than by CLIP: {e['words']:,} of {e['of']:,} "
                    f"({e['weighted']:.3%} of their frequency)" + (f", e.g. {', '.join(e['examples'][:3])}" if e["words"] else ""))
    q = s["queries"]
    rows.append(f"typical query: {q['median_tokens']} tokens (CLIP {q['clip_median_tokens']}), "
                f"{q['context_share_median']:.0%} of a 77-token context")
    if "coverage" in q:
        c = q["coverage"]
        rows.append(f"the corpus uses {c['new_tokens_seen']:,} of the {c['new_tokens']:,} added tokens ("
                    f"{c['new_tokens_seen'] / c['new_tokens']:.0%}); trained on these texts alone, the others would "
                    f"keep their initial embeddings")
    return "\n".join(rows)
