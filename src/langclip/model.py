"""The langclip model: a pretrained CLIP's frozen image tower + a text tower for the new vocabulary,
its open_clip configuration and its image preprocessing.

Both towers are open_clip's own modules inside one `open_clip.CLIP`, so the weights keep open_clip's
layout (export is a plain state dict) while training runs a faster text forward: PyTorch SDPA with a
causal flag instead of an explicit mask, each batch cut to its longest text (under a causal mask,
positions after end-of-text cannot change it), and the last block computed at end-of-text only.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def model_config(arch: str, pretrained: str = "") -> dict:
    """open_clip model config for an architecture name, or a JSON file in open_clip's format; with a
    pretrained tag, that tag's own preprocessing (mean/std, resize) in `preprocess_cfg`."""
    cfg = _arch_config(arch)
    if pretrained:
        from .pretrained import pretrained_cfg, pretrained_preprocess
        from .weights import WeightsError

        tag_quick = bool(pretrained_cfg(arch, pretrained).get("quick_gelu", False))
        if tag_quick != bool(cfg.get("quick_gelu")):   # open_clip only warns; the embeddings would be wrong
            raise WeightsError(f"{arch}'s {pretrained!r} weights were trained with {'QuickGELU' if tag_quick else 'GELU'}, "
                               f"but {arch} uses {'QuickGELU' if cfg.get('quick_gelu') else 'GELU'}: use "
                               f"--clip {arch + '-quickgelu' if tag_quick else arch.removesuffix('-quickgelu')}")
        cfg["preprocess_cfg"] = {**(cfg.get("preprocess_cfg") or {}), **pretrained_preprocess(arch, pretrained)}
    return cfg


def _arch_config(arch: str) -> dict:
    import open_clip

    if arch.endswith(".json") and Path(arch).is_file():
        cfg = json.loads(Path(arch).read_text(encoding="utf-8"))
        out = copy.deepcopy(cfg.get("model_cfg", cfg))   # open_clip's file: its preprocessing beside model_cfg
        pp = {**(cfg.get("preprocess_cfg") or {}), **(out.get("preprocess_cfg") or {})} if "model_cfg" in cfg else {}
        return dict(out, preprocess_cfg=pp) if pp else out
    if Path(arch).is_dir():   # a transformers CLIP folder (a Hub snapshot): its config.json
        from .hf_layout import model_cfg_from_transformers, preprocess_from_transformers, transformers_config

        if transformers_config(Path(arch) / "config.json") is not None:
            cfg = model_cfg_from_transformers(arch)
            pp = preprocess_from_transformers(arch)
            return dict(cfg, preprocess_cfg=pp) if pp else cfg
    cfg = open_clip.get_model_config(arch)
    if cfg is None and arch.endswith(".json"):
        raise FileNotFoundError(f"model-config file not found: {arch} (the CLIP architecture, --clip / model.clip)")
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; e.g. ViT-B-32-quickgelu, ViT-L-14 "
                         f"(see open_clip.list_models()), a model-config JSON file, or a transformers CLIP folder")
    if "hf_model_name" in cfg.get("text_cfg", {}) or "timm_model_name" in cfg.get("text_cfg", {}):
        raise ValueError(f"{arch}: only CLIP-style architectures with an open_clip text transformer are supported")
    return copy.deepcopy(cfg)


def student_config(clip_cfg: dict, vocab_size: int, context_length: int = 77, text_overrides: dict | None = None) -> dict:
    """The CLIP config with its text tower resized for the bilingual vocabulary (argmax pooling)."""
    cfg = copy.deepcopy(clip_cfg)
    t = cfg.setdefault("text_cfg", {})
    t.update(vocab_size=vocab_size, context_length=context_length, pool_type="argmax")
    t.update(text_overrides or {})
    return cfg


def hf_student_config(clip_cfg: dict, name: str, context_length: int = 77, proj: str = "mlp",
                      pooler: str = "mean_pooler") -> dict:
    """The CLIP config with a pretrained Hugging Face encoder as text tower (open_clip's HF support),
    pooled and projected to the image embedding size."""
    cfg = copy.deepcopy(clip_cfg)
    cfg["text_cfg"] = {"hf_model_name": name, "hf_tokenizer_name": name, "hf_model_pretrained": True,
                       "hf_proj_type": proj, "hf_pooler_type": pooler, "context_length": context_length}
    return cfg


