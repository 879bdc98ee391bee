"""Thumbnails made at index time: JPEGs of at most `size` pixels a side, decoded in worker processes,
written back to back into one file (offsets in items.parquet), so serving one is a single read."""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..files import progress_bar


class _Thumbs(torch.utils.data.Dataset):
    def __init__(self, refs, size: int):
        self.refs, self.size = refs, size

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        from ..pairs import open_image

        try:
            im = open_image(self.refs[i]).convert("RGB")
            im.thumbnail((self.size, self.size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            return buf.getvalue()
        except Exception:      # embedded already, so readable once; a file changed since: a grey tile
            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (self.size, self.size), (128, 128, 128)).save(buf, "JPEG")
            return buf.getvalue()


def make_thumbnails(refs, out: Path, size: int, workers: int, progress: bool, reuse: dict | None = None):
    """Write the thumbnails of `refs` to `out`; the first len(reuse["rows"]) are copied from the old
    thumbnail file (`reuse["file"]`, (offset, length) each) instead of decoded. -> (offsets, lengths)."""
    from ..cache.embed import auto_workers

    offs, lens = [], []
    kept = reuse["rows"] if reuse else []
    with open(out, "wb") as f:
        if kept:
            fd = os.open(reuse["file"], os.O_RDONLY)
            try:
                for o, n in kept:
                    offs.append(f.tell())
                    lens.append(n)
                    f.write(os.pread(fd, n, o))
            finally:
                os.close(fd)
        todo = refs[len(kept):]
        if todo:
            loader = torch.utils.data.DataLoader(_Thumbs(todo, size), batch_size=64,
                                                 num_workers=workers if workers >= 0 else auto_workers(),
                                                 collate_fn=lambda b: b)
            bar = progress_bar(total=len(todo), unit="img", desc="thumbnails", disable=not progress)
            for batch in loader:
                for b in batch:
                    offs.append(f.tell())
                    lens.append(len(b))
                    f.write(b)
                bar.update(len(batch))
            bar.close()
    return offs, lens
