"""`langclip encode`: the embeddings of texts or pictures, written to a file for use elsewhere (a vector
database, a notebook, a classifier), in batches with a progress bar.

    langclip encode --model runs/ru --texts queries.txt --out queries.npy
    langclip encode --model runs/ru --images photos/ --out photos.parquet

Texts need only the text tower: a run folder is loaded without its CLIP weights file. Pictures go through
the frozen image tower, so their embeddings are the ones every langclip text tower trained on that tower
(and the original CLIP) compares with. Every row is L2-normalised, in the order given (folders: sorted,
recursively); a picture that cannot be decoded is skipped, counted and named. Pictures are decoded with PIL
and preprocessed in `--workers` processes (2 by default), 32 at a time, exactly as `LoadedModel.encode_image`
does it. For a large collection that grows, `langclip index build` is resumable and updates incrementally;
it keeps the embeddings in its `embeddings.npy` (float16; by default decoded with torchvision's kernels,
within a cosine of about 0.999 of PIL's pictures), the rows in `items.parquet`.

Files: `.npy` — an (N, D) array — with `<name>.json` beside it (each row's text or picture, the model, the
image tower, what was skipped); or `.parquet` — a `text` or `image` column and an `embedding` column of
fixed-size lists — with the same record in the file's metadata under `langclip`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMATS = (".npy", ".parquet")
DTYPES = ("float32", "float16")
TEXT_BATCH = 256
RECORD = "langclip_embeddings"      # marks a file (or the .npy's .json) as written by this command


def encode_cli(model: str, out: str, texts: list[str] | None = None, images: list[str] | None = None,
               dtype: str = "float32", weights: str | None = None, device: str | None = None,
               upright: bool = True, progress: bool = True, workers: int = 2) -> Path:
    """Embed `texts` (the texts, or files with one a line: see inference.parse_texts) or `images` (files and
    folders) with the model at `model` and write them to `out` (.npy or .parquet); pictures are decoded and
    preprocessed in `workers` processes (0: in this one). Returns `out`."""
    from .coverage import warn as note_unseen
    from .files import check_out_file, progress_bar
    from .inference import image_tower_ref, load, parse_texts
    from .pictures import check_workers, expand_images, iter_images

    if (texts is None) == (images is None):
        raise ValueError("give --texts or --images (one of them)")
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"{out}: embeddings are written as .npy or .parquet (give --out NAME.npy)")
    check_workers(workers)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_out_file(out, "embeddings", _ours)
    if out.suffix.lower() == ".npy":      # its .json beside it: never someone else's file
        check_out_file(out.with_suffix(".json"), "embeddings' row names", lambda p: _ours(out))
    kind, skipped = ("text", []) if texts is not None else ("image", [])
    items = parse_texts(texts) if texts is not None else expand_images(images)[0]
    m = load(model, device=device, weights=weights, image=kind == "image")
    bar = progress_bar(total=len(items), desc="encode", unit=kind, disable=not progress or len(items) <= TEXT_BATCH)
    rows, done = [], []
    if kind == "text":
        note_unseen(m.meta.get("_path"), m.tokenizer, items, m.tokenizer.meta.get("language"))   # untrained words
        for s in range(0, len(items), TEXT_BATCH):
            rows.append(m.encode_text(items[s: s + TEXT_BATCH]).numpy())
            bar.update(len(rows[-1]))
        done = items
    else:
        for names, ims in iter_images(items, skipped, upright, preprocess=m.preprocess, workers=workers):
            rows.append(m.encode_image(ims).numpy())
            done += names
            bar.n = len(done) + len(skipped)
            bar.refresh()
        if not done:
            raise ValueError(f"none of the {len(items)} pictures could be decoded")
    bar.close()
    emb = np.concatenate(rows).astype(dtype)
    record = {RECORD: 1, "kind": kind, "rows": len(done), "dim": int(emb.shape[1]), "dtype": dtype,
              "normalized": True, "model": str(model), "image_tower": image_tower_ref(m.meta),
              "skipped": [{"image": p, "reason": why} for p, why in skipped]}
    _write(out, emb, done, record)
    print(f"encoded {len(done)} {kind}{'s' * (len(done) != 1)} (dim {emb.shape[1]}, {dtype}) into {out}"
          + (f"; {len(skipped)} pictures skipped (not decodable)" if skipped else ""))
    return out


def _write(out: Path, emb: np.ndarray, items: list[str], record: dict) -> None:
    from .files import atomic_write, atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        atomic_write_text(out.with_suffix(".json"), json.dumps(dict(record, items=items), ensure_ascii=False))

        def save(tmp):
            with open(tmp, "wb") as f:       # a file object: np.save on a path not ending .npy adds .npy
                np.save(f, emb)
        atomic_write(out, save)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    table = pa.table({record["kind"]: pa.array(items, pa.string()), "embedding": col})
    table = table.replace_schema_metadata({"langclip": json.dumps(record, ensure_ascii=False)})
    atomic_write(out, lambda tmp: pq.write_table(table, tmp))


def _ours(p: Path) -> bool:
    """Written by `langclip encode` (so it may be replaced)."""
    try:
        if p.suffix.lower() == ".npy":
            side = p.with_suffix(".json")
            return side.is_file() and RECORD in json.loads(side.read_text(encoding="utf-8"))
        import pyarrow.parquet as pq

        meta = pq.read_schema(p).metadata or {}
        return RECORD in json.loads(meta.get(b"langclip", b"{}"))
    except (OSError, ValueError):
        return False


def read_embeddings(path: str | Path) -> tuple[np.ndarray, list[str], dict]:
    """(embeddings (N, D), each row's text or picture, the record) of a file `langclip encode` wrote."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return np.load(path), record.pop("items"), record
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    record = json.loads(t.schema.metadata[b"langclip"])
    emb = t.column("embedding").combine_chunks()
    return emb.values.to_numpy(zero_copy_only=False).reshape(len(t), -1), t.column(record["kind"]).to_pylist(), record
