"""`langclip info`: what a langclip folder or a CLIP weights file is, from its small records alone — a
tokenizer, a cache, a run, a training checkpoint, an export (open_clip, transformers, ONNX, Immich), a search
index, or CLIP weights (their architecture read as `--clip` would be) — and, for several, whether they share one image
tower: a cache, an index and the runs trained on it must, since the image tower is frozen.

    >>> print(info(["runs/ru", "idx/"]))          # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

from .coverage import load_counts, summary, summary_text
from .files import read_json_dict
from .folders import last_metrics


_read = read_json_dict   # a record file's object, {} when missing or damaged


def kind(path: str | Path) -> str:
    """tokenizer | cache | index | run | export-open_clip | export-hf | export-onnx | export-immich |
    transformers | checkpoint | weights | benchmark-wds (CLIP_benchmark's webdataset copy) | shards (`data
    shards`' folder); ValueError for anything else (a data file: what it is, see `_data_file`)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: not found")
    fmt = str(_read(p / "manifest.json").get("format", ""))
    checks = [(fmt.startswith("langclip-cache"), "cache"), (fmt.startswith("langclip-index"), "index"),
              ((p / "model.json").is_file(), "run"), ((p / "langclip_tokenizer.json").is_file(), "tokenizer"),
              ((p / "open_clip_config.json").is_file() and "langclip" in _read(p / "open_clip_config.json"),
               "export-open_clip"),
              ((p / "langclip_config.json").is_file() and (p / "config.json").is_file(), "export-hf"),
              ((p / "onnx_config.json").is_file(), "export-onnx"),
              ((p / "textual" / "model.onnx").is_file() and (p / "visual" / "model.onnx").is_file(), "export-immich"),
              (((p / "classnames.txt").is_file() or (p / "dataset_type.txt").is_file())
               and ((p / "test" / "nshards.txt").is_file() or (p / "nshards.txt").is_file()), "benchmark-wds"),
              ("input" in _read(p / "shards.json"), "shards")]
    found = next((k for ok, k in checks if ok), None)
    if found:
        return found
    from .hf_folder import is_transformers_folder
    from .weights import weights_file

    if p.is_dir() and is_transformers_folder(p):
        return "transformers"
    if p.is_file() and p.name.startswith("step_") and p.suffix == ".pt" and (p.parent.parent / "model.json").is_file():
        return "checkpoint"
    if p.is_file() and p.suffix.lower() in (".parquet", ".csv", ".tsv", ".jsonl", ".json", ".txt", ".tar"):
        raise ValueError(f"{p}: {_data_file(p)}")
    try:
        weights_file(p)
    except (OSError, ValueError):
        from .folders import unfinished_cache

        why = unfinished_cache(p) or "not a langclip tokenizer, cache, run, export or index, nor CLIP weights"
        raise ValueError(f"{p}: {why}") from None
    return "weights"


def describe(path: str | Path, digest: bool = True) -> dict:
    """{"path", "kind", "tower": {arch, tower_sha256, weights, weights_present}, ...}: what `path` records.
    `digest`: for CLIP weights, hash the image tower's tensors (reads the file)."""
    p = Path(path)
    k = kind(p)
    d = {"path": str(p), "kind": k}
    if k == "tokenizer":
        d.update(_tokenizer(p))
    elif k in ("cache", "index"):
        m = _read(p / "manifest.json")
        d["tower"] = _tower(m)
        d["dim"] = m.get("dim")
        if k == "cache":
            d.update({f: m.get(f) for f in ("num_images", "num_images_ok", "num_images_failed", "num_images_damaged",
                                             "num_captions", "teacher", "text_only", "seconds")})
        else:
            d.update({f: m.get(f) for f in ("count", "num_failures", "built", "updated")})
            d["search"] = f"faiss IVF, {m['ann'].get('nlist')} lists" if m.get("ann") else "exact"
    elif k == "run":
        d.update(_run(p))
    elif k.startswith("export-"):
        d.update(_export(p, k))
    elif k == "checkpoint":
        d.update(_checkpoint(p))
    elif k == "benchmark-wds":
        d.update(_wds(p))
    elif k == "shards":
        d.update(_shards(p))
    else:
        d.update(_weights(p, digest))
    return d


def _data_file(p: Path) -> str:
    """What a data file given to `info` is, in words: not a langclip folder; for a Parquet table whose column holds
    the pictures themselves, the command that makes shards of it."""
    what = {".tar": "a tar shard", ".txt": "a text file", ".json": "a JSON file"}.get(p.suffix.lower(), "a table")
    hint = ""
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        from .tables import picture_columns

        try:
            schema = pq.read_schema(p)
        except Exception as e:   # noqa: BLE001 - pyarrow's errors for a file that is not Parquet
            return f"not a readable Parquet file ({str(e).splitlines()[0][:200]})"
        pics = picture_columns(schema)
        what = f"a table ({pq.ParquetFile(str(p)).metadata.num_rows:,} rows; columns {', '.join(schema.names)})"
        if pics:
            hint = (f"; column {pics[0]!r} holds the pictures themselves: `langclip data shards --data {p} --out "
                    f"shards/` writes them as shards the cache and the index read")
    return f"{what}, which langclip reads as data (cache build, index build, tokenizer train --corpus); `info` " \
           f"describes langclip folders and CLIP weights files{hint}"


