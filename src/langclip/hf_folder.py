"""A folder Hugging Face transformers loads as CLIPModel — langclip's own `export --format hf`, a
`save_pretrained` folder, a Hub snapshot — loaded by langclip as it loads a run (predict, similarity,
encode, eval): the tensors renamed back to open_clip's layout (hf_layout), the architecture from
config.json, the preprocessing from preprocessor_config.json, langclip's record where the export wrote one."""
from __future__ import annotations

import json
from pathlib import Path

from .hf_layout import model_cfg_from_transformers, preprocess_from_transformers, transformers_config

RECORD = "langclip_config.json"   # an hf export's own record: open_clip_config.json's document


def is_transformers_folder(path: str | Path) -> bool:
    """A folder transformers loads as CLIPModel (an `export --format hf`, a save_pretrained folder, a Hub
    snapshot) — not a langclip run or open_clip export, which hold their own record."""
    path = Path(path)
    return (path.is_dir() and transformers_config(path / "config.json") is not None
            and not (path / "model.json").is_file() and not (path / "open_clip_config.json").is_file())


def load_transformers_folder(path: str | Path, image: bool = True):
    """-> (LangCLIP, tokenizer, preprocessing config, record). The record is the folder's
    langclip_config.json (what `export --format hf` writes), else one made from config.json. `image=False`:
    the text tower alone where model.TextCLIP reproduces it (no open_clip import; from a single safetensors
    file only the text tensors are read), its `tower_sha256` empty (the record's stands for it)."""
    from .model import LangCLIP, text_only_clip
    from .weights import load_state_dict, split_towers, tower_digest

    path = Path(path)
    rec = path / RECORD
    doc = (json.loads(rec.read_text(encoding="utf-8")) if rec.is_file() else
           {"model_cfg": model_cfg_from_transformers(path), "preprocess_cfg": preprocess_from_transformers(path)})
    m = None if image else text_only_clip(doc["model_cfg"])
    if m is not None:
        m.clip.load_state_dict(_tensors(path, vision=False))   # strict: every text weight
    else:
        sd = load_state_dict(path)
        m = LangCLIP.empty(doc["model_cfg"])
        m.clip.load_state_dict(sd)   # strict: every weight
        m.image_ready, m.tower_sha256 = True, tower_digest(split_towers(sd)[0])
    return m, export_tokenizer(path), dict(doc.get("preprocess_cfg") or {}), doc


def export_tokenizer(path: Path):
    """An export's langclip tokenizer: its `langclip_tokenizer/` (with langclip's record), else its
    tokenizer.json."""
    from .tokenizer import Tokenizer

    if not (path / "tokenizer.json").is_file() and not (path / "langclip_tokenizer").is_dir():
        raise FileNotFoundError(f"{path}: the model folder has no tokenizer (tokenizer.json missing)")
    return Tokenizer.load(path / "langclip_tokenizer") if (path / "langclip_tokenizer").is_dir() else Tokenizer.load(path)


def vision_tensors(path: str | Path) -> dict:
    """The folder's image-tower tensors in OpenAI's naming (`visual.*`), without building a model."""
    return _tensors(path, vision=True)


def _tensors(path: str | Path, vision: bool) -> dict:
    """One tower's tensors of a transformers CLIP folder, in OpenAI's naming; from a single safetensors
    file only that tower's are read."""
    from .hf_layout import from_transformers
    from .weights import load_state_dict, weights_file

    f = weights_file(path)
    if f.suffix != ".safetensors":
        return {k: v for k, v in load_state_dict(path).items() if k.startswith("visual.") == vision}
    from safetensors import safe_open

    with safe_open(str(f), "pt") as st:
        sd = {k: st.get_tensor(k) for k in st.keys()
              if k.startswith(("vision_model.", "visual_projection.")) == vision and not k.endswith("position_ids")}
    return from_transformers(sd, str(f))
