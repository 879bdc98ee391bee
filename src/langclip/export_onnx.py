"""ONNX exports: `--format onnx` (two graphs and the tokenizer, usable with onnxruntime, numpy and
`tokenizers` alone) and `--format immich` (the folder layout Immich's machine-learning service loads
as a custom CLIP model).

Graphs: `textual.onnx` takes `text` int32 (batch, sequence ≤ context_length; a short query need not be
padded to the context) — int32 because Immich feeds int32 and ONNX Runtime's ArgMax (the end-of-text
pooling) has no int64 kernel on every provider;
`visual.onnx` takes `image` float32 (batch, 3, S, S), already resized, cropped and normalised. Each
returns `embedding` (L2-normalised; what Immich reads, output 0) and `embedding_raw` (before
normalisation). The batch axis is dynamic, and so is the text's sequence axis for CLIP-style text
towers (exported through langclip's forward, which computes the last block at end-of-text only). The
exporter is pinned: PyTorch's TorchScript-based `torch.onnx.export(dynamo=False)` at opset 17 with
the MultiheadAttention fast path off (the path Immich's own exporter takes), and every export is
checked with onnxruntime against PyTorch at two batch sizes (and, for the text graph, on cut texts)
before it is kept.

Immich: followed immich-app/immich `machine-learning/` as of 2025-2026 (v1.13x–v2.x):
`immich_ml/models/clip/{textual,visual}.py`, `models/transforms.py`, `models/base.py` and its
exporter `export/immich_model_exporter/exporters/onnx/models/openclip.py`. Layout:

    <name>/config.json                 open_clip model config (text_cfg.context_length is read)
    <name>/textual/model.onnx          input "text" int32 (1, L); output 0 read, [0][0]
    <name>/textual/tokenizer.json      loaded with tokenizers.Tokenizer.from_file, padded to L with
    <name>/textual/tokenizer_config.json   its "pad_token", truncated to L
    <name>/visual/model.onnx           input "image" float32 (1, 3, S, S)
    <name>/visual/preprocess_cfg.json  size, interpolation, mean, std, resize_mode
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .model import dynamic_length, fast_encode_text

log = logging.getLogger(__name__)
OPSET = 17
TOLERANCE = 1e-4


class _TextGraph(nn.Module):
    """tokens -> embeddings, with one of two input signatures: `text` (ids padded with the tokenizer's pad
    id), or Immich's M-CLIP pair `input_ids` + `attention_mask`.

    A plain open_clip text transformer (CLIP's, langclip's) is exported through langclip's forward: any
    sequence length up to the context (causal attention: positions after the batch's longest end-of-text
    change nothing, so a caller may cut them), the last block at end-of-text only; with a mask, masked
    positions become 0 (langclip's padding). An `hf:` encoder runs as open_clip's HFTextEncoder does —
    the encoder with the attention mask (from `text`: ids that are not the pad id), its pooler, its
    projection — and takes any length too (padding is masked out of attention and pooling). Other towers:
    open_clip's forward at the full context."""

    def __init__(self, model, mclip: bool = False):
        super().__init__()
        self.clip, self.hf = model.clip, model.is_hf
        self.dynamic = self.hf or dynamic_length(self.clip)
        self.pad_id = pad_id(model)
        self.input_names = ["input_ids", "attention_mask"] if mclip else ["text"]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None):
        ids = ids.long()
        if self.hf:
            mask = (ids != self.pad_id).long() if mask is None else mask.long()
            enc = self.clip.text
            raw = enc.proj(enc.pooler(enc.transformer(input_ids=ids, attention_mask=mask), mask))
        else:
            ids = ids if mask is None else ids * mask.long()
            raw = fast_encode_text(self.clip, ids) if self.dynamic else self.clip.encode_text(ids)
        return torch.nn.functional.normalize(raw, dim=-1), raw


class _ImageGraph(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, image: torch.Tensor):
        raw = self.clip.encode_image(image)
        return torch.nn.functional.normalize(raw, dim=-1), raw


