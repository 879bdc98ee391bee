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
    >>> m.encode_image(["cat.jpg"]).shape[0]                           # paths too, read upright (EXIF)
    1
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .coverage import warn as note_unseen
from .files import pick_device
from .pictures import check_workers, expand_images, iter_images

log = logging.getLogger(__name__)


class LoadedModel:
    def __init__(self, model, tokenizer, preprocess, device, meta: dict):
        """`preprocess`: the image transform, or its preprocessing config (a dict), made into open_clip's
        transform when first asked for (a text-only use never imports open_clip)."""
        self.model, self.tokenizer, self.device, self.meta = model, tokenizer, device, meta
        self._preprocess = preprocess
        tokenizer.context_length = model.context_length  # tokenizer(texts) fits the model by default

    @property
    def preprocess(self):
        if isinstance(self._preprocess, dict):
            from .model import image_transform

            self._preprocess = image_transform(self._preprocess)
        return self._preprocess

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        from .metrics import encode_texts

        return encode_texts(self.model, self.tokenizer, list(texts), self.device)

    @torch.no_grad()
    def encode_image(self, images, batch_size: int = 64) -> torch.Tensor:
        """(N, D) L2-normalised embeddings of PIL images (or picture paths, read upright by their EXIF
        orientation as the CLI reads them, or an (N, 3, S, S) tensor already preprocessed), `batch_size`
        at a time."""
        from .pairs import ImageRef, open_image
        from .pixels import eight_bit

        if isinstance(images, torch.Tensor):      # already preprocessed: (N, 3, S, S)
            def part(i):
                return images[i:i + batch_size]
        else:
            images = [open_image(ImageRef(str(im)), orient=True) if isinstance(im, (str, Path)) else eight_bit(im)
                      for im in images]   # a 16-bit or float picture at 8 bits, as open_image gives it

            def part(i):
                return torch.stack([self.preprocess(im) for im in images[i:i + batch_size]])
        if not len(images):
            raise ValueError("no images given")
        return torch.cat([self.model.encode_image(part(i).to(self.device)).float().cpu()
                          for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def label_weights(self, labels: list, templates: list[str] | None = None, lang: str | None = None) -> torch.Tensor:
        """(len(labels), D) zero-shot classifier: each label's template embeddings averaged (see classify);
        compute it once and pass it to classify(images, weights=...) for many batches of pictures."""
        from .datasets import shipped_templates
        from .metrics import zero_shot_weights
        from .morph import label_forms, template_forms

        if not labels:
            raise ValueError("no labels given")
        templates = templates or (shipped_templates(lang) if lang else ["{c}"])
        names = [label_forms(x, lang, template_forms(templates)) if isinstance(x, str) else x for x in labels] \
            if lang else labels
        return zero_shot_weights(self.model, self.tokenizer, names, templates, self.device).cpu()

    @torch.no_grad()
    def classify(self, images, labels: list | None = None, templates: list[str] | None = None,
                 lang: str | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(N images, len(labels)) probabilities. Templates are averaged per label: '{c}' or '{}' is the
        label as given, '{gen}' (and other forms) its inflection; `lang` takes that language's shipped
        templates (unless `templates` is given) and inflects the labels (written in the nominative)
        into the form each template asks for — "кот" -> "фото кота". `weights`: label_weights(...)'s
        classifier instead of `labels`.

            >>> m.classify([img], ["кот", "собака"], ["фото {gen}", "{}"]).shape
            torch.Size([1, 2])
        """
        w = self.label_weights(labels, templates, lang) if weights is None else weights
        f = self.encode_image(images)
        return (self.model.logit_scale.exp().cpu() * f @ w.T).softmax(-1)


def is_export(path: str | Path) -> bool:
    """An export folder (open_clip's layout: both towers in one file), not a run folder."""
    path = Path(path)
    return (path / "open_clip_config.json").is_file() and not (path / "model.json").is_file()


def model_meta(path: str | Path) -> dict:
    """What a run or export folder records, without loading it: model.json's contents (a run) or
    open_clip_config.json's (an export; langclip's own record under "langclip"). A transformers folder
    without langclip's record holds its own image tower: the folder is its arch and its file the weights."""
    from .runfolder import read_run_meta
    from .hf_folder import RECORD, is_transformers_folder

    path = Path(path)
    if is_export(path):
        return json.loads((path / "open_clip_config.json").read_text(encoding="utf-8"))
    if is_transformers_folder(path):
        if (path / RECORD).is_file():
            return json.loads((path / RECORD).read_text(encoding="utf-8"))
        from .weights import weights_file

        return {"langclip": {"image_tower": {"arch": str(path), "weights": str(weights_file(path)), "sha256": ""}}}
    return read_run_meta(path)


def export_tower_digest(path: str | Path) -> str:
    """The tensor digest (weights.tower_digest) of the image tower an export's file holds, read from the
    file alone (a text-only load has no image tower to ask)."""
    from safetensors import safe_open

    from .hf_folder import vision_tensors, is_transformers_folder
    from .weights import split_towers, tower_digest

    if is_transformers_folder(path):
        return tower_digest(split_towers(vision_tensors(path))[0])
    with safe_open(str(Path(path) / "open_clip_model.safetensors"), "pt") as f:
        return tower_digest({k[len("visual."):]: f.get_tensor(k) for k in f.keys() if k.startswith("visual.")})


def image_tower_ref(meta: dict) -> dict:
    """The image tower's record in model_meta's answer (arch, weights, sha256, tower_sha256, pretrained)."""
    return meta.get("image_tower") or meta.get("langclip", {}).get("image_tower") or {}


def load(path: str | Path, device: str | None = None, weights: str | None = None, image: bool = True) -> LoadedModel:
    """A run folder (or an export folder, or "hf-hub:owner/name"; or CLIP's own weights file) -> LoadedModel.
    `image=False`: loaded for texts only (see runfolder.load_model; from an export's one file, its text
    tensors alone)."""
    from .files import hub_model
    from .runfolder import load_model

    path = Path(hub_model(path))   # "hf-hub:owner/name": its download
    dev = pick_device(device)
    from .hf_folder import is_transformers_folder

    if path.is_file():   # CLIP's own weights file: the original, English CLIP (a baseline beside the runs)
        return _english_clip(path, dev)
    if is_transformers_folder(path):   # a transformers CLIPModel folder (export --format hf): both towers in it
        from .hf_folder import load_transformers_folder

        m, tok, pp, doc = load_transformers_folder(path, image=image)
        if m.image_ready:
            import open_clip

            pp = dict(open_clip.get_model_preprocess_cfg(m.clip), **pp)
        return LoadedModel(m.to(dev).eval(), tok, pp, dev, dict(doc, _path=str(path)))
    if is_export(path):
        from .model import LangCLIP, text_only_clip

        cfg = json.loads((path / "open_clip_config.json").read_text(encoding="utf-8"))
        text_cfg = cfg["model_cfg"].get("text_cfg", {})
        hf_name = text_cfg.get("hf_model_name")
        if hf_name and not Path(hf_name).is_dir() and (path / "config.json").is_file():
            # an hf: export names its own folder (stock open_clip resolves nothing relative to it):
            # after a move, the encoder's config is the one in this folder
            log.info("%s: hf_model_name %s not found; using the folder's own config.json", path, hf_name)
            text_cfg["hf_model_name"] = str(path.resolve())
        m = None if image else text_only_clip(cfg["model_cfg"])   # texts alone: no open_clip, no image tensors
        if m is not None:
            from safetensors import safe_open

            with safe_open(str(path / "open_clip_model.safetensors"), "pt") as f:
                m.clip.load_state_dict({k: f.get_tensor(k) for k in f.keys() if not k.startswith("visual.")})
            pp_cfg = dict(cfg.get("preprocess_cfg", {}))
        else:
            import open_clip
            from safetensors.torch import load_file

            m = LangCLIP.empty(cfg["model_cfg"])
            m.clip.load_state_dict(load_file(str(path / "open_clip_model.safetensors")))   # strict: every weight
            m.image_ready = True
            pp_cfg = dict(open_clip.get_model_preprocess_cfg(m.clip), **cfg.get("preprocess_cfg", {}))
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{path}: the model folder has no tokenizer (tokenizer.json missing)")
        if "hf_model_name" in cfg["model_cfg"].get("text_cfg", {}):
            from .tokenizer import HFTextTokenizer

            tok = HFTextTokenizer.load(path)
            if (cfg.get("langclip") or {}).get("language"):
                tok.meta["language"] = cfg["langclip"]["language"]
        else:
            from .hf_folder import export_tokenizer

            tok = export_tokenizer(path)
        return LoadedModel(m.to(dev).eval(), tok, pp_cfg, dev, dict(cfg, _path=str(path)))
    model, tok, meta = load_model(path, weights=weights, image=image)
    meta = dict(meta, _path=str(path))
    return LoadedModel(model.to(dev).eval(), tok, dict(meta["preprocess_cfg"]), dev, meta)


def _english_clip(path: Path, dev) -> LoadedModel:
    from .clip_arch import infer_arch
    from .build import load_reference_clip
    from .model import preprocess_cfg
    from .weights import load_state_dict

    sd = load_state_dict(path)   # read once: for the architecture, then the towers
    arch = infer_arch(path, sd)
    m, tok = load_reference_clip(arch, path, sd)
    tok.meta["language"] = "en"
    ref = {"arch": arch, "weights": str(path), "sha256": "", "tower_sha256": m.tower_sha256, "pretrained": ""}
    return LoadedModel(m.to(dev).eval(), tok, preprocess_cfg(m), dev, {"image_tower": ref, "_path": str(path)})


def parse_texts(values: list[str]) -> list[str]:
    """similarity --texts: the texts themselves (one an argument), or a file (FILE or @FILE)."""
    from .files import read_names

    return read_names(values, "texts", '--texts "красный круг" "синяя звезда", or a file with one a line',
                      commas=False)


def parse_labels(labels: str | list[str], lang: str | None = None) -> list[str]:
    """predict --labels: "кот,собака", a file (one a line, or a .json list / {lang: list}), or @FILE."""
    from .files import read_names

    return read_names(labels, "labels", '--labels "кот,собака" or a file with one a line', lang=lang)


QUIET_OVER = 20   # with --out, more pictures than this are not printed one by one


def predict_cli(model: str, images: list[str], labels: str, top: int = 5, lang: str | None = None,
                weights: str | None = None, device: str | None = None, out: str | None = None,
                upright: bool = True, workers: int = 2, templates: str | None = None) -> list:
    """Each picture's `top` labels. `images`: files and folders (their pictures, decoded in `workers`
    processes beyond one batch); `out`: the results as .csv (image, rank, label, prob), or .jsonl/.json
    (then, beyond QUIET_OVER pictures, a progress bar instead of a printed block per picture);
    `templates`: a file of prompt templates (datasets.read_templates), else `lang`'s shipped ones."""
    from .datasets import read_templates, shipped_templates
    from .files import check_out_file, progress_bar

    check_workers(workers)
    tpl = read_templates(templates, lang) if templates else shipped_templates(lang) if lang else None
    labs = parse_labels(labels, lang)
    paths, from_folders = expand_images(images)
    if out:
        if Path(out).suffix.lower() not in (".csv", ".jsonl", ".json"):
            raise ValueError(f"{out}: predictions are written as .csv or .jsonl (give --out NAME.csv)")
        check_out_file(out, "predictions", lambda p: _read_or_empty(p).startswith(('{"image"', "image,rank,label,prob")))
    m = load(model, device=device, weights=weights)
    note_unseen(m.meta.get("_path"), m.tokenizer, [_label_text(x) for x in labs], m.tokenizer.meta.get("language"))
    w = m.label_weights(labs, tpl, lang=lang)
    res, skipped = [], []
    quiet = bool(out) and len(paths) > QUIET_OVER     # a folder's predictions go to the file, with a progress bar
    bar = progress_bar(total=len(paths), desc="predict", unit="img", disable=not quiet)
    for names, ims in iter_images(paths, skipped, upright, preprocess=m.preprocess, workers=workers):
        for p, pr in zip(names, m.classify(ims, weights=w)):
            v, i = pr.topk(min(top, len(labs)))
            res.append({"image": p, "top": [{"label": _label_text(labs[j]), "prob": round(float(x), 4)}
                                            for x, j in zip(v, i)]})
            if not quiet:
                print(p + "".join(f"\n  {float(x):6.1%}  {_label_text(labs[j])}" for x, j in zip(v, i)))
        bar.n = len(res) + len(skipped)
        bar.refresh()
    bar.close()
    if len(paths) > 1:
        print(f"{len(res)} pictures classified, {len(skipped)} skipped (not decodable)"
              + (f"; {from_folders} found in folders" if from_folders else ""))
    if out:
        _save_predictions(res, Path(out))
    return res


def _label_text(label) -> str:
    return label if isinstance(label, str) else label.get("nom") or next(iter(label.values()))


def _save_predictions(res: list, out: Path) -> None:
    import csv

    from .files import atomic_write

    if out.suffix.lower() == ".csv":
        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["image", "rank", "label", "prob"])
                for r in res:
                    for k, t in enumerate(r["top"], 1):
                        w.writerow([r["image"], k, t["label"], t["prob"]])
    else:
        def write(tmp):
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in res), encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, write)
    print(f"saved {out}")


SIMILARITY_PICTURE_MAX = 40   # columns drawn in the picture; the .csv and .json hold every picture


def similarity_cli(model: str, images: list[str], texts: str | list[str], out: str, weights: str | None = None,
                   device: str | None = None, upright: bool = True, workers: int = 2) -> Path:
    """The similarity picture of `images` (files and folders, decoded in `workers` processes beyond one
    batch) × `texts` (see parse_texts) at `out` (.csv and .json beside it, with every picture; the picture
    shows the first SIMILARITY_PICTURE_MAX)."""
    from .files import check_out_file
    from .pairs import ImageRef, open_image

    check_workers(workers)
    check_out_file(out, "similarity picture", lambda p: "similarity_text_x_image" in _read_or_empty(p.with_suffix(".json")))
    texts = parse_texts([texts] if isinstance(texts, str) else texts)
    paths, _ = expand_images(images)
    m = load(model, device=device, weights=weights)
    note_unseen(m.meta.get("_path"), m.tokenizer, texts, m.tokenizer.meta.get("language"))   # untrained words
    t = m.encode_text(texts)
    names, sims, skipped = [], [], []
    for batch, ims in iter_images(paths, skipped, upright, preprocess=m.preprocess, workers=workers):
        names += batch
        sims.append(m.encode_image(ims) @ t.T)
    if not names:
        raise ValueError(f"none of the {len(paths)} pictures could be decoded")
    thumbs = [_thumb(open_image(ImageRef(p), orient=upright)) for p in names[:SIMILARITY_PICTURE_MAX]]
    if skipped:
        print(f"{len(skipped)} of {len(paths)} pictures skipped (not decodable)")
    return save_similarity(torch.cat(sims).numpy(), thumbs, [Path(p).name for p in names], texts, out)


def _thumb(im, side: int = 160):
    (im := im.convert("RGB")).thumbnail((side, side))
    return im


def _read_or_empty(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def save_similarity(sim, images, image_names: list[str], texts: list[str], out: str | Path) -> Path:
    """The origin's picture: cosine similarity of images (columns, thumbnails on top) × texts (rows).
    `sim`: (images, texts); the picture shows the first len(images) columns (thumbnails or pictures),
    the .csv and .json every one of `image_names`."""
    import csv

    from .fonts import pyplot_for

    plt = pyplot_for(texts)   # Chinese, Korean, Indic, ... texts in a font that holds them
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    S_all = sim.T  # (texts, images)
    n_i, n_t = len(images), len(texts)
    S = S_all[:, :n_i]
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * n_i + 0.09 * max(len(t) for t in texts), 1.6 + 0.7 * n_t), dpi=110)
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
    ax.set_title("cosine similarity: images × texts" + (f" (first {n_i} of {S_all.shape[1]} pictures; "
                                                           f"all in {out.with_suffix('.csv').name})"
                                                           if n_i < S_all.shape[1] else ""))
    fig.tight_layout()
    fig.set_layout_engine("none")   # laid out once (savefig would lay it out again)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    with open(out.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"] + image_names)
        for t, row in zip(texts, S_all):
            w.writerow([t] + [f"{x:.4f}" for x in row])
    out.with_suffix(".json").write_text(json.dumps({"images": image_names, "texts": texts, "similarity_text_x_image":
                                                    [[round(float(x), 5) for x in r] for r in S_all]}, ensure_ascii=False),
                                        encoding="utf-8")
    print(f"saved {out} (+ .csv, .json)")
    return out
