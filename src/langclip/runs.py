"""Building a student model from a pretrained CLIP, and self-describing run folders.

A run folder holds:
    model.json                 model_cfg (open_clip format), image tower reference, init, preprocessing
    tokenizer/                 tokenizer.json + langclip_tokenizer.json
    text_tower.safetensors     the text tower (+ temperature): the final (or best) weights
    config.yaml                the training configuration (written by `train`)
    checkpoints/, metrics.jsonl, tb/   (written by `train`)
The image tower is referenced, not copied: architecture + SHA-256 + path of the CLIP weights file.
`load_model(run)` needs only the path (or `weights=` when the CLIP file has moved).
"""
from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .model import LangCLIP, check_clip_init, hf_student_config, init_text_from_clip, load_image_tower, model_config, student_config
from .tokenizer import Tokenizer, load_tokenizer
from .weights import WeightsError, sha256_file

log = logging.getLogger(__name__)
MODEL_FILE = "model.json"
TEXT_WEIGHTS = "text_tower.safetensors"


@dataclass
class ImageTowerRef:
    arch: str
    weights: str       # absolute path when created
    sha256: str        # of the file's bytes (what runs before round 2 were checked by)
    tower_sha256: str = ""   # of the image tower's tensors: the tower's identity, whatever the file format
    pretrained: str = ""     # open_clip's pretrained tag, when the weights came through its cache

    @classmethod
    def of(cls, arch: str, weights: str | Path, tower_sha256: str = "", pretrained: str = "") -> "ImageTowerRef":
        return cls(arch=arch, weights=str(Path(weights).resolve()), sha256=sha256_file(weights),
                   tower_sha256=tower_sha256, pretrained=pretrained)


def preprocess_cfg(model: LangCLIP) -> dict:
    from open_clip.transform import PreprocessCfg
    from dataclasses import asdict

    size = model.visual.image_size
    cfg = asdict(PreprocessCfg(size=size if isinstance(size, int) else tuple(size)))
    cfg.update(model.model_cfg.get("preprocess_cfg", {}) or {})
    return cfg


def image_transform(pp: dict):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    keep = {k: v for k, v in pp.items() if k in PreprocessCfg.__dataclass_fields__}
    return image_transform_v2(PreprocessCfg(**keep), is_train=False)


def _copy_logit_scale(model: LangCLIP, clip_rest: dict) -> None:
    """The pretrained CLIP's temperature, if its weights file has one."""
    if "logit_scale" in clip_rest:
        with torch.no_grad():
            model.logit_scale.copy_(clip_rest["logit_scale"].float().reshape(model.logit_scale.shape))


def build_student(arch: str, weights: str | Path, tokenizer: Tokenizer, init: str = "clip",
                  context_length: int = 77, text_overrides: dict | None = None,
                  seed: int = 0, pretrained: str = "") -> tuple[LangCLIP, ImageTowerRef, dict]:
    """A LangCLIP whose image tower is the pretrained CLIP's (locked) and whose text tower is sized for
    `tokenizer` and initialised by `init`: 'scratch', 'clip', or 'hf:<name-or-folder>' (a pretrained
    Hugging Face encoder; `tokenizer` is then that encoder's own, see `HFTextTokenizer`)."""
    if init not in ("scratch", "clip") and not init.startswith("hf:"):
        raise ValueError(f"text init must be 'scratch', 'clip' or 'hf:<name>', got {init!r}")
    if init.startswith("hf:"):
        return _build_hf_student(arch, weights, tokenizer, init[3:], context_length, seed, pretrained)
    if init == "clip" and text_overrides:
        raise ValueError(f"`clip` init keeps CLIP's text-tower shape; drop the overrides {sorted(text_overrides)}")
    base = model_config(arch, pretrained)
    if init == "clip":
        check_clip_init(base, arch)
    cfg = student_config(base, tokenizer.vocab_size, context_length, text_overrides)
    torch.manual_seed(seed)
    model = LangCLIP(cfg)
    rest = load_image_tower(model, weights, arch)
    info: dict = {"init": init}
    _copy_logit_scale(model, rest)
    if init == "clip":
        info.update(init_text_from_clip(model, rest, tokenizer))
    ref = ImageTowerRef.of(arch, weights, model.tower_sha256, pretrained)
    return model, ref, info