class LangCLIP(nn.Module):
    """open_clip CLIP with a locked image tower and a fast text forward.

    encode_text(tokens (B, L) long) -> (B, D); encode_image(images (B, 3, H, W)) -> (B, D).
    """

    def __init__(self, model_cfg: dict):
        super().__init__()
        import open_clip

        self.model_cfg = copy.deepcopy(model_cfg)
        # an `hf:<name>` text tower is open_clip's HFTextEncoder inside a CustomTextCLIP
        cls = open_clip.CustomTextCLIP if self.is_hf else open_clip.CLIP
        self.clip = cls(**{k: v for k, v in self.model_cfg.items() if k != "preprocess_cfg"})
        self.tower_sha256 = ""   # digest of the loaded image tower's tensors (load_image_tower)
        self.image_ready = True  # False: built by `empty`, the image tower not filled yet
        self.lock_image_tower()

    @classmethod
    def empty(cls, model_cfg: dict) -> "LangCLIP":
        """A model whose weights are all about to be loaded: nothing is initialised. open_clip's random
        init of a ViT-B/32 CLIP takes longer than reading its weights file (0.9 s on 2 CPU cores:
        benchmarks/results/cpu_cache_startup.jsonl); a text query (search), a cache build or a full load
        skips it. Both towers' memory is allocated but not filled: encode_image refuses until
        load_image_tower fills the image tower, and a caller loads the text tower with `load_state_dict`
        and checks what was missing, as usual; the one non-persistent buffer (the causal mask) is rebuilt
        here. Any other tower (an `hf:` encoder, another buffer) falls back to a normal build."""
        with torch.device("meta"):
            m = cls(model_cfg)
        np_buffers = {(n, b) for n, mod in m.named_modules() for b in getattr(mod, "_non_persistent_buffers_set", ())}
        if m.is_hf or np_buffers != {("clip", "attn_mask")}:
            m = cls(model_cfg)
            m.image_ready = False    # its image tower is random until load_image_tower fills it
            return m
        m.to_empty(device="cpu")
        L = m.clip.attn_mask.shape[0]
        m.clip.attn_mask = torch.full((L, L), float("-inf")).triu_(1)   # open_clip's build_causal_mask
        m.image_ready = False
        return m

    @property
    def is_hf(self) -> bool:
        return "hf_model_name" in self.model_cfg.get("text_cfg", {})

    # -- towers ---------------------------------------------------------------------------------
    def lock_image_tower(self) -> None:
        self.clip.visual.requires_grad_(False)
        self.clip.visual.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.visual.eval()  # frozen: dropout/BN statistics stay as pretrained
        return self

    @property
    def visual(self) -> nn.Module:
        return self.clip.visual

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    @property
    def context_length(self) -> int:
        """The text context the tower was trained with. An `hf:` tower's is the configured one: open_clip's
        HFTextEncoder reports the encoder's max_position_embeddings (512, 2048, ...) instead."""
        if self.is_hf:
            return int(self.model_cfg["text_cfg"].get("context_length", self.clip.context_length))
        return self.clip.context_length

    @property
    def vocab_size(self) -> int:
        return self.clip.vocab_size

    def text_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.clip.named_parameters() if not n.startswith("visual.")}

    def text_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.clip.state_dict().items() if not k.startswith("visual.")}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- forward --------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if not self.image_ready:
            raise RuntimeError("this model was loaded for texts only (image=False): its image tower is not loaded")
        with torch.no_grad():
            f = self.clip.visual(images)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        f = fast_encode_text(self.clip, tokens)
        return F.normalize(f, dim=-1) if normalize else f

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode_text(tokens, normalize=True)


