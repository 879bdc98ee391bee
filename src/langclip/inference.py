"""Inference API and the similarity picture.

    >>> import langclip
    >>> from PIL import Image
    >>> m = langclip.load("runs/ru")
    >>> img = Image.open("cat.jpg")
    >>> m.classify([img], ["кот", "собака", "лошадь"]).shape            # probabilities
    torch.Size([1, 3])
    >>> m.classify([img], ["кот", "собака"], lang="ru").sum().item()   # shipped templates, labels inflected
    1.0
    >>> m.encode_text(["фото кота"]).shape[0], m.encode_image([img]).shape[0]   # (N, D), L2-normalised
    (1, 1)
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .files import comma_list, pick_device, read_text_lines

log = logging.getLogger(__name__)


class LoadedModel:
    def __init__(self, model, tokenizer, preprocess, device, meta: dict):
        self.model, self.tokenizer, self.preprocess, self.device, self.meta = model, tokenizer, preprocess, device, meta
        tokenizer.context_length = model.context_length  # tokenizer(texts) fits the model by default

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        from .metrics import encode_texts

        return encode_texts(self.model, self.tokenizer, list(texts), self.device)

    @torch.no_grad()
    def encode_image(self, images) -> torch.Tensor:
        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.model.encode_image(x).float().cpu()

    @torch.no_grad()
    def classify(self, images, labels: list[str], templates: list[str] | None = None,
                 lang: str | None = None) -> torch.Tensor:
        """(N images, len(labels)) probabilities. Templates are averaged per label: '{c}' or '{}' is the
        label as given, '{gen}' (and other forms) its inflection; `lang` takes that language's shipped
        templates (unless `templates` is given) and inflects the labels (written in the nominative)
        into the form each template asks for — "кот" -> "фото кота".

            >>> m.classify([img], ["кот", "собака"], ["фото {gen}", "{}"]).shape
            torch.Size([1, 2])
        """
        from .datasets import shipped_templates
        from .metrics import zero_shot_weights
        from .morph import label_forms, template_forms

        if not labels:
            raise ValueError("no labels given")
        templates = templates or (shipped_templates(lang) if lang else ["{c}"])
        names = [label_forms(x, lang, template_forms(templates)) for x in labels] if lang else labels
        w = zero_shot_weights(self.model, self.tokenizer, names, templates, self.device).cpu()
        f = self.encode_image(images)
        return (self.model.logit_scale.exp().cpu() * f @ w.T).softmax(-1)


def is_export(path: str | Path) -> bool:
    """An export folder (open_clip's layout: both towers in one file), not a run folder."""
    path = Path(path)
    return (path / "open_clip_config.json").is_file() and not (path / "model.json").is_file()


def model_meta(path: str | Path) -> dict:
    """What a run or export folder records, without loading it: model.json's contents (a run) or
    open_clip_config.json's (an export; langclip's own record under "langclip")."""
    from .runfolder import read_run_meta

    path = Path(path)
    if is_export(path):
        return json.loads((path / "open_clip_config.json").read_text(encoding="utf-8"))
    return read_run_meta(path)


def image_tower_ref(meta: dict) -> dict:
    """The image tower's record in model_meta's answer (arch, weights, sha256, tower_sha256, pretrained)."""
    return meta.get("image_tower") or meta.get("langclip", {}).get("image_tower") or {}


def load(path: str | Path, device: str | None = None, weights: str | None = None, image: bool = True) -> LoadedModel:
    """A run folder (or an export folder) -> LoadedModel. `image=False`: a run is loaded for texts only
    (see runfolder.load_model); an export holds both towers in one file and is loaded whole."""
    from .model import image_transform
    from .runfolder import load_model

    path = Path(path)
    dev = pick_device(device)
    if is_export(path):
        import open_clip

        from .model import LangCLIP
        from .tokenizer import Tokenizer

        cfg = json.loads((path / "open_clip_config.json").read_text(encoding="utf-8"))
        text_cfg = cfg["model_cfg"].get("text_cfg", {})
        hf_name = text_cfg.get("hf_model_name")
        if hf_name and not Path(hf_name).is_dir() and (path / "config.json").is_file():
            # an hf: export names its own folder (stock open_clip resolves nothing relative to it):
            # after a move, the encoder's config is the one in this folder
            log.info("%s: hf_model_name %s not found; using the folder's own config.json", path, hf_name)
            text_cfg["hf_model_name"] = str(path.resolve())
        m = LangCLIP(cfg["model_cfg"])
        from safetensors.torch import load_file

        m.clip.load_state_dict(load_file(str(path / "open_clip_model.safetensors")))
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{path}: the model folder has no tokenizer (tokenizer.json missing)")
        if "hf_model_name" in cfg["model_cfg"].get("text_cfg", {}):
            from .tokenizer import HFTextTokenizer

            tok = HFTextTokenizer.load(path)
        else:
            tok = Tokenizer.load(path / "langclip_tokenizer") if (path / "langclip_tokenizer").is_dir() else Tokenizer.load(path)
        pp_cfg = dict(open_clip.get_model_preprocess_cfg(m.clip), **cfg.get("preprocess_cfg", {}))
        return LoadedModel(m.to(dev).eval(), tok, image_transform(pp_cfg), dev, dict(cfg, _path=str(path)))
    model, tok, meta = load_model(path, weights=weights, image=image)
    meta = dict(meta, _path=str(path))
    return LoadedModel(model.to(dev).eval(), tok, image_transform(meta["preprocess_cfg"]), dev, meta)


def _open_images(paths: list[str]):
    from PIL import Image, UnidentifiedImageError

    from .pairs import heif_support

    heif_support()    # a phone's HEIC pictures too, where pillow-heif is installed
    out = []
    for p in paths:
        try:
            im = Image.open(p)
            im.load()
            out.append(im)
        except FileNotFoundError:
            raise FileNotFoundError(f"image not found: {p}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{p}: not a readable image ({e})") from None
    return out


def parse_texts(values: list[str]) -> list[str]:
    """--texts: the texts themselves; @FILE anywhere, or one value that is an existing file: its lines."""
    if len(values) == 1 and not values[0].startswith("@") and Path(values[0]).is_file():
        return read_text_lines(values[0])
    out = []
    for v in values:
        out += read_text_lines(v[1:]) if v.startswith("@") else [v.strip()] if v.strip() else []
    if not out:
        raise ValueError("no texts: give --texts \"красный круг\" \"синяя звезда\", or a file with one a line")
    return out


def parse_labels(labels: str) -> list[str]:
    out = read_text_lines(labels[1:]) if labels.startswith("@") else comma_list(labels)
    if not out:
        raise ValueError("empty label list: give --labels \"кот,собака\" or @labels.txt")
    return out


def predict_cli(model: str, images: list[str], labels: str, top: int = 5, lang: str | None = None,
                weights: str | None = None, device: str | None = None) -> list:
    labs = parse_labels(labels)
    ims = _open_images(images)
    m = load(model, device=device, weights=weights)
    probs = m.classify(ims, labs, lang=lang)
    res = []
    for p, pr in zip(images, probs):
        v, i = pr.topk(min(top, len(labs)))
        res.append({"image": p, "top": [{"label": labs[j], "prob": round(float(x), 4)} for x, j in zip(v, i)]})
        print(p)
        for x, j in zip(v, i):
            print(f"  {float(x):6.1%}  {labs[j]}")
    return res


def similarity_cli(model: str, images: list[str], texts: str | list[str], out: str, weights: str | None = None,
                   device: str | None = None) -> Path:
    """The similarity picture of `images` × `texts` (see parse_texts) at `out` (.csv and .json beside it)."""
    from .files import check_out_file

    check_out_file(out, "similarity picture", lambda p: "similarity_text_x_image" in _read_or_empty(p.with_suffix(".json")))
    texts = parse_texts([texts] if isinstance(texts, str) else texts)
    ims = _open_images(images)
    m = load(model, device=device, weights=weights)
    sim = (m.encode_image(ims) @ m.encode_text(texts).T).numpy()
    return save_similarity(sim, ims, [Path(p).name for p in images], texts, out)


def _read_or_empty(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def save_similarity(sim, images, image_names: list[str], texts: list[str], out: str | Path) -> Path:
    """The origin's picture: cosine similarity of images (columns, thumbnails on top) × texts (rows)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    S = sim.T  # (texts, images)
    n_i, n_t = len(images), len(texts)
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * n_i + 0.09 * max(len(t) for t in texts), 1.6 + 0.7 * n_t))
    ax.imshow(S, vmin=min(0.0, float(S.min())), vmax=float(S.max()), cmap="viridis", aspect="auto",
              extent=(-0.5, n_i - 0.5, n_t - 0.5, -0.5))
    for i in range(n_t):
        for j in range(n_i):
            ax.text(j, i, f"{S[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white")
    ax.set_yticks(range(n_t), texts, fontsize=9)
    ax.set_xticks([])
    for j, im in enumerate(images):
        ax.imshow(im.convert("RGB"), extent=(j - 0.45, j + 0.45, -0.6, -1.5), aspect="auto")
    ax.set_xlim(-0.5, n_i - 0.5)
    ax.set_ylim(n_t - 0.5, -1.6)
    ax.set_title("cosine similarity: images × texts")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    with open(out.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"] + image_names)
        for t, row in zip(texts, S):
            w.writerow([t] + [f"{x:.4f}" for x in row])
    out.with_suffix(".json").write_text(json.dumps({"images": image_names, "texts": texts, "similarity_text_x_image":
                                                    [[round(float(x), 5) for x in r] for r in S]}, ensure_ascii=False),
                                        encoding="utf-8")
    print(f"saved {out} (+ .csv, .json)")
    return out
