"""Stage 1, the tokenizer: CLIP's byte-level BPE extended with merges for a new language.

    vocab.py   CLIP's bytes, merges and ids; the `tokenizers` pipeline built from them
    clean.py   cleaning as open_clip does it, its fast-path predicates, CLIP's pre-tokenizer
    encode.py  Tokenizer (batch encoding), load_tokenizer
    hf.py      HFTextTokenizer (a Hugging Face encoder's own)
    bpe.py     continued BPE training on top of CLIP's merge state
    train.py   corpus -> merges (the English-identity rule), statistics
"""
from .clean import clean, pretokenize
from .encode import META_FILE, Tokenizer, load_tokenizer
from .hf import HFTextTokenizer
from .vocab import (CLIP_VOCAB, EOT, NUM_CLIP_MERGES, PAD_ID, SOT, SUFFIX, build_hf_tokenizer, bytes_to_unicode,
                    clip_base_vocab, clip_merges, clip_normalizer)

__all__ = ["CLIP_VOCAB", "EOT", "META_FILE", "NUM_CLIP_MERGES", "PAD_ID", "SOT", "SUFFIX", "HFTextTokenizer", "Tokenizer",
           "build_hf_tokenizer", "bytes_to_unicode", "clean", "clip_base_vocab", "clip_merges", "clip_normalizer", "load_tokenizer",
           "pretokenize"]
