"""CLIP_benchmark's webdataset layout, read from a local copy: the `clip-benchmark/wds_*` datasets of the
Hugging Face Hub (wds_cifar10, wds_imagenet1k, wds_vtab-*, wds_flickr30k, wds_mscoco_captions, ...) or what
`clip_benchmark_export_wds` writes. `langclip eval --dataset wds:DIR` (and the training config's
`zeroshot.datasets`) read it:

    DIR/classnames.txt                          the class names, one a line (English), classification
    DIR/zeroshot_classification_templates.txt   the prompts, one a line, "{c}" where the name goes
    DIR/dataset_type.txt                        "retrieval" (captions); absent: classification
    DIR/test/nshards.txt                        N: the split is DIR/test/0.tar ... (N-1).tar
    DIR/test/0.tar                              key.webp|png|jpg|jpeg + key.cls (the label) or key.txt
                                                (the captions, one a line)

`wds:DIR` is the test split (CLIP_benchmark's default); `wds:DIR/<split>` names another. The pictures are
read in place (their offsets in the shards), so the evaluation loader's workers share them out as they
do a folder's. Class names in a language other than the files' English: `--classnames`, or, where the
files' names are those of a dataset langclip ships names for (CIFAR-10/100, Caltech101, Food-101,
Flowers-102, compared word for word), the shipped ones in that language. The templates: the files' own for
English (CLIP_benchmark's setting), langclip's for another language, unless `--templates` gives them.
"""
from __future__ import annotations

import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .pairs import ImageRef

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg", "0.webp")   # CLIP_benchmark's order, the first present wins
KINDS = ("classification", "retrieval")


@dataclass
class WdsBench:
    spec: str                     # as given: wds:DIR or wds:DIR/<split>
    meta: Path                    # the folder of classnames.txt, templates, dataset_type.txt
    split: Path                   # the folder of the shards
    kind: str                     # classification | retrieval
    classnames: list[str] | None = None
    templates: list[str] | None = None
    problems: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The dataset's name as CLIP_benchmark's custom files key it ("wds_cifar10" -> "cifar10")."""
        return self.meta.name.removeprefix("wds_")


def is_wds(name: str) -> bool:
    return name.startswith("wds:")


def open_wds(spec: str) -> WdsBench:
    """The folder's small files (no shard is read): which split, what kind, the names and templates.
    Errors name the file and say what the layout wants."""
    from .files import read_utf8

    p = Path(spec.split(":", 1)[1]).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{spec}: no folder {p} (CLIP_benchmark's webdataset layout: DIR/classnames.txt, "
                                f"DIR/test/nshards.txt, DIR/test/0.tar ...)")
    split, meta = (p, p.parent) if (p / "nshards.txt").is_file() or any(p.glob("*.tar")) else (p / "test", p)
    if not split.is_dir():
        raise FileNotFoundError(f"{spec}: no test split {split}/ (expected {split}/nshards.txt and 0.tar ...; "
                                f"wds:DIR/<split> names another split)")
    lines = lambda f: [ln.strip() for ln in read_utf8(f).splitlines()] if f.is_file() else None   # noqa: E731
    kind = (lines(meta / "dataset_type.txt") or ["classification"])[0].lower() or "classification"
    if kind not in KINDS:
        raise ValueError(f"{meta / 'dataset_type.txt'}: {kind!r}: langclip evaluates classification and retrieval "
                         f"sets (a multilabel set such as VOC2007-multilabel: CLIP_benchmark)")
    b = WdsBench(spec, meta, split, kind, lines(meta / "classnames.txt"),
                 lines(meta / "zeroshot_classification_templates.txt"))
    if kind == "classification" and b.classnames is not None:
        b.classnames = [c for c in b.classnames if c] or None
    if b.templates is not None:
        b.templates = [t for t in b.templates if t] or None
    return b


def shards(b: WdsBench) -> list[Path]:
    """The split's shards: 0.tar ... (N-1).tar as nshards.txt counts them, else every .tar in number order."""
    f = b.split / "nshards.txt"
    if f.is_file():
        text = f.read_text(encoding="utf-8").strip()
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{f}: {text[:40]!r} is not a number of shards")
        out = [b.split / f"{i}.tar" for i in range(int(text))]
        missing = [p for p in out if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{f} counts {len(out)} shards; {len(missing)} missing, first {missing[0]} "
                                    f"(a download not finished?)")
        return out
    found = sorted(b.split.glob("*.tar"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))
    if not found:
        raise FileNotFoundError(f"{b.split}: no nshards.txt and no .tar shards")
    return found