def _build_hf_student(arch: str, weights: str | Path, tokenizer, name: str, context_length: int,
                      seed: int, pretrained: str = "") -> tuple[LangCLIP, ImageTowerRef, dict]:
    """`hf:<name>`: a pretrained Hugging Face encoder (hub name or local folder) as the text tower, with
    its own tokenizer, mean-pooled and projected (a fresh MLP) to the image embedding size."""
    if not name:
        raise ValueError("hf: needs a Hugging Face model name or folder, e.g. hf:cointegrated/rubert-tiny2")
    cfg = hf_student_config(model_config(arch, pretrained), name, context_length)
    torch.manual_seed(seed)
    try:
        model = LangCLIP(cfg)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"Hugging Face model {name!r} could not be loaded: {str(e).splitlines()[0]}") from None
    max_len = getattr(model.clip.text.config, "max_position_embeddings", context_length)
    if context_length > max_len:
        raise ValueError(f"context_length {context_length} exceeds {name}'s {max_len} positions")
    if tokenizer is not None and getattr(tokenizer, "vocab_size", 0) > model.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but {name} embeds {model.vocab_size}")
    rest = load_image_tower(model, weights, arch)
    _copy_logit_scale(model, rest)
    # from now on the run's own weights hold the text tower: rebuilding needs only the HF config
    model.model_cfg["text_cfg"]["hf_model_pretrained"] = False
    n_text = sum(p.numel() for p in model.text_parameters().values())
    return model, ImageTowerRef.of(arch, weights, model.tower_sha256, pretrained), {"init": f"hf:{name}", "hf_model": name, "text_parameters": n_text}


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
    atomic_write_text(run / MODEL_FILE, json.dumps(meta, indent=2, ensure_ascii=False))
    sd = {k: v.detach().contiguous().cpu() for k, v in model.text_state_dict().items()}
    tmp = run / (weights_name + ".tmp")
    save_file(sd, str(tmp))
    os.replace(tmp, run / weights_name)
    return run


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_run_meta(run: str | Path) -> dict:
    run = Path(run)
    f = run / MODEL_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{run} is not a langclip run folder: {MODEL_FILE} not found")
    return json.loads(f.read_text(encoding="utf-8"))


def resolve_image_weights(run: Path, ref: dict, weights: str | Path | None, check_sha: bool = True) -> Path:
    """The CLIP file of a run's image tower: `weights` if given, else where it was, beside the run, or
    (a pretrained tag) open_clip's download cache. A run that records the tower's tensor digest is
    checked by it after loading (load_model); an older one by the file's SHA-256 here."""
    cands = [Path(weights)] if weights else [Path(ref["weights"]), run / Path(ref["weights"]).name]
    if not weights and ref.get("pretrained") and not any(c.is_file() for c in cands):
        from .weights import resolve_pretrained

        cands.append(resolve_pretrained(ref["arch"], ref["pretrained"]))
    for c in cands:
        if c.is_file():
            if check_sha and not ref.get("tower_sha256") and sha256_file(c) != ref["sha256"]:
                raise WeightsError(f"{c}: SHA-256 differs from the image tower this model was trained with "
                                   f"({ref['sha256'][:12]}…); pass the right file with weights=/--weights")
            return c
    raise FileNotFoundError(f"image-tower weights for {run} not found (looked at {', '.join(map(str, cands))}); "
                            f"pass weights= / --weights with the {ref['arch']} file (SHA-256 {ref['sha256'][:12]}…)")


def load_model(run: str | Path, weights: str | Path | None = None, text_weights: str | None = None,
               check_sha: bool = True) -> tuple[LangCLIP, Tokenizer, dict]:
    """Load a run folder: (model in eval mode, tokenizer, model.json contents)."""
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
    model = LangCLIP(cfg)
    ref = meta["image_tower"]
    wf = resolve_image_weights(run, ref, weights, check_sha)
    load_image_tower(model, wf, ref["arch"])
    if check_sha and ref.get("tower_sha256") and model.tower_sha256 != ref["tower_sha256"]:
        raise WeightsError(f"{wf}: its image tower differs from the one this model was trained with (tensor digest "
                           f"{model.tower_sha256[:12]}… vs {ref['tower_sha256'][:12]}…); pass the right file with "
                           f"weights=/--weights")
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
