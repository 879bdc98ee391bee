"""The benchmarks multilingual CLIPs report, read in their public on-disk formats (the layouts
torchvision and CLIP_benchmark read, so one download serves both):

zero-shot classification
- `imagenet1k`: ILSVRC2012 validation as torchvision's ImageNet lays it out (ROOT/val/<wnid>/*.JPEG, 1000
  wnid folders; labels are the sorted wnids). English names: CLIP_benchmark's; other languages:
  `--classnames FILE` (a JSON list of 1000 names, or {lang: list}).
- `babel_imagenet`: Babel-ImageNet (Geigle et al. 2023) — the same images, the classes that have a
  name in the language, with the NLLB-translated prompts, both read from the installed
  `clip-benchmark` package (its `babel_imagenet.json`, `nllb_dist13b_prompts.json`), not copied here.
- `food101`: ROOT/food-101/{meta,images} (torchvision's Food101, test split).
- `flowers102`: ROOT/flowers-102/{jpg,imagelabels.mat,setid.mat} (torchvision's Flowers102, test split;
  reading the .mat files needs scipy).
  Both with langclip's shipped names (English: CLIP_benchmark's; Russian: scripts/make_classnames.py).

retrieval (text <-> image recall@k; one caption per image, as CLIP_benchmark scores them)
- `xm3600`: Crossmodal-3600, ROOT/xm3600/captions.jsonl + ROOT/xm3600/images/<image/key>.jpg; the first
  caption of each image in the language.
- `xtd10`: XTD10, ROOT/xtd10-<lang>.json (the annotation file CLIP_benchmark writes) or the dataset's
  own files ROOT/xtd10/test_image_names.txt + test_1kcaptions_<lang>.txt with ROOT/xtd10/images/.
- `xtd200`, `flickr30k_200` (NLLB-CLIP's machine-translated XTD10 and Flickr30k test captions, 200
  languages named by FLORES codes, rus_Cyrl): ROOT/xtd200-<code>.json, ROOT/flickr30k_200-<code>.json (the
  annotation files CLIP_benchmark writes) or the nllb-clip repository's files ROOT/xtd200/{test_image_names,
  <code>}.txt, ROOT/flickr30k-200/{filenames,<code>}.txt, with the images in ROOT/xtd200/images/ and
  ROOT/flickr30k-200/images/.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

ZERO_SHOT = ("babel_imagenet", "imagenet1k", "food101", "flowers102")
RETRIEVAL = ("xm3600", "xtd10", "xtd200", "flickr30k_200")


class Relabeled(torch.utils.data.Dataset):
    """Some samples of a dataset, with new labels."""

    def __init__(self, base, indices: list[int], labels: list[int]):
        self.base, self.indices, self.labels = base, indices, labels

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]][0], self.labels[i]


def imagenet_val(root: Path, transform):
    """ILSVRC2012 validation: torchvision's layout (root/val/<wnid>/), or CLIP_benchmark's webdataset copy
    (`clip-benchmark/wds_imagenet1k`, at root or root/wds_imagenet1k), whose labels are the same sorted-wnid
    indices. Either has `.targets`."""
    import torchvision.datasets as tvd

    val = root / "val"
    if not val.is_dir():
        for d in (root, root / "wds_imagenet1k"):
            if (d / "classnames.txt").is_file() and (d / "test").is_dir():
                from .benchwds import open_wds, samples, WdsPictures

                b = open_wds(f"wds:{d}")
                if len(b.classnames or []) != 1000:
                    raise ValueError(f"{d / 'classnames.txt'}: {len(b.classnames or [])} classes, not ImageNet's 1000")
                return WdsPictures(*samples(b), transform)
    n = sum(1 for p in val.iterdir() if p.is_dir()) if val.is_dir() else 0
    if n != 1000:
        raise FileNotFoundError(f"{val}: expected ILSVRC2012 validation as torchvision lays it out (1000 wnid "
                                f"folders of images), found {n} folders; or CLIP_benchmark's webdataset copy "
                                f"(wds_imagenet1k) at {root / 'wds_imagenet1k'}")
    return tvd.ImageFolder(str(val), transform=transform)


def load_zero_shot(name: str, root: Path, transform, lang: str, classnames: list | None):
    """-> (dataset, class names, templates or None: langclip's shipped ones for `lang`)."""
    from .datasets import clip_benchmark_file, imagenet_names, shipped_classnames

    if name in ("imagenet1k", "babel_imagenet"):
        base = imagenet_val(root, transform)
        if name == "imagenet1k":
            if classnames is not None:
                return base, classnames, None
            return (base, *imagenet_names(lang))
        labels = json.loads(clip_benchmark_file("babel_imagenet.json").read_text(encoding="utf-8"))
        if lang.upper() not in labels:
            raise ValueError(f"Babel-ImageNet has no {lang!r} class names")
        idxs, names = labels[lang.upper()]
        prompts = json.loads(clip_benchmark_file("nllb_dist13b_prompts.json").read_text(encoding="utf-8"))[lang.upper()]
        where = {c: i for i, c in enumerate(idxs)}
        keep = [(i, where[t]) for i, t in enumerate(base.targets) if t in where]
        return Relabeled(base, [i for i, _ in keep], [y for _, y in keep]), names, [p.replace("{}", "{c}") for p in prompts]
    names = classnames or shipped_classnames(name, lang)
    return (food101_test(root, transform) if name == "food101" else flowers102_test(root, transform)), names, None


@dataclass
class ZeroShotInputs:
    dataset: object
    names: list
    templates: list[str]
    english: Callable[[], tuple[list, list[str]] | None]   # the reference row's names and templates; None: no row


def zero_shot_inputs(name: str, root: Path, transform, lang: str, given: list | None = None,
                     templates: list | None = None, download: bool = False, given_en: list | None = None):
    """One zero-shot dataset's pictures, class names and templates in `lang`, as `langclip eval` and a
    training run's `zeroshot:` take them: given names (--classnames) first, then the dataset's own (an
    image folder's, Babel-ImageNet's), then langclip's shipped ones; given templates first, then the
    dataset's own (Babel-ImageNet's prompts, an English CLIP_benchmark copy's), then langclip's for `lang`.
    The names are counted against the dataset's classes."""
    from .benchwds import is_wds, zero_shot
    from .datasets import dataset_classnames, imagenet_names, load_dataset, shipped_classnames, shipped_templates

    if is_wds(name):
        ds, names, tpl, en = zero_shot(name, transform, lang, given, templates)
        return ZeroShotInputs(ds, names, tpl, lambda: en)
    en_templates = shipped_templates("en")
    if name in ZERO_SHOT:
        ds, names, own = load_zero_shot(name, root, transform, lang, given)
        folder_classes, n_classes = None, len(names)
        english = (lambda: None) if name == "babel_imagenet" else (   # in English: ImageNet's 1000 classes, another task
            lambda: (imagenet_names("en")[0] if name == "imagenet1k" else shipped_classnames(name, "en"), en_templates))
    else:
        ds, folder_classes = load_dataset(name, root, transform, download)
        names, own = given or dataset_classnames(name, lang, None, folder_classes), None
        n_classes = len(folder_classes) if folder_classes is not None else len(getattr(ds, "classes", names))
        english = ((lambda: (given_en or list(folder_classes), en_templates)) if name.startswith("imagefolder:") else
                   (lambda: (dataset_classnames(name, "en"), en_templates)))   # a folder's own names: usually English
    if len(names) != n_classes:
        order = (f" (its folders, in label order: {', '.join(folder_classes[:12])}"
                 f"{', …' if len(folder_classes) > 12 else ''})" if folder_classes is not None else "")
        raise ValueError(f"{name}: {len(names)} class names for {n_classes} classes{order}; give one name a class")
    return ZeroShotInputs(ds, names, templates or own or shipped_templates(lang), english)


def food101_test(root: Path, transform):
    """torchvision's Food101 (test split), checked to hold Food-101's 101 classes in its order."""
    import torchvision.datasets as tvd

    from .datasets import shipped_classnames

    try:
        ds = tvd.Food101(str(root), split="test", transform=transform)
    except (RuntimeError, FileNotFoundError) as e:
        raise FileNotFoundError(f"food101 not found under {root} ({e}); expected {root}/food-101/meta/test.json "
                                f"and {root}/food-101/images/") from None
    want = [n.replace(" ", "_") for n in shipped_classnames("food101", "en")]
    if ds.classes != want:
        raise ValueError(f"{root}/food-101/meta/test.json: {len(ds.classes)} classes, not Food-101's 101 "
                         f"(first differing: {next((a for a, b in zip(ds.classes, want) if a != b), '-')})")
    return ds


def flowers102_test(root: Path, transform):
    """Oxford Flowers-102's test split from its own files (flowers-102/jpg/image_NNNNN.jpg,
    imagelabels.mat, setid.mat), labels 0..101 as torchvision gives them. Read here rather than through
    torchvision's class, which insists on the original files' MD5 (so a re-packed copy fails)."""
    from scipy.io import loadmat

    base = root / "flowers-102"
    need = [base / "imagelabels.mat", base / "setid.mat", base / "jpg"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise FileNotFoundError(f"flowers102 not found under {root}: missing {', '.join(missing)}")
    labels = loadmat(str(need[0]), squeeze_me=True)["labels"]
    test = loadmat(str(need[1]), squeeze_me=True)["tstid"]
    paths = [str(base / "jpg" / f"image_{int(i):05d}.jpg") for i in test]
    ys = [int(labels[int(i) - 1]) - 1 for i in test]
    return Labeled(paths, ys, transform)


class Labeled(torch.utils.data.Dataset):
    """Picture files -> (transformed picture, label); labels default to the position (retrieval)."""

    def __init__(self, paths: list[str], labels: list[int] | None, transform):
        self.paths, self.labels, self.transform = paths, labels or list(range(len(paths))), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        from .pixels import eight_bit

        with Image.open(self.paths[i]) as im:
            return self.transform(eight_bit(im).convert("RGB")), self.labels[i]


class Skipping(torch.utils.data.Dataset):
    """A dataset whose unreadable samples (a corrupt, truncated or missing picture) come back empty, to be
    skipped and counted (`collate_skipping`) rather than end an evaluation an hour in."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        try:
            x, y = self.ds[i]
            return x, y, i, ""
        except (OSError, ValueError, SyntaxError) as e:   # PIL's: unidentified, truncated, broken
            return None, None, i, f"{type(e).__name__}: {str(e)[:200]}"


def collate_skipping(batch):
    """-> (pictures or None, their labels, [(index, why)] of the samples skipped)."""
    ok = [b for b in batch if b[0] is not None]
    return ((torch.stack([b[0] for b in ok]), torch.as_tensor([int(b[1]) for b in ok])) if ok else (None, None)) + \
        ([(b[2], b[3]) for b in batch if b[0] is None],)


def retrieval_pairs(name: str, root: Path, lang: str) -> list[tuple[str, str]]:
    """(image path, caption) of each image that exists, in the dataset's order; raises if there is none."""
    if name == "xm3600":
        d = root / "xm3600"
        f = d / "captions.jsonl"
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: Crossmodal-3600's captions.jsonl (and images/) go under {d}")
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        if rows and lang not in rows[0]:
            raise ValueError(f"{f}: no {lang!r} captions (has {', '.join(k for k in rows[0] if '/' not in k)})")
        pairs = [(str(d / "images" / f"{r['image/key']}.jpg"), r[lang]["caption"][0]) for r in rows]
    elif name == "xtd10":
        ann = root / f"xtd10-{lang}.json"
        if ann.is_file():
            a = json.loads(ann.read_text(encoding="utf-8"))
            pairs = list(zip(a["image_paths"], a["annotations"]))
        else:
            d = root / "xtd10"
            names, caps = d / "test_image_names.txt", d / f"test_1kcaptions_{lang}.txt"
            if not (names.is_file() and caps.is_file()):
                raise FileNotFoundError(f"XTD10 ({lang}) not found: {ann}, or {names} + {caps} with {d / 'images'}/")
            pairs = [(str(d / "images" / i), c) for i, c in zip(names.read_text(encoding="utf-8").splitlines(),
                                                                  caps.read_text(encoding="utf-8").splitlines())]
    elif name in ("xtd200", "flickr30k_200"):
        pairs = _nllb_pairs(name, root, flores_code(lang))
    else:
        raise ValueError(f"unknown retrieval dataset {name!r}: {', '.join(RETRIEVAL)}")
    found = [(p, c) for p, c in pairs if Path(p).is_file()]
    if not found:
        raise FileNotFoundError(f"{name}: none of the {len(pairs)} images found (first: {pairs[0][0] if pairs else '-'})")
    return found


def flores_code(lang: str) -> str:
    """The FLORES-200 code NLLB's datasets name a language by ("ru" -> "rus_Cyrl"); a code given as such
    is kept. Macrolanguages take the variety FLORES holds (Arabic: arb_Arab, Chinese: zho_Hans, ...)."""
    try:
        from clip_benchmark.datasets.flores_langs import flores_languages
    except ImportError:
        raise ImportError("XTD200 and Flickr30k-200 name languages by the FLORES codes the clip-benchmark package "
                          "lists: pip install clip-benchmark") from None
    if lang in flores_languages:
        return lang
    import langcodes

    macro = {"ar": "arb_Arab", "zh": "zho_Hans", "fa": "pes_Arab", "ms": "zsm_Latn", "no": "nob_Latn", "lv": "lvs_Latn",
             "sw": "swh_Latn", "uz": "uzn_Latn", "az": "azj_Latn", "et": "est_Latn", "mn": "khk_Cyrl", "ps": "pbt_Arab"}
    try:
        a3 = langcodes.Language.get(lang).to_alpha3()
    except (LookupError, ValueError):
        a3 = ""
    found = [c for c in flores_languages if c.split("_")[0] == a3]
    code = macro.get(lang) or (found[0] if len(found) == 1 else "")
    if not code:
        raise ValueError(f"no FLORES-200 code for {lang!r}" + (f" (one of {', '.join(found)}: pass it as --lang)" if found else ""))
    return code


def _nllb_pairs(name: str, root: Path, code: str) -> list[tuple[str, str]]:
    """XTD200 / Flickr30k-200 in one language: CLIP_benchmark's annotation file, else the raw files."""
    stem, folder, index = (("xtd200", "xtd200", "test_image_names.txt") if name == "xtd200" else
                           ("flickr30k_200", "flickr30k-200", "filenames.txt"))
    ann = root / f"{stem}-{code}.json"
    if ann.is_file():
        a = json.loads(ann.read_text(encoding="utf-8"))
        return list(zip(a["image_paths"], a["annotations"]))
    d = root / folder
    names, caps = d / index, d / f"{code}.txt"
    if not (names.is_file() and caps.is_file()):
        raise FileNotFoundError(f"{name} ({code}) not found: {ann}, or {names} + {caps} with {d / 'images'}/ "
                                f"(nllb-clip's data/{folder}/ files)")
    return [(str(d / "images" / i), c) for i, c in zip(names.read_text(encoding="utf-8").splitlines(),
                                                       caps.read_text(encoding="utf-8").splitlines())]


def clip_benchmark_inputs(classnames: list, templates: list[str]) -> tuple[list[str], dict]:
    """The exact class names and prompts langclip used, as CLIP_benchmark's --custom_classname_file and
    --custom_template_file take them: class-specific prompts (langclip's templates may ask for a
    grammatical form, which CLIP_benchmark's "{c}" cannot)."""
    from .metrics import display_name, fill

    names = [display_name(c) for c in classnames]
    prompts: dict[str, list[str]] = {}
    for n, c in zip(names, classnames):
        prompts.setdefault(n, [fill(t, c) for t in templates])
    return names, prompts


CB_NAMES = {"flowers102": "flowers", "xm3600": "crossmodal3600", "flickr30k_200": "flickr30k-200"}   # CLIP_benchmark's dataset names


def cb_name(dataset: str) -> str:
    """The dataset's name in CLIP_benchmark's custom class-name and template files."""
    if dataset.startswith("wds:"):
        from .benchwds import open_wds

        return open_wds(dataset).name
    return CB_NAMES.get(dataset, dataset)


def clip_benchmark_results(results: dict, lang: str, model: str) -> dict[str, dict]:
    """langclip's numbers as CLIP_benchmark's result files ({dataset}_{language}.json: dataset, model,
    pretrained, task, metrics, language), so `clip_benchmark build` tabulates them beside its own runs
    (the model "langclip", "pretrained" the model's path). An image folder has no CLIP_benchmark name and
    the English reference rows are another model's: both left out."""
    out = {}
    for name, res in results.items():
        if name.endswith("/reference_en") or name.startswith("imagefolder:"):
            continue
        ds = "wds/" + cb_name(name) if name.startswith("wds:") else cb_name(name)
        if "t2i_r@1" in res:
            task = "zeroshot_retrieval"
            metrics = {f"{'image' if k.startswith('t2i') else 'text'}_retrieval_recall@{k.split('@')[1]}": v
                       for k, v in res.items() if k.startswith(("t2i_r@", "i2t_r@"))}
        else:
            task, metrics = "zeroshot_classification", {k: res[k] for k in ("acc1", "acc5", "mean_per_class_recall")}
        code = flores_code(lang) if name in ("xtd200", "flickr30k_200") else lang   # as CLIP_benchmark names it there
        out[f"{ds.replace('/', '_')}_{code}.json"] = {"dataset": ds, "model": "langclip", "pretrained": str(model),
                                                      "task": task, "metrics": metrics, "language": code}
    return out


TITLES = {"food101": "Food101", "cifar10": "CIFAR10", "cifar100": "CIFAR100", "caltech101": "Caltech101",
          "flowers102": "Flowers102", "imagenet1k": "ImageNet", "babel_imagenet": "Babel-ImageNet",
          "xm3600": "XM3600", "xtd10": "XTD10", "xtd200": "XTD200", "flickr30k_200": "Flickr30k-200"}
# ruCLIP's table reports mean per-class recall where classes are unbalanced (Flowers102), accuracy elsewhere
METRIC = {"flowers102": ("mean_per_class_recall", "mean-per-class")}
RETRIEVAL_ROWS = (("t2i_r@1", "text→image R@1"), ("t2i_r@10", "text→image R@10"),
                  ("i2t_r@1", "image→text R@1"), ("i2t_r@10", "image→text R@10"))


def short_name(dataset: str) -> str:
    """A dataset's name in tables and a run's metrics: an image folder's own name, a CLIP_benchmark
    copy's as wds_NAME, a named benchmark's own."""
    if dataset.startswith("wds:"):
        from .benchwds import open_wds

        return "wds_" + open_wds(dataset).name
    return Path(dataset.split(":", 1)[1]).name if dataset.startswith("imagefolder:") else dataset


def benchmark_table(results: dict, lang: str) -> tuple[str, list[dict]]:
    """One row per dataset and metric, one column per model (this one, the English reference), in the
    layout of ruCLIP's published table, so other models' columns can be pasted beside it."""
    me, ref = f"langclip ({lang})", "CLIP (en, reference)"
    rows = []
    for name, res in results.items():
        if name.endswith("/reference_en"):
            continue
        other = results.get(f"{name}/reference_en")
        title = TITLES.get(name) or short_name(name)
        if "t2i_r@1" in res:
            metrics = [(k, f"{title} {label}") for k, label in RETRIEVAL_ROWS]
        else:
            key, label = METRIC.get(name, ("acc1", "acc"))
            metrics = [(key, f"{title} {label}")]
        for key, label in metrics:
            rows.append({"dataset": label, me: res[key], ref: other[key] if other else None})
    head = f"| dataset | {me} | {ref} |\n|---|---|---|\n"
    fmt = lambda v: "–" if v is None else f"{v:.3f}"   # noqa: E731
    md = head + "".join(f"| {r['dataset']} | {fmt(r[me])} | {fmt(r[ref])} |\n" for r in rows)
    return md, rows


def languages_table(every: dict[str, dict]) -> tuple[str, list[dict]]:
    """benchmark_table's rows with a column a language ({lang: results}), the English reference last."""
    ref = "CLIP (en, reference)"
    cols, rows = [], {}
    for lg, results in every.items():
        _, part = benchmark_table(results, lg)
        me = f"langclip ({lg})"
        cols.append(me)
        for r in part:
            row = rows.setdefault(r["dataset"], {"dataset": r["dataset"]})
            row[me] = r[me]
            if r[ref] is not None:
                row[ref] = r[ref]
    cols.append(ref)
    fmt = lambda v: "–" if v is None else f"{v:.3f}"   # noqa: E731
    md = "| dataset | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n" + "".join(
        "| " + r["dataset"] + " | " + " | ".join(fmt(r.get(c)) for c in cols) + " |\n" for r in rows.values())
    return md, [{c: r.get(c) for c in ["dataset", *cols]} for r in rows.values()]
