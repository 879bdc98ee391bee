"""Self-describing run folders, and the held-out split that travels with a run and its exports.

A run folder holds:
    model.json                 model_cfg (open_clip format), image tower reference, init, preprocessing
    tokenizer/                 tokenizer.json + langclip_tokenizer.json
    text_tower.safetensors     the text tower (+ temperature): the final (or best) weights
    config.yaml                the training configuration (written by `train`)
    checkpoints/, metrics.jsonl, tb/   (written by `train`)
    token_counts.safetensors   how often each token occurs in the training split's captions (coverage.py)
The image tower is referenced, not copied: architecture, tensor digest, file SHA-256 and path of the
CLIP weights file (or its open_clip pretrained tag); model.json also records the held-out split.
`load_model(run)` needs only the path (or `weights=` when the CLIP file has moved).
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from .build import ImageTowerRef, load_image_tower
from .files import atomic_write, atomic_write_text, sha256_file
from .model import LangCLIP, preprocess_cfg, text_only_clip
from .tokenizer import Tokenizer, load_tokenizer
from .weights import WeightsError

log = logging.getLogger(__name__)
MODEL_FILE = "model.json"


TEXT_WEIGHTS = "text_tower.safetensors"


def save_model_files(run: str | Path, model: LangCLIP, tokenizer: Tokenizer, ref: ImageTowerRef,
                     extra: dict | None = None, weights_name: str = TEXT_WEIGHTS) -> Path:
    from safetensors.torch import save_file

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "tokenizer" / "tokenizer.json").is_file():
        tokenizer.save(run / "tokenizer")
    if model.is_hf and not (run / "tokenizer" / "config.json").is_file():
        model.clip.text.config.save_pretrained(str(run / "tokenizer"))  # the HF encoder's shape
    meta = {"format": "langclip-run/1", "model_cfg": model.model_cfg, "image_tower": ref.__dict__,
            "preprocess_cfg": preprocess_cfg(model), "tokenizer": "tokenizer",
            "text_weights": TEXT_WEIGHTS, **(extra or {})}
    if model.is_hf and (tokenizer.meta or {}).get("language"):
        meta["language"] = tokenizer.meta["language"]   # an encoder's tokenizer folder cannot carry it
    atomic_write_text(run / MODEL_FILE, json.dumps(meta, indent=2, ensure_ascii=False))
    sd = {k: v.detach().contiguous().cpu() for k, v in model.text_state_dict().items()}
    atomic_write(run / weights_name, lambda tmp: save_file(sd, str(tmp)))
    return run


def read_run_meta(run: str | Path) -> dict:
    run = Path(run)
    f = run / MODEL_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{run} is not a langclip run folder: {MODEL_FILE} not found")
    return json.loads(f.read_text(encoding="utf-8"))


def model_language(path: str | Path) -> str | None:
    """The language a run or export folder was trained for, from its small JSON files alone (no model
    loads): model.json, the tokenizer's record, or an export's config; None if none records one. A CLIP
    weights file: English."""
    path = Path(path)
    if path.is_file():   # CLIP's own weights file (langclip.load: the English original)
        return "en"

    def read(name: str) -> dict:
        f = path / name
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}

    meta = read(MODEL_FILE)
    cands = [meta.get("language"), read(f"{meta.get('tokenizer', 'tokenizer')}/langclip_tokenizer.json").get("language"),
             (read("open_clip_config.json").get("langclip") or {}).get("language"),
             (read("langclip_config.json").get("langclip") or {}).get("language"),
             (read("onnx_config.json").get("langclip") or {}).get("language"),
             read("langclip_tokenizer/langclip_tokenizer.json").get("language"),
             read("langclip_tokenizer.json").get("language")]
    return next((c for c in cands if c), None)


def resolve_image_weights(run: Path, ref: dict, weights: str | Path | None, check_sha: bool = True) -> Path:
    """The CLIP file of a run's image tower: `weights` if given, else where it was, beside the run, or
    (a pretrained tag) open_clip's download cache. A run that records the tower's tensor digest is
    checked by it after loading (load_model); an older one by the file's SHA-256 here."""
    cands = [Path(weights)] if weights else [Path(ref["weights"]), run / Path(ref["weights"]).name]
    if not weights and ref.get("pretrained") and not any(c.is_file() for c in cands):
        from .pretrained import resolve_pretrained

        cands.append(resolve_pretrained(ref["arch"], ref["pretrained"]))
    for c in cands:
        if c.is_dir():   # a folder holding the weights (a Hub snapshot, save_pretrained)
            from .weights import weights_file

            c = weights_file(c)
        if c.is_file():
            if check_sha and not ref.get("tower_sha256") and sha256_file(c) != ref["sha256"]:
                raise WeightsError(f"{c}: SHA-256 differs from the image tower this model was trained with "
                                   f"({ref['sha256'][:12]}…); pass the right file with weights=/--weights")
            return c
    raise FileNotFoundError(f"image-tower weights for {run} not found (looked at {', '.join(map(str, cands))}); "
                            f"pass weights= / --weights with the {ref['arch']} file (SHA-256 {ref['sha256'][:12]}…)")