def pad_id(model) -> int:
    """The id a text is padded with: an `hf:` encoder's pad token, 0 for CLIP-style towers."""
    return int(model.clip.text.config.pad_token_id) if model.is_hf else 0


def _image_size(model) -> int:
    s = model.visual.image_size
    return s if isinstance(s, int) else int(s[0])


def export_graphs(model, text_path: Path, image_path: Path, mclip: bool = False) -> None:
    """Write the two graphs (float32, CPU), then check them against PyTorch. mclip: the text graph takes
    `input_ids` + `attention_mask` (Immich's M-CLIP models) instead of `text`."""
    model = model.float().cpu().eval()
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    S = _image_size(model)
    text_graph = _TextGraph(model, mclip)
    ids = _example_tokens(model, text_graph.pad_id)
    text_args = (ids, _mask(model, ids, text_graph.pad_id)) if mclip else (ids,)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            for graph, args, names, path in ((text_graph, text_args, text_graph.input_names, text_path),
                                             (_ImageGraph(model.clip), (torch.randn(2, 3, S, S),), ["image"], image_path)):
                axes = {0: "batch", 1: "sequence"} if getattr(graph, "dynamic", False) else {0: "batch"}
                _export_one(graph.eval(), args, path, names, axes)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    try:
        check_graphs(model, text_path, image_path)
    except Exception:
        for path in (text_path, image_path):
            path.unlink(missing_ok=True)
            data_file(path).unlink(missing_ok=True)
        raise


def data_file(path: Path) -> Path:
    """Where a graph over protobuf's 2 GiB keeps its weights: one file beside it (`model.onnx_data`)."""
    return path.with_name(path.name + "_data")


def _export_one(graph, args, path: Path, names: list[str], axes: dict) -> None:
    """torch.onnx.export into a folder of its own, then the graph moved to `path`. A graph over 2 GiB
    (an XLM-R-large text tower) comes out of the exporter with one external file per weight; its weights
    are then gathered into one file, `data_file(path)`, which onnxruntime reads from beside the graph."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as tmp:
        f = Path(tmp) / path.name
        torch.onnx.export(graph, args, str(f), input_names=names, output_names=["embedding", "embedding_raw"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={**{n: axes for n in names}, "embedding": {0: "batch"},
                                        "embedding_raw": {0: "batch"}})
        if len(list(Path(tmp).iterdir())) == 1:
            shutil.move(str(f), str(path))
            return
        import onnx

        onnx.save_model(onnx.load(str(f)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_file(path).name, size_threshold=1024)
        shutil.copymode(path, data_file(path))        # onnx writes it owner-only; like the graph instead


def _example_tokens(model, pad_id: int) -> torch.Tensor:
    """Two rows to trace with, of different lengths and both padded (a tracer must not see a mask of
    all ones: encoders skip masking then)."""
    L, V = model.context_length, model.vocab_size
    if not model.is_hf:
        text = torch.zeros(2, L, dtype=torch.int32)
        text[:, 0], text[:, 1] = V - 2, V - 1
        return text
    text = torch.full((2, L), pad_id, dtype=torch.int32)
    text[0, :3] = torch.tensor([(pad_id + 1 + i) % V for i in range(3)])
    text[1, :2] = torch.tensor([(pad_id + 1 + i) % V for i in range(2)])
    return text


def _mask(model, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The attention mask a tokenizer returns with these ids: 1 up to the end of the text, 0 on padding.
    CLIP-style rows end at the first end-of-text (the largest id); an encoder's at its last non-pad id."""
    if model.is_hf:
        return (ids != pad_id).to(torch.int32)
    return (torch.arange(ids.shape[1]) <= ids.argmax(-1, keepdim=True)).to(torch.int32)


