"""A folder Hugging Face transformers loads as CLIPModel — langclip's own `export --format hf`, a
`save_pretrained` folder, a Hub snapshot — loaded by langclip as it loads a run (predict, similarity,
encode, eval): the tensors renamed back to open_clip's layout (hf_layout), the architecture from
config.json, the preprocessing from preprocessor_config.json, langclip's record where the export wrote one."""
from __future__ import annotations

import json
from pathlib import Path

from .hf_layout import transformers_config

RECORD = "langclip_config.json"   # an hf export's own record: open_clip_config.json's document


def is_transformers_folder(path: str | Path) -> bool:
    """A folder transformers loads as CLIPModel (an `export --format hf`, a save_pretrained folder, a Hub
    snapshot) — not a langclip run or open_clip export, which hold their own record."""
    path = Path(path)
    return (path.is_dir() and transformers_config(path / "config.json") is not None
            and not (path / "model.json").is_file() and not (path / "open_clip_config.json").is_file())


def model_cfg_from_transformers(path: str | Path) -> dict:
    """open_clip's model_cfg for a transformers CLIPModel folder (transformers reads config.json, so its
    defaults fill what the file leaves out)."""
    from transformers import CLIPConfig

    c = CLIPConfig.from_pretrained(str(path))
    t, v = c.text_config, c.vision_config
    if t.hidden_act != v.hidden_act or t.hidden_act not in ("quick_gelu", "gelu"):
        raise ValueError(f"{path}: hidden_act {t.hidden_act!r} (text) / {v.hidden_act!r} (vision): open_clip's CLIP "
                         f"has one activation for both towers, quick_gelu or gelu")
    return {"embed_dim": c.projection_dim, "quick_gelu": t.hidden_act == "quick_gelu",
            "vision_cfg": {"image_size": v.image_size, "layers": v.num_hidden_layers, "width": v.hidden_size,
                           "head_width": v.hidden_size // v.num_attention_heads, "patch_size": v.patch_size,
                           "mlp_ratio": v.intermediate_size / v.hidden_size},
            "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size,
                         "width": t.hidden_size, "heads": t.num_attention_heads, "layers": t.num_hidden_layers,
                         "mlp_ratio": t.intermediate_size / t.hidden_size}}


def preprocess_from_transformers(path: str | Path) -> dict:
    """open_clip's preprocessing config from `preprocessor_config.json` (CLIPImageProcessor): the
    inverse of export_hf.image_processor_config. {} where there is none (the architecture's default)."""
    f = Path(path) / "preprocessor_config.json"
    if not f.is_file():
        return {}
    p = json.loads(f.read_text(encoding="utf-8"))
    crop, size = p.get("crop_size") or {}, p.get("size") or {}
    squash = not p.get("do_center_crop", True) and "height" in size
    side = (size.get("height") if squash else crop.get("height") or size.get("shortest_edge")) or 224
    out = {"size": int(side), "resize_mode": "squash" if squash else "shortest",
           "interpolation": {3: "bicubic", 2: "bilinear", 0: "nearest"}.get(p.get("resample", 3), "bicubic")}
    out.update({k: list(p[h]) for k, h in (("mean", "image_mean"), ("std", "image_std")) if p.get(h)})
    return out


def load_transformers_folder(path: str | Path):
    """-> (LangCLIP with both towers, tokenizer, preprocessing config, record). The record is the
    folder's langclip_config.json (what `export --format hf` writes), else one made from config.json."""
    from .model import LangCLIP
    from .tokenizer import Tokenizer
    from .weights import load_state_dict, split_towers, tower_digest

    path = Path(path)
    rec = path / RECORD
    doc = (json.loads(rec.read_text(encoding="utf-8")) if rec.is_file() else
           {"model_cfg": model_cfg_from_transformers(path), "preprocess_cfg": preprocess_from_transformers(path)})
    sd = load_state_dict(path)
    m = LangCLIP.empty(doc["model_cfg"])
    m.clip.load_state_dict(sd)   # strict: every weight
    m.image_ready, m.tower_sha256 = True, tower_digest(split_towers(sd)[0])
    if (path / "langclip_tokenizer").is_dir():
        tok = Tokenizer.load(path / "langclip_tokenizer")
    elif (path / "tokenizer.json").is_file():
        tok = Tokenizer.load(path)
    else:
        raise FileNotFoundError(f"{path}: the model folder has no tokenizer (tokenizer.json missing)")
    return m, tok, dict(doc.get("preprocess_cfg") or {}), doc
