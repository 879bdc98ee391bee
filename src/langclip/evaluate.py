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
    return template.format_map(_forms(classname))


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
        t = tokenizer([fill(tp, c) for tp in templates], context_length=context_length or model.context_length).to(device)
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
    acc1 = float((top[:, 0] == labels).float().mean())
    acc5 = float((top == labels[:, None]).any(1).float().mean())
    conf = torch.zeros(C, C, dtype=torch.long)
    conf.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    support = conf.sum(1)
    per_class = (conf.diag().float() / support.clamp(min=1).float())
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
    size = max(4.0, 0.45 * n + 2)
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
            ds = cls(str(root), target_type="category", transform=lambda im: transform(im.convert("RGB")), download=download)
            return ds, ds.categories
        return cls(str(root), train=False, transform=transform, download=download), None
    except RuntimeError as e:
        raise FileNotFoundError(f"{name} not found under {root} ({e}); download it with --download "
                                f"(needs network) or put torchvision's layout there") from None


def evaluate_cli(model: str, dataset: str, lang: str, data_root: str, download: bool = False,
                 classnames: str | None = None, batch_size: int = 256, device: str | None = None,
                 out: str | None = None, workers: int = 2) -> dict:
    from .inference import load

    m = load(model, device=device)
    ds, folder_classes = load_dataset(dataset, data_root, m.preprocess, download)
    key = dataset.split(":")[0]
    if classnames:
        names = json.loads(Path(classnames).read_text(encoding="utf-8"))
        names = names.get(lang, names) if isinstance(names, dict) else names
    elif key == "imagefolder":
        names = folder_classes
    else:
        names = shipped_classnames(key, lang)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers)
    res = evaluate(m.model, loader, m.tokenizer, names, shipped_templates(lang), m.device)
    summary = {k: res[k] for k in ("acc1", "acc5", "mean_per_class_recall", "n")}
    print(json.dumps({"dataset": dataset, "lang": lang, **summary}, ensure_ascii=False))
    if out:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        (o / "results.json").write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")
        (o / "results.md").write_text(markdown_table([{"dataset": dataset, "lang": lang, **summary}],
                                                     ["dataset", "lang", "acc1", "acc5", "mean_per_class_recall", "n"]),
                                      encoding="utf-8")
        plot_confusion(res["confusion"], res["classnames"], o / "confusion.png", f"{dataset} ({lang})")
    return res
