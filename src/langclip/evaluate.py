"""Stage 4: zero-shot classification and retrieval evaluation, the English reference row (the
confusion-matrix picture: pictures.py). Metrics live in `metrics.py`, class names, templates and datasets in
`datasets.py` (data files: a template names the grammatical form it needs, so no morphology runs at
evaluation time).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .benchwds import class_names as wds_class_names, is_wds, open_wds
from .coverage import describe, trained_forms, unseen_words
from .files import check_out_dir, json_text, progress_bar
from .datasets import english_classnames, read_classnames, read_templates, shipped_classnames, shipped_templates
from .metrics import classification_metrics, display_name, encode_texts, markdown_table, recall_at_k, zero_shot_weights
from .pictures import plot_confusion


@torch.no_grad()
def evaluate(model, dataloader, tokenizer, classnames: list, templates: list[str], device="cpu",
             features: list | None = None, desc: str = "") -> dict:
    """Zero-shot classification: acc@1, acc@5, mean per-class recall, per-class accuracy, confusion.
    `features`: the pictures' embeddings by this image tower (`image_features`), when already computed;
    `desc`: a progress bar of the class prompts, where they are many."""
    w = zero_shot_weights(model, tokenizer, classnames, templates, device, desc=desc)
    batches = features if features is not None else image_features(model, dataloader, device)
    logits = [(f @ w.T).cpu() for f, _ in batches]
    return classification_metrics(torch.cat(logits), torch.cat([y for _, y in batches]),
                                  [display_name(c) for c in classnames])


@torch.no_grad()
def image_features(model, loader, device, desc: str = "", skipped: list | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(embeddings, labels)] a batch, on the device; `desc` names a progress bar. The English reference row
    takes the student's: one frozen image tower (its digest checked by `_reference`), so one pass. A loader
    of `benchsets.Skipping` leaves unreadable pictures out, their (index, why) added to `skipped`."""
    return [(model.encode_image(x.to(device)).float(), y) for x, y in _pictures(loader, desc, skipped)]


def _pictures(loader, desc: str, skipped: list | None = None):
    """The loader's batches of readable pictures, counted on a progress bar (pictures/s, ETA) where `desc`
    names it."""
    bar = progress_bar(total=len(loader.dataset), desc=desc, unit="img") if desc else None
    for batch in loader:
        x, y, bad = batch if len(batch) == 3 else (*batch, [])
        if skipped is not None:
            skipped += bad
        if bar:
            bar.update((len(x) if x is not None else 0) + len(bad))
        if x is not None:
            yield x, y
    if bar:
        bar.close()


def _skipped(ds_name: str, skipped: list, n: int) -> dict:
    """Unreadable pictures: counted for the results and named (the first) on stderr; none readable: an error."""
    if not skipped:
        return {}
    if len(skipped) == n:
        raise ValueError(f"{ds_name}: none of its {n} pictures could be read (first: {skipped[0][1]})")
    print(f"{ds_name}: {len(skipped)} of {n} pictures could not be read and were left out (first, #{skipped[0][0]}: "
          f"{skipped[0][1]})", file=sys.stderr, flush=True)
    return {"skipped": len(skipped)}


def _reference(m, weights: str | None, device):
    """(model, tokenizer) of the English CLIP a langclip model was built from."""
    from .inference import image_tower_ref

    meta = m.meta or {}
    ref = image_tower_ref(meta)  # run folder / export
    if not ref:
        raise ValueError("--reference needs the CLIP the model was built from, and this folder records none")
    from .build import load_reference_clip
    from .runfolder import resolve_image_weights

    run = Path(m.meta.get("_path", "."))
    # a run folder's load already checked this file's SHA-256; an export's load did not read it
    path = resolve_image_weights(run, ref, weights, check_sha="image_tower" not in meta)
    model, tok = load_reference_clip(ref["arch"], path)
    if ref.get("tower_sha256") and model.tower_sha256 != ref["tower_sha256"]:
        from .weights import WeightsError

        raise WeightsError(f"{path}: not the CLIP this model was built from (image-tower digest "
                           f"{model.tower_sha256[:12]}… vs {ref['tower_sha256'][:12]}…); pass the right --weights")
    return model.to(device), tok


