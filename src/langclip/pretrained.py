"""Where a stage's CLIP comes from: a weights file or folder (`--weights`), or open_clip's pretrained
tag (`--pretrained`), found in open_clip's download cache — or, for `openai`, in transformers' copy of
OpenAI's repos — offline, downloaded by open_clip when online. The files are read by `weights`."""
from __future__ import annotations

from pathlib import Path

from .weights import WeightsError, weights_file


def pretrained_cfg(arch: str, tag: str) -> dict:
    """open_clip's registry entry for `arch` + pretrained `tag` (download places, preprocessing)."""
    import open_clip

    cfg = open_clip.pretrained.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.pretrained.list_pretrained_tags_by_model(arch)
        raise WeightsError(f"open_clip has no pretrained {tag!r} for {arch}"
                           + (f"; its tags: {', '.join(tags)}" if tags else " (no pretrained tags at all)")
                           + "; or pass --weights FILE")
    return cfg


def pretrained_preprocess(arch: str, tag: str) -> dict:
    """The tag's own preprocessing (mean/std, interpolation, resize mode), e.g. laion2b ViT-L-14's
    mean 0.5, DFN's squash resize — not the architecture's default."""
    cfg = pretrained_cfg(arch, tag)
    return {k: (list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k])
            for k in ("mean", "std", "interpolation", "resize_mode") if cfg.get(k) is not None}


def _cached_pretrained(cfg: dict, cache_dir: str | None, arch: str = "", tag: str = "") -> Path | None:
    """The tag's file if open_clip's download cache already holds it (Hugging Face hub cache, or the
    URL cache ~/.cache/clip) — or, for `openai`, transformers' copy of OpenAI's repo — looked up on disk only."""
    import os

    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
            from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, fname = os.path.split(hub)
            fname = fname or HF_WEIGHTS_NAME
            for f in list(_get_safe_alternatives(fname)) + [fname]:
                p = try_to_load_from_cache(repo, f, cache_dir=cache_dir)
                if isinstance(p, str) and Path(p).is_file():
                    return Path(p)
    url = cfg.get("url", "")
    if url:
        p = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if p.is_file():
            return p
    return _cached_transformers_openai(arch, tag, cache_dir)


# OpenAI's CLIPs as transformers publishes them (what `CLIPModel.from_pretrained` downloaded before)
OPENAI_TRANSFORMERS = {"ViT-B-32": "openai/clip-vit-base-patch32", "ViT-B-16": "openai/clip-vit-base-patch16",
                       "ViT-L-14": "openai/clip-vit-large-patch14", "ViT-L-14-336": "openai/clip-vit-large-patch14-336"}


def _cached_transformers_openai(arch: str, tag: str, cache_dir: str | None) -> Path | None:
    """An `openai` tag's weights in transformers' layout, when the Hugging Face cache holds OpenAI's own
    repo (openai/clip-vit-base-patch32, ...) but not open_clip's copy: read as the same tower."""
    repo = OPENAI_TRANSFORMERS.get(arch.removesuffix("-quickgelu")) if tag == "openai" else None
    if repo is None:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for f in ("model.safetensors", "pytorch_model.bin"):
        p = try_to_load_from_cache(repo, f, cache_dir=cache_dir)
        if isinstance(p, str) and Path(p).is_file():
            return Path(p)
    return None


def resolve_pretrained(arch: str, tag: str, cache_dir: str | None = None) -> Path:
    """The weights file of open_clip's pretrained `tag` for `arch`: from open_clip's download cache,
    else downloaded by open_clip (unless offline). Offline and not cached: an error that says what to
    download and where to put it."""
    import os

    cfg = pretrained_cfg(arch, tag)
    hit = _cached_pretrained(cfg, cache_dir, arch, tag)
    if hit is not None:
        return hit
    where = []
    if cfg.get("hf_hub"):
        repo, fname = os.path.split(cfg["hf_hub"])
        where.append(f"the Hugging Face repo {repo} ({fname or 'open_clip_model.safetensors'}), e.g. "
                     f"`huggingface-cli download {repo}` on a connected machine, then copy its hub cache "
                     f"({os.environ.get('HF_HUB_CACHE') or '~/.cache/huggingface/hub'})")
    if cfg.get("url"):
        where.append(f"{cfg['url']} into {cache_dir or '~/.cache/clip'}/")
    repo = OPENAI_TRANSFORMERS.get(arch.removesuffix("-quickgelu")) if tag == "openai" else None
    if repo:
        where.append(f"transformers' copy, the Hugging Face repo {repo}, into the same hub cache")
    how = "; or ".join(where) + "; or pass --weights FILE with the file itself"
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("LANGCLIP_OFFLINE") == "1":
        raise WeightsError(f"pretrained {arch} {tag!r} is not in open_clip's download cache and this machine is "
                           f"offline (HF_HUB_OFFLINE=1). Get {how}")
    import open_clip

    try:
        return Path(open_clip.pretrained.download_pretrained(cfg, cache_dir=cache_dir))
    except Exception as e:  # no network, hub errors: all say the same to the user
        raise WeightsError(f"pretrained {arch} {tag!r} is not in open_clip's download cache and could not be "
                           f"downloaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Get {how}") from None


def clip_weights(arch: str, weights: str = "", pretrained: str = "") -> Path:
    """The CLIP weights file a stage uses: `weights` (a file, or a folder holding one) or open_clip's
    `pretrained` tag."""
    if weights and pretrained:
        raise WeightsError("give either --weights FILE or --pretrained TAG, not both")
    if pretrained:
        return resolve_pretrained(arch, pretrained)
    if not weights:
        raise WeightsError("the CLIP weights are required: --weights FILE or --pretrained TAG (e.g. openai)")
    return weights_file(weights)