def _attn(blk, x: torch.Tensor) -> torch.Tensor:
    """Causal self-attention of an open_clip ResidualAttentionBlock via SDPA. x: (B, L, W)."""
    B, L, W = x.shape
    a = blk.attn
    H = a.num_heads
    qkv = F.linear(x, a.in_proj_weight, a.in_proj_bias).view(B, L, 3, H, W // H).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)  # (B, H, L, W/H)
    return a.out_proj(o.transpose(1, 2).reshape(B, L, W))


def _attn_at(blk, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Attention output at one query position per row (idx: (B,)), keys up to it. -> (B, W)."""
    B, L, W = x.shape
    a = blk.attn
    H = a.num_heads
    wq, wkv = a.in_proj_weight[:W], a.in_proj_weight[W:]
    bq, bkv = (a.in_proj_bias[:W], a.in_proj_bias[W:]) if a.in_proj_bias is not None else (None, None)
    rows = torch.arange(B, device=x.device)
    q = F.linear(x[rows, idx], wq, bq).view(B, 1, H, W // H).transpose(1, 2)     # (B, H, 1, d)
    kv = F.linear(x, wkv, bkv).view(B, L, 2, H, W // H).permute(2, 0, 3, 1, 4)   # (2, B, H, L, d)
    mask = (torch.arange(L, device=x.device)[None, :] <= idx[:, None])[:, None, None, :]  # (B, 1, 1, L)
    o = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
    return a.out_proj(o.transpose(1, 2).reshape(B, W))


def _plain_blocks(clip) -> bool:
    if isinstance(clip, TextCLIP):
        return True
    from open_clip.transformer import ResidualAttentionBlock

    return hasattr(clip, "transformer") and all(type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") for b in clip.transformer.resblocks)


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Cut a host batch (B, L) after its longest text (end-of-text is each row's largest id): under a
    causal mask the positions after end-of-text change nothing. Call it before copying to a device,
    so that the device never has to report the length back (a sync per batch)."""
    return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1] if tokens.numel() else tokens


def dynamic_length(clip) -> bool:
    """Whether `fast_encode_text` has its own path for this tower (a plain causal open_clip text
    transformer with argmax pooling): any sequence length up to the context."""
    return (getattr(clip, "text_pool_type", None) == "argmax" and _plain_blocks(clip)
            and not clip.transformer.grad_checkpointing and getattr(clip, "attn_mask", None) is not None)


def fast_encode_text(clip, tokens: torch.Tensor) -> torch.Tensor:
    """Same result as `clip.encode_text(tokens)` (argmax pooling), faster. tokens: (B, L) -> (B, D)."""
    if not dynamic_length(clip):
        return clip.encode_text(tokens)   # HF, non-causal and other text towers: open_clip's own forward
    if tokens.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.jit.is_tracing():
        tokens = trim_tokens(tokens)   # on the host this costs no device sync; a device batch comes cut
    idx = tokens.argmax(dim=-1)  # end-of-text is the largest id
    L = tokens.shape[1]
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast) + clip.positional_embedding[:L].to(cast)  # (B, L, W)
    blocks = list(clip.transformer.resblocks)
    for blk in blocks[:-1]:
        x = x + blk.ls_1(_attn(blk, blk.ln_1(x)))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    last = blocks[-1]
    rows = torch.arange(x.shape[0], device=x.device)
    h = x[rows, idx] + last.ls_1(_attn_at(last, last.ln_1(x), idx))   # (B, W): only end-of-text
    h = h + last.ls_2(last.mlp(last.ln_2(h)))
    h = clip.ln_final(h)
    proj = clip.text_projection
    if proj is None:
        return h
    return proj(h) if isinstance(proj, nn.Linear) else h @ proj


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


# -- a text tower without open_clip ---------------------------------------------------------------
# Importing open_clip adds 2.9 s to the 1.8 s of torch and langclip on 2 CPU cores (it pulls in torchvision,
# torch._dynamo and transformers; benchmarks/results/cpu_search_cold_start.jsonl). A text query needs none of it: TextCLIP holds the text
# half of an open_clip CLIP under the same parameter names (its state dict loads as is) for the plain
# causal text transformers langclip trains, and fast_encode_text runs it. Anything else loads through
# open_clip (`text_only_clip` returns None).
_TEXT_KEYS_IGNORED = {"hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs", "pad_id", "eos_id"}
_TEXT_KEYS_PLAIN = {"embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False, "pool_type": "argmax",
                    "proj_bias": False, "proj_type": "linear", "output_tokens": False, "act_kwargs": None,
                    "norm_kwargs": None, "block_type": None, "qk_norm": False, "scaled_cosine_attn": False,
                    "scale_heads": False, "scale_attn_inner": False, "scale_attn": False, "scale_fc": False}
