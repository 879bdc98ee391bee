"""Encoding: `Tokenizer` (CLIP's BPE + new merges, batch encoding through a memo of space-free
chunks and the Rust BPE of `tokenizers`); `load_tokenizer` (it, or `hf.HFTextTokenizer`)."""
from __future__ import annotations

import codecs
import gc
import json
import unicodedata
from itertools import chain, compress
from pathlib import Path
from typing import Iterable, Sequence

from .clean import SEP, WS, clean, non_letters, pre_regex, sep_breakers, slow_re
from .vocab import CLIP_VOCAB, EOT, PAD_ID, PRETOKENIZE_PATTERN, SOT, build_hf_tokenizer, bytes_to_unicode, readable, split_pattern

META_FILE = "langclip_tokenizer.json"


_chain = chain.from_iterable


BYTE_TABLE = "".join(bytes_to_unicode()[i] for i in range(256))  # CLIP's byte-level characters, a charmap codec


def _arrow_codes(chunks: list[str]):
    """(the distinct chunks, each chunk's index among them) of a big batch, found by Arrow's hash table
    (C++): ~3x faster than a dict lookup per chunk at 100k texts. None if Arrow cannot take the strings
    (e.g. lone surrogates)."""
    import numpy as np

    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    try:
        enc = pc.dictionary_encode(pa.array(chunks, type=pa.string()))
    except (pa.ArrowException, UnicodeError, ValueError, TypeError):
        return None
    return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _gather(u_ids: list[tuple[int, ...]], codes):
    """The concatenated ids of the chunks `codes` points at, given each distinct chunk's ids (NumPy)."""
    import numpy as np

    u_lens = np.fromiter(map(len, u_ids), dtype=np.int64, count=len(u_ids))
    u_flat = np.fromiter(_chain(u_ids), dtype=np.int64, count=int(u_lens.sum()))
    c_lens = u_lens[codes]
    src = np.repeat((u_lens.cumsum() - u_lens)[codes] - (c_lens.cumsum() - c_lens), c_lens) + np.arange(int(c_lens.sum()))
    return u_flat[src]


def _splice(flat, lens, rows: list[int], flat2, lens2):
    """`flat` and `lens` (texts' ids concatenated, their counts) with the texts `rows` (ascending) replaced
    by those of `flat2` and `lens2`."""
    import numpy as np

    starts, starts2 = lens.cumsum() - lens, lens2.cumsum() - lens2
    parts, prev = [], 0
    for k, j in enumerate(rows):
        parts += [flat[prev: starts[j]], flat2[starts2[k]: starts2[k] + lens2[k]]]
        prev = starts[j] + lens[j]
    lens = lens.copy()
    lens[rows] = lens2
    return np.concatenate(parts + [flat[prev:]]).astype(np.int64), lens


