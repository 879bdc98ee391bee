"""Stage 5: export a run. `--format open_clip`: a folder that *stock* open_clip loads:

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:export/")
    tokenizer = open_clip.get_tokenizer("local-dir:export/")

The folder holds `open_clip_config.json` (model_cfg with the bilingual vocabulary and argmax pooling,
preprocess_cfg), `open_clip_model.safetensors` (both towers), and the tokenizer as a Hugging Face
fast tokenizer (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`), which open_clip
wraps in its HFTokenizer with the same cleaning as CLIP's (`clean: lower`: ftfy, HTML, whitespace,
lower case). Needs `transformers` at load time (open_clip's HFTokenizer uses it).
`--format hf`: a Hugging Face transformers folder (`export_hf.py`). `--format onnx` / `immich`: ONNX graphs
for onnxruntime and Immich's machine-learning service (`export_onnx.py`). Every export has a model card.
`hub_id` ("user/ru-clip", open_clip and hf): the Hub repository the folder is to be uploaded to — open_clip's
`hf-hub:` loading fetches the tokenizer by the name the config gives, which is then that repository's.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

from .coverage import COUNTS_FILE
from .files import check_out_dir
from .runfolder import load_model
from .tokenizer import EOT, SOT, clip_normalizer


FORMATS = ("open_clip", "hf", "onnx", "immich")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")   # a Hugging Face Hub repository: owner/name


def export(run: str | Path, out: str | Path, format: str = "open_clip", weights: str | Path | None = None,
           device: str = "cpu", hub_id: str | None = None) -> Path:
    """Export a run folder — or an export (open_clip or transformers folder, e.g. a downloaded model) —
    as `open_clip` (a folder stock open_clip loads with `local-dir:`), `hf` (a folder Hugging Face
    transformers loads as CLIPModel + AutoTokenizer + AutoProcessor), `onnx` or `immich`. Each carries a
    model card (README.md)."""
    from .model_card import write_model_card

    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if hub_id is not None and (format not in ("open_clip", "hf") or not HUB_ID.fullmatch(hub_id)):
        raise ValueError(f"--hub-id {hub_id!r}: a Hugging Face Hub repository (owner/name) for --format open_clip or "
                         f"hf (Immich fetches only its own models; an ONNX folder needs no name)")
    out = check_out_dir(out, "export", ("open_clip_config.json", "config.json", "onnx_config.json"))
    model, tok, meta = _source(Path(run), weights)
    model.to(device)   # the weights are read where the user says (a GPU-only host), saved from the CPU
    if format == "hf":
        from .export_hf import check_exportable, export_transformers

        check_exportable(model.model_cfg)   # before anything is written
        out.mkdir(parents=True, exist_ok=True)
        export_transformers(model, tok, meta, out, lambda o, processor: _tokenizer_files(tok, o, model.context_length,
                                                                                          processor))
        # langclip's own record and tokenizer, so that langclip loads the folder as it loads a run (hf_layout)
        doc = {"model_cfg": copy.deepcopy(model.model_cfg), "preprocess_cfg": _preprocess(meta), "langclip": _record(tok, meta)}
        (out / "langclip_config.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
        tok.save(out / "langclip_tokenizer")
    elif format in ("onnx", "immich"):
        from .export_onnx import export_immich, export_onnx

        out.mkdir(parents=True, exist_ok=True)
        files = ((lambda o: _hf_tokenizer_files(tok, o)) if model.is_hf else
                 (lambda o: _tokenizer_files(tok, o, model.context_length)))
        (export_onnx if format == "onnx" else export_immich)(model, tok, meta, out, files, _preprocess(meta))
    else:
        out.mkdir(parents=True, exist_ok=True)
        _export_open_clip(model, tok, meta, out, hub_id)
    counts = Path(run) / COUNTS_FILE   # langclip loads these two: its notes on untrained words travel (coverage.py)
    if format in ("open_clip", "hf") and counts.is_file():
        shutil.copyfile(counts, out / COUNTS_FILE)
    write_model_card(out, format, model, tok, meta, Path(run), hub_id)
    return out


def _source(run: Path, weights) -> tuple:
    """(model, tokenizer, meta) of a run folder, or of an export, which holds both towers and langclip's
    record of its run (image tower, language, init, split)."""
    from .hf_folder import is_transformers_folder
    from .inference import is_export, load

    if not (is_export(run) or is_transformers_folder(run)):
        return load_model(run, weights=weights)
    import open_clip

    m = load(run, device="cpu")
    rec = m.meta.get("langclip") or {}
    if not rec.get("image_tower") or m.model.is_hf:
        what = ("an hf: text tower" if rec.get("image_tower") else
                "an export without langclip's record of its run (langclip_config.json or open_clip_config.json)")
        raise ValueError(f"{run}: {what} is exported from its run folder")
    pp = dict(open_clip.get_model_preprocess_cfg(m.model.clip), **(m.meta.get("preprocess_cfg") or {}))
    return m.model, m.tokenizer, {**rec, "model_cfg": m.model.model_cfg, "preprocess_cfg": pp}


def export_open_clip(run: str | Path, out: str | Path, weights: str | Path | None = None,
                     device: str = "cpu") -> Path:
    return export(run, out, "open_clip", weights, device)


def _export_open_clip(model, tok, meta: dict, out: Path, hub_id: str | None = None) -> Path:
    from safetensors.torch import save_file

    if model.is_hf:
        return _export_hf(model, tok, meta, out, hub_id)
    cfg = copy.deepcopy(model.model_cfg)
    t = cfg["text_cfg"]
    # local-dir: open_clip reads the tokenizer from the folder whatever the name; hf-hub: from the repository named
    t["hf_tokenizer_name"] = hub_id or "langclip"
    t["tokenizer_kwargs"] = {"clean": "lower"}
    doc = {"model_cfg": cfg, "preprocess_cfg": _preprocess(meta), "langclip": _record(tok, meta)}
    (out / "open_clip_config.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    sd = {k: v.detach().contiguous().cpu() for k, v in model.clip.state_dict().items()}
    save_file(sd, str(out / "open_clip_model.safetensors"))
    _tokenizer_files(tok, out, model.context_length)
    tok.save(out / "langclip_tokenizer")
    return out


def _tokenizer_files(tok, out: Path, context_length: int, processor: bool = False) -> None:
    """tokenizer.json (langclip's, with today's normaliser, `vocab.clip_normalizer`, also for a run
    whose tokenizer was saved before it) + the files transformers' AutoTokenizer reads: start/end
    of text at V-2/V-1, loaded as PreTrainedTokenizerFast. Padding is end-of-text: a pad token must be
    a token string, and id 0's is "!", which as a special token would be cut out of every text ("!"
    at a word's end is "!</w>", id 256). Under the causal mask, and with pooling at the first
    end-of-text (transformers) or the first largest id (open_clip's argmax), padding changes nothing."""
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_str(tok.hf.to_str())
    hf.normalizer = clip_normalizer()
    hf.save(str(out / "tokenizer.json"))
    special = {"bos_token": SOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    conf = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context_length,
            "clean_up_tokenization_spaces": False, **special}
    if processor:
        conf["processor_class"] = "CLIPProcessor"
    (out / "tokenizer_config.json").write_text(json.dumps(conf, indent=2), encoding="utf-8")


def _hf_tokenizer_files(tok, out: Path) -> None:
    """An `hf:` encoder's own tokenizer, saved as transformers saves it. ONNX callers and Immich read
    `tokenizer.json` with the `tokenizers` library and pad with `tokenizer_config.json`'s `pad_token`,
    which must then be a plain string."""
    tok.save(out)
    if not (out / "tokenizer.json").is_file():
        raise ValueError(f"the encoder's tokenizer ({type(tok.tok).__name__}) has no fast version, so no "
                         "tokenizer.json for onnxruntime or Immich; use --format open_clip")
    conf_path = out / "tokenizer_config.json"
    conf = json.loads(conf_path.read_text(encoding="utf-8"))
    pad = tok.tok.pad_token
    if pad is None:
        raise ValueError("the encoder's tokenizer has no pad token, which Immich and ONNX callers pad with")
    conf["pad_token"] = str(getattr(pad, "content", pad))
    conf_path.write_text(json.dumps(conf, indent=2, ensure_ascii=False), encoding="utf-8")


def _record(tok, meta: dict) -> dict:
    """What an export keeps of its run: the image tower it was trained on, language, init, split."""
    return {"image_tower": meta["image_tower"], "language": tok.meta.get("language"), "init": meta.get("init"),
            "pool_type": "argmax", "eot_token_id": tok.eot_token_id, "split": meta.get("split")}


def _preprocess(meta: dict) -> dict:
    return {k: meta["preprocess_cfg"][k] for k in ("size", "mode", "mean", "std", "interpolation", "resize_mode",
                                                   "fill_color") if k in meta["preprocess_cfg"]}


def _export_hf(model, tok, meta: dict, out: Path, hub_id: str | None = None) -> Path:
    """An `hf:` text tower: the encoder's config and tokenizer files go into the folder, and the config
    names the folder itself (absolute path) as the HF model, so stock open_clip builds the same
    CustomTextCLIP offline. After a move `langclip.load` still works (it falls back to the folder's own
    config.json); stock open_clip needs `hf_model_name` in open_clip_config.json set to the new path,
    because it resolves that name against the working directory, not the folder."""
    from safetensors.torch import save_file

    cfg = copy.deepcopy(model.model_cfg)
    t = cfg["text_cfg"]
    original = meta.get("init", {}).get("hf_model") if isinstance(meta.get("init"), dict) else None
    t.update(hf_model_name=hub_id or str(out.resolve()),   # the Hub repository it goes to, else this folder
             hf_tokenizer_name=hub_id or original or t.get("hf_tokenizer_name", ""), hf_model_pretrained=False)
    model.clip.text.config.save_pretrained(str(out))
    tok.save(out)
    doc = {"model_cfg": cfg, "preprocess_cfg": _preprocess(meta),
           "langclip": {"image_tower": meta["image_tower"], "init": meta.get("init"), "text_tower": "hf",
                        "hf_model": original, "language": tok.meta.get("language"), "split": meta.get("split")}}
    (out / "open_clip_config.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    sd = {k: v.detach().contiguous().cpu() for k, v in model.clip.state_dict().items()}
    save_file(sd, str(out / "open_clip_model.safetensors"))
    return out
