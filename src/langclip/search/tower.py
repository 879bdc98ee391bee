"""Which image tower an index is built with: a run's or an export's (the CLIP file it recorded, or the
export's own weights when that file is not here), CLIP's own weights file, or `--clip`/`--weights` given
directly."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import IndexConfig

log = logging.getLogger("langclip.search.index")


def index_tower(cfg: IndexConfig) -> tuple[str, str, str]:
    """(arch, weights file, pretrained tag) of the image tower: a run/export's, or given directly."""
    if cfg.model and Path(cfg.model).is_file():   # CLIP's own weights file (as `search --model FILE`)
        return cfg.clip, cfg.model, ""
    if cfg.model:
        from ..inference import image_tower_ref, model_meta
        from ..runfolder import resolve_image_weights

        ref = image_tower_ref(model_meta(cfg.model))
        if not ref:
            raise ValueError(f"{cfg.model}: records no image tower (not made by langclip?); "
                             f"give --clip with --weights or --pretrained instead of --model")
        try:
            path = resolve_image_weights(Path(cfg.model), ref, cfg.weights or None, check_sha=False)
        except FileNotFoundError:
            own = None if cfg.weights else _export_tower(Path(cfg.model), ref["arch"])
            if own is None:
                raise
            return own
        return cfg.clip or _run_arch(Path(cfg.model), ref["arch"]), str(path), ""
    # no --clip: the architecture --weights holds (cache build reads it), ViT-B/32 for a --pretrained tag
    return cfg.clip or ("" if cfg.weights else "ViT-B-32-quickgelu"), cfg.weights, cfg.pretrained


def _export_tower(model: Path, arch: str) -> tuple[str, str, str] | None:
    """An export holds its image tower: (arch, the export's weights file, "") when the CLIP file it was
    trained with is not here. The arch is the recorded one where it still resolves, else the export's
    own config (its model_cfg: the image tower's shape is CLIP's). None for a run folder."""
    from ..hf_folder import RECORD, is_transformers_folder
    from ..inference import is_export
    from ..model import model_config
    from ..weights import weights_file

    if not (is_export(model) or is_transformers_folder(model)):
        return None
    try:
        model_config(arch)
    except (OSError, ValueError, RuntimeError):   # a JSON file that is gone, a name open_clip lacks
        arch = str(model / ("open_clip_config.json" if is_export(model) else RECORD))
    log.info("%s: the image tower from the export's own weights (its CLIP file is not here)", model)
    return arch, str(weights_file(model)), ""


def _run_arch(run: Path, arch: str) -> str:
    """A run's recorded architecture where it still resolves; else the run's own model.json (its model_cfg: the
    image tower's shape is CLIP's) — for a model-config JSON recorded by a relative path (runs trained before
    round 2's session 27) or moved since."""
    from ..model import model_config
    from ..runfolder import MODEL_FILE, read_run_meta

    try:
        model_config(arch)
        return arch
    except (OSError, ValueError, RuntimeError):
        if "hf_model_name" in read_run_meta(run).get("model_cfg", {}).get("text_cfg", {}):
            raise ValueError(f"{run}: its image tower's architecture {arch!r} is not found from here (a relative "
                             f"path?); give it with --clip") from None
        log.info("%s: the image tower's architecture from the run's %s (%r is not found)", run, MODEL_FILE, arch)
        return str((run / MODEL_FILE).resolve())