class _Memo(dict):
    """A dict that computes a missing value with `fn(key)`, and keeps it if the key is NFC (see `_fill`)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __missing__(self, key):
        value = self.fn(key)
        if key.isascii() or unicodedata.is_normalized("NFC", key):
            self[key] = value
        return value


class Tokenizer:
    """Bilingual CLIP tokenizer: `tok(["кот", "a cat"], context_length=77) -> LongTensor[2, 77]`."""

    def __init__(self, hf_tokenizer, meta: dict | None = None, context_length: int = 77):
        self.hf = hf_tokenizer
        self.meta = dict(meta or {})
        self.sot_token_id = self.hf.token_to_id(SOT)
        self.eot_token_id = self.hf.token_to_id(EOT)
        self.vocab_size = self.hf.get_vocab_size(with_added_tokens=True)
        self.context_length = context_length
        self.pad_token_id = PAD_ID
        assert self.eot_token_id == self.vocab_size - 1, "end-of-text must be the largest id (argmax pooling)"
        # the pre-tokenizer of tokenizer.json, so Python and the Rust side cut text alike
        self.pattern = split_pattern(self.hf)
        self._pre = pre_regex(self.pattern)
        self._others = non_letters(self.pattern)
        # chunk or pre-token -> ids, as tuples: tuples of ints leave the garbage collector's lists
        self._cache = _Memo(self._encode_chunk)
        # the BPE model alone, for pre-tokens already cut and byte-mapped; langclip memoises, so the
        # model's own word cache is off (its inserts cost more than they save here)
        self._bpe = self.hf.model
        if hasattr(self._bpe, "_resize_cache"):
            self._bpe._resize_cache(0)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def clip(cls) -> "Tokenizer":
        """CLIP's own tokenizer (49,408 ids), the base every langclip tokenizer extends."""
        return cls(build_hf_tokenizer(()), {"base": "openai-clip-bpe", "merges_added": 0})

    @classmethod
    def from_merges(cls, new_merges: Sequence[tuple[str, str]], meta: dict | None = None,
                    pattern: str = PRETOKENIZE_PATTERN) -> "Tokenizer":
        return cls(build_hf_tokenizer(new_merges, pattern), meta)

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTok

        path = Path(path)
        f = path / "tokenizer.json" if path.is_dir() else path
        if not f.is_file():
            raise FileNotFoundError(f"no tokenizer at {path}: expected a folder holding tokenizer.json "
                                    f"(made by `langclip tokenizer train`)")
        meta_f = f.parent / META_FILE
        meta = json.loads(meta_f.read_text(encoding="utf-8")) if meta_f.is_file() else {}
        return cls(HFTok.from_file(str(f)), meta, context_length=meta.get("context_length", 77))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(path / "tokenizer.json"))
        meta = dict(self.meta, vocab_size=self.vocab_size, sot_token_id=self.sot_token_id,
                    eot_token_id=self.eot_token_id, pad_token_id=PAD_ID, pool_type="argmax",
                    context_length=self.context_length, clip_ids_kept="0..49405")
        (path / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    def digest(self) -> str:
        """Identity of the vocabulary and merges (what a resumed run must share with its checkpoint)."""
        import hashlib

        return hashlib.sha256(self.hf.to_str().encode("utf-8")).hexdigest()[:16]

    # -- encoding -----------------------------------------------------------------------------
    @property
    def num_added_merges(self) -> int:
        return self.vocab_size - CLIP_VOCAB

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without start/end-of-text (like SimpleTokenizer.encode)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, without start/end-of-text."""
        flat, lens = self._encode_flat(texts)
        ends = lens.cumsum()
        return [flat[e - n : e].tolist() for e, n in zip(ends.tolist(), lens.tolist())]

    def _encode_flat(self, texts: Sequence[str]):
        # the batch allocates many small containers (none can form a cycle); a full collection over a
        # process holding torch would cost more than the encoding itself, so collection waits
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._encode_flat_inner(texts)
        finally:
            if paused:
                gc.enable()

    def _encode_flat_inner(self, texts: Sequence[str]):
        """All texts' ids (no start/end-of-text) concatenated, and each text's count (numpy int64).

        A cleaned text is cut at its spaces into chunks; no pre-token crosses a space, so a chunk's
        ids never depend on its neighbours and are memoised (as CLIP's own tokenizer memoises words).
        Only a new chunk is pre-tokenized and run through the BPE in `tokenizers` (Rust). Cleaning is
        skipped where it provably changes nothing but case (see `needs_ftfy`; its NFC check is made on
        the batch's new chunks, see `_fill`). The whole batch is joined with a separator chunk, split
        once and looked up in one pass at C speed."""
        cache, slow = self._cache, slow_re().search
        if len(cache) > 2_000_000:
            cache.clear()
        cache[SEP] = (-1,)
        prepared = [t if ((t.isprintable() and "&" not in t) if t.isascii() else not slow(t)) else clean(t)
                    for t in texts]
        return self._lookup(texts, prepared)

    def _lookup(self, texts: Sequence[str] | None, prepared: list[str]):
        """`_encode_flat_inner`'s work on texts prepared for cutting (a text as typed stands for its lower
        case) but not yet checked for NFC. Given the `texts`, the ones holding a new chunk that is not NFC
        are cleaned (ftfy normalises), encoded apart and spliced in."""
        import numpy as np

        cache, is_nfc = self._cache, unicodedata.is_normalized
        joined = f" {SEP} ".join(prepared)
        if joined.count(SEP) != max(len(prepared) - 1, 0) or sep_breakers().search(joined):
            # a cleaned text kept a character that str.split would misread: text by text, through _Memo
            flat: list[int] = []
            lens: list[int] = []
            for t, p in zip(texts or prepared, prepared):
                p = clean(t) if texts and p is t and not is_nfc("NFC", t) else p
                n0 = len(flat)
                p = WS.sub(" ", p).strip(" ")  # no-op on cleaned text; CLIP's split on the others
                flat.extend(_chain(map(cache.__getitem__, p.split(" ") if p else ())))
                lens.append(len(flat) - n0)
            return np.asarray(flat, dtype=np.int64), np.asarray(lens, dtype=np.int64)
        chunks = joined.split()
        found = _arrow_codes(chunks) if len(chunks) >= 4096 else None
        bad = self._fill([c for c in (found[0] if found else dict.fromkeys(chunks)) if c not in cache])
        redo = bad and texts is not None
        # every chunk is memoised now, but those left to _Memo.__missing__ (see _fill); a chunk that is not
        # NFC stands empty here, its texts are encoded again below (in this call only: the memo is shared
        # by the threads of a server, and another's batch holding the chunk must not read it empty)
        get = cache.__getitem__
        if redo:
            hole = dict.fromkeys(bad, ())
            get = lambda c: hole[c] if c in hole else cache[c]  # noqa: E731
        if found:
            ids = _gather(list(map(get, found[0])), found[1])
        else:
            ids = np.fromiter(_chain(map(get, chunks)), dtype=np.int64)
        seps = np.flatnonzero(ids == -1)
        lens = np.diff(np.concatenate(([-1], seps, [len(ids)]))) - 1
        flat = np.delete(ids, seps) if len(seps) else ids
        if not redo:
            return flat, lens
        # a text holding one is not NFC: the ftfy path (a cleaned one keeps its text, its chunk left to _Memo)
        if found:
            at = np.isin(found[1], [k for k, c in enumerate(found[0]) if c in bad])
            text_of = np.cumsum(found[1] == (found[0].index(SEP) if SEP in found[0] else -1))
        else:
            at = np.array([c in bad for c in chunks], dtype=bool)
            text_of = np.cumsum([c == SEP for c in chunks])
        rows = np.unique(text_of[at]).tolist()
        again = self._lookup(None, [clean(texts[j]) if prepared[j] is texts[j] else prepared[j] for j in rows])
        return _splice(flat, lens, rows, *again)

    def _fill(self, new: list[str]) -> set[str]:
        """Memoise a batch's new chunks (as typed: the ids are their lower case's) in one pass, and return
        those that are not NFC (not memoised).

        A text is NFC exactly when its chunks are (no canonical reordering or composition crosses white
        space), so the cleaning fast path's NFC check is made here, on the new chunks, not on every
        text: for scripts whose marks are NFC "maybe" characters (Bengali's vowel signs) each check is a
        full normalisation, half the time of a memoised text. Every key kept is NFC, so a
        chunk found in the memo needs no check. A chunk that is one run of letters (most) is one BPE
        call; the others are cut by the pre-tokenizer, and each pre-token is one BPE call. A chunk whose
        lower case is not NFC (rare) is left to `_Memo`, which keeps no key that is not NFC."""
        import numpy as np

        is_nfc = unicodedata.is_normalized
        # chunk by chunk: a long string holding one NFC "maybe" character is normalised whole, slower
        bad = {c for c in new if not is_nfc("NFC", c)}
        new = [c for c in new if c not in bad] if bad else new
        raw = " ".join(new)
        low_all = raw.lower()   # str.lower's final sigma looks no further than a space
        if low_all != raw and not is_nfc("NFC", low_all):   # lower case can break NFC (rarely)
            new = [c for c in new if is_nfc("NFC", c.lower())]
            low_all = " ".join(new).lower()
        if not new:
            return bad
        cache, pre = self._cache, self._pre
        lowered = low_all.split(" ")
        if self._others is None:
            cut = range(len(new))
        elif len(new) < 256:   # a query or a few: one search each costs less than NumPy's calls
            cut = [i for i, low in enumerate(lowered) if self._others.search(low)]
        else:   # the chunks holding something besides letters: found by one search of the batch
            hits = np.fromiter((m.start() for m in self._others.finditer(low_all)), dtype=np.int64)
            ends = np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered)).cumsum() + np.arange(len(lowered))
            cut = np.unique(np.searchsorted(ends, hits)).tolist()
        multi = {i: pre.findall(lowered[i]) for i in cut}
        one = [i not in multi for i in range(len(new))] if multi else None
        singles = list(compress(lowered, one)) if multi else lowered
        todo = dict.fromkeys(singles)
        for words in multi.values():   # a pre-token is its own pre-tokenization (tested)
            todo.update(dict.fromkeys(words))
        keys = [w for w in todo if w not in cache]
        cache.update(zip(keys, self._bpe_ids(keys)))
        get = cache.__getitem__
        cache.update(zip(compress(new, one) if multi else new, map(get, singles)))
        cache.update((new[i], tuple(_chain(map(get, words)))) for i, words in multi.items())
        return bad

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        """Ids of one space-free chunk's lower case (not memoised here: `_Memo` stores the result).
        A literal "<|endoftext|>" in a text is plain text, as in SimpleTokenizer (open_clip >= 3)."""
        if chunk == SEP:  # (memoised as well; a cache cleared by another thread meanwhile would lose it)
            return (-1,)
        chunk = chunk.lower()
        # one run of letters is one pre-token (`_fill`'s rule)
        words = [chunk] if self._others is not None and not self._others.search(chunk) else self._pre.findall(chunk)
        if len(words) == 1 and words[0] == chunk:
            return self._bpe_ids([chunk])[0]
        return tuple([i for w in words for i in self._cache[w]])

    def _bpe_ids(self, words: list[str]) -> list[tuple[int, ...]]:
        """BPE of pre-tokens, one `tokenizers` call each, after mapping all of them at once to CLIP's
        byte-level characters ('!'..'~' map to themselves; a space, which no pre-token holds, to "Ġ")."""
        joined = " ".join(words)
        if words and not (joined.isascii() and joined.isprintable()):
            words = codecs.charmap_decode(joined.encode("utf-8"), "strict", BYTE_TABLE)[0].split(BYTE_TABLE[32])
        tokenize = self._bpe.tokenize
        return [tuple([t.id for t in tokenize(w)]) for w in words]

    def tokens(self, text: str) -> list[str]:
        """The vocabulary's tokens of `text` (CLIP's byte-level characters: "Ð¶" for "ж")."""
        return [self.hf.id_to_token(i) for i in self.encode(text)]

    def pieces(self, text: str) -> list[str]:
        """The tokens of `text` as text: "кот</w>"; a piece of a character as its bytes ("\\xd0")."""
        return [readable(t) for t in self.tokens(text)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (self.sot_token_id, self.eot_token_id)]
        while ids and ids[-1] == PAD_ID:  # padding; a real "!" always ends with "!</w>" (id 256)
            ids.pop()
        return self.hf.decode(ids, skip_special_tokens=True).strip()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None):
        """Tokenize to a LongTensor (B, context_length): start, ids, end-of-text, then padding 0.
        Too long texts are cut so that end-of-text is always the last token."""
        import numpy as np
        import torch

        if isinstance(texts, str):
            texts = [texts]
        L = context_length or self.context_length
        if L < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {L}")
        flat, lens = self._encode_flat(texts)
        B = len(texts)
        out = np.zeros((B, L), dtype=np.int64)
        out[:, 0] = self.sot_token_id
        n = np.minimum(lens, L - 2)  # too long: cut, keeping room for end-of-text
        if len(flat):
            # flat position k of text b lands at out[b, 1 + k - start_b]
            shift = np.repeat(np.arange(B) * L + 1 - (lens.cumsum() - lens), lens)
            dest = np.arange(len(flat)) + shift
            if int(lens.max()) > L - 2:
                keep = dest - np.repeat(np.arange(B) * L, lens) < L - 1
                dest, flat = dest[keep], flat[keep]
            out.reshape(-1)[dest] = flat
        out[np.arange(B), n + 1] = self.eot_token_id
        return torch.from_numpy(out)


def load_tokenizer(path: str | Path, context_length: int | None = None):
    """A saved tokenizer folder: langclip's extended BPE, or a Hugging Face encoder's own tokenizer; a run
    folder stands for its tokenizer."""
    path = Path(path)
    if (path / "model.json").is_file() and (path / "tokenizer").is_dir():
        path = path / "tokenizer"
    if path.is_dir() and not (path / META_FILE).is_file() and (path / "tokenizer_config.json").is_file():
        from .hf import HFTextTokenizer

        return HFTextTokenizer.load(path, context_length or 77)
    tok = Tokenizer.load(path)
    if context_length:
        tok.context_length = context_length
    return tok
