"""Which of the tokenizer's tokens a run's training captions contained, and which words of a query use
tokens they never did.

A 32k-merge tokenizer learned from wordfreq's list knows far more word forms than a caption corpus
holds. A token that never occurs in the training captions keeps the embedding it started with (random
under `scratch`, the mean of its pieces under `clip`), so a query that needs it is answered from an
untrained guess. `train` counts every token of the training split's captions (the target-language
captions, and the English ones when replayed; the held-out split is not counted) into the run folder's
`token_counts.safetensors`; `predict`, `similarity`, `encode`, `eval`, `search` and `serve` name the words
whose tokens were never counted, e.g. for a Spanish run whose captions never held "rojas":

    note: never in the training captions of runs/es: «rojas» (token 'jas')

The note names a form of the word whose tokens were trained — in Russian and Ukrainian the closest trained
form (pymorphy3), in about 50 other languages its dictionary form (simplemma) — and `search`/`serve` search
with it (`rewrite`; `--as-typed`: not). The open_clip and transformers exports
carry the file; a folder without it (an ONNX or Immich export, a run from before it, CLIP's own weights)
gives no note.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

from .tokenizer.vocab import CLIP_VOCAB

COUNTS_FILE = "token_counts.safetensors"
PUNCTUATION = "\"'«»„“”‘’.,;:!?()[]{}…—–-"
CLIP_IDS = CLIP_VOCAB - 2   # CLIP's ids a langclip tokenizer keeps (all but start/end-of-text); its added ones follow


def count_tokens(tables, val_idx, vocab_size: int) -> np.ndarray:
    """How often each token id occurs in the training split's captions: every row of each TokenTable
    (train/batches.py) less the rows `val_idx` (the held-out split: train and val partition the rows)."""
    total = np.zeros(vocab_size, dtype=np.int64)
    for t in tables:
        flat = t.flat.numpy()
        for s in range(0, len(flat), 1 << 24):   # bincount copies to int64: 128 MiB a chunk, not 2 GB at 18.5M captions
            total += np.bincount(flat[s: s + (1 << 24)], minlength=vocab_size)[:vocab_size]
        if len(val_idx):
            total -= np.bincount(t.subset(val_idx).flat.numpy(), minlength=vocab_size)[:vocab_size]
    return total


def save_counts(folder: str | Path, counts: np.ndarray, tokenizer_digest: str, tables: list[str],
                pretrained: str = "") -> Path:
    """`pretrained`: which ids the text tower knew before its captions (`pretrained_kind`), kept beside them."""
    import torch
    from safetensors.torch import save_file

    from .files import atomic_write

    meta = {"tokenizer": tokenizer_digest, "tables": ",".join(tables), "split": "train", "pretrained": pretrained}
    t = {"counts": torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))}
    return atomic_write(Path(folder) / COUNTS_FILE, lambda tmp: save_file(t, str(tmp), metadata=meta))


def load_counts(folder: str | Path | None) -> np.ndarray | None:
    """The counts a run folder holds, or None (no folder, no file)."""
    if not folder or not (Path(folder) / COUNTS_FILE).is_file():
        return None
    f = Path(folder) / COUNTS_FILE
    return _read(str(f), f.stat().st_mtime_ns)[0]


@functools.lru_cache(maxsize=8)
def _read(path: str, _mtime: int) -> tuple[np.ndarray, dict]:
    from safetensors import safe_open

    with safe_open(path, "np") as f:
        return f.get_tensor("counts"), f.metadata() or {}


def pretrained_kind(init) -> str:
    """What a text tower knew before its captions, from a run's `init` record: "clip" (`clip` init: CLIP's
    English — a word that wordfreq rates English rather than the run's language, in CLIP's own pieces, is not
    named; CLIP's pieces spelling another language's words, or bytes of another script, carry next to none of
    it), "all" (an `hf:` encoder's ids are all pretrained: nothing is named), "" (`scratch`: none); a `run:`
    init knows what its run knew."""
    info = init if isinstance(init, dict) else {"init": init}
    name = str(info.get("init") or "")
    if name.startswith("run:"):
        return pretrained_of(info.get("from_run") or name[4:])
    return "clip" if name == "clip" else "all" if name.startswith("hf:") else ""


def pretrained_of(folder: str | Path | None) -> str:
    """`pretrained_kind` of the run or export in `folder`: as its counts file records it, else (counts from
    before it was recorded) as its model.json's init says; "" when neither does."""
    if not folder:
        return ""
    f = Path(folder) / COUNTS_FILE
    if f.is_file():
        meta = _read(str(f), f.stat().st_mtime_ns)[1]
        if "pretrained" in meta:
            return meta["pretrained"]
    m = Path(folder) / "model.json"
    if m.is_file():
        import json

        return pretrained_kind(json.loads(m.read_text(encoding="utf-8")).get("init"))
    return ""


@functools.lru_cache(maxsize=4096)
def _english(word: str, lang: str | None) -> bool:
    """`word` is English rather than `lang` by wordfreq's lists (more frequent in English, and English at all):
    "giraffe", "red" but not Spanish "rojas" nor German "rote", which CLIP's pieces spell too."""
    from wordfreq import zipf_frequency

    w = word.strip(PUNCTUATION).lower()
    en = zipf_frequency(w, "en")
    try:
        theirs = zipf_frequency(w, lang) if lang and lang != "en" else 0.0
    except LookupError:   # a language wordfreq lacks
        theirs = 0.0
    return en > 0 and en >= theirs


def unseen_words(folder: str | Path | None, tokenizer, texts: list[str]) -> dict[str, list[str]]:
    """{word: its tokens never in the run's training captions} over the words of `texts` (split at white space,
    each word tokenized alone), less what the tower knew before (`pretrained_kind`); {} without counts."""
    counts = load_counts(folder)
    kind = pretrained_of(folder) if counts is not None else ""
    if counts is None or kind == "all":
        return {}
    lang = (getattr(tokenizer, "meta", {}) or {}).get("language")
    out: dict[str, list[str]] = {}
    words = dict.fromkeys(w for t in texts for w in str(t).split())
    for w, ids in zip(words, tokenizer.encode_batch(list(words))):
        bad = [i for i in ids if i >= len(counts) or counts[i] == 0]
        if bad and kind == "clip" and max(ids) < CLIP_IDS and _english(w, lang):
            continue   # an English word in CLIP's own pieces: what a `clip` init's tower began knowing
        if bad:
            out[w] = [tokenizer.decode([i]) or str(i) for i in bad]
    return out


def note(folder: str | Path | None, tokenizer, texts: list[str], lang: str | None = None) -> str | None:
    """One line naming the words of `texts` with tokens the run never trained on, each with a form of it
    whose tokens were all trained where `lang` has a morphology (None: there are no such words)."""
    bad = unseen_words(folder, tokenizer, texts)
    if not bad:
        return None
    return describe(folder, bad, forms=trained_forms(folder, tokenizer, list(bad)[:8], lang))


def describe(folder: str | Path, bad: dict[str, list[str]], limit: int = 8, forms: dict | None = None) -> str:
    """`unseen_words`' answer as one line (`forms`: {word: a trained form of it}, named beside it)."""
    forms = forms or {}
    shown = [f"«{w}» (token{'s' * (len(p) > 1)} {', '.join(repr(x) for x in p)}"
             + (f"; trained form «{forms[w]}»" if w in forms else "") + ")" for w, p in list(bad.items())[:limit]]
    more = f" and {len(bad) - limit} more words" if len(bad) > limit else ""
    return (f"note: never in the training captions of {folder}: {'; '.join(shown)}{more} "
            f"— their embeddings are untrained, so results for them are a guess")


def warn(folder, tokenizer, texts: list[str], lang: str | None = None) -> None:
    """`note` on standard error, where there is one."""
    line = note(folder, tokenizer, texts, lang)
    if line:
        print(line, file=sys.stderr, flush=True)


def trained_form(folder: str | Path | None, tokenizer, word: str, lang: str | None) -> str | None:
    """A form of `word` whose tokens all occurred in the run's training captions: in Russian and Ukrainian, of
    the lexemes of its readings (pymorphy3), the form sharing most of its number, case and gender, then the one
    whose rarest token was counted most; in the other languages simplemma lemmatises (about 50), its
    dictionary form, where that was trained ("rojas" -> "rojo": the colour, not the agreement). None without
    counts, a morphology, or such a form."""
    from .morph import MORPH_LANGS, analyzer, lemma

    counts = load_counts(folder)
    core = word.strip(PUNCTUATION)
    if counts is None or not core:
        return None
    if lang not in MORPH_LANGS:
        base = lemma(core, lang)
        ids = tokenizer.encode(base) if base else []
        return word.replace(core, base) if ids and all(i < len(counts) and counts[i] > 0 for i in ids) else None
    best, best_key = None, None
    for reading in analyzer(lang).parse(core.lower())[:3]:
        want = {reading.tag.number, reading.tag.case, reading.tag.gender} - {None}
        for form in reading.lexeme:
            ids = tokenizer.encode(form.word)
            rarest = min((int(counts[i]) if i < len(counts) else 0 for i in ids), default=0)
            key = (len(want & {form.tag.number, form.tag.case, form.tag.gender}), rarest)
            if rarest > 0 and (best_key is None or key > best_key):
                best, best_key = form.word, key
    return None if best is None else word.replace(core, best)


def trained_forms(folder: str | Path | None, tokenizer, words: list[str], lang: str | None) -> dict[str, str]:
    """{word: its `trained_form`} for the words of `words` that have one."""
    forms = {w: trained_form(folder, tokenizer, w, lang) for w in words} if lang else {}
    return {w: f for w, f in forms.items() if f}


def rewrite(folder: str | Path | None, tokenizer, text: str, lang: str | None) -> tuple[str, dict[str, str]]:
    """`text` with each word whose tokens no training caption held replaced by its `trained_form`, where
    there is one (a query's "красные", never in the captions, answered as "красных"). -> (text, {word: form})"""
    subs = trained_forms(folder, tokenizer, list(unseen_words(folder, tokenizer, [text])), lang)
    return (" ".join(subs.get(w, w) for w in text.split()) if subs else text), subs


def summary(counts: np.ndarray, added: int | None = None) -> dict:
    """Distinct tokens the captions used, of the vocabulary; of the `added` tokens of a langclip tokenizer
    too (ids 49,406 on, after CLIP's own and before start/end-of-text)."""
    s = {"tokens_seen": int((counts > 0).sum()), "vocab_size": int(len(counts)), "token_occurrences": int(counts.sum())}
    if added:
        new = counts[CLIP_IDS: CLIP_IDS + added]
        s.update(new_tokens_seen=int((new > 0).sum()), new_tokens=int(added))
    return s


def summary_text(s: dict) -> str:
    line = f"the training captions use {s['tokens_seen']:,} of the tokenizer's {s['vocab_size']:,} tokens"
    if "new_tokens" in s:
        line += f", {s['new_tokens_seen']:,} of its {s['new_tokens']:,} added ones"
    return line