_TEXT_KEYS_SHAPE = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "ls_init_value"}
_MODEL_KEYS_IGNORED = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "preprocess_cfg", "output_dict"}


# Parameters are allocated, never initialised (every one is loaded), and not on the meta device: its
# kernels live in torch._refs/_dynamo, whose first use imports them (slow). Hence the small modules.
class _LayerNorm(nn.Module):   # open_clip's LayerNorm: the result in the input's dtype
    def __init__(self, width: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.empty(width)), nn.Parameter(torch.empty(width))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5).to(x.dtype)


class _Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.empty(n_out, n_in)), nn.Parameter(torch.empty(n_out))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class _QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _Scale(nn.Module):   # open_clip's LayerScale (`gamma`), or nothing
    def __init__(self, dim: int | None):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim)) if dim else None

    def forward(self, x):
        return x if self.gamma is None else x * self.gamma


class _Attention(nn.Module):   # what fast_encode_text reads of nn.MultiheadAttention
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = _Linear(width, width)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, quick_gelu: bool, ls: bool):
        super().__init__()
        from collections import OrderedDict

        self.ln_1, self.ln_2 = _LayerNorm(width), _LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.ls_1, self.ls_2 = _Scale(width if ls else None), _Scale(width if ls else None)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", _Linear(width, hidden)),
                                              ("gelu", _QuickGELU() if quick_gelu else nn.GELU()),
                                              ("c_proj", _Linear(hidden, width))]))


class _Blocks(nn.Module):
    def __init__(self, blocks: list):
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def get_cast_dtype(self) -> torch.dtype:
        return self.resblocks[0].mlp.c_fc.weight.dtype


class TextCLIP(nn.Module):
    """The text half of an open_clip CLIP (argmax-pooled causal transformer), parameters named as there,
    nothing initialised (every weight is loaded); `visual` is an empty stand-in (encode_image refuses)."""

    def __init__(self, model_cfg: dict):
        super().__init__()
        t = model_cfg["text_cfg"]
        W, L = t.get("width", 512), t.get("context_length", 77)
        blocks = [_Block(W, t.get("heads", 8), int(W * t.get("mlp_ratio", 4.0)), bool(model_cfg.get("quick_gelu")),
                         t.get("ls_init_value") is not None) for _ in range(t.get("layers", 12))]
        self.transformer = _Blocks(blocks)
        n = t.get("vocab_size", 49408)
        self.token_embedding = nn.Embedding(n, W, _weight=torch.empty(n, W))   # _weight: not initialised
        self.positional_embedding = nn.Parameter(torch.empty(L, W))
        self.ln_final = _LayerNorm(W)
        self.text_projection = nn.Parameter(torch.empty(W, model_cfg["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.visual = nn.Module()
        self.context_length, self.vocab_size, self.text_pool_type = L, t.get("vocab_size", 49408), "argmax"
        self.register_buffer("attn_mask", torch.full((L, L), float("-inf")).triu_(1), persistent=False)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = fast_encode_text(self, tokens)
        return F.normalize(f, dim=-1) if normalize else f


def text_only_clip(model_cfg: dict) -> "LangCLIP | None":
    """A LangCLIP whose `clip` is a TextCLIP (no open_clip import), for a config TextCLIP reproduces
    exactly; None for any other (load it through open_clip: LangCLIP.empty)."""
    t = model_cfg.get("text_cfg", {})
    if set(model_cfg) - _MODEL_KEYS_IGNORED or set(t) - _TEXT_KEYS_IGNORED - _TEXT_KEYS_SHAPE - set(_TEXT_KEYS_PLAIN):
        return None   # a key TextCLIP does not know
    if not all(t.get(k, v) == v or (k == "block_type" and t[k] == "default") for k, v in _TEXT_KEYS_PLAIN.items()):
        return None   # a feature it does not have
    m = LangCLIP.__new__(LangCLIP)
    nn.Module.__init__(m)
    m.model_cfg = copy.deepcopy(model_cfg)
    m.clip = TextCLIP(model_cfg)
    m.tower_sha256, m.image_ready = "", False
    return m

