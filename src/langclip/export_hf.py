"""A langclip model as a Hugging Face `transformers` folder: `CLIPModel`, `AutoTokenizer`,
`AutoProcessor` and the zero-shot pipeline load it offline, with no custom code.

The open_clip state dict is renamed to transformers' CLIP layout (attention's packed q/k/v split,
projections transposed). Text pooling: transformers pools at the first `eos_token_id` unless that
id is 2 (its legacy argmax), so the config names langclip's end-of-text (V-1) and start (V-2);
padding is end-of-text too (export._tokenizer_files: id 0's token "!" cannot be a pad token). The tokenizer is langclip's `tokenizer.json`, loaded verbatim by PreTrainedTokenizerFast
(transformers' CLIPTokenizer would rebuild CLIP's own pipeline). It gives langclip's ids on cleaned
text (lower case, whitespace collapsed); langclip's Python cleaning (ftfy, HTML entities) is not in
it. Tested with transformers 5.x (the `hf` extra pins the range).
"""
from __future__ import annotations

import json
from pathlib import Path

from .hf_layout import hf_state_dict


def check_exportable(model_cfg: dict) -> None:
    """transformers' CLIPModel is OpenAI's architecture: a ViT image tower and a plain causal text
    transformer pooled at end-of-text. Anything else is refused, naming what differs."""
    t, v = model_cfg.get("text_cfg", {}), model_cfg.get("vision_cfg", {})
    if "hf_model_name" in t:
        raise ValueError("an hf:<encoder> text tower has its own architecture and tokenizer and cannot be a "
                         "transformers CLIPModel; export it with --format open_clip (or onnx, immich)")
    odd = [f"text_cfg.{k}" for k in ("ls_init_value", "embed_cls", "no_causal_mask", "proj_bias", "qk_norm",
                                     "scaled_cosine_attn", "scale_heads", "scale_attn", "scale_fc") if t.get(k)]
    odd += [f"vision_cfg.{k}" for k in ("ls_init_value", "attentional_pool", "timm_model_name", "global_average_pool",
                                        "final_ln_after_pool", "no_ln_pre", "patch_dropout") if v.get(k)]
    if isinstance(v.get("layers"), (list, tuple)):
        odd.append("vision_cfg.layers (a ResNet image tower)")
    if t.get("pool_type", "argmax") != "argmax":
        odd.append(f"text_cfg.pool_type={t['pool_type']}")
    if odd:
        raise ValueError(f"transformers' CLIPModel cannot express {', '.join(odd)}; export with --format open_clip")


def hf_config(model, tok):
    """The CLIPModel's CLIPConfig (its text pooling at langclip's end-of-text id)."""
    from transformers import CLIPConfig

    cfg, visual = model.model_cfg, model.clip.visual
    t, v = cfg["text_cfg"], cfg["vision_cfg"]
    act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
    width_t, width_v = t.get("width", 512), v.get("width", 768)
    text = {"vocab_size": tok.vocab_size, "hidden_size": width_t, "intermediate_size": int(width_t * t.get("mlp_ratio", 4.0)),
            "num_hidden_layers": t.get("layers", 12), "num_attention_heads": t.get("heads", 8),
            "max_position_embeddings": model.context_length, "hidden_act": act, "projection_dim": cfg["embed_dim"],
            "eos_token_id": tok.eot_token_id, "bos_token_id": tok.sot_token_id, "pad_token_id": tok.eot_token_id}
    vision = {"hidden_size": width_v, "intermediate_size": int(width_v * v.get("mlp_ratio", 4.0)),
              "num_hidden_layers": v["layers"], "num_attention_heads": width_v // v.get("head_width", 64),
              "image_size": visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size,
              "patch_size": v["patch_size"], "hidden_act": act, "projection_dim": cfg["embed_dim"]}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg["embed_dim"],
                      logit_scale_init_value=float(model.clip.logit_scale.detach()))


def image_processor_config(pp: dict) -> dict:
    """CLIPImageProcessor settings matching the run's preprocessing (resize the shortest side, center
    crop, normalise; `squash` resizes both sides)."""
    size = pp["size"][0] if isinstance(pp.get("size"), (tuple, list)) else pp.get("size", 224)
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0}.get(pp.get("interpolation", "bicubic"), 3)
    squash = pp.get("resize_mode") == "squash"
    return {"image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
            "do_resize": True, "size": {"height": size, "width": size} if squash else {"shortest_edge": size},
            "resample": resample, "do_center_crop": not squash, "crop_size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(pp.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            "image_std": list(pp.get("std", (0.26862954, 0.26130258, 0.27577711))), "do_convert_rgb": True}


def export_transformers(model, tok, meta: dict, out: Path, tokenizer_files) -> Path:
    """Write the transformers folder: config.json, model.safetensors, tokenizer files,
    preprocessor_config.json (the caller checked `out` and the model's shape, `check_exportable`,
    and writes the model card)."""
    from safetensors.torch import save_file

    cfg = model.model_cfg
    sd = model.clip.state_dict()
    t_layers = cfg["text_cfg"].get("layers", 12)
    hf_cfg = hf_config(model, tok)
    hf_cfg.architectures = ["CLIPModel"]
    hf_cfg.save_pretrained(str(out))
    save_file(hf_state_dict(sd, t_layers, cfg["vision_cfg"]["layers"]), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    tokenizer_files(out, processor=True)
    (out / "preprocessor_config.json").write_text(
        json.dumps(image_processor_config(meta["preprocess_cfg"]), indent=2), encoding="utf-8")
    return out