_LISTED: dict = {}   # a split's listing by its shards' paths, sizes and mtimes (see samples)


def samples(b: WdsBench) -> tuple[list[ImageRef], list]:
    """(pictures, their labels or caption lists), in the shards' order. A sample without a picture or
    its label/captions is skipped and recorded in b.problems; a shard that cannot be read is an error
    (a benchmark missing a shard's worth of pictures would report another number). A split is listed
    once a process while its shards are unchanged: Babel-ImageNet and ImageNet-1k in one `eval` read one
    `wds_imagenet1k` copy (ImageNet's 50,000 validation pictures)."""
    parts = shards(b)
    key = (b.kind, tuple((str(p.resolve()), st.st_size, st.st_mtime_ns) for p in parts for st in [p.stat()]))
    if key not in _LISTED:
        _LISTED.clear()   # one split kept: a listing is ~100 bytes a picture
        _LISTED[key] = _list(b, parts)
    refs, targets, problems = _LISTED[key]
    b.problems.extend(problems)
    if problems:
        p = problems[0]
        print(f"{b.spec}: {len(problems)} sample(s) skipped (first: {p['where']}: {p['reason']})", file=sys.stderr)
    return list(refs), list(targets)


def _list(b: WdsBench, parts: list[Path]) -> tuple[list[ImageRef], list, list[dict]]:
    want = "cls" if b.kind == "classification" else "txt"
    refs, targets, problems = [], [], []
    for shard in parts:
        size = shard.stat().st_size
        groups: dict[str, dict] = {}
        try:
            with tarfile.open(shard, mode="r") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    base = os.path.basename(m.name)
                    key, _, ext = base.partition(".")
                    g = groups.setdefault(os.path.join(os.path.dirname(m.name), key), {})
                    ext = ext.lower()
                    if ext in IMAGE_KEYS:
                        g[ext] = ImageRef(str(shard), m.name, m.offset_data, m.size)
                    elif ext == want:
                        g[want] = tf.extractfile(m).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"{shard}: not a readable tar shard ({e})") from None
        for key, g in groups.items():
            ref = next((g[k] for k in IMAGE_KEYS if k in g), None)
            why = ("no picture" if ref is None else f"no .{want}" if want not in g else
                   "picture cut off (truncated shard)" if ref.offset + ref.size > size else "")
            target = None
            if not why:
                text = g[want].decode("utf-8", errors="replace")
                if want == "txt":
                    target = text.splitlines()
                elif text.strip().lstrip("-").isdigit():
                    target = int(text.strip())
                else:
                    why = f"label {text.strip()[:20]!r} is not a number"
            if why:
                problems.append({"where": f"{shard}::{key}", "reason": why})
                continue
            refs.append(ref)
            targets.append(target)
    if not refs:
        raise ValueError(f"{b.spec}: no usable samples in {b.split}"
                         + (f" (first problem: {problems[0]['where']}: {problems[0]['reason']})" if problems else ""))
    return refs, targets, problems


class WdsPictures(torch.utils.data.Dataset):
    """Pictures inside shards -> (transformed picture, label); `.targets`: the labels, as torchvision's."""

    def __init__(self, refs: list[ImageRef], labels: list[int], transform):
        self.refs, self.labels, self.transform = refs, labels, transform
        self.targets = labels

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        from .pairs import decode_image, read_image_bytes

        ref = self.refs[i]
        try:
            img = decode_image(read_image_bytes(ref))
        except OSError as e:
            raise OSError(f"{ref.path}::{ref.member}: {e}") from None
        return self.transform(img.convert("RGB")), self.labels[i]


