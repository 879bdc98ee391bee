"""`langclip export --format onnx / immich`: the graphs run in onnxruntime and give langclip's
embeddings; the tokenizer needs no torch; a folder in Immich's layout is read the way Immich's
machine-learning service reads it (its loading code re-written here from its source, not imported)."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import onnx
import onnxruntime as ort

from langclip.cli import main

# Russian, English, mixed, empty-ish, and one far longer than the context (24 tokens)
TEXTS = ["два красных круга", "синяя звезда слева", "a photo of a cat", "кот and a dog, 3 stars!", "ёлка", " ",
         " ".join(["очень длинный запрос про красные и синие звёзды"] * 8)]
RAW_QUERIES = ["  Две КРАСНЫЕ   звезды ", "A RED Star\tleft", "Ёлка И кот", "КРУГ"]   # as typed into a search box
SIZES = [(64, 64), (320, 240), (240, 320), (97, 131), (500, 375)]


def _pictures():
    rng = np.random.default_rng(0)
    out = []
    for w, h in SIZES:
        y, x = np.mgrid[0:h, 0:w] / max(w, h)
        a = np.stack([np.sin(x * rng.uniform(3, 9)), np.cos(y * rng.uniform(3, 9)), np.sin(x + y)], -1) * 100 + 128
        out.append(Image.fromarray(a.clip(0, 255).astype(np.uint8)))
    return out


@pytest.fixture(scope="session")
def exports(tmp_path_factory, trained_run):
    d = tmp_path_factory.mktemp("onnx")
    for fmt in ("onnx", "immich"):
        assert main(["export", "--model", str(trained_run), "--format", fmt, "--out", str(d / fmt)]) == 0
    import langclip

    return d, langclip.load(trained_run, device="cpu")


def test_graphs_are_pinned_typed_and_batch_dynamic(exports):
    d, m = exports
    conf = json.loads((d / "onnx" / "onnx_config.json").read_text())
    for name, inp, dtype in (("textual", "text", onnx.TensorProto.INT32), ("visual", "image", onnx.TensorProto.FLOAT)):
        g = onnx.load(str(d / "onnx" / f"{name}.onnx"))
        onnx.checker.check_model(g)
        assert [o.version for o in g.opset_import if o.domain in ("", "ai.onnx")] == [17]
        (i,) = g.graph.input
        assert i.name == inp and i.type.tensor_type.elem_type == dtype
        dims = i.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        if name == "textual":   # any length up to the context: a short query need not be padded
            assert dims[1].dim_param == "sequence" and conf["textual"]["shape"] == ["batch", "sequence"]
            assert m.model.context_length == conf["context_length"] == conf["textual"]["max_sequence"] == 24
        assert [o.name for o in g.graph.output] == ["embedding", "embedding_raw"]


def test_onnxruntime_equals_langclip(exports):
    d, m = exports
    text = ort.InferenceSession(str(d / "onnx" / "textual.onnx"), providers=["CPUExecutionProvider"])
    ids = m.tokenizer(TEXTS)
    norm, raw = text.run(None, {"text": ids.numpy().astype(np.int32)})   # one batch of 7, padded with 0
    want = m.encode_text(TEXTS)
    assert np.abs(norm - want.numpy()).max() <= 1e-4
    assert np.allclose(np.linalg.norm(norm, axis=1), 1, atol=1e-5) and not np.allclose(np.linalg.norm(raw, axis=1), 1)
    with torch.no_grad():
        assert np.abs(raw - m.model.encode_text(ids, normalize=False).numpy()).max() <= 1e-4
    short = ids[:6, : int(ids[:6].argmax(-1).max()) + 1]     # cut after the longest end-of-text
    assert short.shape[1] < ids.shape[1]
    assert np.abs(text.run(None, {"text": short.numpy().astype(np.int32)})[0] - want[:6].numpy()).max() <= 1e-4
    visual = ort.InferenceSession(str(d / "onnx" / "visual.onnx"), providers=["CPUExecutionProvider"])
    pics = _pictures()
    x = torch.stack([m.preprocess(p) for p in pics]).numpy()
    assert np.abs(visual.run(["embedding"], {"image": x})[0] - m.encode_image(pics).numpy()).max() <= 1e-4


def test_the_model_cards_snippet_gives_langclips_ids_and_embeddings_without_torch(exports, tmp_path):
    """The card's snippet (tokenizers + onnxruntime + numpy + PIL) in a process where importing torch
    fails: its ids equal langclip's on the texts, its embeddings equal langclip's."""
    import re

    d, m = exports
    card = (d / "onnx" / "README.md").read_text(encoding="utf-8")
    (snippet,) = re.findall(r"```python\n(.*?)```", card, re.S)
    pics = _pictures()
    for i, p in enumerate(pics):
        p.save(tmp_path / f"{i}.png")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any import of torch now fails
        snippet = open({str(tmp_path / 's.py')!r}).read()
        g = {{}}
        exec(compile(snippet, "card", "exec"), g)
        import numpy as np
        from PIL import Image
        texts = {TEXTS!r}
        ids = g["tokenize"](texts)
        t = g["textual"].run(["embedding"], {{"text": ids}})[0]
        short = g["tokenize"](texts[:3])                # padded to the longest of three short texts
        t_short = g["textual"].run(["embedding"], {{"text": short}})[0]
        ims = [Image.open({str(tmp_path)!r} + f"/{{i}}.png") for i in range({len(pics)})]
        v = np.concatenate([g["visual"].run(["embedding"], {{"image": g["preprocess"](im)}})[0] for im in ims])
        np.savez({str(tmp_path / 'out.npz')!r}, ids=ids, text=t, image=v, short=short, t_short=t_short)
        assert "torch" not in [k for k, mod in sys.modules.items() if mod is not None]
    """)
    (tmp_path / "s.py").write_text(snippet, encoding="utf-8")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "{" in r.stdout                                  # the snippet printed its probabilities
    got = np.load(tmp_path / "out.npz")
    want_ids = m.tokenizer(TEXTS).numpy()
    eot = m.tokenizer.eot_token_id
    # the snippet pads with end-of-text (Immich's way), langclip with 0: equal up to the first end-of-text
    for a, b in zip(got["ids"], want_ids):
        n = int(np.argmax(b == eot)) + 1
        assert a[:n].tolist() == b[:n].tolist() and set(a[n:].tolist()) <= {eot}
    assert np.abs(got["text"] - m.encode_text(TEXTS).numpy()).max() <= 1e-4
    assert got["short"].shape[1] < m.model.context_length                    # not padded to the context
    assert np.abs(got["t_short"] - m.encode_text(TEXTS[:3]).numpy()).max() <= 1e-4
    assert np.abs(got["image"] - m.encode_image(pics).numpy()).max() <= 1e-4


