"""CLIP's byte-level BPE, extended with merges for a new language, encoded by HF `tokenizers` (Rust).

Ids 0..49405 keep CLIP's meaning (256 bytes, 256 bytes + `</w>`, 48,894 merges). The new merges'
tokens follow from 49406 on, and start/end-of-text move to the two last ids (V-2, V-1), so the
end-of-text token is still the largest id and open_clip's default `argmax` pooling keeps working
unchanged — in langclip, in stock open_clip after export, and for CLIP's own vocabulary (V = 49408).

Text is cleaned as open_clip's SimpleTokenizer does (ftfy, HTML unescape twice, whitespace collapse,
lower case) in Python; pre-tokenization (CLIP's regex), byte-level mapping, BPE with the `</w>`
end-of-word suffix and the start/end tokens are all in `tokenizer.json`, so any tool that loads that
file gives the same ids on already-cleaned text.
"""
from __future__ import annotations

import functools
import gc
from itertools import chain
import gzip
import html
import importlib.util
import json
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import regex

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
SUFFIX = "</w>"
PAD_ID = 0
NUM_CLIP_MERGES = 49152 - 256 - 2  # the slice open_clip applies to its merges file: 48,894 merges
CLIP_VOCAB = 49408
# CLIP's pre-tokenizer pattern (open_clip/tokenizer.py), without the two special-token alternatives,
# which `tokenizers` handles as added tokens.
PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_PRE = regex.compile(PRETOKENIZE_PATTERN, regex.IGNORECASE)
_WS = regex.compile(r"\s+")
META_FILE = "langclip_tokenizer.json"