def check_graphs(model, text_path: Path, image_path: Path) -> dict:
    """Run both graphs with onnxruntime (CPU) at batch 1 and 3 and compare with PyTorch; raise when an
    embedding differs by more than TOLERANCE. -> the largest differences seen."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(0)
    L, S, V = model.context_length, _image_size(model), model.vocab_size
    pad = pad_id(model)
    worst = {}
    for name, path, make in (
            ("text", text_path, lambda b: _random_texts(b, L, V, g, pad if model.is_hf else None)),
            ("image", image_path, lambda b: torch.randn(b, 3, S, S, generator=g))):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [i.name for i in sess.get_inputs()]
        cases = [(x, x) for x in (make(1), make(3))]    # (what onnxruntime gets, what PyTorch gets)
        if name == "text" and isinstance(sess.get_inputs()[0].shape[1], str):   # a dynamic sequence axis:
            x = make(6)[[0, 2, 5]]                       # short texts, cut after the longest one ends
            cases.append((x[:, : int(_mask(model, x, pad).sum(-1).max())], x))
        for x, full in cases:
            b = len(x)
            with torch.no_grad():
                raw = (model.clip.encode_text(full.long()) if name == "text" else model.clip.encode_image(full)).float()
            feed = ({"input_ids": x.numpy(), "attention_mask": _mask(model, x, pad).numpy()}
                    if inputs == ["input_ids", "attention_mask"] else {inputs[0]: x.numpy()})
            got = sess.run(None, feed)
            err = max(float((torch.from_numpy(got[1]) - raw).abs().max()),
                      float((torch.from_numpy(got[0]) - torch.nn.functional.normalize(raw, dim=-1)).abs().max()))
            worst[name] = max(worst.get(name, 0.0), err)
            if err > TOLERANCE:
                raise RuntimeError(f"{path.name}: onnxruntime differs from PyTorch by {err:.2e} at batch {b}, "
                                   f"shape {tuple(x.shape)} (tolerance {TOLERANCE}); the export is not kept")
    return worst


def _random_texts(b: int, L: int, V: int, g, pad: int | None = None) -> torch.Tensor:
    """Token rows as the tokenizer makes them, lengths from the shortest to the full context. CLIP-style
    (pad None): start, ids, end-of-text (the largest id), zeros. An encoder's: non-pad ids, then pad."""
    if pad is not None:
        x = torch.full((b, L), pad, dtype=torch.int32)
        for i in range(b):
            n = [2, L, int(torch.randint(2, L, (1,), generator=g))][i % 3]
            row = torch.randint(0, V - 1, (n,), generator=g, dtype=torch.int32)
            x[i, :n] = row + (row >= pad).to(torch.int32)          # every id but the pad id
        return x
    x = torch.zeros(b, L, dtype=torch.int32)
    for i in range(b):
        n = [0, L - 2, int(torch.randint(1, L - 2, (1,), generator=g))][i % 3]
        x[i, 0] = V - 2
        x[i, 1: 1 + n] = torch.randint(1, V - 2, (n,), generator=g, dtype=torch.int32)
        x[i, 1 + n] = V - 1
    return x


