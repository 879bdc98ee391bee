"""Evaluation data: the shipped class names and prompt templates per language (data files under
`langclip/resources/`: classnames/<dataset>.json = {"ru": [{"nom": "самолёт", "gen": ...}, ...], "en":
[...]}, templates.json = {"ru": ["фото {gen}", ...]}), user class-name files, and the datasets read in
their public on-disk formats (CIFAR-10/100, Caltech101 as torchvision lays them out, ImageFolder); and
the data files of the installed clip-benchmark package (ImageNet's names in its languages)."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path


def shipped_classnames(dataset: str, lang: str) -> list:
    f = resources.files("langclip") / "resources" / "classnames" / f"{dataset}.json"
    if not f.is_file():
        raise ValueError(f"no shipped class names for {dataset!r}; pass --classnames FILE.json")
    d = json.loads(f.read_text(encoding="utf-8"))
    if lang not in d:
        raise ValueError(f"no {lang!r} class names for {dataset} (have {sorted(d)}); add them to {f.name} or pass --classnames")
    return d[lang]


def shipped_templates(lang: str) -> list[str]:
    d = json.loads((resources.files("langclip") / "resources" / "templates.json").read_text(encoding="utf-8"))
    if lang not in d:
        raise ValueError(f"no {lang!r} prompt templates shipped (have {', '.join(sorted(d))}): pass --templates FILE "
                         f"(a JSON list such as [\"ein Foto von {{}}\"], or one a line)")
    return d[lang]


def read_templates(spec: str, lang: str | None) -> list[str]:
    """--templates: prompt templates for a language langclip ships none for (or to replace them): a JSON
    file (a list, or {lang: list}, as resources/templates.json), a text file (one a line), or a JSON list
    itself ('["{}", "ein Foto von {}"]'). '{}' (or
    '{c}') is the class name as written; '{gen}', '{acc}', ... a case of it (Russian and Ukrainian; in
    other languages every case is the name itself). Checked, naming the file and item, before any model
    loads."""
    from .files import read_names

    f = Path(spec[1:] if spec.startswith("@") else spec).expanduser()
    example = 'a JSON list such as ["ein Foto von {}", "ein Bild von {}"], {"de": [...]}, or one a line'
    if not f.is_file() and spec.lstrip().startswith("["):   # the list itself, on the command line
        try:
            items = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"--templates: not a JSON list ({e}): give {example}") from None
        if not isinstance(items, list) or not items:
            raise ValueError(f"--templates: expected a non-empty JSON list, such as {example}")
        for i, t in enumerate(items, 1):
            check_template(t, f"--templates: template {i}")
        return items
    if not f.is_file():
        raise FileNotFoundError(f"prompt templates file not found: {f} (give {example})")
    items = read_names(str(f), "prompt templates", example, commas=False, lang=lang)
    for i, t in enumerate(items, 1):
        check_template(t, f"{f}: template {i}")
    return items


def check_template(template, where: str) -> None:
    """A template names the class once or more, with '{}', '{c}' or a case ('{gen}'), and nothing else."""
    import string

    from .morph import CASES

    if not isinstance(template, str):
        raise ValueError(f"{where}: {template!r} is not a text")
    try:
        fields = [fld for _, fld, _, _ in string.Formatter().parse(template) if fld is not None]
    except ValueError as e:
        raise ValueError(f"{where} {template!r}: {e} (write {{{{ and }}}} for a literal brace)") from None
    known = ("", "c", *CASES)
    if not fields or any(fld not in known for fld in fields):
        bad = next((fld for fld in fields if fld not in known), None)
        raise ValueError(f"{where} {template!r}: " + (f"unknown field {{{bad}}}" if bad is not None else
                         "no place for the class name") + "; write {} where the name goes (or a case: "
                         + ", ".join("{" + c + "}" for c in CASES) + ")")


# -- CLIP_benchmark's data files --------------------------------------------------------------
def clip_benchmark_file(name: str) -> Path:
    """A data file shipped inside the installed clip-benchmark package."""
    try:
        import clip_benchmark.datasets as cbd
    except ImportError:
        raise ImportError(f"this needs the clip-benchmark package (its {name}): pip install clip-benchmark") from None
    f = Path(cbd.__file__).parent / name
    if not f.is_file():
        raise FileNotFoundError(f"{f}: not in the installed clip-benchmark; upgrade it (pip install -U clip-benchmark)")
    return f


CB_LANGS = {"ar": "ar", "zh": "cn", "it": "it", "ja": "jp"}   # CLIP_benchmark's ImageNet names: language -> its code


def imagenet_names(lang: str) -> tuple[list[str], list[str] | None]:
    """ImageNet-1k's class names and prompts as CLIP_benchmark ships them (installed clip-benchmark): English
    (its names; prompts: None, langclip's), Arabic, Chinese, Italian, Japanese; else an error naming the ways."""
    if lang != "en" and lang not in CB_LANGS:
        raise ValueError(f"imagenet1k in {lang!r}: pass --classnames FILE (1000 names in the order of the sorted "
                         f"wnids), or use babel_imagenet (CLIP_benchmark ships ImageNet names for en, "
                         f"{', '.join(CB_LANGS)})")
    code = CB_LANGS.get(lang, "en")
    names = json.loads(clip_benchmark_file(f"{code}_classnames.json").read_text(encoding="utf-8"))["imagenet1k"]
    if lang == "en":
        return names, None
    prompts = json.loads(clip_benchmark_file(f"{code}_zeroshot_classification_templates.json").read_text(encoding="utf-8"))
    return names, prompts["imagenet1k"]


# -- datasets on disk ---------------------------------------------------------------------------
def load_dataset(name: str, root: str | Path, transform, download: bool = False):
    """torchvision datasets from their own on-disk layouts; 'imagefolder:PATH' for any folder."""
    import torchvision.datasets as tvd

    root = Path(root).expanduser()
    if name.startswith("imagefolder:"):
        p = Path(name.split(":", 1)[1]).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"image folder not found: {p}")
        ds = _image_folder(p, transform)
        return ds, ds.classes
    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "caltech101": tvd.Caltech101}.get(name)
    if cls is None:
        raise ValueError(f"unknown dataset {name!r}: cifar10, cifar100, caltech101 or imagefolder:PATH")
    try:
        if name == "caltech101":
            return _caltech101(root, transform, download)
        return cls(str(root), train=False, transform=transform, download=download), None
    except RuntimeError as e:
        raise FileNotFoundError(f"{name} not found under {root} ({e}); download it with --download "
                                f"(needs network) or put torchvision's layout there") from None