def _shards(p: Path) -> dict:
    r = _read(p / "shards.json")
    return {"rows": r.get("rows"), "shards": r.get("shards"), "skipped": len(r.get("problems") or []),
            "data": r.get("data"), "done": bool(r.get("done"))}


def _wds(p: Path) -> dict:
    from .benchwds import names_source, open_wds, shards

    b = open_wds(f"wds:{p}")
    src = names_source(b)
    return {"type": b.kind, "split": str(b.split), "shards": len(shards(b)), "classes": b.classnames,
            "templates": len(b.templates or []), "names_from": src and {"dataset": src[0], "languages": src[1]}}


def _tower(rec: dict) -> dict:
    w = rec.get("weights") or ""
    return {"arch": rec.get("arch"), "tower_sha256": rec.get("tower_sha256") or "", "weights": w,
            "pretrained": rec.get("pretrained") or "", "weights_present": bool(w) and Path(w).exists()}


def _tokenizer(p: Path, name: str = "langclip_tokenizer.json") -> dict:
    m = _read(p / name)
    return {"language": m.get("language"), "vocab_size": m.get("vocab_size"), "merges_added": m.get("merges_added"),
            "clip_ids_kept": m.get("clip_ids_kept"), "english_words": m.get("english_words")}


def _run(p: Path) -> dict:
    from .runfolder import model_language

    m = _read(p / "model.json")
    t = (m.get("model_cfg") or {}).get("text_cfg") or {}
    d = {"language": model_language(p), "init": (m.get("init") or {}).get("init"),
         "text_tower": (f"{t['hf_model_name']} (hf)" if t.get("hf_model_name") else
                        f"{t.get('layers')} layers x {t.get('width')}, {t.get('vocab_size'):,} ids, context "
                        f"{t.get('context_length')}"),
         "tower": _tower(m.get("image_tower") or {}), "steps": m.get("steps"),
         "best_mean_recall": m.get("best_mean_recall")}
    ck = _read(p / "checkpoints" / "latest.json")
    d["checkpoint"] = ck.get("file")
    counts = load_counts(p)   # which tokens the training captions used (coverage.py)
    d["tokens"] = counts is not None and summary(counts, _tokenizer(p / "tokenizer").get("merges_added")) or None
    last, zs = last_metrics(p)
    d["zero_shot"] = {k[9:-5]: v for k, v in zs.items() if k.startswith("zeroshot/") and k.endswith("/acc1")}
    d["last_val"] = {k[4:]: last[k] for k in ("val/mean_recall", "val/t2i_r@1", "val/i2t_r@1", "val/en_t2i_r@1")
                     if k in last}
    cache = m.get("cache") or ""
    man = _read(Path(cache) / "manifest.json") if cache else {}
    d["cache"] = {"path": cache, "present": bool(man), "tower_sha256": man.get("tower_sha256", "")}
    return d


def _export(p: Path, k: str) -> dict:
    from .runfolder import model_language

    rec = {"export-open_clip": _read(p / "open_clip_config.json"), "export-hf": _read(p / "langclip_config.json"),
           "export-onnx": _read(p / "onnx_config.json")}.get(k, {})
    d = {"language": model_language(p), "tower": _tower((rec.get("langclip") or {}).get("image_tower") or {})}
    if k == "export-immich":   # Immich's own layout carries no langclip record; its README does
        d["embed_dim"] = _read(p / "config.json").get("embed_dim")
    counts = load_counts(p)   # the run's, copied by open_clip and transformers exports (coverage.py)
    d["tokens"] = summary(counts) if counts is not None else None
    return d


