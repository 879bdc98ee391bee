"""Stage 1: train a bilingual tokenizer (CLIP's BPE + N merges for a language) and measure it.

    >>> tok = train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, merges=32000, out="tok/"))
    >>> tokenizer_stats(tok, lang="ru")["tokens_per_word_weighted"]
"""
from __future__ import annotations

import csv
import json
import logging
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .bpe import learn_merges
from .tokenizer import Tokenizer, build_hf_tokenizer, clean, clip_base_vocab, pretokenize, _WS

log = logging.getLogger(__name__)
WEIGHT_MASS = 10**9  # each corpus source is scaled to this total integer weight


class CorpusError(ValueError):
    """Bad tokenizer corpus: the message names the file, line and problem."""


@dataclass
class TokenizerTrainConfig:
    lang: str = "ru"                       # language code (wordfreq's, e.g. ru, el, ar, zh)
    merges: int = 32000                    # merges to add to CLIP's 48,894
    corpus: list[str] = field(default_factory=list)  # text files (one text a line) or tables
    column: str | None = None              # column for CSV/TSV/Parquet/JSONL corpora
    wordfreq: bool = False                 # use wordfreq's frequency list for `lang`
    wordfreq_top: int | None = None        # only the N most frequent wordfreq words (None: all)
    out: str = "tokenizer"

    def validate(self) -> None:
        if self.merges < 1:
            raise ValueError(f"--merges must be at least 1 (got {self.merges}): with 0 the tokenizer is "
                             "CLIP's own, use Tokenizer.clip() for that")
        if not self.corpus and not self.wordfreq:
            raise ValueError("no corpus: give --corpus FILE ... and/or --wordfreq")
        for c in self.corpus:
            if not Path(c).is_file():
                raise FileNotFoundError(f"corpus file not found: {c}")
        if self.wordfreq:
            check_wordfreq_language(self.lang)


def check_wordfreq_language(lang: str) -> None:
    import wordfreq

    langs = sorted(wordfreq.available_languages(wordlist="best"))
    if lang not in langs:
        raise ValueError(f"wordfreq has no word list for language {lang!r}; available: {', '.join(langs)}")


# -- corpus reading -----------------------------------------------------------------------------
def read_texts(path: str | Path, column: str | None = None) -> list[str]:
    """Texts of one corpus file: plain text (one text a line), or a column of CSV/TSV/Parquet/JSONL."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        col = _pick_column(path, table.column_names, column)
        return [t for t in table.column(col).to_pylist() if isinstance(t, str)]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CorpusError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                          f"convert the file, e.g. `iconv -f cp1251 -t utf-8`") from None
    if suf in (".csv", ".tsv"):
        rows = csv.DictReader(text.splitlines(), delimiter="\t" if suf == ".tsv" else ",")
        col = _pick_column(path, rows.fieldnames or [], column)
        return [r[col] for r in rows if r.get(col)]
    if suf == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{i}: invalid JSON ({e.msg})") from None
                col = _pick_column(path, list(rec), column)
                if isinstance(rec.get(col), str):
                    out.append(rec[col])
        return out
    return [ln for ln in text.splitlines() if ln.strip()]


def _pick_column(path: Path, names: list[str], column: str | None) -> str:
    if column:
        if column not in names:
            raise CorpusError(f"{path}: no column {column!r}; columns are {names}")
        return column
    for c in ("caption", "text", "caption_ru", "query", "sentence"):
        if c in names:
            return c
    raise CorpusError(f"{path}: which column holds the text? give --column (columns: {names})")


def corpus_pretokens(texts: list[str]) -> Counter:
    """Pre-token counts of cleaned texts: ['Два кота', 'два'] -> {'два': 2, 'кота': 1}."""
    counts: Counter = Counter()
    for t, n in Counter(texts).items():
        for p in pretokenize(clean(t)):
            counts[p] += n
    return counts


def wordfreq_pretokens(lang: str, top: int | None = None) -> Counter:
    """wordfreq's list for `lang` as pre-token weights summing to ~WEIGHT_MASS."""
    import wordfreq

    freqs = wordfreq.get_frequency_dict(lang, wordlist="best")
    items = sorted(freqs.items(), key=lambda kv: -kv[1])[:top] if top else freqs.items()
    total = sum(f for _, f in items)
    counts: Counter = Counter()
    for w, f in items:  # wordfreq's words are already NFC and lower-case: no ftfy needed
        wt = max(1, round(f / total * WEIGHT_MASS))
        for p in pretokenize(_WS.sub(" ", w).lower()):
            counts[p] += wt
    return counts


def _scale(c: Counter) -> Counter:
    total = sum(c.values())
    return Counter({k: max(1, round(v / total * WEIGHT_MASS)) for k, v in c.items()}) if total else c


