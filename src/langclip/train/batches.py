"""Batches for text-tower training, assembled on the host: which captions go into each epoch, and
their token ids, stored ragged and padded per batch to a length bucket.

    groups = CaptionGroups(train_idx, caption_image)        # captions grouped by image
    order = epoch_order(groups, seed, epoch)                 # one caption per image, shuffled
    table = TokenTable.encode(tok, captions, 77)             # every caption's ids, ragged
    tokens = table.batch(order[:1024], multiple=8)           # (1024, L) padded to the longest, L % 8 == 0

Under a causal mask (and with an HF encoder's attention mask) padding after the end of a text cannot
change its embedding, so cutting a batch to its longest text is exact.
"""
from __future__ import annotations

import torch


class CaptionGroups:
    """Training captions grouped by image, as flat arrays (no Python object per image, so an epoch
    order for millions of images takes milliseconds): `caps[starts[i]: starts[i] + counts[i]]` are
    the caption indices of the i-th training image (images in ascending row order)."""

    def __init__(self, train_idx: torch.Tensor, caption_image: torch.Tensor):
        ci = caption_image[train_idx]
        order = torch.argsort(ci, stable=True)
        self.caps = train_idx[order]
        _, self.counts = torch.unique_consecutive(ci[order], return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def __len__(self) -> int:
        return len(self.counts)


def epoch_order(groups: CaptionGroups, seed: int, epoch: int) -> torch.Tensor:
    """Caption indices for one epoch: one random caption per image, images shuffled."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    off = (torch.rand(len(groups), generator=g, dtype=torch.float64) * groups.counts).long()
    pick = groups.caps[groups.starts + torch.minimum(off, groups.counts - 1)]
    return pick[torch.randperm(len(pick), generator=g)]


@torch.no_grad()
def text_length(tokens: torch.Tensor, pad_id: int | None) -> int:
    """Length of the longest text in a padded batch: up to end-of-text (the largest id, langclip's
    tokenizer) or, with `pad_id` (a Hugging Face tokenizer), up to the last non-padding token."""
    return int(row_lengths(tokens, pad_id).max())


@torch.no_grad()
def row_lengths(tokens: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """Per-row length of a padded batch (see `text_length`). -> (B,) long"""
    if pad_id is None:
        return tokens.argmax(-1) + 1
    pos = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return ((tokens != pad_id) * pos).max(-1).values


class TokenTable:
    """Every caption's token ids, ragged: flat int32 ids plus each caption's offset and length, encoded
    in chunks. At the origin's scale (18.5M captions) that is ~1 GB where a padded int64 (N, 77) table
    is 11 GB, per process. `batch(idx)` gives a batch padded to its longest text (bucketed)."""

    def __init__(self, flat: torch.Tensor, lengths: torch.Tensor, pad_id: int | None, context_length: int):
        self.flat, self.lengths = flat, lengths
        self.offsets = torch.cumsum(lengths, 0, dtype=torch.long) - lengths
        self.pad_id, self.context_length = pad_id, context_length

    @classmethod
    def from_padded(cls, tokens: torch.Tensor, pad_id: int | None = None) -> "TokenTable":
        n = row_lengths(tokens, pad_id)
        keep = torch.arange(tokens.shape[1])[None, :] < n[:, None]
        return cls(tokens[keep].to(torch.int32), n.to(torch.int32), pad_id, tokens.shape[1])

    @classmethod
    def encode(cls, tok, texts: list[str], context_length: int, pad_id: int | None = None,
               chunk: int = 1 << 18, progress: bool = False) -> "TokenTable":
        from ..files import progress_bar

        parts = [cls.from_padded(tok(texts[s: s + chunk], context_length=context_length), pad_id)
                 for s in progress_bar(range(0, len(texts), chunk), desc="tokenize", unit="chunk",
                               disable=not progress or len(texts) <= chunk)]
        if not parts:
            return cls(torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int32), pad_id, context_length)
        return cls(torch.cat([p.flat for p in parts]), torch.cat([p.lengths for p in parts]), pad_id, context_length)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.flat, self.lengths, self.offsets))

    def subset(self, idx: torch.Tensor) -> "TokenTable":
        """The table of rows `idx`, in that order."""
        n = self.lengths[idx].long()
        starts = self.offsets[idx]
        within = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        return TokenTable(self.flat[torch.repeat_interleave(starts, n) + within].clone(), n.to(torch.int32),
                          self.pad_id, self.context_length)

    def batch(self, idx: torch.Tensor, multiple: int = 8) -> torch.Tensor:
        """(B, L) LongTensor of captions `idx`, L = the longest rounded up to `multiple` (<= context)."""
        n = self.lengths[idx].long()
        L = bucket_length(int(n.max()), self.context_length, multiple) if len(n) else 1
        pos = torch.arange(L)
        valid = pos[None, :] < n[:, None]
        out = torch.full((len(idx), L), self.pad_id or 0, dtype=torch.long)
        out[valid] = self.flat[(self.offsets[idx][:, None] + pos[None, :])[valid]].long()
        return out


def bucket_length(n: int, context: int, multiple: int) -> int:
    """Length a batch is cut to: its longest text rounded up to `multiple`, at most `context`.
    Under a causal mask padding after end-of-text cannot change it, so the cut is exact; rounding
    keeps the number of distinct shapes small (one compiled graph per length under torch.compile)."""
    return min(context, (n - 1) // multiple * multiple + multiple)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