SUMMARY = ("acc1", "acc5", "mean_per_class_recall", "n")
RECALL = ("t2i_r@1", "t2i_r@5", "t2i_r@10", "i2t_r@1", "i2t_r@5", "i2t_r@10")


def _picture_names(datasets: list[str]) -> dict[str, str]:
    """confusion_<this>.png per dataset: its name; an image folder's own name (its whole path where two
    folders of this call share a name)."""
    short = {d: f"{d.split(':')[0]}_" + (open_wds(d).name if is_wds(d) else Path(d.split(":", 1)[1]).name)
             if ":" in d else d for d in datasets}
    return {d: n if list(short.values()).count(n) == 1 else d.rstrip("/").replace(":", "_").replace("/", "_")
            for d, n in short.items()}


def evaluate_cli(model: str, dataset: str | list[str], lang: str | list[str] | None, data_root: str,
                 download: bool = False, classnames: str | None = None, batch_size: int = 256,
                 device: str | None = None, out: str | None = None, workers: int = 2, reference: bool = False,
                 weights: str | None = None, templates: str | None = None) -> dict:
    """Zero-shot classification (cifar10/100, caltech101, imagenet1k, babel_imagenet, food101,
    flowers102, imagefolder:PATH) and retrieval (xm3600, xtd10, xtd200, flickr30k_200), and either from CLIP_benchmark's
    webdataset copies (wds:DIR, benchwds.py), in `lang`; with `reference`, the
    original English CLIP in the same harness (English names, templates and captions) as a second row;
    `lang` None: the language the model records. `out` gets results.json/.md, the benchmark table
    (table.md/.json, ruCLIP's layout), confusion matrices and the class names and prompts used, as
    CLIP_benchmark's custom files. A language langclip ships no names or templates for brings its own:
    `classnames` (a file for one dataset, or a folder of <dataset>.json files in the shipped layout)
    and `templates` (datasets.read_templates). Several languages (an XLM-R student reads more than the one
    it was trained for): -> {lang: results}, each language's files in out/<lang>/ and out/table.md with a
    column a language; the reference row, the same for all, is measured once."""
    from .benchsets import RETRIEVAL, ZERO_SHOT
    from .inference import load

    datasets = [dataset] if isinstance(dataset, str) else list(dataset)
    langs = list(dict.fromkeys([lang] if isinstance(lang, str) or not lang else lang))
    if not langs[0]:   # the language the model was trained for
        from .runfolder import model_language, read_run_meta

        langs = [model_language(model)]
        if not langs[0]:
            from .hf_folder import is_transformers_folder

            if not (Path(model) / "open_clip_config.json").is_file() and not is_transformers_folder(model):
                read_run_meta(model)    # not a model folder at all: that is the error to report
            raise ValueError(f"{model}: the model records no language; pass --lang (e.g. --lang ru)")
    unknown = [d for d in datasets if not (d in ZERO_SHOT or d in RETRIEVAL or d.startswith(("imagefolder:", "wds:"))
                                           or d in ("cifar10", "cifar100", "caltech101"))]
    if unknown:
        raise ValueError(f"unknown dataset {unknown[0]!r}: cifar10 cifar100 caltech101 {' '.join(ZERO_SHOT)} "
                         f"{' '.join(RETRIEVAL)}, imagefolder:PATH or wds:DIR (CLIP_benchmark's webdataset layout)")
    inputs = {}
    for lg in langs:   # cheap input checks first, every language's
        given, given_en = _given_names(classnames, datasets, lg)
        tpl = read_templates(templates, lg) if templates else None
        _check_language(datasets, lg, given, tpl)
        inputs[lg] = (given, given_en, tpl)
    m = load(model, device=device, weights=weights)
    ref = _reference(m, weights, m.device) if reference else None
    o = check_out_dir(out, "evaluation", ("results.json", "retrieval.json")) if out else None
    every, seen = {}, {}
    for i, lg in enumerate(langs):
        ol = (o / lg if len(langs) > 1 else o) if o else None
        if ol:
            ol.mkdir(parents=True, exist_ok=True)
        job = _Job(m, ref if i == 0 else None, lg, Path(data_root).expanduser(), *inputs[lg], batch_size, workers,
                   download, seen=seen)
        rows, every[lg] = [], {}
        try:
            _run_all(job, datasets, every[lg], rows, ol)
        finally:            # a dataset that fails keeps what the ones before it measured
            if ol and every[lg]:
                _save(ol, every[lg], rows, lg, (job.cb_classnames, job.cb_templates), model)
    if len(langs) == 1:
        return every[langs[0]]
    if o:
        from .benchsets import languages_table

        md, table = languages_table(every)
        (o / "table.md").write_text(md, encoding="utf-8")
        (o / "table.json").write_text(json.dumps(table, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"saved {o}/table.md (a column a language) and {', '.join(f'{o}/{lg}/' for lg in langs)}")
    return every


def _given_names(spec: str | None, datasets: list[str], lang: str) -> tuple[dict, dict]:
    """--classnames -> ({dataset: names}, {dataset: English names for the reference row}): a file or the
    names themselves serve every dataset; a folder serves each dataset from its <dataset>.json (shipped
    layout: {lang: list}, or a plain list) and leaves the others to the shipped lists."""
    if not spec:
        return {}, {}
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        names, en = read_classnames(spec, lang), english_classnames(spec)
        return {d: names for d in datasets}, ({d: en for d in datasets} if en else {})
    files = {d: folder / f"{open_wds(d).name if is_wds(d) else d}.json" for d in datasets
             if not d.startswith("imagefolder:")}
    files = {d: f for d, f in files.items() if f.is_file()}
    if not files:
        raise FileNotFoundError(f"{folder}: no class-name file for {', '.join(datasets)} (<dataset>.json, e.g. "
                                f"{folder / (datasets[0].split(':')[0] + '.json')})")
    en = {d: english_classnames(str(f)) for d, f in files.items()}
    return {d: read_classnames(str(f), lang) for d, f in files.items()}, {d: v for d, v in en.items() if v}


def _check_language(datasets: list[str], lang: str, given: dict, templates: list | None = None) -> None:
    """Before any model loads: every dataset has class names and templates in `lang` (Babel-ImageNet
    and the retrieval sets bring their own; their languages are checked when they are read; a
    CLIP_benchmark webdataset copy brings English ones)."""
    from .datasets import CB_LANGS, imagenet_names

    def own(d: str) -> bool:   # the dataset brings its prompts in `lang`
        if d in ("babel_imagenet", "imagenet1k"):
            return d == "babel_imagenet" or (d not in given and lang in CB_LANGS)
        if not is_wds(d) or _is_retrieval(d):
            return False
        if lang == "en":
            return bool(open_wds(d).templates)
        try:
            return d not in given and wds_class_names(open_wds(d), lang)[1] is not None
        except ValueError:    # named by the class-name check below
            return False

    problems = []
    if templates is None and any(not _is_retrieval(d) and not own(d) for d in datasets):
        try:
            shipped_templates(lang)
        except ValueError as e:
            problems.append(str(e))
    for d in datasets:
        try:
            if d not in given and d in ("cifar10", "cifar100", "caltech101", "food101", "flowers102"):
                shipped_classnames(d, lang)
            elif d not in given and d == "imagenet1k":
                imagenet_names(lang)
            elif d not in given and is_wds(d) and not _is_retrieval(d):
                wds_class_names(open_wds(d), lang)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError("; ".join(problems))


def _is_retrieval(d: str) -> bool:
    from .benchsets import RETRIEVAL

    return d in RETRIEVAL or (is_wds(d) and open_wds(d).kind == "retrieval")


def _run_all(job, datasets: list[str], results: dict, rows: list, o: Path | None) -> None:
    lang, names = job.lang, _picture_names(datasets)
    for ds_name in datasets:
        retrieval = _is_retrieval(ds_name)
        res, r = (_retrieval if retrieval else _zero_shot)(job, ds_name)
        keys = RECALL if retrieval else SUMMARY
        results[ds_name] = res
        rows.append({"model": f"langclip ({lang})", "dataset": ds_name, **{k: res[k] for k in keys}})
        print(json.dumps({"dataset": ds_name, "lang": lang, **{k: res[k] for k in keys}}, ensure_ascii=False))
        if r is not None:
            results[f"{ds_name}/reference_en"] = r
            rows.append({"model": "CLIP (en, reference)", "dataset": ds_name, **{k: r[k] for k in keys}})
            print(json.dumps({"dataset": ds_name, "lang": "en", "model": "reference", **{k: r[k] for k in keys}}))
        if o and "confusion" in res and len(res["classnames"]) <= 200:
            plot_confusion(res["confusion"], res["classnames"], o / f"confusion_{names[ds_name]}.png", f"{ds_name} ({lang})")


@dataclass
class _Job:
    """What every benchmark of one `langclip eval` call shares: the model, the English reference
    ((model, tokenizer) or None), the language, the data root, the user's class names, the loader
    settings; and CLIP_benchmark's custom class-name and template files, filled as datasets run."""
    m: object
    ref: tuple | None
    lang: str
    root: Path
    given: dict                      # {dataset: the user's class names} (--classnames)
    given_en: dict                   # {dataset: the reference row's names} ({"en": [...]} in a JSON file)
    templates: list | None           # the user's prompt templates (--templates), else each dataset's or shipped
    batch_size: int
    workers: int
    download: bool
    cb_classnames: dict = field(default_factory=dict)
    cb_templates: dict = field(default_factory=dict)
    seen: dict = field(default_factory=dict)   # pictures embedded, by dataset: shared by a call's languages


def _features(job: _Job, key, loader, name: str, desc: str, n: int) -> tuple[list, dict]:
    """(the pictures' embeddings by batch, what the results say of unreadable ones): once a call for all its
    languages where `key` names the pictures (None: they differ a language, as Babel-ImageNet's classes do)."""
    if key is not None and key in job.seen:
        return job.seen[key]
    skipped: list = []
    feats = image_features(job.m.model, loader, job.m.device, desc, skipped)
    out = (feats, _skipped(name, skipped, n))
    if key is not None:
        job.seen[key] = out
    return out


def _zero_shot(job: _Job, ds_name: str):
    from .benchsets import Skipping, cb_name, clip_benchmark_inputs, collate_skipping, zero_shot_inputs

    m, ref, lang = job.m, job.ref, job.lang
    z = zero_shot_inputs(ds_name, job.root, m.preprocess, lang, job.given.get(ds_name), job.templates, job.download,
                         job.given_en.get(ds_name))
    loader = torch.utils.data.DataLoader(Skipping(z.dataset), batch_size=job.batch_size, num_workers=job.workers,
                                         collate_fn=collate_skipping)
    feats, note = _features(job, None if ds_name == "babel_imagenet" else ds_name, loader, ds_name,
                            f"{ds_name} ({lang})", len(z.dataset))
    res = {**evaluate(m.model, loader, m.tokenizer, z.names, z.templates, m.device, feats,
                      desc=f"{ds_name} prompts ({lang})"), **note}
    bad = unseen_words(m.meta.get("_path"), m.tokenizer, [display_name(c) for c in z.names])   # coverage.py
    if bad:   # class names with tokens the run never trained on: their recall is a guess's
        res["untrained_words"] = bad
        forms = trained_forms(m.meta["_path"], m.tokenizer, list(bad)[:8], lang)
        print(f"{ds_name}: {describe(m.meta['_path'], bad, forms=forms)}", file=sys.stderr, flush=True)
    key = cb_name(ds_name)
    job.cb_classnames[key], job.cb_templates[key] = clip_benchmark_inputs(z.names, z.templates)
    en = z.english() if ref is not None else None   # None: no English row (Babel-ImageNet)
    return res, (evaluate(ref[0], loader, ref[1], en[0], en[1], m.device, feats) if en is not None else None)


def _retrieval(job: _Job, ds_name: str):
    from .benchsets import Labeled, Skipping, collate_skipping, retrieval_pairs
    from .benchwds import WdsPictures, retrieval

    m, ref, root = job.m, job.ref, job.root
    if is_wds(ds_name):   # every caption of every picture, as CLIP_benchmark scores them
        refs, caps = retrieval(ds_name)
        pictures = WdsPictures(refs, list(range(len(refs))), m.preprocess)
        texts = [c for cs in caps for c in cs]
        inv = torch.tensor([i for i, cs in enumerate(caps) for _ in cs], dtype=torch.long)
    else:
        pairs = retrieval_pairs(ds_name, root, job.lang)
        paths = [p for p, _ in pairs]
        pictures, texts, inv = Labeled(paths, None, m.preprocess), [c for _, c in pairs], torch.arange(len(paths))
    loader = torch.utils.data.DataLoader(Skipping(pictures), batch_size=job.batch_size, num_workers=job.workers,
                                         collate_fn=collate_skipping)
    key = (ds_name, None if is_wds(ds_name) else tuple(paths))   # the pictures with captions in the language
    batches, note = _features(job, key, loader, ds_name, ds_name, len(pictures))
    image, kept = torch.cat([f.cpu() for f, _ in batches]), torch.cat([y for _, y in batches])   # y: each one's position
    if note:   # the texts of an unreadable picture go with it; the others point at the pictures kept
        row = torch.full((len(pictures),), -1, dtype=torch.long)
        row[kept] = torch.arange(len(kept))
        texts, inv = [t for t, r in zip(texts, row[inv].tolist()) if r >= 0], row[inv][row[inv] >= 0]
    text = encode_texts(m.model, m.tokenizer, texts, m.device)
    res = {**recall_at_k(text, image, inv), "texts": len(texts), "images": len(kept), **note}
    r = None
    if ref is not None and is_wds(ds_name):   # the same captions, read by the English CLIP
        t = encode_texts(ref[0], ref[1], texts, m.device)
        r = {**recall_at_k(t, image, inv), "texts": len(texts), "images": len(kept)}
    elif ref is not None:   # the same frozen image tower: the same image embeddings, English captions
        en = dict(retrieval_pairs(ds_name, root, "en"))
        keep = [i for i, p in enumerate(paths[j] for j in kept.tolist()) if p in en]
        if keep:
            t = encode_texts(ref[0], ref[1], [en[paths[int(kept[i])]] for i in keep], m.device)
            r = {**recall_at_k(t, image[keep], torch.arange(len(keep))), "texts": len(keep), "images": len(keep)}
    return res, r


def _save(o: Path, results: dict, rows: list, lang: str, cb, model: str) -> None:
    from .benchsets import benchmark_table, clip_benchmark_results

    (o / "results.json").write_text(json_text(results), encoding="utf-8")
    cols = ["model", "dataset", *SUMMARY] if not any(k in RECALL for r in rows for k in r) else \
        ["model", "dataset", *SUMMARY, *RECALL]
    (o / "results.md").write_text(markdown_table(rows, cols), encoding="utf-8")
    table_md, table = benchmark_table(results, lang)
    (o / "table.md").write_text(table_md, encoding="utf-8")
    (o / "table.json").write_text(json.dumps(table, ensure_ascii=False, indent=1), encoding="utf-8")
    if cb[0]:
        (o / "clip_benchmark_classnames.json").write_text(json_text(cb[0]), encoding="utf-8")
        (o / "clip_benchmark_templates.json").write_text(json_text(cb[1]), encoding="utf-8")
    for f, dump in clip_benchmark_results(results, lang, model).items():   # for `clip_benchmark build`
        (o / "clip_benchmark").mkdir(exist_ok=True)
        (o / "clip_benchmark" / f).write_text(json.dumps(dump, ensure_ascii=False), encoding="utf-8")
    print(f"saved {o}/results.json, results.md, table.md, confusion_*.png, clip_benchmark/")
