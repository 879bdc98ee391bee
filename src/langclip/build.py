"""Building a student from a pretrained CLIP: its image tower (locked) and a text tower initialised
`scratch`, `clip` (CLIP's own text transformer; new tokens from the embeddings of their CLIP pieces)
or `hf:<name>` (a pretrained Hugging Face encoder)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .files import sha256_file
from .model import LangCLIP, TextCLIP, hf_student_config, model_config, student_config
from .tokenizer import CLIP_VOCAB, Tokenizer, clip_base_vocab, clip_merges
from .weights import WeightsError, check_activation, load_state_dict, split_towers, tower_digest

log = logging.getLogger(__name__)


def check_clip_init(clip_cfg: dict, arch: str) -> None:
    """`clip` init copies CLIP's text transformer, which is causal and pools at end-of-text (argmax):
    a text config that says otherwise cannot be honoured, so it is refused, naming the field."""
    t = clip_cfg.get("text_cfg", {})
    bad = [f"{k}={t[k]!r}" for k, ok in (("no_causal_mask", lambda v: not v), ("embed_cls", lambda v: not v),
                                         ("pool_type", lambda v: v in (None, "argmax")))
           if k in t and not ok(t[k])]
    if bad:
        raise ValueError(f"{arch}: `clip` init copies CLIP's causal, end-of-text-pooled text transformer and "
                         f"cannot honour text_cfg {', '.join(bad)}; use `scratch` init for such a tower")


# -- building from a pretrained CLIP ------------------------------------------------------------
def load_image_tower(model: LangCLIP, weights: str | Path, arch: str = "?",
                     sd: dict | None = None) -> dict[str, torch.Tensor]:
    """Load the image tower from a CLIP weights file into `model`; returns the file's non-visual part.
    `sd`: the file's tensors where the caller has read them already (clip_arch.infer_arch did)."""
    if isinstance(model.clip, TextCLIP):
        raise ValueError("this model was loaded for texts only (image=False, without open_clip): it has no image "
                         "tower to fill; load the run with image=True")
    sd = load_state_dict(weights) if sd is None else sd
    check_activation(weights, model.model_cfg, arch)
    vis, rest = split_towers(sd)
    if not vis:
        raise WeightsError(f"{weights}: has no image tower (no 'visual.*' weights) — a text-only checkpoint? "
                           f"expected a full CLIP checkpoint for {arch}")
    target = model.clip.visual.state_dict()
    missing = sorted(set(target) - set(vis))
    unexpected = sorted(set(vis) - set(target))
    bad = [(k, tuple(vis[k].shape), tuple(v.shape)) for k, v in target.items() if k in vis and vis[k].shape != v.shape]
    if missing or unexpected or bad:
        detail = (f"shape of visual.{bad[0][0]} is {bad[0][1]}, expected {bad[0][2]}" if bad else
                  f"missing visual.{missing[0]}" if missing else f"unexpected visual.{unexpected[0]}")
        raise WeightsError(f"{weights}: image tower does not match architecture {arch} ({detail}; "
                           f"{len(missing)} missing, {len(unexpected)} unexpected, {len(bad)} wrong shapes)")
    model.clip.visual.load_state_dict({k: v.float() for k, v in vis.items()})
    model.lock_image_tower()
    model.tower_sha256 = tower_digest(vis)
    model.image_ready = True
    return rest


def clip_piece_ids(token: str, ranks: dict[tuple[str, str], int], vocab: dict[str, int]) -> list[int]:
    """CLIP's ids for a byte-level token string, by applying CLIP's merges to its characters.
    'ðŁĺĢ</w>' (an emoji that is one new token) -> CLIP's pieces of it."""
    end = token.endswith("</w>")
    chars = list(token[: -4] if end else token)
    if not chars:
        return []
    if end:
        chars[-1] += "</w>"
    while len(chars) > 1:
        pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(chars, chars[1:]))]
        r, i = min(pairs)
        if r == 1 << 30:
            break
        chars[i: i + 2] = [chars[i] + chars[i + 1]]
    return [vocab[c] for c in chars]


def init_text_from_clip(model: LangCLIP, clip_text_sd: dict[str, torch.Tensor], tokenizer) -> dict:
    """`clip` init: CLIP's text transformer, final norm, projection and temperature; CLIP's embeddings
    for shared ids; each new token = mean of CLIP's embeddings of the pieces CLIP cuts it into;
    start/end-of-text copied to their new ids; positional embedding cut or interpolated."""
    c = model.clip
    own = c.state_dict()
    tok_emb = clip_text_sd.get("token_embedding.weight")
    if tok_emb is None:
        raise WeightsError("the CLIP weights file has no text tower (token_embedding.weight); `clip` init needs it")
    load = {}
    for k, v in clip_text_sd.items():
        if k in own and k not in ("token_embedding.weight", "positional_embedding") and own[k].shape == v.shape:
            load[k] = v.float()
    skipped = [k for k in clip_text_sd if k not in load and k not in ("token_embedding.weight", "positional_embedding")]
    if skipped:
        raise WeightsError(f"text tower of the CLIP file does not fit the student ({skipped[0]}: "
                           f"{tuple(clip_text_sd[skipped[0]].shape)} vs {tuple(own[skipped[0]].shape) if skipped[0] in own else 'absent'})")
    c.load_state_dict(load, strict=False)
    pos = clip_text_sd["positional_embedding"].float()
    L = c.positional_embedding.shape[0]
    with torch.no_grad():
        if L <= pos.shape[0]:
            c.positional_embedding.copy_(pos[:L])
        else:
            c.positional_embedding.copy_(F.interpolate(pos.T[None], size=L, mode="linear", align_corners=True)[0].T)
        emb = c.token_embedding.weight
        base = CLIP_VOCAB - 2
        emb[:base] = tok_emb[:base].float()
        emb[tokenizer.sot_token_id] = tok_emb[CLIP_VOCAB - 2].float()
        emb[tokenizer.eot_token_id] = tok_emb[CLIP_VOCAB - 1].float()
        ranks = {m: i for i, m in enumerate(clip_merges())}
        vocab = {t: i for i, t in enumerate(clip_base_vocab())}
        id_to_tok = {i: t for t, i in tokenizer.hf.get_vocab().items()}
        n_new = 0
        for i in range(base, tokenizer.sot_token_id):
            pieces = clip_piece_ids(id_to_tok[i], ranks, vocab)
            emb[i] = tok_emb[pieces].float().mean(0)
            n_new += 1
    return {"shared_ids": base + 2, "new_ids_from_pieces": n_new}


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


def load_reference_clip(arch: str, weights: str | Path, sd: dict | None = None):
    """The original English CLIP (both towers from its weights file; `sd`: its tensors, if read) and CLIP's
    own tokenizer."""
    model = LangCLIP.empty(model_config(arch))   # both towers filled below, or refused
    rest = load_image_tower(model, weights, arch, sd)
    own = model.text_state_dict()
    text = {k: v.float() for k, v in rest.items() if k in own}
    missing = [k for k in own if k not in text]
    if missing:
        raise WeightsError(f"{weights}: no English text tower ({missing[0]} missing); the reference row needs "
                           f"the full CLIP weights file")
    model.clip.load_state_dict(text, strict=False)
    return model.eval(), Tokenizer.clip()
