"""Reading CLIP weights from every layout users have, safely, with errors that name the file.

Formats: OpenAI's TorchScript archive (`ViT-B-32.pt`), a plain state dict (`.pt/.bin/.pth`, with or
without `state_dict` / `model` / `module.` wrappers), open_clip training checkpoints
(`{'epoch', 'state_dict', 'optimizer', ...}`), and `.safetensors`. Pickles are read with
`weights_only=True`: nothing pickled is executed. TorchScript archives are read by `torch.jit.load`
(TorchScript code, not pickle), as open_clip does for OpenAI's files.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import torch


class WeightsError(ValueError):
    """A weights file that cannot serve: the message names the file and what was expected."""


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "module", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path}: not a CLIP checkpoint (expected a state dict of tensors, got {type(obj).__name__})")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightsError(f"{path}: holds no tensors; expected CLIP weights")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read any supported CLIP weights file into a flat state dict (open_clip/OpenAI key names)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file; expected CLIP weights")
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    looks_safetensors = len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size
    if path.suffix == ".safetensors" or looks_safetensors:
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path)), path)
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable safetensors file ({e}); truncated download?") from None
    if _is_torchscript(path):
        try:
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:
            raise WeightsError(f"{path}: a TorchScript archive that cannot be read ({e})") from None
        for k in ("input_resolution", "context_length", "vocab_size"):
            sd.pop(k, None)
        return _unwrap(dict(sd), path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, RuntimeError, EOFError) as e:
        msg = str(e).split("\n")[0]
        raise WeightsError(f"{path}: not a readable checkpoint ({msg}); truncated or not a PyTorch file?") from None
    except Exception as e:  # UnpicklingError: not a pickle at all, or one that needs code execution
        msg = str(e).split("\n")[0]
        if "weights only" not in str(e).lower() and "weights_only" not in str(e):
            raise WeightsError(f"{path}: not a readable checkpoint ({msg}); truncated, corrupt or not a PyTorch file? expected CLIP weights") from None
        raise WeightsError(f"{path}: refused to load: it needs arbitrary pickled code ({msg}). langclip loads "
                           "weights with weights_only=True; re-save the state dict with torch.save(model.state_dict())") from None
    return _unwrap(obj, path)


def split_towers(sd: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(visual.* weights without prefix, everything else)."""
    vis = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    rest = {k: v for k, v in sd.items() if not k.startswith("visual.")}
    return vis, rest
