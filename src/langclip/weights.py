"""Reading CLIP weights from every layout users have, safely, with errors that name the file.

Formats: OpenAI's TorchScript archive (`ViT-B-32.pt`), a plain state dict (`.pt/.bin/.pth`, with or
without `state_dict` / `model` / `module.` wrappers), open_clip training checkpoints
(`{'epoch', 'state_dict', 'optimizer', ...}`), and `.safetensors` — in OpenAI's naming or in Hugging
Face transformers' (`CLIPModel`, one file or shards, `hf_layout`); a folder stands for the weights
file in it (a Hub snapshot, an open_clip export). Pickles are read with
`weights_only=True`: nothing pickled is executed. TorchScript archives (OpenAI's files) are read as
data by `read_torchscript`: its pickle is unpickled with a closed list of globals and no TorchScript
code is compiled or run (torch.load refuses such archives with weights_only=True, and torch.jit.load,
which open_clip uses, is deprecated: torch 2.14 warns); torch.jit.load only where that reader fails.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import torch


class WeightsError(ValueError):
    """A weights file that cannot serve: the message names the file and what was expected."""


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


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
                   "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


class _ScriptObject:
    """Stands in for a TorchScript class while its archive is unpickled: the attributes, nothing else."""
    _ts_name = ""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


def _rebuild_tensor(storage, offset, size, stride, *_):
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _declared_state(z, prefix: str) -> dict[str, list[str]]:
    """Each TorchScript class's `__parameters__` + `__buffers__` (what its state_dict holds), read from the
    archive's code files as text ("__torch__.a.b.Class" -> names); nothing in them is run."""
    import re

    out = {}
    pat = re.compile(r"^class (\w+)\(.*?\):\n  __parameters__ = \[([^\]]*)\]\n  __buffers__ = \[([^\]]*)\]", re.M)
    for n in z.namelist():
        if n.startswith(prefix + "code/") and n.endswith(".py"):
            mod = n[len(prefix + "code/"):-3].replace("/", ".")
            for cls, params, bufs in pat.findall(z.read(n).decode("utf-8", "replace")):
                out[f"{mod}.{cls}"] = re.findall(r'"([^"]+)"', params) + re.findall(r'"([^"]+)"', bufs)
    return out


