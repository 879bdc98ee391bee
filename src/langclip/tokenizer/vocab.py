"""CLIP's byte-level BPE as data: the byte table, CLIP's merges (shipped inside open_clip), the ids
langclip keeps, and the `tokenizers` pipeline built from them.

Ids 0..49405 keep CLIP's meaning (256 bytes, 256 bytes + `</w>`, 48,894 merges). The new merges'
tokens follow from 49406 on, and start/end-of-text move to the two last ids (V-2, V-1), so the
end-of-text token is still the largest id and open_clip's default `argmax` pooling keeps working.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Sequence

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
SUFFIX = "</w>"


PAD_ID = 0


NUM_CLIP_MERGES = 49152 - 256 - 2  # the slice open_clip applies to its merges file: 48,894 merges


CLIP_VOCAB = 49408


# CLIP's pre-tokenizer pattern (open_clip/tokenizer.py), without the two special-token alternatives,
# which `tokenizers` handles as added tokens.
PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def char_class(cps, char) -> str:
    """The body of a regex character class for code points `cps`, runs written as ranges, each end
    written by `char(cp)`: [0x41, 0x42, 0x43, 0x5A] -> 'A-CZ' with `chr`."""
    cps = sorted(set(cps))
    spans, lo, hi = [], cps[0], cps[0]
    for c in cps[1:] + [-1]:
        if c == hi + 1:
            hi = c
            continue
        spans.append(char(lo) if lo == hi else f"{char(lo)}-{char(hi)}")
        lo = hi = c
    return "".join(spans)


def pretokenize_pattern(marks: str = "", joined: str = "") -> str:
    """CLIP's pattern with the combining marks `marks` counted as letters: a word of a script written
    with vowel signs and viramas (Devanagari, Bengali, Tamil, ...) stays one pre-token instead of being
    cut at every mark ("हिन्दी": 6 pre-tokens under CLIP's pattern, 1 here). With `joined` (characters of
    the target scripts), a zero-width non-joiner or joiner standing between two of them is part of the
    word too (Persian "کتاب‌ها", cut in three by CLIP's pattern). Text holding none of `marks` and no
    joiner between `joined` characters is cut exactly as CLIP's pattern cuts it; with neither argument
    this is CLIP's pattern itself."""
    if not marks and not joined:
        return PRETOKENIZE_PATTERN

    def char(cp: int) -> str:   # an escape both Python's `regex` and the Rust side's Oniguruma read
        return f"\\u{cp:04X}" if cp <= 0xFFFF else chr(cp)

    cls = char_class(map(ord, marks), char) if marks else ""
    word = r"[\p{L}" + cls + "]+"
    if joined:
        between = char_class(map(ord, joined), char)
        word = r"(?:[\p{L}" + cls + r"]|(?<=[" + between + r"])[\u200C\u200D](?=[" + between + "]))+"
    return r"""'s|'t|'re|'ve|'m|'ll|'d|""" + word + r"""|[\p{N}]|[^\s\p{L}\p{N}""" + cls + "]+"


def split_pattern(hf_tokenizer) -> str:
    """The pre-tokenizer pattern a `tokenizers.Tokenizer` built by `build_hf_tokenizer` uses (read back
    from the tokenizer itself, so a saved tokenizer.json is the one source of truth); CLIP's if absent."""
    import json

    try:
        state = json.loads(hf_tokenizer.pre_tokenizer.__getstate__())
        for p in state.get("pretokenizers", [state]):
            if p.get("type") == "Split":
                return p["pattern"]["Regex"]
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    return PRETOKENIZE_PATTERN


# Python's str.lower (CLIP's cleaning) follows Unicode's Final_Sigma rule: a capital sigma after a cased
# letter and not before one becomes 'ς' ("ΟΔΟΣ" -> "οδος"); the `tokenizers` library's Lowercase maps
# every Σ to 'σ'. The rule, with Unicode's case-ignorable characters skipped (up to three behind):
_CASED = r"[\p{Ll}\p{Lu}\p{Lt}]"
_CASE_IGNORABLE = (r"[\p{Mn}\p{Me}\p{Cf}\p{Lm}\p{Sk}'.:\x{00B7}\x{0387}\x{055F}\x{05F4}\x{2018}\x{2019}"
                   r"\x{2024}\x{2027}\x{FE13}\x{FE52}\x{FE55}\x{FF07}\x{FF0E}\x{FF1A}]")
FINAL_SIGMA = (r"(?<=" + "|".join(_CASED + _CASE_IGNORABLE * k for k in range(4)) + r")\x{03A3}"
               r"(?!" + _CASE_IGNORABLE + r"*" + _CASED + r")")


def clip_normalizer():
    """CLIP's cleaning as a `tokenizers` normaliser, for the exported tokenizer.json: NFC, white-space
    runs to one space, lower case (with Greek's final sigma as Python writes it). Not ftfy's fixes nor
    HTML unescaping: callers of an export collapse white space; typed queries need neither."""
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                 normalizers.Replace(Regex(FINAL_SIGMA), "\u03c2"), normalizers.Lowercase()])


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


@functools.lru_cache()
def unicode_to_bytes() -> dict[str, int]:
    """`bytes_to_unicode` inverted: CLIP's byte-level character -> its byte (read only)."""
    return {c: b for b, c in bytes_to_unicode().items()}


def readable(token: str) -> str:
    """A vocabulary token as text: CLIP's byte-level characters back to UTF-8 ("Ð¶" -> "ж"), a piece of a
    character as its bytes ("\\xd0"), the end-of-word mark kept ("кот</w>")."""
    end = SUFFIX if token.endswith(SUFFIX) else ""
    body, dec = token[: len(token) - len(end)], unicode_to_bytes()
    if not all(c in dec for c in body):
        return token
    return bytes(dec[c] for c in body).decode("utf-8", errors="backslashreplace") + end


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


def _vocab_and_merges(new_merges: Sequence[tuple[str, str]]) -> tuple[dict[str, int], list]:
    vocab_list = clip_base_vocab() + ["".join(m) for m in new_merges]
    vocab: dict[str, int] = {}
    for i, t in enumerate(vocab_list):
        if t in vocab:
            raise ValueError(f"duplicate token {t!r} at id {i} (first at {vocab[t]})")
        vocab[t] = i
    vocab[SOT], vocab[EOT] = len(vocab), len(vocab) + 1
    return vocab, list(clip_merges()) + [tuple(m) for m in new_merges]


def build_hf_tokenizer(new_merges: Sequence[tuple[str, str]] = (), pattern: str = PRETOKENIZE_PATTERN):
    """A `tokenizers.Tokenizer` for CLIP's BPE plus `new_merges` (ranked after CLIP's), pre-tokenizing
    with `pattern` (CLIP's, or `pretokenize_pattern(marks)`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab, merges = _vocab_and_merges(new_merges)
    sot_id, eot_id = vocab[SOT], vocab[EOT]
    bpe = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix=SUFFIX, continuing_subword_prefix="",
                     fuse_unk=False, ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.normalizer = clip_normalizer()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace(SUFFIX, " ")])
    tok.add_special_tokens([SOT, EOT])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, sot_id), (EOT, eot_id)])
    return tok