# -- training -----------------------------------------------------------------------------------
def train_tokenizer(cfg: TokenizerTrainConfig, progress: bool = True) -> Tokenizer:
    """Learn `cfg.merges` merges continuing CLIP's BPE on the corpus; save to `cfg.out`."""
    cfg.validate()
    t0 = time.perf_counter()
    sources: dict[str, int] = {}
    weights: Counter = Counter()
    if cfg.corpus:
        texts: list[str] = []
        for f in cfg.corpus:
            texts += read_texts(f, cfg.column)
        if not texts:
            raise CorpusError(f"empty corpus: no text in {', '.join(cfg.corpus)}")
        sources["corpus_texts"] = len(texts)
        weights.update(_scale(corpus_pretokens(texts)))
    if cfg.wordfreq:
        wf = wordfreq_pretokens(cfg.lang, cfg.wordfreq_top)
        sources["wordfreq_words"] = len(wf)
        weights.update(wf)
    if not weights:
        raise CorpusError("empty corpus: the texts hold no words")
    words = list(weights)
    base = build_hf_tokenizer(())
    segs = base.encode_batch(words, add_special_tokens=False)
    segmented = [(e.tokens, weights[w]) for w, e in zip(words, segs)]
    from tqdm import tqdm

    bar = tqdm(total=cfg.merges, desc="merges", unit="merge", disable=not progress, mininterval=0.5)
    res = learn_merges(segmented, cfg.merges, set(clip_base_vocab()),
                       progress=lambda n: bar.update(n - bar.n))
    bar.close()
    if res.exhausted:
        msg = (f"the corpus allows only {len(res.merges)} new merges (asked for {cfg.merges}): "
               f"learned {len(res.merges)}; add text or lower --merges")
        warnings.warn(msg)
        log.warning(msg)
    meta = {
        "base": "openai-clip-bpe (open_clip bpe_simple_vocab_16e6.txt.gz, 48,894 merges)",
        "language": cfg.lang,
        "merges_requested": cfg.merges,
        "merges_added": len(res.merges),
        "merges_skipped_existing": res.skipped_existing,
        "corpus": {"files": [str(c) for c in cfg.corpus], "column": cfg.column, "wordfreq": cfg.wordfreq,
                   "wordfreq_top": cfg.wordfreq_top, "distinct_pretokens": len(words), **sources},
        "train_seconds": round(time.perf_counter() - t0, 1),
        "config": asdict(cfg),
    }
    tok = Tokenizer.from_merges(res.merges, meta)
    tok.save(cfg.out)
    return tok


# -- statistics ---------------------------------------------------------------------------------
def tokens_per_word(tok: Tokenizer, lang: str, top: int = 100_000) -> dict[str, float]:
    """Frequency-weighted and plain tokens per word over wordfreq's `top` words of `lang`."""
    import wordfreq

    check_wordfreq_language(lang)
    items = sorted(wordfreq.get_frequency_dict(lang, wordlist="best").items(), key=lambda kv: -kv[1])[:top]
    encs = tok.hf.encode_batch([w for w, _ in items], add_special_tokens=False)
    n = [len(e.ids) for e in encs]
    f = [fr for _, fr in items]
    return {"weighted": sum(a * b for a, b in zip(n, f)) / sum(f), "plain": sum(n) / len(n), "words": len(n)}


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
    if corpus:
        texts = [t for f in corpus for t in read_texts(f, column)]
        lens = sorted(len(ids) + 2 for ids in tok.encode_batch(texts))
        base_lens = sorted(len(ids) + 2 for ids in base.encode_batch(texts))
        med, p95 = lens[len(lens) // 2], lens[int(len(lens) * 0.95)]
        out["queries"] = {"texts": len(texts), "median_tokens": med, "p95_tokens": p95,
                          "clip_median_tokens": base_lens[len(base_lens) // 2],
                          "context_share_median": med / context_length,
                          "truncated_share": sum(x > context_length for x in lens) / len(lens),
                          "clip_truncated_share": sum(x > context_length for x in base_lens) / len(lens)}
    else:  # the origin's data were search queries of ~6 words
        tpw = out["tokens_per_word_weighted"]
        out["queries"] = {"assumed_words": 6, "median_tokens": round(6 * tpw + 2, 1),
                          "clip_median_tokens": round(6 * out["clip"][lang]["weighted"] + 2, 1),
                          "context_share_median": (6 * tpw + 2) / context_length}
    return out


def format_stats(s: dict) -> str:
    lang = s["lang"]
    rows = [f"tokenizer: vocab {s['vocab_size']:,} ({s['merges_added']:,} merges added)",
            f"{'':22}{'CLIP':>10}{'langclip':>10}"]
    for lg in [lang] + (["en"] if lang != "en" else []):
        for k in ("weighted", "plain"):
            rows.append(f"{lg} tokens/word {k:<9}{s['clip'][lg][k]:>10.2f}{s['langclip'][lg][k]:>10.2f}")
    q = s["queries"]
    rows.append(f"typical query: {q['median_tokens']} tokens (CLIP {q['clip_median_tokens']}), "
                f"{q['context_share_median']:.0%} of a 77-token context")
    return "\n".join(rows)
