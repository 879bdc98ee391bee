"""Stage 4: zero-shot classification and retrieval evaluation, and the confusion-matrix picture.

Class names are data: `langclip/data/classnames/<dataset>.json` = {"ru": [{"nom": "самолёт", "gen": ...}, ...],
"en": [...]} and templates `langclip/data/templates.json` = {"ru": ["фото {gen}", ...]}: a template names the
grammatical form it needs, so no morphology runs at evaluation time. A plain string class name is its
own form for every template ("{c}" works too, as in CLIP_benchmark).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from .files import check_out_dir
from .model import trim_tokens


def _forms(c) -> dict:
    return dict(c, c=c.get("nom", next(iter(c.values())))) if isinstance(c, dict) else _Any(c)


class _Any(dict):
    """Every form of a plain class name is the name itself."""

    def __init__(self, name: str):
        super().__init__(c=name)
        self.name = name

    def __missing__(self, key):
        return self.name


def fill(template: str, classname) -> str:
    """'фото {gen}' + {'nom': 'кот', 'gen': 'кота'} -> 'фото кота'; '{}' and '{c}' are the name as given."""
    return template.replace("{}", "{c}").format_map(_forms(classname))


def display_name(c) -> str:
    return c.get("nom", next(iter(c.values()))) if isinstance(c, dict) else str(c)


def shipped_classnames(dataset: str, lang: str) -> list:
    f = resources.files("langclip") / "data" / "classnames" / f"{dataset}.json"
    if not f.is_file():
        raise ValueError(f"no shipped class names for {dataset!r}; pass --classnames FILE.json")
    d = json.loads(f.read_text(encoding="utf-8"))
    if lang not in d:
        raise ValueError(f"no {lang!r} class names for {dataset} (have {sorted(d)}); add them to {f.name} or pass --classnames")
    return d[lang]


def shipped_templates(lang: str) -> list[str]:
    d = json.loads((resources.files("langclip") / "data" / "templates.json").read_text(encoding="utf-8"))
    if lang not in d:
        raise ValueError(f"no {lang!r} prompt templates shipped (have {sorted(d)})")
    return d[lang]


@torch.no_grad()
def zero_shot_weights(model, tokenizer, classnames: list, templates: list[str], device="cpu",
                      context_length: int | None = None) -> torch.Tensor:
    """(C, D): per class, the mean of the normalised template embeddings, normalised."""
    out = []
    for c in classnames:
        t = tokenizer([fill(tp, c) for tp in templates], context_length=context_length or model.context_length)
        t = (t if getattr(model, "is_hf", False) else trim_tokens(t)).to(device)
        e = F.normalize(model.encode_text(t).float(), dim=-1).mean(0)
        out.append(F.normalize(e, dim=-1))
    return torch.stack(out)


@torch.no_grad()
def evaluate(model, dataloader, tokenizer, classnames: list, templates: list[str], device="cpu") -> dict:
    """Zero-shot classification: acc@1, acc@5, mean per-class recall, per-class accuracy, confusion."""
    w = zero_shot_weights(model, tokenizer, classnames, templates, device)
    logits, labels = [], []
    for x, y in dataloader:
        f = model.encode_image(x.to(device)).float()
        logits.append((f @ w.T).cpu())
        labels.append(y)
    return classification_metrics(torch.cat(logits), torch.cat(labels), [display_name(c) for c in classnames])


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    C = logits.shape[1]
    top = logits.topk(min(5, C), dim=1).indices
    n = int(labels.numel())
    acc1 = int((top[:, 0] == labels).sum()) / n  # exact counts, float64: comparable with other harnesses
    acc5 = int((top == labels[:, None]).any(1).sum()) / n
    conf = torch.zeros(C, C, dtype=torch.long)
    conf.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    support = conf.sum(1)
    per_class = (conf.diag().double() / support.clamp(min=1).double())
    present = support > 0
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": float(per_class[present].mean()),
            "per_class": {n: float(a) for n, a, p in zip(names, per_class, present) if p},
            "confusion": conf.tolist(), "classnames": names, "n": int(labels.numel())}


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    return head + "\n".join("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows) + "\n"


def plot_confusion(conf, names: list[str], path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    conf = np.asarray(conf, dtype=float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    n = len(names)
    size = max(4.0, 0.45 * n + 2) if n <= 30 else 0.17 * n + 3  # inches; 100 classes: 20 in
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# -- datasets on disk ---------------------------------------------------------------------------
def load_dataset(name: str, root: str | Path, transform, download: bool = False):
    """torchvision datasets from their own on-disk layouts; 'imagefolder:PATH' for any folder."""
    import torchvision.datasets as tvd

    root = Path(root).expanduser()
    if name.startswith("imagefolder:"):
        p = Path(name.split(":", 1)[1]).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"image folder not found: {p}")
        ds = tvd.ImageFolder(str(p), transform=transform)
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
    """Class names for a dataset: a --classnames JSON file (a list, or {lang: list}), an image folder's
    own folder names, or the shipped lists."""
    if classnames:
        return read_classnames(classnames, lang)
    if dataset.startswith("imagefolder:"):
        return list(folder_classes)
    return shipped_classnames(dataset, lang)


def read_classnames(path: str, lang: str) -> list:
    """A --classnames JSON file: a list of names, or {lang: list}."""
    f = Path(path)
    try:
        names = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"class-name file not found: {f}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{f}: not a UTF-8 JSON list of class names ({e})") from None
    names = names.get(lang, names) if isinstance(names, dict) else names
    if not isinstance(names, list) or not names:
        raise ValueError(f"{f}: expected a non-empty JSON list of class names (or {{\"{lang}\": [...]}})")
    return names


def load_reference_clip(arch: str, weights: str | Path):
    """The original English CLIP (both towers from its weights file) and CLIP's own tokenizer."""
    from .model import LangCLIP, load_image_tower, model_config
    from .tokenizer import Tokenizer
    from .weights import WeightsError

    model = LangCLIP(model_config(arch))
    rest = load_image_tower(model, weights, arch)
    own = model.text_state_dict()
    text = {k: v.float() for k, v in rest.items() if k in own}
    missing = [k for k in own if k not in text]
    if missing:
        raise WeightsError(f"{weights}: no English text tower ({missing[0]} missing); the reference row needs "
                           f"the full CLIP weights file")
    model.clip.load_state_dict(text, strict=False)
    return model.eval(), Tokenizer.clip()


