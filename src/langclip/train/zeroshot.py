"""Zero-shot accuracy after each epoch (config `zeroshot:`), as open_clip reports ImageNet while it trains.
The benchmark's pictures go through the frozen image tower once, when training starts; after each epoch
the class prompts go through the text tower as it is then. The numbers are `langclip eval`'s for the
weights of that epoch: the same datasets, class names, templates and metrics (evaluate.py), in float32.
Rank 0 alone measures them; the pictures' embeddings are kept in the run folder for a resumed run."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..benchsets import short_name
from ..metrics import classification_metrics, display_name, zero_shot_weights


@dataclass
class ZeroShotSet:
    name: str
    features: torch.Tensor       # (N, D) normalised image embeddings, on the training device
    labels: torch.Tensor         # (N,)
    classnames: list
    templates: list[str]


def _dataset(name: str, root: str, transform, lang: str, given: list[str] | None):
    """(dataset, class names, templates) as `langclip eval` takes them (benchsets.zero_shot_inputs); `given`:
    the config's templates."""
    from ..benchsets import zero_shot_inputs

    try:
        z = zero_shot_inputs(name, Path(root), transform, lang, None, given)
    except ValueError as e:
        raise ValueError(f"zeroshot.datasets: {e}") from None
    return z.dataset, z.names, z.templates


@torch.no_grad()
def zero_shot_sets(run, progress: bool = True) -> list[ZeroShotSet]:
    """Each `zeroshot.datasets` benchmark's pictures embedded by the run's frozen image tower (rank 0), kept
    in the run folder (zeroshot/NAME.safetensors) for a resumed run; every dataset's names are read first."""
    from ..model import image_transform, preprocess_cfg

    z = run.cfg.zeroshot
    if run.rank != 0 or not z.datasets:
        return []
    lang = z.lang or (getattr(run.tok, "meta", {}) or {}).get("language")
    if not lang:
        raise ValueError("zeroshot.lang: the tokenizer records no language; give the class names' language")
    from ..datasets import read_templates

    t = z.templates
    given = (read_templates(json.dumps(t, ensure_ascii=False) if isinstance(t, list) else t, lang) if t else None)
    pp = preprocess_cfg(run.model)
    transform = image_transform(pp)
    todo = []
    for name in z.datasets:   # all read (and their class names checked) before any picture is embedded
        ds, names, templates = _dataset(name, str(Path(z.data_root).expanduser()), transform, lang, given)
        if z.max_images and z.max_images < len(ds):   # spread over the split: a class-sorted folder keeps its classes
            ds = torch.utils.data.Subset(ds, torch.linspace(0, len(ds) - 1, z.max_images).round().long().tolist())
        short = short_name(name)
        key = {"dataset": name, "root": str(Path(z.data_root).expanduser().resolve()) if z.data_root else "",
               "pictures": len(ds), "max_images": z.max_images, "tower": run.ref.tower_sha256 or run.ref.sha256,
               "preprocess": json.dumps(pp, sort_keys=True, default=str)}
        todo.append((short, ds, names, templates, key))
    out = []
    for short, ds, names, templates, key in todo:
        feats, labels = _embedded(run, run.out / "zeroshot" / f"{short}.safetensors", ds, key, progress)
        out.append(ZeroShotSet(short, feats, labels, names, templates))
    return out


def _embedded(run, f: Path, ds, key: dict, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised image embeddings on the device, labels): from `f` where it holds this `key`'s, else
    computed with the frozen image tower and written there."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ..files import progress_bar, usable_cores

    meta = {k: str(v) for k, v in key.items()}
    if f.is_file():
        try:
            with safe_open(str(f), "pt") as sf:
                if sf.metadata() == meta:
                    return sf.get_tensor("features").to(run.device), sf.get_tensor("labels")
        except Exception:  # noqa: BLE001 - a damaged file is computed again
            pass
    from ..benchsets import Skipping, collate_skipping

    loader = torch.utils.data.DataLoader(Skipping(ds), batch_size=256, num_workers=min(8, usable_cores() - 1),
                                         collate_fn=collate_skipping)
    feats, labels, skipped = [], [], []
    run.model.eval()
    for x, y, bad in progress_bar(loader, desc=f"zero-shot {key['dataset']} pictures", unit="batch", disable=not progress):
        skipped += bad   # an unreadable picture is left out and counted, as `langclip eval` does
        if x is not None:
            feats.append(F.normalize(run.model.encode_image(x.to(run.device)).float(), dim=-1))
            labels.append(y)
    run.model.train()
    if skipped:
        print(f"zero-shot {key['dataset']}: {len(skipped)} of {len(ds)} pictures could not be read and were left out "
              f"(first, #{skipped[0][0]}: {skipped[0][1]})", file=sys.stderr, flush=True)
    if not feats:
        raise ValueError(f"zeroshot.datasets: {key['dataset']}: none of its {len(ds)} pictures could be read")
    feats, labels = torch.cat(feats), torch.cat(labels)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    save_file({"features": feats.cpu().contiguous(), "labels": labels.contiguous()}, str(tmp), metadata=meta)
    tmp.replace(f)
    return feats, labels


@torch.no_grad()
def zero_shot_epoch(run) -> dict:
    """{"zeroshot/NAME/acc1", …/acc5, …/mean_per_class_recall} for the text tower as it is now."""
    res = {}
    run.model.eval()
    for s in run.zeroshot:
        w = zero_shot_weights(run.model, run.tok, s.classnames, s.templates, run.device)
        m = classification_metrics((s.features @ w.T).cpu(), s.labels, [display_name(c) for c in s.classnames])
        res.update({f"zeroshot/{s.name}/{k}": m[k] for k in ("acc1", "acc5", "mean_per_class_recall")})
    run.model.train()
    return res