# -- Immich ------------------------------------------------------------------------------------------
def _immich_text(folder, query):
    """immich_ml OpenClipTextualEncoder: config.json's context length, tokenizer.json padded with
    tokenizer_config.json's pad_token and truncated, clean_text (whitespace), int32 "text", [0][0]."""
    from tokenizers import Tokenizer

    L = json.loads((folder / "config.json").read_text())["text_cfg"].get("context_length", 77)
    pad = json.loads((folder / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    tok = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json"))
    tok.enable_padding(length=L, pad_token=pad, pad_id=tok.token_to_id(pad))
    tok.enable_truncation(max_length=L)
    ids = tok.encode(" ".join(query.split())).ids
    sess = ort.InferenceSession(str(folder / "textual" / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"text": np.array([ids], dtype=np.int32)})[0][0]


def _immich_image(folder, image):
    """immich_ml OpenClipVisualEncoder: preprocess_cfg.json; resize the shortest side with PIL, crop
    the centre (floor), scale to 0..1, normalise, "image" (1, 3, S, S), [0][0]."""
    pp = json.loads((folder / "visual" / "preprocess_cfg.json").read_text())
    size = pp["size"][0] if isinstance(pp["size"], list) else pp["size"]
    resample = {r.name.lower(): r for r in Image.Resampling}[pp["interpolation"].lower()]
    w, h = image.size
    img = (image.resize((size, int((h / w) * size)), resample=resample) if w < h
           else image.resize((int((w / h) * size), size), resample=resample))
    left, upper = int(img.size[0] / 2 - size / 2), int(img.size[1] / 2 - size / 2)
    img = img.crop((left, upper, left + size, upper + size))
    x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = (x - np.array(pp["mean"], np.float32)) / np.array(pp["std"], np.float32)
    sess = ort.InferenceSession(str(folder / "visual" / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x.transpose(2, 0, 1)[None]})[0][0]


def test_immich_folder_loads_as_immich_loads_it(exports):
    d, m = exports
    f = d / "immich"
    assert {p.relative_to(f).as_posix() for p in f.rglob("*") if p.is_file()} >= {
        "config.json", "textual/model.onnx", "textual/tokenizer.json", "textual/tokenizer_config.json",
        "visual/model.onnx", "visual/preprocess_cfg.json", "README.md"}
    cfg = json.loads((f / "config.json").read_text())
    assert cfg["embed_dim"] == 32 and cfg["text_cfg"]["vocab_size"] == m.model.vocab_size
    # raw, mixed-case queries: the exported tokenizer lower-cases and normalises as langclip's cleaning does
    for q in RAW_QUERIES + TEXTS:
        assert np.abs(_immich_text(f, q) - m.encode_text([q])[0].numpy()).max() <= 1e-4, q
    # Immich crops at floor((w - S) / 2), torchvision at round(): equal where the margin is even
    for p in _pictures():
        assert np.abs(_immich_image(f, p) - m.encode_image([p])[0].numpy()).max() <= 1e-4, p.size


def test_immich_visual_graph_is_the_frozen_image_tower(exports, tiny_clip):
    """Existing Immich image embeddings stay valid: the visual graph is the original CLIP's tower."""
    d, _ = exports
    clip, _ = tiny_clip
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    sess = ort.InferenceSession(str(d / "immich" / "visual" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = clip.encode_image(torch.from_numpy(x), normalize=True).numpy()
    assert np.abs(sess.run(None, {"image": x})[0] - want).max() <= 1e-4


def test_a_wrong_export_is_not_kept(exports, monkeypatch, tmp_path, trained_run, capsys):
    """The export checks itself: a graph that disagrees with PyTorch fails the export."""
    import langclip.export_onnx as eo

    monkeypatch.setattr(eo, "TOLERANCE", -1.0)
    assert main(["export", "--model", str(trained_run), "--format", "onnx", "--out", str(tmp_path / "x")]) != 0
    assert "differs from PyTorch" in capsys.readouterr().err
    assert not list((tmp_path / "x").glob("*.onnx"))


# -- an hf: text tower (a pretrained encoder with its own tokenizer: M-CLIP's kind) -----------------
def _mclip_text(folder, query):
    """immich_ml MClipTextualEncoder: as OpenClipTextualEncoder, but it feeds "input_ids" and
    "attention_mask" (int32, padded to the context)."""
    from tokenizers import Tokenizer

    L = json.loads((folder / "config.json").read_text())["text_cfg"].get("context_length", 77)
    pad = json.loads((folder / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    tok = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json"))
    tok.enable_padding(length=L, pad_token=pad, pad_id=tok.token_to_id(pad))
    tok.enable_truncation(max_length=L)
    e = tok.encode(" ".join(query.split()))
    sess = ort.InferenceSession(str(folder / "textual" / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": np.array([e.ids], dtype=np.int32),
                           "attention_mask": np.array([e.attention_mask], dtype=np.int32)})[0][0]


@pytest.fixture(scope="session", params=["tiny_bert", "tiny_xlmr"])
def hf_exports(request, tmp_path_factory, tiny_arch, tiny_clip):
    """A run whose text tower is a pretrained encoder (BERT: pad id 0; XLM-R: pad id 1, positions from
    the pad id), its projection trained a little off its initialisation, exported three ways."""
    import logging

    import langclip
    from langclip.build import build_student
    from langclip.runfolder import save_model_files
    from langclip.tokenizer import HFTextTokenizer

    enc = request.getfixturevalue(request.param)
    d = tmp_path_factory.mktemp(f"hf_onnx_{request.param}")
    tok = HFTextTokenizer.load(enc, context_length=24)
    model, ref, info = build_student(tiny_arch, tiny_clip[1], tok, init=f"hf:{enc}", context_length=24)
    with torch.no_grad():
        for p in model.clip.text.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_model_files(d / "run", model, tok, ref, {"init": info})
    caplog = logging.getLogger("langclip.export_onnx")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    caplog.addHandler(handler)
    try:
        for fmt, name in (("onnx", "onnx"), ("immich", "ViT-B-32__openai"), ("immich", "XLM-Roberta-Large-Vit-B-32")):
            assert main(["export", "--model", str(d / "run"), "--format", fmt, "--out", str(d / name)]) == 0
    finally:
        caplog.removeHandler(handler)
    return d, langclip.load(d / "run", device="cpu"), [r.getMessage() for r in records]


def test_hf_tower_onnx_graph_equals_langclip(hf_exports):
    d, m, _ = hf_exports
    conf = json.loads((d / "onnx" / "onnx_config.json").read_text())
    assert conf["text_tower"] == "hf" and conf["textual"]["shape"] == ["batch", "sequence"]
    assert conf["textual"]["pad_token_id"] == m.tokenizer.pad_token_id
    g = onnx.load(str(d / "onnx" / "textual.onnx"))
    assert [(i.name, i.type.tensor_type.elem_type) for i in g.graph.input] == [("text", onnx.TensorProto.INT32)]
    sess = ort.InferenceSession(str(d / "onnx" / "textual.onnx"), providers=["CPUExecutionProvider"])
    ids = m.tokenizer(TEXTS)                                     # padded with the encoder's pad id
    want = m.encode_text(TEXTS).numpy()
    assert np.abs(sess.run(None, {"text": ids.numpy().astype(np.int32)})[0] - want).max() <= 1e-4
    n = int((ids[:6] != m.tokenizer.pad_token_id).sum(-1).max())
    assert n < ids.shape[1]                                      # padded only to the batch's longest text
    assert np.abs(sess.run(None, {"text": ids[:6, :n].numpy().astype(np.int32)})[0] - want[:6]).max() <= 1e-4
    # the tokenizer as onnxruntime callers load it (`tokenizers` alone) gives langclip's ids
    from tokenizers import Tokenizer

    pad = json.loads((d / "onnx" / "tokenizer_config.json").read_text())["pad_token"]
    tok = Tokenizer.from_file(str(d / "onnx" / "tokenizer.json"))
    tok.enable_padding(length=24, pad_token=pad, pad_id=tok.token_to_id(pad))
    tok.enable_truncation(max_length=24)
    assert [e.ids for e in tok.encode_batch(TEXTS)] == ids.tolist()


def test_hf_tower_immich_folders_load_as_immich_loads_them(hf_exports, tiny_clip):
    """Under the library's CLIP name the text graph takes "text" (OpenClipTextualEncoder); under an
    M-CLIP name "input_ids" + "attention_mask" (MClipTextualEncoder). Both give langclip's embeddings,
    and the visual graph is the frozen tower either way."""
    d, m, warned = hf_exports
    for name, run_text in (("ViT-B-32__openai", _immich_text), ("XLM-Roberta-Large-Vit-B-32", _mclip_text)):
        f = d / name
        for q in RAW_QUERIES + TEXTS:                              # Immich collapses whitespace first
            assert np.abs(run_text(f, q) - m.encode_text([" ".join(q.split())])[0].numpy()).max() <= 1e-4, (name, q)
        for p in _pictures()[:2]:
            assert np.abs(_immich_image(f, p) - m.encode_image([p])[0].numpy()).max() <= 1e-4, p.size
    cfg = json.loads((d / "XLM-Roberta-Large-Vit-B-32" / "config.json").read_text())
    assert cfg["text_cfg"]["hf_model_name"] == m.meta["init"]["hf_model"]     # not a folder of this machine's run
    assert cfg["text_cfg"]["context_length"] == 24
    # the tiny tower is not M-CLIP's ViT-B-32: the export says so (and still works)
    assert any("XLM-Roberta-Large-Vit-B-32 is an Immich M-CLIP model whose image tower is ViT-B-32" in w
               for w in warned)
    card = (d / "XLM-Roberta-Large-Vit-B-32" / "README.md").read_text(encoding="utf-8")
    assert "input_ids" in card and "attention_mask" in card and "`/cache/clip/XLM-Roberta-Large-Vit-B-32/`" in card
    # the name may also be the folder above (Immich's revision layout); the tower's name, not its file
    from langclip.export_onnx import immich_signature

    assert immich_signature(d / "XLM-Roberta-Large-Vit-B-32" / "0123abc", "ViT-B-32-quickgelu") == (
        "XLM-Roberta-Large-Vit-B-32", None)
    assert immich_signature(d / "ViT-B-32__openai", "ViT-B-32-quickgelu") == (None, None)
    assert "tower is ViT-L-14, but this run's is ViT-B-32:" in immich_signature(d / "LABSE-Vit-L-14", "/x/ViT-B-32.json")[1]


def test_a_clip_style_tower_under_an_mclip_name_takes_ids_and_mask(exports, tmp_path, trained_run):
    _, m = exports
    assert main(["export", "--model", str(trained_run), "--format", "immich",
                 "--out", str(tmp_path / "XLM-Roberta-Large-Vit-B-32")]) == 0
    f = tmp_path / "XLM-Roberta-Large-Vit-B-32"
    g = onnx.load(str(f / "textual" / "model.onnx"))
    assert [i.name for i in g.graph.input] == ["input_ids", "attention_mask"]
    for q in RAW_QUERIES + TEXTS:
        assert np.abs(_mclip_text(f, q) - m.encode_text([q])[0].numpy()).max() <= 1e-4, q


def test_hf_tower_cards_snippets_run_without_torch(hf_exports, tmp_path):
    """The onnx card's and the M-CLIP-named Immich card's snippets, run as written in a process where
    importing torch fails, embed their labels as langclip does."""
    import re

    d, m, _ = hf_exports
    script = ["import sys, json", "sys.modules['torch'] = None", "out = {}"]
    for name in ("onnx", "XLM-Roberta-Large-Vit-B-32"):
        (snippet,) = re.findall(r"```python\n(.*?)```", (d / name / "README.md").read_text(encoding="utf-8"), re.S)
        (tmp_path / f"{name}.py").write_text(snippet, encoding="utf-8")
        script += [f"g = {{}}; exec(compile(open({str(tmp_path / (name + '.py'))!r}).read(), 'card', 'exec'), g)",
                   f"out[{name!r}] = [g['texts'], g['text'].tolist()]"]
    script += [f"json.dump(out, open({str(tmp_path / 'out.json')!r}, 'w'))"]
    r = subprocess.run([sys.executable, "-c", "\n".join(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, (texts, emb) in json.loads((tmp_path / "out.json").read_text()).items():
        assert np.abs(np.array(emb) - m.encode_text(texts).numpy()).max() <= 1e-4, name


def test_a_graph_with_external_weights_is_gathered_into_one_data_file(monkeypatch, tmp_path, trained_run, exports):
    """A text tower over protobuf's 2 GiB (XLM-R large) leaves the exporter as a graph plus one file per
    weight. The export gathers them into `textual.onnx_data` beside the graph. Simulated here: the
    exporter's output re-saved with a file per tensor."""
    import langclip.export_onnx as eo

    real = torch.onnx.export

    def exporter_over_2gib(*args, **kw):
        real(*args, **kw)
        f = args[2]
        onnx.save_model(onnx.load(f), f, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)

    monkeypatch.setattr(eo.torch.onnx, "export", exporter_over_2gib)
    assert main(["export", "--model", str(trained_run), "--format", "onnx", "--out", str(tmp_path / "x")]) == 0
    files = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert {"textual.onnx", "textual.onnx_data", "visual.onnx", "visual.onnx_data"} <= set(files)
    assert not [f for f in files if f.startswith(".export-") or "MatMul" in f or "weight" in f], files
    conf = json.loads((tmp_path / "x" / "onnx_config.json").read_text())
    assert conf["textual"]["weights_file"] == "textual.onnx_data" and conf["visual"]["weights_file"] == "visual.onnx_data"
    x = tmp_path / "x"
    assert (x / "textual.onnx_data").stat().st_mode == (x / "textual.onnx").stat().st_mode   # not owner-only
    _, m = exports
    sess = ort.InferenceSession(str(tmp_path / "x" / "textual.onnx"), providers=["CPUExecutionProvider"])
    ids = m.tokenizer(TEXTS).numpy().astype(np.int32)
    assert np.abs(sess.run(None, {"text": ids})[0] - m.encode_text(TEXTS).numpy()).max() <= 1e-4


def test_hf_tower_card_names_the_encoder_and_its_tokenizer(hf_exports):
    d, m, _ = hf_exports
    card = (d / "onnx" / "README.md").read_text(encoding="utf-8")
    enc = m.meta["init"]["hf_model"]
    assert f"the encoder's own (`{enc}`, vocabulary {m.tokenizer.vocab_size:,})" in card
    assert "CLIP's byte-level BPE" not in card and "Text goes to the encoder's own tokenizer" in card


def test_hf_tower_at_the_shipped_configs_real_shape(tmp_path, tiny_arch, tiny_clip, tiny_bert):
    """The shipped hf config's encoder at its real shape (rubert-tiny2: 3 layers, width 312, 12 heads,
    83,828 ids, 2,048 positions; random weights, context 32, the mlp projection): the ONNX export passes
    its self-check, takes the configured context (not the 2,048 positions) and gives langclip's embeddings."""
    import shutil

    import langclip
    from transformers import BertConfig, BertModel

    from langclip.build import build_student
    from langclip.runfolder import save_model_files
    from langclip.tokenizer import HFTextTokenizer

    enc = tmp_path / "rubert-tiny2-shape"
    shutil.copytree(tiny_bert, enc)
    torch.manual_seed(2)
    BertModel(BertConfig(vocab_size=83828, hidden_size=312, num_hidden_layers=3, num_attention_heads=12,
                         intermediate_size=600, max_position_embeddings=2048)).save_pretrained(str(enc))
    tok = HFTextTokenizer.load(enc, context_length=32)
    model, ref, info = build_student(tiny_arch, tiny_clip[1], tok, init=f"hf:{enc}", context_length=32)
    save_model_files(tmp_path / "run", model, tok, ref, {"init": info})
    assert main(["export", "--model", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "x")]) == 0
    conf = json.loads((tmp_path / "x" / "onnx_config.json").read_text())
    assert conf["context_length"] == 32 and conf["vocab_size"] == 83828
    m = langclip.load(tmp_path / "run", device="cpu")
    ids = m.tokenizer(TEXTS)
    assert ids.shape == (len(TEXTS), 32)
    sess = ort.InferenceSession(str(tmp_path / "x" / "textual.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"text": ids.numpy().astype(np.int32)})[0] - m.encode_text(TEXTS).numpy()).max() <= 1e-4