def _reference(m, weights: str | None, device):
    """(model, tokenizer) of the English CLIP a langclip model was built from."""
    meta = m.meta or {}
    ref = meta.get("image_tower") or meta.get("langclip", {}).get("image_tower")  # run folder / export
    if not ref:
        raise ValueError("--reference needs the CLIP the model was built from, and this folder records none")
    from .runs import resolve_image_weights

    run = Path(m.meta.get("_path", "."))
    # a run folder's load already checked this file's SHA-256; an export's load did not read it
    path = resolve_image_weights(run, ref, weights, check_sha="image_tower" not in meta)
    model, tok = load_reference_clip(ref["arch"], path)
    if ref.get("tower_sha256") and model.tower_sha256 != ref["tower_sha256"]:
        from .weights import WeightsError

        raise WeightsError(f"{path}: not the CLIP this model was built from (image-tower digest "
                           f"{model.tower_sha256[:12]}… vs {ref['tower_sha256'][:12]}…); pass the right --weights")
    return model.to(device), tok


SUMMARY = ("acc1", "acc5", "mean_per_class_recall", "n")


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


def evaluate_cli(model: str, dataset: str | list[str], lang: str, data_root: str, download: bool = False,
                 classnames: str | None = None, batch_size: int = 256, device: str | None = None,
                 out: str | None = None, workers: int = 2, reference: bool = False,
                 weights: str | None = None) -> dict:
    """Zero-shot evaluation on one or more datasets; with `reference`, the original English CLIP is
    evaluated in the same harness (English class names and templates) as a second row."""
    from .inference import load

    datasets = [dataset] if isinstance(dataset, str) else list(dataset)
    given = read_classnames(classnames, lang) if classnames else None  # cheap input checks first
    m = load(model, device=device, weights=weights)
    templates = shipped_templates(lang)
    ref = _reference(m, weights, m.device) if reference else None
    rows, results = [], {}
    o = check_out_dir(out, "evaluation", ("results.json", "retrieval.json")) if out else None
    if o:
        o.mkdir(parents=True, exist_ok=True)
    for ds_name in datasets:
        ds, folder_classes = load_dataset(ds_name, data_root, m.preprocess, download)
        names = given or dataset_classnames(ds_name, lang, None, folder_classes)
        n_classes = len(folder_classes) if folder_classes is not None else len(getattr(ds, "classes", names))
        if len(names) != n_classes:
            raise ValueError(f"{ds_name}: {len(names)} class names for {n_classes} classes")
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers)
        res = evaluate(m.model, loader, m.tokenizer, names, templates, m.device)
        results[ds_name] = res
        rows.append({"model": f"langclip ({lang})", "dataset": ds_name, **{k: res[k] for k in SUMMARY}})
        print(json.dumps({"dataset": ds_name, "lang": lang, **{k: res[k] for k in SUMMARY}}, ensure_ascii=False))
        if ref is not None:
            en = names if ds_name.startswith("imagefolder:") else dataset_classnames(ds_name, "en")
            r = evaluate(ref[0], loader, ref[1], en, shipped_templates("en"), m.device)
            results[f"{ds_name}/reference_en"] = r
            rows.append({"model": "CLIP (en, reference)", "dataset": ds_name, **{k: r[k] for k in SUMMARY}})
            print(json.dumps({"dataset": ds_name, "lang": "en", "model": "reference", **{k: r[k] for k in SUMMARY}}))
        if o:
            safe = ds_name.replace(":", "_").replace("/", "_")
            plot_confusion(res["confusion"], res["classnames"], o / f"confusion_{safe}.png", f"{ds_name} ({lang})")
    if o:
        (o / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
        table = markdown_table(rows, ["model", "dataset", *SUMMARY])
        (o / "results.md").write_text(table, encoding="utf-8")
        print(f"saved {o}/results.json, results.md, confusion_*.png")
    return results


# -- retrieval ----------------------------------------------------------------------------------
def recall_at_k(text: torch.Tensor, image: torch.Tensor, text_image: torch.Tensor, ks=(1, 5, 10),
                max_elements: int = 1 << 27) -> dict:
    """text (T, D), image (I, D) normalised; text_image (T,) image index of each text.

    The (T, I) similarity matrix is never held whole: texts go in chunks of at most `max_elements`
    similarities (a held-out 1% of 3.7M images with 5 captions each would be 185k x 37k = 27 GB)."""
    text, image = text.float(), image.float()
    T, n_img = text.shape[0], image.shape[0]
    step = max(1, max_elements // max(n_img, 1))
    rank_t2i = torch.empty(T, dtype=torch.long, device=text.device)
    best = torch.full((n_img,), float("-inf"), device=text.device)   # each image's best caption score
    sim = None
    for s in range(0, T, step):
        sim = text[s: s + step] @ image.T
        right = sim.gather(1, text_image[s: s + step, None])
        rank_t2i[s: s + step] = (sim > right).sum(1)                  # images scoring above the right one
        best.scatter_reduce_(0, text_image[s: s + step], right.squeeze(1), reduce="amax")
    rank_i2t = torch.zeros(n_img, dtype=torch.long, device=text.device)  # texts scoring above that best
    for s in range(0, T, step):   # one chunk (the usual case): the matrix is still there, not recomputed
        rank_i2t += ((sim if step >= T else text[s: s + step] @ image.T) > best[None, :]).sum(0)
    present = torch.zeros(n_img, dtype=torch.bool, device=text.device)
    present[text_image] = True
    out = {}
    for k in ks:
        out[f"t2i_r@{k}"] = float((rank_t2i < k).float().mean())
    for k in ks:
        out[f"i2t_r@{k}"] = float((rank_i2t[present] < k).float().mean())
    out["mean_recall"] = sum(out.values()) / len(out)
    return out


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], device, batch_size: int = 512) -> torch.Tensor:
    out = []
    for s in range(0, len(texts), batch_size):
        t = tokenizer(texts[s: s + batch_size], context_length=model.context_length)
        if not getattr(model, "is_hf", False):
            t = trim_tokens(t)   # on the host: the device is never asked for the length
        t = t.to(device)
        out.append(model.encode_text(t).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def run_split(meta: dict, model_path: Path) -> dict | None:
    """The held-out split a model was trained with: model.json's `split` (a run), the export's
    `langclip.split`, or — run folders written before splits were recorded — config.yaml's fraction
    and seed (no digest). None when the model does not say."""
    split = meta.get("split") or (meta.get("langclip") or {}).get("split")
    if split:
        return split
    f = model_path / "config.yaml"
    if f.is_file() and (model_path / "model.json").is_file():
        import yaml

        c = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        if "val_fraction" in c and "seed" in c:
            return {"val_fraction": float(c["val_fraction"]), "seed": int(c["seed"])}
    return None


def held_out(cache, split: dict | None, where: str, val_fraction: float | None = None, seed: int | None = None):
    """Caption indices of the model's held-out images in `cache`; refuses rather than guesses: no
    recorded split (and no explicit --val-fraction/--seed), or held-out images that are not the run's."""
    from .cache import split_by_image, split_record

    explicit = val_fraction is not None or seed is not None
    if split is None and (val_fraction is None or seed is None):
        raise ValueError(f"{where}: the model does not record the split it was trained with (an export made "
                         f"before splits travelled?): give both --val-fraction and --seed, or --split all")
    vf = val_fraction if val_fraction is not None else split["val_fraction"]
    sd = seed if seed is not None else split["seed"]
    _, idx = split_by_image(cache, vf, sd)
    if not explicit and split.get("val_images_sha256"):
        got = split_record(cache, idx, vf, sd)
        if got["val_images_sha256"] != split["val_images_sha256"]:
            raise ValueError(f"{where}: the held-out images of this cache are not the ones the model was trained "
                             f"without (digest {got['val_images_sha256'][:12]}… vs the run's "
                             f"{split['val_images_sha256'][:12]}…; {got['val_images']} vs {split['val_images']} "
                             f"images): is it the training cache? Use --split all on another cache")
    if len(idx) == 0:
        raise ValueError(f"{where}: the held-out split is empty (val_fraction {vf}); use --split all")
    return idx


def evaluate_retrieval_cli(model: str, data: list[str], split: str = "val", val_fraction: float | None = None,
                           seed: int | None = None, batch_size: int = 256, device: str | None = None,
                           weights: str | None = None, out: str | None = None, workers: int = 2,
                           image_column=None, caption_column=None) -> dict:
    """Text->image and image->text recall@1/5/10 on held-out pairs.

    `data` is a langclip cache (its image embeddings are used; `split='val'` takes the images the run
    held out in training, `all` takes every pair) or pairs (table, tar shards, folder), whose images
    are embedded here (unreadable images are skipped and counted)."""
    from .cache import CacheData, check_cache_matches, load_cache
    from .inference import load

    if split not in ("val", "all"):
        raise ValueError(f"--split must be val or all, got {split!r}")
    m = load(model, device=device, weights=weights)
    skipped = 0
    if len(data) == 1 and (Path(data[0]) / "manifest.json").is_file():
        cache: CacheData = load_cache(data[0])
        ref = (m.meta or {}).get("image_tower")
        if ref:
            check_cache_matches(cache.manifest, ref, where=data[0])
        if split == "val":
            idx = held_out(cache, run_split(m.meta or {}, Path(model)), data[0], val_fraction, seed)
        else:
            idx = torch.arange(len(cache.captions))
        imgs_u, inv = cache.caption_image[idx].unique(return_inverse=True)
        if cache.text_only:  # a parallel corpus: each text against the English CLIP embeddings instead
            image = torch.nn.functional.normalize(cache.teacher[idx].float(), dim=-1)
        else:
            image = cache.image_emb[imgs_u].float()
        texts = [cache.captions[i] for i in idx.tolist()]
        source = f"cache {data[0]} ({split}{', text-only: English CLIP text embeddings as targets' if cache.text_only else ''})"
    else:
        from .cache import _Images, _collate
        from .data import read_pairs

        pairs = read_pairs(data, image_column, caption_column)
        ds = _Images(pairs.images, list(range(len(pairs.images))), m.preprocess)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate)
        feats: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for rows, oks, x, _errs in loader:
                if x is not None:
                    f = m.model.encode_image(x.to(m.device)).float().cpu()
                    feats.update(zip([r for r, k in zip(rows, oks) if k], f))
        skipped = len(pairs.images) - len(feats)
        if not feats:
            raise ValueError(f"none of the {len(pairs.images)} images in {', '.join(data)} could be read")
        kept = [(row, c) for row, c, _ in pairs.captions if row in feats]
        texts = [c for _, c in kept]
        imgs_u, inv = torch.tensor([row for row, _ in kept], dtype=torch.long).unique(return_inverse=True)
        image = torch.stack([feats[int(r)] for r in imgs_u])
        source = ", ".join(data)
    if not texts:
        raise ValueError(f"no pairs to evaluate in {source}")
    text = encode_texts(m.model, m.tokenizer, texts, m.device)
    res = recall_at_k(text, image, inv)
    res.update(texts=len(texts), images=int(image.shape[0]), images_skipped=skipped, data=source)
    print(json.dumps(res, ensure_ascii=False))
    if out:
        o = check_out_dir(out, "evaluation", ("results.json", "retrieval.json"))
        o.mkdir(parents=True, exist_ok=True)
        (o / "retrieval.json").write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")
        cols = ["t2i_r@1", "t2i_r@5", "t2i_r@10", "i2t_r@1", "i2t_r@5", "i2t_r@10", "texts", "images"]
        (o / "retrieval.md").write_text(markdown_table([res], cols), encoding="utf-8")
    return res