@functools.lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character table (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_bpe_file() -> Path:
    """CLIP's merges file, shipped inside open_clip (found without importing open_clip/torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed; it ships CLIP's BPE merges file")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


@functools.lru_cache()
def clip_merges() -> tuple[tuple[str, str], ...]:
    lines = gzip.open(clip_bpe_file()).read().decode("utf-8").split("\n")[1 : NUM_CLIP_MERGES + 1]
    return tuple(tuple(line.split()) for line in lines)  # type: ignore[misc]


def clip_base_vocab() -> list[str]:
    """CLIP's tokens for ids 0..49405 (everything except start/end-of-text)."""
    v = list(bytes_to_unicode().values())
    v = v + [t + SUFFIX for t in v]
    return v + ["".join(m) for m in clip_merges()]


@functools.lru_cache()
def _ftfy_sensitive() -> frozenset:
    """Characters on which some ftfy fixer (or html.unescape) may act; built from ftfy's own tables."""
    from ftfy import chardata

    chars = set(chardata.LIGATURES) | set(chardata.WIDTH_MAP) | set(chardata.CONTROL_CHARS)
    chars |= set(range(0x80, 0xA0)) | set(range(0xD800, 0xE000))  # C1 controls, surrogates
    chars |= {ord(c) for c in "&\r\x0b\x0c\x1b\u2028\u2029\u02bc\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"}
    return frozenset(chr(c) for c in chars if c not in (0x09, 0x0a, 0x20))


def _sre():
    """(constants, parser) of Python's regex engine, for reading ftfy's pattern."""
    try:
        from re import _constants as C, _parser as P  # Python >= 3.11
    except ImportError:  # pragma: no cover
        import sre_constants as C
        import sre_parse as P
    return C, P


def _charset(item) -> set[int] | None:
    """Code points a parsed regex item (a literal or a plain character class) can match; None if any."""
    C, _ = _sre()
    op, av = item
    if op is C.LITERAL:
        return {av}
    if op is not C.IN:
        return None
    out: set[int] = set()
    for o, a in av:
        if o is C.LITERAL:
            out.add(a)
        elif o is C.RANGE:
            out.update(range(a[0], a[1] + 1))
        else:  # negation, categories (\w, \s): may match anything
            return None
    return out


@functools.lru_cache()
def _mojibake_triggers() -> frozenset:
    """A set of characters that every match of ftfy's mojibake detector (`badness.BADNESS_RE`) contains
    at least one of: for each alternative of the regex, the mandatory item whose characters are rarest
    in ordinary Latin/Cyrillic/Greek text. Text with none of them cannot be `is_bad`, so ftfy's
    encoding fixer leaves it unchanged, and the (slow) regex need not run. Derived from ftfy's own
    regex, so it follows ftfy's version."""
    C, P = _sre()
    from ftfy.badness import BADNESS_RE

    tree = P.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    if BADNESS_RE.flags & re.IGNORECASE or len(tree.data) != 1 or tree.data[0][0] is not C.BRANCH:
        return frozenset(map(chr, range(0x80, 0x110000)))  # unknown shape: every non-ASCII text checks
    # printable ASCII and the basic Greek and Russian alphabets
    common = set(range(0x20, 0x7F)) | set(range(0x391, 0x3AA)) | set(range(0x3B1, 0x3CA))
    common |= set(range(0x410, 0x450)) | {0x401, 0x451}
    out: set[int] = set()
    for alt in tree.data[0][1][1]:
        sets = [s for s in map(_charset, alt) if s is not None]
        if not sets:
            return frozenset(map(chr, range(0x80, 0x110000)))
        out |= min(sets, key=lambda s: (len(s & common), len(s)))
    return frozenset(map(chr, out))


@functools.lru_cache()
def _odd_spaces() -> frozenset:
    """White space that `str.split` and CLIP's `\\s` disagree on (it ends at U+3000 in Unicode; a test
    checks the whole range)."""
    return frozenset(c for c in map(chr, range(0x3001)) if c.isspace() != bool(_WS.fullmatch(c)))


@functools.lru_cache()
def _slow_chars() -> frozenset:
    """Characters that send a non-ASCII text through ftfy: the fixers' characters, the mojibake
    detector's triggers, and the odd white space."""
    return _ftfy_sensitive() | _mojibake_triggers() | _odd_spaces() | {_SEP}


@functools.lru_cache()
def _slow_re() -> "re.Pattern":
    """`_slow_chars` as one character class: a search is ~7x faster than `frozenset.isdisjoint`."""
    cps = sorted(map(ord, _slow_chars()))
    ranges, lo, hi = [], cps[0], cps[0]
    for c in cps[1:] + [-1]:
        if c == hi + 1:
            hi = c
            continue
        ranges.append(re.escape(chr(lo)) + ("" if lo == hi else "-" + re.escape(chr(hi))))
        lo = hi = c
    return re.compile("[" + "".join(ranges) + "]")


@functools.lru_cache()
def _sep_breakers() -> "re.Pattern":
    """White space that CLIP's `\\s` does not know, which would break the batch's single `str.split`.
    ftfy removes it all; the check guards against ftfy changing."""
    return re.compile("[" + "".join(map(re.escape, sorted(_odd_spaces()))) + "]")


def _needs_ftfy(text: str) -> bool:
    """False when ftfy.fix_text and html.unescape would return `text` unchanged, decided cheaply.

    ftfy runs its fixers until nothing changes; on text with none of the characters its fixers touch,
    that is NFC already and that its mojibake detector (`is_bad`) does not flag, every fixer is the
    identity. Printable ASCII without '&' is the common case; `is_bad` runs only on the rare text
    holding one of its trigger characters."""
    if text.isascii():
        return not text.isprintable() or "&" in text
    if not unicodedata.is_normalized("NFC", text) or not _ftfy_sensitive().isdisjoint(text):
        return True
    if _mojibake_triggers().isdisjoint(text):
        return False
    from ftfy.badness import is_bad

    return is_bad(text)


def clean(text: str) -> str:
    """open_clip's `_clean_lower`: ftfy, HTML-unescape twice, strip, collapse whitespace, lower-case."""
    if _needs_ftfy(text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WS.sub(" ", text).strip().lower()


def pretokenize(cleaned: str) -> list[str]:
    """CLIP's pre-tokenization of cleaned text: 'a cat's 2 paws!' -> ['a', 'cat', "'s", '2', 'paws', '!']."""
    return _PRE.findall(cleaned)


_chain = chain.from_iterable
_SEP = "\x00"  # separates texts in a batch; never in a cleaned text (checked)
_BYTE_MAP = {i: c for i, c in bytes_to_unicode().items()}  # for str.translate of latin-1-decoded bytes


def build_hf_tokenizer(new_merges: Sequence[tuple[str, str]] = ()):
    """A `tokenizers.Tokenizer` for CLIP's BPE plus `new_merges` (ranked after CLIP's)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab_list = clip_base_vocab() + ["".join(m) for m in new_merges]
    vocab: dict[str, int] = {}
    for i, t in enumerate(vocab_list):
        if t in vocab:
            raise ValueError(f"duplicate token {t!r} at id {i} (first at {vocab[t]})")
        vocab[t] = i
    sot_id, eot_id = len(vocab), len(vocab) + 1
    vocab[SOT], vocab[EOT] = sot_id, eot_id
    merges = list(clip_merges()) + [tuple(m) for m in new_merges]
    bpe = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix=SUFFIX, continuing_subword_prefix="",
                     fuse_unk=False, ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(SUFFIX, " ")])
    tok.add_special_tokens([SOT, EOT])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, sot_id), (EOT, eot_id)])
    return tok


def _lookup_arrow(chunks: list[str], cache):
    """The concatenated ids of `chunks`, for big batches: Arrow's hash table finds the distinct chunks
    (C++), each distinct chunk is looked up once, and NumPy gathers the rest. ~3x faster than one dict
    lookup per chunk at 100k texts. None if Arrow cannot take the strings (e.g. lone surrogates)."""
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
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    u_ids = [cache[u] for u in enc.dictionary.to_pylist()]
    u_lens = np.fromiter(map(len, u_ids), dtype=np.int64, count=len(u_ids))
    u_flat = np.fromiter(_chain(u_ids), dtype=np.int64, count=int(u_lens.sum()))
    c_lens = u_lens[codes]
    src = np.repeat((u_lens.cumsum() - u_lens)[codes] - (c_lens.cumsum() - c_lens), c_lens) + np.arange(int(c_lens.sum()))
    return u_flat[src]


class _Memo(dict):
    """A dict that computes a missing value with `fn(key)` and keeps it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __missing__(self, key):
        value = self[key] = self.fn(key)
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
    def from_merges(cls, new_merges: Sequence[tuple[str, str]], meta: dict | None = None) -> "Tokenizer":
        return cls(build_hf_tokenizer(new_merges), meta)

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
        skipped where it provably changes nothing but case (see `_needs_ftfy`). The whole batch is
        joined with a separator chunk, split once and looked up in one pass at C speed."""
        import numpy as np

        cache, slow, is_nfc = self._cache, _slow_re().search, unicodedata.is_normalized
        if len(cache) > 2_000_000:
            cache.clear()
        cache[_SEP] = (-1,)
        prepared = [t.lower() if ((t.isprintable() and "&" not in t) if t.isascii() else
                                  (not slow(t) and is_nfc("NFC", t))) else clean(t) for t in texts]
        joined = f" {_SEP} ".join(prepared)
        if joined.count(_SEP) != max(len(prepared) - 1, 0) or _sep_breakers().search(joined):
            # a cleaned text kept a character that str.split would misread: text by text
            flat: list[int] = []
            lens: list[int] = []
            for t in prepared:
                n0 = len(flat)
                t = _WS.sub(" ", t).strip(" ")  # no-op on cleaned text; CLIP's split on the others
                flat.extend(_chain(map(cache.__getitem__, t.split(" ") if t else ())))
                lens.append(len(flat) - n0)
            return np.asarray(flat, dtype=np.int64), np.asarray(lens, dtype=np.int64)
        chunks = joined.split()
        # a new chunk is encoded by _Memo.__missing__
        ids = _lookup_arrow(chunks, cache) if len(chunks) >= 4096 else None
        if ids is None:
            ids = np.fromiter(_chain(map(cache.__getitem__, chunks)), dtype=np.int64)
        seps = np.flatnonzero(ids == -1)
        lens = np.diff(np.concatenate(([-1], seps, [len(ids)]))) - 1
        return (np.delete(ids, seps) if len(seps) else ids), lens

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        """Ids of one cleaned, space-free chunk (not memoised here: `_Memo` stores the result).
        A literal "<|endoftext|>" in a text is plain text, as in SimpleTokenizer (open_clip >= 3)."""
        # a run of letters is one pre-token; str.isalpha is \p{L} (checked in the old, stable
        # blocks only, where Python's and `regex`'s Unicode tables cannot differ)
        if chunk.isalpha() and (chunk.isascii() or max(chunk) < "\u0530"):
            return self._bpe_ids(chunk)
        words = _PRE.findall(chunk)
        if len(words) == 1 and words[0] == chunk:
            return self._bpe_ids(chunk)
        return tuple([i for w in words for i in self._cache[w]])

    def _bpe_ids(self, word: str) -> tuple[int, ...]:
        """BPE of one pre-token, mapped to CLIP's byte-level characters ('!'..'~' map to themselves)."""
        if not (word.isascii() and word.isprintable()):
            word = word.encode("utf-8").decode("latin-1").translate(_BYTE_MAP)
        return tuple([t.id for t in self._bpe.tokenize(word)])

    def tokens(self, text: str) -> list[str]:
        return self.hf.encode(clean(text), add_special_tokens=False).tokens

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


class HFTextTokenizer:
    """A Hugging Face encoder's own tokenizer, for `hf:<name>` text towers, with langclip's call:
    `tok(texts, context_length) -> LongTensor (B, L)` padded with the model's pad id; truncation keeps
    the closing special token, as Hugging Face tokenizers do."""

    kind = "hf"

    def __init__(self, tok, context_length: int = 77):
        self.tok = tok
        self.context_length = context_length
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.vocab_size = len(tok)
        self.meta = {"base": str(getattr(tok, "name_or_path", "")), "kind": "hf"}

    @classmethod
    def load(cls, name_or_path: str | Path, context_length: int = 77) -> "HFTextTokenizer":
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise RuntimeError("hf:<name> text towers need `transformers`: pip install 'langclip[hf]'") from None
        try:
            tok = AutoTokenizer.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"Hugging Face tokenizer {str(name_or_path)!r} could not be loaded: "
                                    f"{str(e).splitlines()[0]}") from None
        return cls(tok, context_length)

    def save(self, path: str | Path) -> Path:
        self.tok.save_pretrained(str(path))
        return Path(path)

    def digest(self) -> str:
        import hashlib

        vocab = json.dumps(sorted(self.tok.get_vocab().items()), ensure_ascii=False)
        return hashlib.sha256(f"{type(self.tok).__name__}\n{vocab}".encode("utf-8")).hexdigest()[:16]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None):
        if isinstance(texts, str):
            texts = [texts]
        L = context_length or self.context_length
        out = self.tok(list(texts), padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        return out["input_ids"].long()


def load_tokenizer(path: str | Path, context_length: int | None = None):
    """A saved tokenizer folder: langclip's extended BPE, or a Hugging Face encoder's own tokenizer."""
    path = Path(path)
    if path.is_dir() and not (path / META_FILE).is_file() and (path / "tokenizer_config.json").is_file():
        return HFTextTokenizer.load(path, context_length or 77)
    tok = Tokenizer.load(path)
    if context_length:
        tok.context_length = context_length
    return tok
