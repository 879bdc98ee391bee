"""Thumbnails made at index time: JPEGs of at most `size` pixels a side, decoded in worker processes,
written back to back into one file (offsets in items.parquet), so serving one is a single read."""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..files import progress_bar


class _Thumbs(torch.utils.data.Dataset):
    def __init__(self, refs, size: int, orient: bool = False):
        self.refs, self.size, self.orient = refs, size, orient

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        from ..pairs import open_image

        try:
            # decoded at a reduced scale when the picture is large, as PIL's thumbnail() does by itself
            # on an image not yet loaded (reducing_gap 2): a camera's photo costs a fraction of a full decode
            im = open_image(self.refs[i], draft=2 * self.size, orient=self.orient).convert("RGB")
            im.thumbnail((self.size, self.size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            return buf.getvalue()
        except Exception:      # embedded already, so readable once; a file changed since: a grey tile
            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (self.size, self.size), (128, 128, 128)).save(buf, "JPEG")
            return buf.getvalue()


def make_thumbnails(refs, path: Path, size: int, workers: int, progress: bool, reuse: dict | None = None,
                    orient: bool = False):
    """Thumbnails of `refs` in the file `path`. With `reuse` (an update), the first len(reuse["rows"])
    pictures already have theirs in that file at (offset, length): the new ones are appended, nothing is
    copied, unless more than half the file would be left unreferenced (then it is rewritten compactly,
    through a temporary file). -> (offsets, lengths)."""
    kept = reuse["rows"] if reuse else []
    used = sum(n for _, n in kept)
    size_now = path.stat().st_size if path.is_file() else 0
    if kept and used >= size_now / 2:
        offs, lens = [o for o, _ in kept], [n for _, n in kept]
        with open(path, "ab") as f:
            _write_new(f, refs[len(kept):], size, workers, progress, offs, lens, orient)
        return offs, lens
    tmp = path.with_suffix(".tmp")
    offs, lens = [], []
    with open(tmp, "wb") as f:
        if kept:
            fd = os.open(path, os.O_RDONLY)
            try:
                for o, n in kept:
                    offs.append(f.tell())
                    lens.append(n)
                    f.write(os.pread(fd, n, o))
            finally:
                os.close(fd)
        _write_new(f, refs[len(kept):], size, workers, progress, offs, lens, orient)
    os.replace(tmp, path)
    return offs, lens


def _write_new(f, todo, size: int, workers: int, progress: bool, offs: list, lens: list, orient: bool) -> None:
    from ..cache.embed import auto_workers

    if not todo:
        return
    loader = torch.utils.data.DataLoader(_Thumbs(todo, size, orient), batch_size=64,
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