def _checkpoint(p: Path) -> dict:
    import torch

    ck = torch.load(str(p), map_location="cpu", weights_only=True)
    return {"run": str(p.parent.parent), "step": ck.get("step"), "epoch": ck.get("epoch"), "best": ck.get("best"),
            "resume_keys": ck.get("run") or {}}


def _weights(p: Path, digest: bool) -> dict:
    from .clip_arch import infer_arch
    from .weights import declared_activation, load_state_dict, split_towers, tower_digest, weights_file

    sd = load_state_dict(p)
    vis = split_towers(sd)[0]
    if not vis:
        raise ValueError("CLIP-like weights without an image tower (a run's text_tower*.safetensors holds its text "
                         "tower only: describe the run folder)")
    act, where = declared_activation(p)
    d = {"file": str(weights_file(p)), "activation": act or "not recorded", "activation_from": where}
    try:
        d["arch"] = infer_arch(p, sd)   # the tensors read once, above
    except ValueError as e:
        d["arch"] = None
        d["arch_problem"] = str(e)
    d["tower"] = {"arch": d["arch"], "tower_sha256": tower_digest(vis) if digest else "",
                  "weights": d["file"], "pretrained": "", "weights_present": True}
    return d


def towers(descs: list[dict]) -> str | None:
    """One line on whether the described things share an image tower (compared by tensor digest)."""
    by = {}
    for d in descs:
        sha = (d.get("tower") or {}).get("tower_sha256")
        if sha:
            by.setdefault(sha, []).append(d["path"])
    if len(by) < 2 and sum(map(len, by.values())) < 2:
        return None
    if len(by) == 1:
        return f"image tower: all {sum(map(len, by.values()))} share {next(iter(by))[:12]} (one cache or index serves them)"
    groups = "; ".join(f"{sha[:12]}: {', '.join(paths)}" for sha, paths in by.items())
    return f"image tower: DIFFERENT ({groups}) — a cache or index serves only runs of its own tower"


def render(d: dict) -> str:
    """A few lines for a person."""
    k, lines = d["kind"], [f"{d['path']}: {_TITLES[d['kind']]}" + (f" ({d['language']})" if d.get("language") else "")]

    def add(label: str, text) -> None:
        if text not in (None, "", {}):
            lines.append(f"  {label:<12} {text}")

    t = d.get("tower") or {}
    if k == "tokenizer":
        add("vocabulary", f"{d['vocab_size']:,} ids, {d['merges_added']:,} merges added, CLIP's ids {d['clip_ids_kept']} kept")
        add("english", f"{d['english_words']:,} English words protected" if d.get("english_words") else None)
    if k == "run":
        add("text tower", f"init {d['init']}: {d['text_tower']}")
        add("trained", f"{d['steps']} steps" + (f", best held-out mean recall {d['best_mean_recall']:.3f}"
                                                if d.get("best_mean_recall") is not None else ""))
        add("last val", ", ".join(f"{n} {v:.3f}" for n, v in d["last_val"].items()))
        add("zero-shot", ", ".join(f"{n} acc@1 {v:.3f}" for n, v in d["zero_shot"].items()))   # the last epoch's
        add("checkpoint", d.get("checkpoint"))
        c = d["cache"]
        add("cache", c["path"] and (f"{c['path']} " + ("(present" + (", same image tower)" if c["tower_sha256"] ==
                                                                       t.get("tower_sha256") else ", ANOTHER image tower)")
                                                       if c["present"] else "(not here)")))
    if k == "cache":
        add("images", None if d["text_only"] else f"{d['num_images_ok']:,} embedded, {d['num_images_failed']:,} failed, "
            f"{d['num_images_damaged'] or 0:,} damaged but read")
        add("captions", f"{d['num_captions']:,}" + (", English teacher embeddings" if d["teacher"] else ""))
    if k == "index":
        add("pictures", f"{d['count']:,} ({d['num_failures']:,} failed), {d['search']} search; built {d['built']}, "
            f"updated {d['updated']}")
    if k == "weights" or k == "transformers":
        add("clip", d["arch"] or f"not read ({d.get('arch_problem')})")
        add("activation", d["activation"] + (f" ({d['activation_from']})" if d["activation_from"] else ""))
    if k == "checkpoint":
        add("resumes", f"{d['run']} at step {d['step']} (epoch {d['epoch']}), best held-out mean recall "
            f"{d['best'] if d['best'] is None else round(d['best'], 3)}")
        add("same run if", ", ".join(f"{k}={v}" for k, v in d["resume_keys"].items()))
    if k == "benchmark-wds":
        lines[0] += f" ({d['type']})"
        add("split", f"{d['split']}: {d['shards']} shards")
        c, src = d["classes"] or [], d["names_from"]
        add("classes", c and f"{len(c)}: {', '.join(c[:5])}{', …' if len(c) > 5 else ''}" + (
            f"; in other languages langclip's {src['dataset']} names ({', '.join(src['languages'])})" if src else
            "; other languages: --classnames"))
        add("prompts", f"{d['templates']} of its own (English)" if d["templates"] else None)
        add("evaluate", f"langclip eval --model RUN --dataset wds:{d['path']}")
    if k == "shards":
        add("pictures", f"{d['rows']:,} rows in {d['shards']} shards, {d['skipped']:,} skipped" if d["done"] else
            "unfinished: rerun the same `langclip data shards` to finish (it resumes)")
        add("read with", d["done"] and f"--data '{d['data']}'")
    if k == "error":
        lines[0] = f"{d['path']}: not recognised — {d['error']}"
    add("tokens", d.get("tokens") and summary_text(d["tokens"]))
    if k == "export-immich":
        add("embedding", f"{d['embed_dim']} dims (Immich's layout records no image tower; see its README.md)")
    if t.get("arch") or t.get("tower_sha256"):
        parts = [t["arch"], t["tower_sha256"] and f"digest {t['tower_sha256'][:12]}",
                 t.get("pretrained") and f"pretrained {t['pretrained']}",
                 t["weights"] and f"file {t['weights']}" + ("" if t["weights_present"] else " (not here)")]
        add("image tower", ", ".join(x for x in parts if x))
    return "\n".join(lines)