def export_onnx(model, tok, meta: dict, out: Path, tokenizer_files, pp: dict) -> Path:
    """`--format onnx`: textual.onnx, visual.onnx, the tokenizer files, preprocess_cfg.json and
    onnx_config.json (what a caller needs to feed the graphs)."""
    export_graphs(model, out / "textual.onnx", out / "visual.onnx")
    dyn = model.is_hf or dynamic_length(model.clip)
    tokenizer_files(out)
    (out / "preprocess_cfg.json").write_text(json.dumps(pp, indent=2), encoding="utf-8")
    why = ("padding is masked out of attention and pooling" if model.is_hf else
           "positions after it change nothing under causal attention")
    doc = {"format": "langclip-onnx/1", "opset": OPSET, "exporter": f"torch.onnx (TorchScript) {torch.__version__}",
           "context_length": model.context_length, "vocab_size": model.vocab_size, "embed_dim": _embed_dim(model),
           "text_tower": "hf" if model.is_hf else "clip",
           "textual": {"file": "textual.onnx", "input": "text", "dtype": "int32",
                       "shape": ["batch", "sequence" if dyn else model.context_length],
                       "max_sequence": model.context_length,
                       "sequence": f"any length up to max_sequence: pad to the batch's longest text ({why}) "
                                   "or to max_sequence" if dyn else "exactly max_sequence",
                       "pad_token_id": pad_id(model) if model.is_hf else tok.eot_token_id,
                       "outputs": {"embedding": "L2-normalised", "embedding_raw": "before normalisation"}},
           "visual": {"file": "visual.onnx", "input": "image", "dtype": "float32",
                      "shape": ["batch", 3, _image_size(model), _image_size(model)], "preprocess": pp,
                      "outputs": {"embedding": "L2-normalised", "embedding_raw": "before normalisation"}},
           "cleaning": ("tokenizer.json is the encoder's own tokenizer (its normalisation, its special tokens); "
                        "collapse and strip whitespace before calling it" if model.is_hf else
                        "tokenizer.json normalises (NFC, whitespace runs to one space, lower case with Greek's "
                        "final sigma); collapse "
                        "and strip whitespace before calling it"),
           "langclip": {"image_tower": meta.get("image_tower"), "language": tok.meta.get("language"),
                        "split": meta.get("split")}}
    for part in ("textual", "visual"):
        if data_file(out / f"{part}.onnx").is_file():   # a graph over 2 GiB: its weights beside it
            doc[part]["weights_file"] = data_file(out / f"{part}.onnx").name
    (out / "onnx_config.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


# Immich's M-CLIP models (immich_ml/models/constants.py `_MCLIP_MODELS`): their text graph takes
# `input_ids` + `attention_mask`; the name also says which open_clip image tower they pair with
# (its exporter's `_MCLIP_TO_OPENCLIP`).
MCLIP_NAMES = {"XLM-Roberta-Large-Vit-B-32": "ViT-B-32", "XLM-Roberta-Large-Vit-L-14": "ViT-L-14",
               "LABSE-Vit-L-14": "ViT-L-14", "XLM-Roberta-Large-Vit-B-16Plus": "ViT-B-16-plus-240"}


def immich_signature(out: Path, arch: str) -> tuple[str | None, str | None]:
    """-> (the Immich M-CLIP model name the folder, or the folder above it (Immich's revision layout),
    carries — its text graph must then take `input_ids` + `attention_mask` — or None; a warning when
    that name pairs with another image tower than the run's `arch`)."""
    name = next((n for n in (out.name, out.parent.name) if n in MCLIP_NAMES), None)
    if name is None:
        return None, None
    want, tower = MCLIP_NAMES[name], Path(arch).stem if arch.endswith(".json") else arch
    if tower.split("-quickgelu")[0] != want:
        return name, (f"{name} is an Immich M-CLIP model whose image tower is {want}, but this run's is "
                      f"{tower}: Immich would compare its {want} image embeddings with this text tower")
    return name, None


def export_immich(model, tok, meta: dict, out: Path, tokenizer_files, pp: dict) -> Path:
    """`--format immich`: the folder Immich's machine-learning service loads as a CLIP model. Named as one
    of Immich's M-CLIP models (MCLIP_NAMES), the text graph takes `input_ids` + `attention_mask`, as
    Immich feeds those models; under any other name it takes `text`."""
    name, warning = immich_signature(out, str(meta.get("image_tower", {}).get("arch", "")))
    if warning:
        log.warning(warning)
    (out / "textual").mkdir(parents=True, exist_ok=True)
    (out / "visual").mkdir(parents=True, exist_ok=True)
    export_graphs(model, out / "textual" / "model.onnx", out / "visual" / "model.onnx", mclip=name is not None)
    tokenizer_files(out / "textual")
    # the run's own record: an hf: tower's encoder under its name, not the folder it was loaded from here
    cfg = {k: v for k, v in (meta.get("model_cfg") or model.model_cfg).items() if k != "preprocess_cfg"}
    (out / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (out / "visual" / "preprocess_cfg.json").write_text(json.dumps(pp, indent=2), encoding="utf-8")
    return out


def _embed_dim(model) -> int:
    return int(model.model_cfg.get("embed_dim", 0))
