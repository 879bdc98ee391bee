"""Which open_clip architecture a CLIP weights file or folder holds, so that `--clip` may be left out.

The shapes come from the tensors (as open_clip's `build_model_from_openai_state_dict` reads them); the
activation, which the tensors cannot tell, from what the files declare (a transformers `config.json`, an
open_clip `open_clip_config.json`, the module classes of OpenAI's TorchScript archive); the name from
open_clip's registry of plain CLIP ViTs and OpenAI's ResNets (RN50 to RN50x64). Where a folder's
preprocessing is not the architecture's default, or no registered name fits, the folder's own config is the
architecture (`model._arch_config` reads it).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .weights import (WEIGHTS_IN_FOLDER, WeightsError, declared_activation, load_state_dict, open_clip_config,
                      weights_file)

PLAIN_TOP = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}
PLAIN_VISION = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
RESNET_STAGES = 4   # open_clip's ModifiedResNet: visual.layer1 .. visual.layer4
PLAIN_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                      "interpolation": "bicubic", "resize_mode": "shortest"}


def shape_config(sd: dict) -> dict:
    """open_clip's model_cfg fields that a CLIP's tensors (OpenAI/open_clip naming) determine: a ViT's or
    an OpenAI ResNet's (`layers` a list of four block counts, `patch_size` None). The heads are not among
    them (q, k and v are packed); a one-tower file has only its tower's fields, and a custom text tower
    (open_clip's `text.` naming) is flagged `custom_text` (no plain name fits it)."""
    def layers(prefix: str) -> int:
        return len({m.group(1) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})

    if "visual.layer1.0.conv1.weight" in sd and "visual.attnpool.positional_embedding" in sd:
        # as build_model_from_openai_state_dict: the stem's width, blocks per stage, 32x down-sampling
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        cfg = {"embed_dim": int(sd["visual.attnpool.c_proj.weight"].shape[0]),
               "vision_cfg": {"image_size": grid * 32,
                              "layers": [layers(f"visual.layer{b}.") for b in range(1, RESNET_STAGES + 1)],
                              "width": int(sd["visual.layer1.0.conv1.weight"].shape[0]), "patch_size": None}}
    elif "visual.conv1.weight" in sd and "visual.positional_embedding" in sd:
        conv = sd["visual.conv1.weight"]
        width, patch = int(conv.shape[0]), int(conv.shape[-1])
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        cfg = {"embed_dim": int(sd["visual.proj"].shape[1]),
               "vision_cfg": {"image_size": patch * grid, "layers": layers("visual.transformer.resblocks."),
                              "width": width, "patch_size": patch,
                              "mlp_width": int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])}}
    else:
        raise WeightsError("not a CLIP in OpenAI's or open_clip's naming (no ViT or ResNet image tower; a "
                           "timm or custom image tower?): give its architecture with --clip")
    if any(k.startswith("text.") for k in sd):   # open_clip's CustomTextCLIP: no plain CLIP has this text tower
        cfg["custom_text"] = True
    elif "token_embedding.weight" in sd:
        tw = int(sd["ln_final.weight"].shape[0])
        cfg["text_cfg"] = {"context_length": int(sd["positional_embedding"].shape[0]),
                           "vocab_size": int(sd["token_embedding.weight"].shape[0]), "width": tw,
                           "layers": layers("transformer.resblocks."),
                           "mlp_width": int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0])}
    return cfg


def _comparable(cfg: dict) -> dict | None:
    """A registered config's fields as `shape_config` gives them, or None for one that is not a plain CLIP
    ViT or ResNet."""
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if set(cfg) - PLAIN_TOP or set(v) - PLAIN_VISION or set(t) - PLAIN_TEXT:
        return None
    if isinstance(v.get("layers"), int):
        vision = {"image_size": v["image_size"], "layers": v["layers"], "width": v["width"],
                  "patch_size": v["patch_size"], "mlp_width": int(v["width"] * v.get("mlp_ratio", 4.0))}
    elif isinstance(v.get("layers"), (list, tuple)) and len(v["layers"]) == RESNET_STAGES:
        vision = {"image_size": v["image_size"], "layers": list(v["layers"]), "width": v["width"],
                  "patch_size": None}
    else:
        return None
    return {"embed_dim": cfg["embed_dim"], "vision_cfg": vision,
            "text_cfg": {"context_length": t["context_length"], "vocab_size": t["vocab_size"], "width": t["width"],
                         "layers": t["layers"], "mlp_width": int(t["width"] * t.get("mlp_ratio", 4.0))}}


def registered_names(shape: dict, quick_gelu: bool) -> list[str]:
    """open_clip's plain CLIP ViT and ResNet architectures with these shapes and this activation, shortest
    name first."""
    import open_clip

    if shape.get("custom_text"):
        return []
    out = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        comp = _comparable(cfg)
        if comp is None or bool(cfg.get("quick_gelu")) != quick_gelu:
            continue
        if all(comp[k] == shape[k] if k == "embed_dim" else
               all(comp[k][f] == shape[k][f] for f in shape[k]) for k in shape):
            out.append(name)
    return sorted(out, key=lambda n: (len(n), n))


def infer_arch(weights: str | Path, sd: dict | None = None) -> str:
    """The `--clip` value for `weights` (a file or a folder): a registered architecture name where one fits
    the tensors, the declared activation and the folder's preprocessing; else the folder's own config.
    `sd`: its tensors where the caller has read them already (load_state_dict)."""
    act, where = declared_activation(weights)
    shape = shape_config(load_state_dict(weights) if sd is None else sd)
    own = _own_config(weights_file(weights), shape["vision_cfg"]["image_size"])
    if act == "mixed":
        raise WeightsError(f"{weights}: {where}: the two towers have different activations; open_clip's CLIP has one")
    if act is None:
        names = {q: registered_names(shape, q) for q in (True, False)}
        fits = [n[0] for n in names.values() if n]
        raise WeightsError(f"{weights}: a state dict that does not say which activation its towers were trained "
                           f"with, and the two build different models: give --clip"
                           + (f" ({' or '.join(fits)}; OpenAI's weights are QuickGELU)" if fits else ""))
    names = registered_names(shape, act == "quick_gelu")
    if names and (own is None or own[1]):
        return names[0]
    if own is not None:
        return own[0]
    raise WeightsError(f"{weights}: no open_clip architecture has these shapes ({json.dumps(shape)}, {act}); "
                       f"give --clip with a model-config JSON file in open_clip's format")


def _own_config(f: Path, image_size: int) -> tuple[str, bool] | None:
    """(the --clip value that reads the weights' folder's own config, whether its preprocessing is the
    architecture's default); None for a file without one beside it."""
    from .hf_layout import preprocess_from_transformers, transformers_config

    if f.name not in WEIGHTS_IN_FOLDER:
        return None
    if transformers_config(f) is not None:
        return str(f.parent), _is_default(preprocess_from_transformers(f.parent), image_size)
    oc = open_clip_config(f.parent)
    if oc is not None:
        return str(f.parent / "open_clip_config.json"), _is_default(oc.get("preprocess_cfg") or {}, image_size)
    return None


def _is_default(pp: dict, image_size: int) -> bool:
    def same(a, b) -> bool:
        return (a == b or isinstance(a, (list, tuple)) and isinstance(b, list) and len(a) == len(b)
                and all(abs(x - y) < 1e-6 for x, y in zip(a, b)))

    size = pp.get("size", image_size)
    return (same(size, image_size) or same(size, [image_size, image_size])) and all(
        same(pp.get(k, v), v) for k, v in OPENAI_PREPROCESS.items())
