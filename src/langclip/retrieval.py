"""`langclip eval-retrieval`: text->image and image->text recall@1/5/10 on held-out pairs — a cache's (the
pictures the run held out in training, their embeddings read from it) or a pairs table's, shards' or
folder's, embedded here. The benchmarks' retrieval sets (XM3600, XTD10, ...) are `langclip eval`'s
(evaluate.py)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .files import check_out_dir
from .metrics import encode_texts, markdown_table, recall_at_k
from .runfolder import held_out, run_split


def evaluate_retrieval_cli(model: str, data: list[str], split: str = "val", val_fraction: float | None = None,
                           seed: int | None = None, batch_size: int = 256, device: str | None = None,
                           weights: str | None = None, out: str | None = None, workers: int = 2,
                           image_column=None, caption_column=None) -> dict:
    """Text->image and image->text recall@1/5/10 on held-out pairs.

    `data` is a langclip cache (its image embeddings are used; `split='val'` takes the images the run
    held out in training, `all` takes every pair; the model's image tower is not needed) or pairs
    (table, tar shards, folder), whose images are embedded here (unreadable images are skipped and counted)."""
    from .inference import load

    if split not in ("val", "all"):
        raise ValueError(f"--split must be val or all, got {split!r}")
    from_cache = len(data) == 1 and (Path(data[0]) / "manifest.json").is_file()
    m = load(model, device=device, weights=weights, image=not from_cache)
    if from_cache:
        texts, image, inv, source = _retrieval_cache(m, data[0], split, Path(model), val_fraction, seed)
        skipped = 0
    else:
        texts, image, inv, source, skipped = _retrieval_pairs(m, data, batch_size, workers, image_column, caption_column)
    if not texts:
        raise ValueError(f"no pairs to evaluate in {source}")
    text = encode_texts(m.model, m.tokenizer, texts, m.device)
    res = recall_at_k(text, image, inv)
    res.update(texts=len(texts), images=int(image.shape[0]), images_skipped=skipped, data=source)
    print(json.dumps(res, ensure_ascii=False))
    if out:
        o = check_out_dir(out, "evaluation", ("results.json", "retrieval.json"))
        o.mkdir(parents=True, exist_ok=True)
        (o / "retrieval.json").write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")
        cols = ["t2i_r@1", "t2i_r@5", "t2i_r@10", "i2t_r@1", "i2t_r@5", "i2t_r@10", "texts", "images"]
        (o / "retrieval.md").write_text(markdown_table([res], cols), encoding="utf-8")
    return res


def _retrieval_cache(m, path: str, split: str, model_path: Path, val_fraction, seed):
    """(texts, image embeddings, each text's image, description) from a cache's embeddings."""
    from .cache import check_cache_matches, load_cache
    from .hf_folder import is_transformers_folder
    from .inference import export_tower_digest, image_tower_ref, is_export

    cache = load_cache(path)
    ref = image_tower_ref(m.meta or {})
    if is_export(model_path) or is_transformers_folder(model_path):   # it holds its image tower: that is
        ref = {**ref, "arch": ref.get("arch", cache.manifest.get("arch")),  # compared, not only its record
               "tower_sha256": m.model.tower_sha256 or export_tower_digest(model_path)}
    if ref and (cache.manifest.get("tower_sha256") or ref.get("sha256")):   # else nothing to compare
        check_cache_matches(cache.manifest, ref, where=path)
    if split == "val":
        idx = held_out(cache, run_split(m.meta or {}, model_path), path, val_fraction, seed)
    else:
        idx = torch.arange(len(cache.captions))
    imgs_u, inv = cache.caption_image[idx].unique(return_inverse=True)
    if cache.text_only:  # a parallel corpus: each text against the English CLIP embeddings instead
        image = torch.nn.functional.normalize(cache.teacher[idx].float(), dim=-1)
    else:
        image = cache.image_emb[imgs_u].float()
    texts = [cache.captions[i] for i in idx.tolist()]
    return texts, image, inv, f"cache {path} ({split}{', text-only: English CLIP text embeddings as targets' if cache.text_only else ''})"


def _retrieval_pairs(m, data: list[str], batch_size: int, workers: int, image_column, caption_column):
    """(texts, image embeddings, each text's image, description, pictures skipped), embedding the pictures."""
    from .pairs import ImageDataset, collate_images, read_pairs

    pairs = read_pairs(data, image_column, caption_column)
    ds = ImageDataset(pairs.images, list(range(len(pairs.images))), m.preprocess)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_images)
    feats: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for rows, oks, x, _errs in loader:
            if x is not None:
                f = m.model.encode_image(x.to(m.device)).float().cpu()
                feats.update(zip([r for r, k in zip(rows, oks) if k], f))
    if not feats:
        raise ValueError(f"none of the {len(pairs.images)} images in {', '.join(data)} could be read")
    kept = [(row, c) for row, c, _ in pairs.captions if row in feats]
    if not kept:
        raise ValueError(f"no pairs to evaluate in {', '.join(data)}: no caption belongs to a readable image")
    imgs_u, inv = torch.tensor([row for row, _ in kept], dtype=torch.long).unique(return_inverse=True)
    image = torch.stack([feats[int(r)] for r in imgs_u])
    return [c for _, c in kept], image, inv, ", ".join(data), len(pairs.images) - len(feats)
