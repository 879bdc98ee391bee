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
import gzip
import html
import importlib.util
import json
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
def _ftfy_sensitive():
    """Characters on which some ftfy fixer (or html.unescape) may act; built from ftfy's own tables."""
    from ftfy import chardata

    chars = set(chardata.LIGATURES) | set(chardata.WIDTH_MAP) | set(chardata.CONTROL_CHARS)
    chars |= set(range(0x80, 0xA0)) | set(range(0xD800, 0xE000))  # C1 controls, surrogates
    chars |= {ord(c) for c in "&\r\x0b\x0c\x1b\u2028\u2029\u02bc\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"}
    return frozenset(chr(c) for c in chars if c not in (0x09, 0x0a, 0x20))


def _needs_ftfy(text: str) -> bool:
    """False when ftfy.fix_text and html.unescape would return `text` unchanged, decided cheaply.

    ftfy runs its fixers until nothing changes; on text with none of the characters its fixers touch,
    that is NFC already and that its mojibake detector (`is_bad`) does not flag, every fixer is the
    identity. Printable ASCII without '&' is the common case."""
    if text.isascii():
        return not text.isprintable() or "&" in text
    import unicodedata

    from ftfy.badness import is_bad

    return not _ftfy_sensitive().isdisjoint(text) or not unicodedata.is_normalized("NFC", text) or is_bad(text)


def clean(text: str) -> str:
    """open_clip's `_clean_lower`: ftfy, HTML-unescape twice, strip, collapse whitespace, lower-case."""
    if _needs_ftfy(text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WS.sub(" ", text).strip().lower()


def pretokenize(cleaned: str) -> list[str]:
    """CLIP's pre-tokenization of cleaned text: 'a cat's 2 paws!' -> ['a', 'cat', "'s", '2', 'paws', '!']."""
    return _PRE.findall(cleaned)


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
        self._cache: dict[str, list[int]] = {}  # pre-token -> ids
        # text is cleaned in Python (lower-case, NFC via ftfy, whitespace): the file's normalizer
        # would redo that work, so the runtime copy skips it (same ids on cleaned text)
        from tokenizers import Tokenizer as HFTok

        self._runtime = HFTok.from_str(self.hf.to_str())
        self._runtime.normalizer = None

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

    # -- encoding -----------------------------------------------------------------------------
    @property
    def num_added_merges(self) -> int:
        return self.vocab_size - CLIP_VOCAB

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without start/end-of-text (like SimpleTokenizer.encode)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, without start/end-of-text. The BPE runs in `tokenizers` (Rust) once per
        distinct pre-token; results are memoised, as CLIP's own tokenizer does, since a pre-token's ids
        do not depend on its neighbours."""
        cleaned = [clean(t) for t in texts]
        words = [_PRE.findall(t) if "<|" not in t else None for t in cleaned]
        cache = self._cache
        missing = {w for ws in words if ws for w in ws if w not in cache}
        if missing:
            if len(cache) > 2_000_000:
                cache.clear()
            missing = list(missing)
            for w, e in zip(missing, self._runtime.encode_batch(missing, add_special_tokens=False)):
                cache[w] = e.ids
        out = []
        for t, ws in zip(cleaned, words):
            if ws is None:  # literal special tokens in the text: let `tokenizers` handle them
                out.append(self.hf.encode(t, add_special_tokens=False).ids)
            else:
                out.append([i for w in ws for i in cache[w]])
        return out

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
        out = np.zeros((len(texts), L), dtype=np.int64)
        for i, ids in enumerate(self.encode_batch(texts)):
            ids = ids[: L - 2]
            out[i, 0] = self.sot_token_id
            out[i, 1 : len(ids) + 1] = ids
            out[i, len(ids) + 1] = self.eot_token_id
        return torch.from_numpy(out)