_TITLES = {"tokenizer": "langclip tokenizer", "cache": "langclip image-embedding cache", "index": "langclip search index",
           "run": "langclip run", "export-open_clip": "open_clip export", "export-hf": "transformers export",
           "export-onnx": "ONNX export", "export-immich": "Immich model folder",
           "transformers": "transformers CLIP folder", "weights": "CLIP weights",
           "checkpoint": "langclip training checkpoint", "benchmark-wds": "CLIP_benchmark webdataset copy",
           "shards": "webdataset shards written by `langclip data shards`",
           "error": ""}


def describe_all(paths: list[str]) -> list[dict]:
    """Each path described; one that is not recognised is an item of kind "error" (it does not hide the others)."""
    descs = []
    for p in paths:
        try:
            descs.append(describe(p))
        except (OSError, ValueError) as e:
            msg = str(e)
            descs.append({"path": str(p), "kind": "error", "error": msg.removeprefix(f"{p}: ")})
    return descs


def format_all(descs: list[dict], as_json: bool = False) -> str:
    if as_json:
        shas = {(d.get("tower") or {}).get("tower_sha256") for d in descs} - {None, ""}
        return json.dumps({"items": descs, "same_image_tower": len(shas) <= 1}, indent=2, ensure_ascii=False)
    line = towers(descs)
    return "\n".join([render(d) for d in descs] + ([line] if line else []))


def info(paths: list[str], as_json: bool = False) -> str:
    """The stage function behind `langclip info`: each path described, then whether they share a tower."""
    return format_all(describe_all(paths), as_json)


def add_parser(sub, make) -> None:
    p = make(sub, "info", "what a langclip folder or CLIP weights file is, and whether several share an image tower",
             {"info": "examples:\n  langclip info runs/ru cache/ idx/     # one image tower? (a cache or index serves "
                      "only runs of its own)\n  langclip info ViT-B-32.pt             # the --clip it is read as, "
                      "its tower digest\n  langclip info export-hf/ --json\n  langclip info ~/data/wds_cifar10      # a CLIP_benchmark "
                      "copy: the names `eval` would use"})
    p.add_argument("paths", nargs="+", help="tokenizer, cache, run, export or index folders; CLIP weights files or folders; "
                                            "CLIP_benchmark webdataset copies")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    """Exit code 2 where a path was not recognised (the others are still described)."""
    descs = describe_all(args.paths)
    print(format_all(descs, args.json))
    return 2 if any(d["kind"] == "error" for d in descs) else 0
