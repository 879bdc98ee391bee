"""CLIP's weights in Hugging Face transformers' layout (`CLIPModel`: `text_model.*`, `vision_model.*`,
the projections as linear layers) and in OpenAI's (open_clip's), both ways.

To transformers: what `langclip export --format hf` writes. From transformers: so that a CLIP saved by
transformers — `openai/clip-vit-base-patch32` from the Hub, a `save_pretrained` folder, a
`CLIPVisionModelWithProjection` — serves as `--weights` like OpenAI's own file. The same tensors, renamed:
attention's q/k/v are packed into one `in_proj` again and the projections transposed, so the image
tower's digest (weights.tower_digest) equals that of OpenAI's file, and a cache built from one is valid
for the other."""
from __future__ import annotations

import json
from pathlib import Path

import torch

# open_clip residual block -> transformers CLIPEncoderLayer
_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
          "attn.out_proj": "self_attn.out_proj"}
# open_clip name -> transformers name, and whether the tensor is transposed (a projection)
_TOP = {"token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
        "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
        "ln_final.weight": ("text_model.final_layer_norm.weight", False),
        "ln_final.bias": ("text_model.final_layer_norm.bias", False),
        "text_projection": ("text_projection.weight", True),
        "visual.class_embedding": ("vision_model.embeddings.class_embedding", False),
        "visual.positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
        "visual.conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
        "visual.ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
        "visual.ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
        "visual.ln_post.weight": ("vision_model.post_layernorm.weight", False),
        "visual.ln_post.bias": ("vision_model.post_layernorm.bias", False),
        "visual.proj": ("visual_projection.weight", True),
        "logit_scale": ("logit_scale", False)}
_TOWERS = (("transformer.resblocks", "text_model.encoder.layers"),
           ("visual.transformer.resblocks", "vision_model.encoder.layers"))


def _blocks(sd: dict, src: str, dst: str, layers: int, out: dict) -> None:
    for i in range(layers):
        a, b = f"{src}.{i}.", f"{dst}.{i}."
        w, bias = sd[a + "attn.in_proj_weight"], sd[a + "attn.in_proj_bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            n = w.shape[0] // 3
            out[f"{b}self_attn.{name}.weight"] = w[j * n:(j + 1) * n]
            out[f"{b}self_attn.{name}.bias"] = bias[j * n:(j + 1) * n]
        for o, h in _BLOCK.items():
            for p in ("weight", "bias"):
                out[f"{b}{h}.{p}"] = sd[f"{a}{o}.{p}"]


def hf_state_dict(sd: dict, text_layers: int, vision_layers: int) -> dict:
    """open_clip CLIP state dict (OpenAI naming) -> transformers CLIPModel state dict."""
    out = {hf: (sd[oc].T if t else sd[oc]) for oc, (hf, t) in _TOP.items()}
    _blocks(sd, _TOWERS[0][0], _TOWERS[0][1], text_layers, out)
    _blocks(sd, _TOWERS[1][0], _TOWERS[1][1], vision_layers, out)
    return {k: v.detach().float().contiguous().cpu() for k, v in out.items()}


def is_transformers_layout(sd: dict) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in sd)


def from_transformers(sd: dict[str, torch.Tensor], where: str = "") -> dict[str, torch.Tensor]:
    """transformers' CLIPModel state dict (or one tower's: CLIPVisionModelWithProjection,
    CLIPTextModelWithProjection) -> OpenAI naming. Buffers (`position_ids`) are dropped; a tensor this
    mapping does not know is an error that names it (a CLIP variant open_clip's ViT cannot hold)."""
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    out, used = {}, set()
    for oc, (hf, t) in _TOP.items():
        if hf in sd:
            out[oc] = sd[hf].T.contiguous() if t else sd[hf]
            used.add(hf)
    for src, dst in _TOWERS:
        i = 0
        while f"{dst}.{i}.self_attn.q_proj.weight" in sd:
            a, b = f"{src}.{i}.", f"{dst}.{i}."
            qkv = [f"{b}self_attn.{n}_proj" for n in "qkv"]
            out[a + "attn.in_proj_weight"] = torch.cat([sd[q + ".weight"] for q in qkv])
            out[a + "attn.in_proj_bias"] = torch.cat([sd[q + ".bias"] for q in qkv])
            used.update(q + s for q in qkv for s in (".weight", ".bias"))
            for o, h in _BLOCK.items():
                for p in ("weight", "bias"):
                    out[f"{a}{o}.{p}"] = sd[f"{b}{h}.{p}"]
                    used.add(f"{b}{h}.{p}")
            i += 1
    left = sorted(set(sd) - used)
    if left:
        raise ValueError(f"{where or 'weights'}: transformers' CLIP layout with {len(left)} tensors langclip cannot "
                         f"map to open_clip's ViT CLIP (first: {left[0]})")
    return out


def transformers_config(weights: str | Path) -> dict | None:
    """The `config.json` beside a transformers CLIP weights file (a Hub snapshot or save_pretrained
    folder), or None where there is none or it is not a CLIP's."""
    f = Path(weights).parent / "config.json"
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = str(cfg.get("model_type", ""))
    return cfg if kind in ("clip", "clip_vision_model", "clip_text_model") else None


def activations(cfg: dict) -> dict[str, str]:
    """{"text": hidden_act, "vision": hidden_act} of a transformers CLIP config (its defaults: quick_gelu)."""
    kind = cfg.get("model_type")
    towers = {"clip_vision_model": {"vision": cfg}, "clip_text_model": {"text": cfg}}.get(
        kind, {"text": cfg.get("text_config") or {}, "vision": cfg.get("vision_config") or {}})
    return {k: str(c.get("hidden_act", "quick_gelu")) for k, c in towers.items()}


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