def load_model(run: str | Path, weights: str | Path | None = None, text_weights: str | None = None,
               check_sha: bool = True, image: bool = True) -> tuple[LangCLIP, Tokenizer, dict]:
    """Load a run folder: (model in eval mode, tokenizer, model.json contents). `image=False`: for texts
    only — the CLIP weights file is not needed or read, and the model's `tower_sha256` is the one the
    run recorded (a run from before round 2 records none: then the tower is loaded anyway)."""
    from safetensors.torch import load_file

    run = Path(run)
    meta = read_run_meta(run)
    tok_dir = run / meta.get("tokenizer", "tokenizer")
    if not (tok_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{run}: the model folder has no tokenizer ({tok_dir}/tokenizer.json missing)")
    tokenizer = load_tokenizer(tok_dir)
    cfg = meta["model_cfg"]
    if "hf_model_name" in cfg.get("text_cfg", {}):  # HF text tower: its shape from the saved config
        cfg = copy.deepcopy(cfg)
        cfg["text_cfg"].update(hf_model_name=str(tok_dir.resolve()), hf_model_pretrained=False)
        tokenizer.context_length = cfg["text_cfg"].get("context_length", 77)
        if meta.get("language"):
            tokenizer.meta["language"] = meta["language"]
    ref = meta["image_tower"]
    text_only = not image and ref.get("tower_sha256")
    # every weight is loaded below (the image tower only when asked for; for texts alone, without open_clip)
    model = (text_only and text_only_clip(cfg)) or LangCLIP.empty(cfg)
    if not text_only:
        load_run_image_tower(model, run, ref, weights, check_sha)
    else:
        model.tower_sha256 = ref["tower_sha256"]
    tw = run / (text_weights or meta.get("text_weights", TEXT_WEIGHTS))
    if not tw.is_file():
        raise FileNotFoundError(f"{run}: text-tower weights {tw.name} not found")
    sd = load_file(str(tw))
    missing, unexpected = model.clip.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("visual.")]
    if missing or unexpected:
        raise WeightsError(f"{tw}: does not fit the model in {MODEL_FILE} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if tokenizer.vocab_size != model.vocab_size and not (model.is_hf and tokenizer.vocab_size <= model.vocab_size):
        raise WeightsError(f"{run}: tokenizer has {tokenizer.vocab_size} ids but the text tower {model.vocab_size}")
    return model.eval(), tokenizer, meta


def run_init_parts(spec: str | Path) -> tuple[Path, str | None]:
    """`run:<folder>` -> (the run folder, None: its last text weights); `run:<folder>/<weights>.safetensors`
    (text_tower_best.safetensors, say) -> (the folder, that file's name)."""
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".safetensors":
        return p.parent, p.name
    return p, None


def student_from_run(folder: str | Path, arch: str, weights: str | Path, pretrained: str = "",
                     ) -> tuple[LangCLIP, ImageTowerRef, dict]:
    """`init: run:<folder>`: the text tower of a langclip run, trained further (on more or other captions, or
    for longer with a new schedule): its last weights (or the weights file named: `run:<folder>/
    text_tower_best.safetensors`) and its shape (its tokenizer: `tokenizer_for`, which checks a given one); the
    image tower is `weights`' and must be the one the run was trained with."""
    run, text_weights = run_init_parts(folder)
    meta = read_run_meta(run)
    try:
        model, _, _ = load_model(run, weights=weights, text_weights=text_weights)
    except WeightsError as e:
        raise WeightsError(f"model.init: run:{run} was trained with another image tower than {weights} "
                           f"({e})") from None
    if model.is_hf:
        model.model_cfg["text_cfg"]["hf_model_pretrained"] = False
    parent = meta.get("init") if isinstance(meta.get("init"), dict) else {"init": meta.get("init")}
    info = {"init": f"run:{Path(folder).resolve()}", "from_run": str(run.resolve()), "from_init": parent.get("init"),
            "from_steps": meta.get("steps"), **({"hf_model": parent["hf_model"]} if parent.get("hf_model") else {}),
            **({"from_weights": text_weights} if text_weights else {})}
    model.train()
    return model, ImageTowerRef.of(arch, weights, model.tower_sha256, pretrained), info


def tokenizer_for(m):
    """The tokenizer a text tower to train reads (`m`: config.ModelSection): an hf: encoder's own, a run:
    init's run's (model.tokenizer, if given, must be the same), else model.tokenizer's."""
    from .tokenizer import HFTextTokenizer
    from .yamlconfig import ConfigError

    if m.init.startswith("hf:"):
        return HFTextTokenizer.load(m.tokenizer or m.init[3:], m.context_length)
    if m.init.startswith("run:"):
        tok = load_tokenizer(run_init_parts(m.init[4:])[0], m.context_length)
        if m.tokenizer and load_tokenizer(m.tokenizer).digest() != tok.digest():
            raise ConfigError(f"model.tokenizer: {m.tokenizer} is not the tokenizer of {m.init} (another vocabulary "
                              f"or merges); leave model.tokenizer empty, the run's own is used", "model.tokenizer")
        return tok
    return Tokenizer.load(m.tokenizer)


def parent_split_note(meta: dict) -> str | None:
    """A run: init on its run's cache with another held-out split (`meta`: the new run's model.json extras):
    a warning that validation scores pictures the run it starts from trained on; else None."""
    parent = meta["init"].get("from_run")
    if not parent:
        return None
    p = read_run_meta(parent)
    theirs = (p.get("split") or {}).get("val_images_sha256")
    if p.get("cache") != meta["cache"] or not theirs or theirs == meta["split"]["val_images_sha256"]:
        return None
    return (f"held-out split: not the one {parent} held out (val_fraction {p['split'].get('val_fraction')}, seed "
            f"{p['split'].get('seed')} there): some held-out pictures were trained on there, so held-out recall "
            f"overstates; use the same val_fraction and seed")


def load_run_image_tower(model: LangCLIP, run: Path, ref: dict, weights: str | Path | None = None,
                         check_sha: bool = True) -> None:
    """Fill `model`'s image tower from the CLIP file of the run's record `ref` (see resolve_image_weights)."""
    wf = resolve_image_weights(run, ref, weights, check_sha)
    load_image_tower(model, wf, ref["arch"])
    if check_sha and ref.get("tower_sha256") and model.tower_sha256 != ref["tower_sha256"]:
        raise WeightsError(f"{wf}: its image tower differs from the one this model was trained with (tensor digest "
                           f"{model.tower_sha256[:12]}… vs {ref['tower_sha256'][:12]}…); pass the right file with "
                           f"weights=/--weights")


# -- the held-out split ----------------------------------------------------------------------------
def split_by_image(data, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption indices (train, val); all captions of an image fall on the same side."""
    imgs = data.caption_image.unique()
    g = torch.Generator().manual_seed(seed)
    perm = imgs[torch.randperm(len(imgs), generator=g)]
    n_val = int(round(len(imgs) * val_fraction))
    val_imgs = torch.zeros(max(int(data.image_emb.shape[0]), int(imgs.max()) + 1 if len(imgs) else 0), dtype=torch.bool)
    val_imgs[perm[:n_val]] = True
    is_val = val_imgs[data.caption_image]
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()


def split_record(data, val_idx: torch.Tensor, val_fraction: float, seed: int) -> dict:
    """What identifies a run's held-out split, stored in the run folder and every export: fraction,
    seed, and a digest of the held-out image rows, so evaluation can prove it scores the same images."""
    import hashlib

    rows = data.caption_image[val_idx].unique().to(torch.int64).numpy()
    return {"val_fraction": val_fraction, "seed": seed, "val_images": int(len(rows)),
            "cache_images": int(data.image_emb.shape[0]), "cache_captions": len(data.caption_image),
            "val_images_sha256": hashlib.sha256(rows.tobytes()).hexdigest()}


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