def zero_shot(spec: str, transform, lang: str, classnames: list | None, templates: list | None):
    """-> (dataset, class names, templates, (English names, English templates) for the reference row)."""
    b = open_wds(spec)
    if b.kind != "classification":
        raise ValueError(f"{spec}: a retrieval set ({b.meta / 'dataset_type.txt'}), not a classification one")
    names, theirs = (classnames, None) if classnames else class_names(b, lang)
    refs, labels = samples(b)
    n = len(b.classnames or names)
    bad = next((y for y in labels if not 0 <= y < n), None)
    if bad is not None:
        raise ValueError(f"{spec}: label {bad} for {n} classes ({b.meta / 'classnames.txt'})")
    if len(names) != n:
        raise ValueError(f"{spec}: {len(names)} class names for its {n} classes ({b.meta / 'classnames.txt'}); "
                         f"give one name a class, in its order")
    from .datasets import shipped_templates

    own = b.templates if lang == "en" else theirs
    en = (b.classnames, b.templates or shipped_templates("en")) if b.classnames else None
    return WdsPictures(refs, labels, transform), names, templates or own or shipped_templates(lang), en


def names_source(b: WdsBench) -> tuple[str, list[str]] | None:
    """(the dataset whose names langclip uses for this copy's classes in other languages, those languages),
    or None: the copy's English names are a shipped dataset's, or ImageNet's (CLIP_benchmark's languages)."""
    import json
    from importlib import resources

    from .datasets import CB_LANGS, imagenet_names, shipped_classnames

    if not b.classnames:
        return None
    norm = lambda names: [" ".join(str(n).lower().replace("_", " ").split()) for n in names]   # noqa: E731
    for d in ("cifar10", "cifar100", "caltech101", "food101", "flowers102"):
        if norm(shipped_classnames(d, "en")) == norm(b.classnames):
            f = resources.files("langclip") / "resources" / "classnames" / f"{d}.json"
            return d, sorted(json.loads(f.read_text(encoding="utf-8")))
    if len(b.classnames) == 1000 and norm(imagenet_names("en")[0]) == norm(b.classnames):
        return "imagenet1k", sorted(["en", *CB_LANGS])
    return None


def class_names(b: WdsBench, lang: str) -> tuple[list, list[str] | None]:
    """(class names in `lang`, their prompts or None): the files' own for English; for another language,
    langclip's shipped names of the dataset whose English names the files hold, or for ImageNet's
    CLIP_benchmark's (ar, zh, it, ja, with its prompts); else an error saying what to pass."""
    from .datasets import imagenet_names, shipped_classnames

    f = b.meta / "classnames.txt"
    if not b.classnames:
        raise FileNotFoundError(f"{b.spec}: no {f}; pass --classnames (one name a class, in label order)")
    if lang == "en":
        return b.classnames, None
    src = names_source(b)
    if src and src[0] != "imagenet1k":
        return shipped_classnames(src[0], lang), None   # an error says which languages it has
    if src:
        try:
            return imagenet_names(lang)
        except ValueError:
            raise ValueError(f"{b.spec}: ImageNet-1k in {lang!r}: pass --classnames (1000 names), or evaluate "
                             f"Babel-ImageNet on this copy: --dataset babel_imagenet --data-root {b.meta}") from None
    raise ValueError(f"{b.spec}: {f} holds {len(b.classnames)} English names langclip ships no {lang!r} names "
                     f"for; pass --classnames with the {lang!r} names (one a class, in its order)")


def retrieval(spec: str) -> tuple[list[ImageRef], list[list[str]]]:
    """A retrieval set's pictures and each one's captions."""
    b = open_wds(spec)
    if b.kind != "retrieval":
        raise ValueError(f"{spec}: a classification set (no dataset_type.txt saying retrieval in {b.meta})")
    return samples(b)
