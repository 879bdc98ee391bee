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
