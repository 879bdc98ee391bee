"""Pictures for the inference commands (`predict`, `similarity`, `encode`): the files and folders a
user names, listed before any model loads, and decoded (PIL, upright by EXIF) `batch` at a time —
in this process, or, beyond one batch, in worker processes that also preprocess them. And the
confusion-matrix picture `langclip eval` and the demo's report draw (`plot_confusion`)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


IMAGE_BATCH = 32   # pictures decoded and embedded at a time by predict, similarity and encode


def expand_images(paths: list[str]) -> tuple[list[str], int]:
    """--image(s): the files as given, and for a folder its pictures (recursive, in name order).
    A named file that is missing or not a picture is an error here, before any model loads (only its
    header is read); returns (paths, how many of them came from folders)."""
    from PIL import Image, UnidentifiedImageError

    from .pairs import heif_support, read_images
    from .pixels import allow_large_photos, is_raw

    heif_support()    # a phone's HEIC pictures too, where pillow-heif is installed
    allow_large_photos()   # and its 200-megapixel photos
    out, from_folders = [], 0
    for p in paths:
        if Path(p).is_dir():
            pairs = read_images([p])   # an error names a folder without any
            found = [r.path for r in pairs.images]
            for x in pairs.problems:   # (a name that is not UTF-8: the results could not name it; a folder: said)
                if not x.get("folder"):
                    log.warning("left out: %s: %s", x["where"], x["reason"])
            out += found
            from_folders += len(found)
            continue
        try:
            if is_raw(p):   # read through LibRaw (pixels.raw_preview) when decoded; PIL knows few RAW formats
                Path(p).stat()
            else:
                with Image.open(p):
                    pass
        except FileNotFoundError:
            raise FileNotFoundError(f"image not found: {p}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{p}: not a readable image ({e})") from None
        out.append(p)
    return out, from_folders


def check_workers(workers: int) -> None:
    if workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {workers}")


def iter_images(paths: list[str], skipped: list, upright: bool = True, batch: int | None = None,
                preprocess=None, workers: int = 0):
    """(paths, pictures), `batch` at a time, in order, turned upright by their EXIF orientation as viewers
    show them (unless `upright` is False: as stored, as open_clip reads them). A picture that fails to
    decode is skipped with a warning and appended to `skipped` as (path, reason).
    Pictures are PIL images; with `preprocess` and `workers` > 0 they are decoded and preprocessed in that
    many worker processes and come as one (n, 3, S, S) tensor a batch — the same values (PIL either way);
    not for a single batch, where starting the workers costs more than they save."""
    batch = batch or IMAGE_BATCH
    if preprocess is not None and workers > 0 and len(paths) > batch:
        yield from _iter_in_workers(paths, skipped, upright, batch, preprocess, workers)
        return
    names, ims = [], []
    for p in paths:
        im = _open(p, upright, skipped)
        if not isinstance(im, str):     # else the reason it failed, already recorded
            ims.append(im)
            names.append(p)
        if len(ims) == batch:
            yield names, ims
            names, ims = [], []
    if ims:
        yield names, ims


def _open(path: str, upright: bool, skipped: list | None):
    """The picture, or the reason it cannot be decoded (a string; recorded in `skipped` when given)."""
    from .pairs import ImageRef, open_image

    try:
        return open_image(ImageRef(path), orient=upright)
    except (OSError, ValueError, SyntaxError) as e:   # PIL raises SyntaxError on some broken headers
        if skipped is not None:
            log.warning("%s: skipped, not decodable (%s)", path, e)
            skipped.append((path, str(e)))
        return str(e)


class _Pictures(torch.utils.data.Dataset):
    def __init__(self, paths, upright, preprocess):
        self.paths, self.upright, self.preprocess = paths, upright, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        im = _open(self.paths[i], self.upright, None)
        return (i, None, im) if isinstance(im, str) else (i, self.preprocess(im), None)


def _split(preprocess):
    """(what the workers run, what this process finishes with): open_clip's transform up to a uint8
    tensor, then the division and normalisation here — a quarter of float32's bytes between processes,
    the same numbers (cache/decode.py's `uint8_transform` and `Normalize255`); or all of it in the workers."""
    from .cache.decode import Normalize255, uint8_transform

    ts = list(getattr(preprocess, "transforms", []))
    if ts and type(ts[-1]).__name__ == "Normalize":
        pp = {"mean": [float(v) for v in ts[-1].mean], "std": [float(v) for v in ts[-1].std]}
        head = uint8_transform(preprocess, pp)
        if head is not None:
            return head, Normalize255(pp, torch.device("cpu"))
    return preprocess, None


def _iter_in_workers(paths, skipped, upright, batch, preprocess, workers):
    head, finish = _split(preprocess)
    loader = torch.utils.data.DataLoader(_Pictures(paths, upright, head), batch_size=batch,
                                         num_workers=workers, collate_fn=list)
    for items in loader:
        names, xs = [], []
        for i, x, why in items:
            if x is None:
                log.warning("%s: skipped, not decodable (%s)", paths[i], why)
                skipped.append((paths[i], why))
            else:
                names.append(paths[i])
                xs.append(x)
        if xs:
            x = torch.stack(xs)
            yield names, finish(x) if finish is not None else x


def plot_confusion(conf, names: list[str], path: str | Path, title: str = "") -> Path:
    import numpy as np

    from .fonts import pyplot_for

    plt = pyplot_for([*names, title])   # class names in any script, in a font that holds them

    conf = np.asarray(conf, dtype=float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    n = len(names)
    size = max(4.0, 0.45 * n + 2) if n <= 30 else 0.17 * n + 3  # inches; 100 classes: 20 in
    # laid out at the dpi it is saved at, so the layout's text measurements are the drawing's (cached)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8 if n < 30 else 5)
    ax.set_yticks(range(n), names, fontsize=8 if n < 30 else 5)
    ax.set_xlabel("предсказано / predicted")
    ax.set_ylabel("верно / true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if conf[i, j]:
                    ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(im, fraction=0.046)
    fig.tight_layout()
    fig.set_layout_engine("none")   # laid out once: savefig would otherwise lay out again before drawing
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
