"""`HFTextTokenizer`: a Hugging Face encoder's own tokenizer, for `hf:<name>` text towers, with langclip's call."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence


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

    def tokens(self, text: str) -> list[str]:
        return self.tok.convert_ids_to_tokens(self.encode(text))

    pieces = tokens   # already text ("▁кот")

    num_added_merges = None    # not an extension of CLIP's BPE

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None):
        if isinstance(texts, str):
            texts = [texts]
        L = context_length or self.context_length
        out = self.tok(list(texts), padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        return out["input_ids"].long()