def dataset_classnames(dataset: str, lang: str, classnames: str | None = None, folder_classes=None) -> list:
    """Class names for a dataset: --classnames (see read_classnames), an image folder's
    own folder names, or the shipped lists."""
    if classnames:
        return read_classnames(classnames, lang)
    if dataset.startswith("imagefolder:"):
        return list(folder_classes)
    return shipped_classnames(dataset, lang)


def read_classnames(spec: str, lang: str) -> list:
    """--classnames: a JSON file (a list of names, or {lang: list}), a text file (one name a line, also
    as @FILE), or the names themselves, comma-separated ("кошка,собака", as `predict --labels`)."""
    from .files import read_names

    return read_names(spec, "class names", "a JSON file, a text file with one name a line, or the names: "
                      "\"кошка,собака\"", lang=lang, bare_is_file=True)


def english_classnames(spec: str) -> list | None:
    """The English list of a {lang: list} --classnames JSON file (the reference row's names), else None."""
    f = Path(spec[1:] if spec.startswith("@") else spec).expanduser()
    if f.suffix.lower() == ".json" and f.is_file():
        from .files import read_utf8

        names = json.loads(read_utf8(f))
        if isinstance(names, dict) and isinstance(names.get("en"), list) and names["en"]:
            return names["en"]
    return None


def _caltech101(root: Path, transform, download: bool):
    """torchvision's Caltech101 layout (root/caltech101/101_ObjectCategories/<category>/*.jpg) with
    torchvision's labels: sorted folder names without BACKGROUND_Google. Read as an image folder, so
    category labels need neither the annotation files nor scipy (torchvision's class imports it)."""
    import os

    import torchvision.datasets as tvd

    cats = root / "caltech101" / "101_ObjectCategories"
    if not cats.is_dir():
        if not download:
            raise RuntimeError(f"{cats} does not exist")
        tvd.Caltech101(str(root), target_type="category", download=True)

    class Caltech101Folder(tvd.ImageFolder):
        def find_classes(self, directory):
            classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and e.name != "BACKGROUND_Google")
            return classes, {c: i for i, c in enumerate(classes)}

    ds = Caltech101Folder(str(cats), transform=transform)
    return ds, ds.classes


def _image_folder(p: Path, transform):
    """torchvision's ImageFolder (a folder a class, labels in name order) without what a share or a notebook adds:
    no hidden folder (.ipynb_checkpoints), NAS thumbnail or recycle folder (folders.SKIPPED_FOLDERS) is a class or
    holds samples, and no macOS "._" file is a picture."""
    import os

    import torchvision.datasets as tvd
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from .folders import skipped_folder as skipped

    def valid(path: str) -> bool:
        parts = os.path.relpath(path, p).split(os.sep)
        return path.lower().endswith(IMG_EXTENSIONS) and not parts[-1].startswith("._") and not any(map(skipped, parts[:-1]))

    class Folder(tvd.ImageFolder):
        def find_classes(self, directory):
            classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not skipped(e.name))
            if not classes:
                raise FileNotFoundError(f"{directory}: no class folders (a folder of pictures a class)")
            return classes, {c: i for i, c in enumerate(classes)}

    return Folder(str(p), transform=transform, is_valid_file=valid)