def read_torchscript(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive (OpenAI's ViT-B-32.pt), read as data: its `data.pkl` is
    unpickled with a closed list of globals (TorchScript classes become plain attribute holders; tensors
    come from the archive's `data/` files), and each module's parameters and buffers are the ones its
    code file declares. Equals `torch.jit.load(path).state_dict()` (tested)."""
    import pickle
    from collections import OrderedDict

    path = Path(path)
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise WeightsError(f"{path}: a TorchScript archive without one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in z.namelist() and z.read(prefix + "byteorder").strip() != b"little":
            raise WeightsError(f"{path}: a big-endian TorchScript archive")
        classes: dict[str, type] = {}

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if module.startswith("__torch__"):
                    q = f"{module}.{name}"
                    if q not in classes:
                        classes[q] = type(name, (_ScriptObject,), {"_ts_name": q})
                    return classes[q]
                if module == "torch._utils" and name == "_rebuild_tensor_v2":
                    return _rebuild_tensor
                if module == "torch._utils" and name == "_rebuild_parameter":
                    return lambda data, *_: data
                if module == "collections" and name == "OrderedDict":
                    return OrderedDict
                if module == "torch" and name in _STORAGE_DTYPES:
                    return _STORAGE_DTYPES[name]
                raise pickle.UnpicklingError(f"{path}: refused global {module}.{name} in a TorchScript archive")

            def persistent_load(self, pid):
                kind, dtype, key, _location, numel = pid
                if kind != "storage" or not isinstance(dtype, torch.dtype):
                    raise pickle.UnpicklingError(f"{path}: unknown storage reference {pid!r}")
                data = z.read(f"{prefix}data/{key}")
                return torch.frombuffer(bytearray(data), dtype=dtype) if numel else torch.empty(0, dtype=dtype)

        root = Unpickler(z.open(pkl[0])).load()
        declared = _declared_state(z, prefix)
    sd: dict[str, torch.Tensor] = {}

    def walk(obj, at: str) -> None:
        names = declared.get(obj._ts_name)
        for k, v in vars(obj).items():
            if isinstance(v, _ScriptObject):
                walk(v, f"{at}{k}.")
            elif isinstance(v, torch.Tensor) and (names is None or k in names):
                sd[at + k] = v

    if not isinstance(root, _ScriptObject):
        raise WeightsError(f"{path}: a TorchScript archive whose root is not a module")
    walk(root, "")
    return sd


# a folder's weights file: open_clip's own first (a Hub repo may hold both), then transformers' (one file or shards)
WEIGHTS_IN_FOLDER = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors",
                     "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def weights_file(path: str | Path) -> Path:
    """`path`, or for a folder (a Hugging Face Hub snapshot, a `save_pretrained` folder, an open_clip
    export) the CLIP weights file in it."""
    path = Path(path)
    if path.is_dir():
        for name in WEIGHTS_IN_FOLDER:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: a folder without CLIP weights (looked for {', '.join(WEIGHTS_IN_FOLDER)})")
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file not found: {path}")
    return path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read CLIP weights in any supported layout into a flat state dict (open_clip/OpenAI key names):
    a file, a folder holding one (`weights_file`), transformers' sharded index, transformers' naming."""
    from .hf_layout import from_transformers, is_transformers_layout

    path = weights_file(path)
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise WeightsError(f"{path}: not a transformers shard index ({type(e).__name__}: {e})") from None
        sd = {}
        for shard in shards:
            sd.update(_read(weights_file(path.parent / shard)))
    else:
        sd = _read(path)
    if is_transformers_layout(sd):
        try:
            sd = from_transformers(sd, str(path))
        except (ValueError, KeyError) as e:
            raise WeightsError(str(e) if isinstance(e, ValueError) else f"{path}: transformers' CLIP layout "
                               f"without {e} (an incomplete checkpoint?)") from None
    return sd


def declared_activation(weights: str | Path) -> tuple[str | None, str]:
    """("quick_gelu" | "gelu" | None, where it was read): what the files say the towers were trained with —
    a transformers folder's `config.json` (`hidden_act`; "mixed" where its towers differ), an open_clip
    folder's `open_clip_config.json` (`quick_gelu`), or the module classes a TorchScript archive declares
    (OpenAI's files: QuickGELU). A plain state dict says nothing (None)."""
    from .hf_layout import activations, transformers_config

    f = weights_file(weights)
    if f.name in WEIGHTS_IN_FOLDER:   # the folder's own file: its config files speak for it
        cfg = transformers_config(f)
        if cfg is not None:
            acts = activations(cfg)
            if len(set(acts.values())) > 1:
                return "mixed", f"its config.json gives the towers hidden_act {acts}"
            act = next(iter(acts.values()))
            return act, f"its config.json gives the {' and '.join(acts)} tower hidden_act={act!r}"
        oc = open_clip_config(f.parent)
        if oc is not None:
            quick = bool(oc["model_cfg"].get("quick_gelu"))
            return ("quick_gelu" if quick else "gelu"), f"its open_clip_config.json gives quick_gelu={quick}"
    if _is_torchscript(f):
        act = torchscript_activation(f)
        return act, f"its TorchScript modules give the image and text towers {act!r}" if act else ""
    return None, ""


def open_clip_config(folder: Path) -> dict | None:
    """An open_clip folder's `open_clip_config.json` ({"model_cfg": ..., "preprocess_cfg": ...}), or None."""
    try:
        cfg = json.loads((Path(folder) / "open_clip_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) and isinstance(cfg.get("model_cfg"), dict) else None


def check_activation(weights: str | Path, model_cfg: dict, arch: str = "?") -> None:
    """The weights fit open_clip's arch of either activation, so a wrong --clip (ViT-B-32 for OpenAI's
    QuickGELU weights) would load and embed wrongly. Where the weights say which one they were trained
    with (`declared_activation`), a mismatch is refused, naming the fix."""
    act, where = declared_activation(weights)
    want = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    if act is not None and act != want:
        fix = ("an architecture with QuickGELU (the -quickgelu names, e.g. ViT-B-32-quickgelu)" if act == "quick_gelu"
               else "an architecture with GELU (e.g. ViT-B-32)" if act == "gelu"
               else "one activation for both towers (open_clip's CLIP has one)" if act == "mixed"
               else f"an activation open_clip's CLIP does not have ({act})")
        raise WeightsError(f"{weights}: {where}, but {arch} uses {want}; these weights need {fix}")


def torchscript_activation(path: str | Path) -> str | None:
    """"quick_gelu" or "gelu": the activation module class a TorchScript archive's code declares
    (OpenAI's archives and traced open_clip models declare `QuickGELU` or torch's `GELU`); None if neither.
    Read from the code files as text; nothing in them is run."""
    import re

    names: set[str] = set()
    with zipfile.ZipFile(path) as z:
        for n in z.namelist():
            if "/code/" in n and n.endswith(".py"):
                names.update(re.findall(r"^class (\w+)\(", z.read(n).decode("utf-8", "replace"), re.M))
    return "quick_gelu" if "QuickGELU" in names else "gelu" if "GELU" in names else None


def _read(path: Path) -> dict[str, torch.Tensor]:
    """One weights file's tensors, as saved."""
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
            sd = read_torchscript(path)
        except Exception as e:    # a construct the data reader does not know: TorchScript's own loader
            import logging

            logging.getLogger(__name__).warning("%s: read with torch.jit.load (%s)", path, e)
            try:
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
            except Exception as e2:
                raise WeightsError(f"{path}: a TorchScript archive that cannot be read ({e2})") from None
        # OpenAI's scalars; `attn_mask` is the causal mask a traced open_clip model keeps (a buffer open_clip
        # does not save in a state dict and rebuilds), not a weight
        for k in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
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


# -- identity of an image tower -------------------------------------------------------------------
def tower_digest(vis: dict[str, torch.Tensor]) -> str:
    """SHA-256 of an image tower's tensors (names, shapes, values as float32): the same weights saved
    as OpenAI's .pt, a state dict or .safetensors — fp16 or fp32 — are the same tower."""
    h = hashlib.sha256()
    for k in sorted(vis):
        v = vis[k].detach().to(torch.float32).contiguous().cpu()
        h.update(f"{k}:{tuple(v.shape)}\n".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()
