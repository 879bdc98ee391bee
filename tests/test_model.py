import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from langclip.model import LangCLIP, TextCLIP, fast_encode_text
from langclip.build import ImageTowerRef, build_student
from langclip.runfolder import load_model, save_model_files
from langclip.tokenizer import Tokenizer
from langclip.weights import WeightsError, load_state_dict

IMG = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def torchscript_archive(sd, path):
    """A TorchScript archive holding `sd` under the same names, like OpenAI's ViT-B-32.pt."""
    root = nn.Module()
    for k, v in sd.items():
        mod = root
        *parents, leaf = k.split(".")
        for name in parents:
            if not hasattr(mod, name):
                mod.add_module(name, nn.Module())
            mod = getattr(mod, name)
        mod.register_parameter(leaf, nn.Parameter(v.clone(), requires_grad=False))
    root.register_buffer("input_resolution", torch.tensor(64))
    root.register_buffer("context_length", torch.tensor(77))
    root.register_buffer("vocab_size", torch.tensor(49408))

    class Wrap(nn.Module):
        def __init__(self, inner):
            super().__init__()
            for n, m in inner.named_children():
                self.add_module(n, m)
            for n, p in inner.named_parameters(recurse=False):
                self.register_parameter(n, p)
            for n, b in inner.named_buffers(recurse=False):
                self.register_buffer(n, b)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    torch.jit.save(torch.jit.script(Wrap(root)), str(path))


@pytest.fixture(scope="session")
def weight_files(tiny_clip, tmp_path_factory):
    from safetensors.torch import save_file

    m, plain = tiny_clip
    sd = m.state_dict()
    d = tmp_path_factory.mktemp("w")
    files = {"openai_state_dict": plain}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3, "name": "x",
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, d / "epoch_3.pt")
    files["open_clip_checkpoint"] = str(d / "epoch_3.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "m.safetensors"))
    files["safetensors"] = str(d / "m.safetensors")
    torchscript_archive(sd, d / "ViT-tiny.pt")
    files["torchscript"] = str(d / "ViT-tiny.pt")
    return files


@pytest.mark.parametrize("fmt", ["openai_state_dict", "open_clip_checkpoint", "safetensors", "torchscript"])
def test_every_format_gives_open_clips_image_embeddings(fmt, weight_files, tiny_arch, tiny_clip):
    import open_clip

    ref_model, _ = tiny_clip
    f = weight_files[fmt]
    sd = load_state_dict(f)
    model, ref, _ = build_student(tiny_arch, f, Tokenizer.clip(), init="scratch")
    # open_clip's own loading of the same file
    oc = open_clip.CLIP(**json.load(open(tiny_arch))["model_cfg"]).eval()
    if fmt == "torchscript":
        oc.load_state_dict(sd)
    else:
        open_clip.load_checkpoint(oc, f)
    with torch.no_grad():
        a = model.encode_image(IMG, normalize=False)
        b = oc.encode_image(IMG)
        c = ref_model.encode_image(IMG)
    assert (a - b).abs().max() <= 1e-5 and (a - c).abs().max() <= 1e-5
    assert len(ref.sha256) == 64


def test_torchscript_archives_are_read_as_data(weight_files, tiny_clip, tmp_path, caplog):
    """OpenAI's TorchScript files are read without TorchScript: the same state dict as
    torch.jit.load(...).state_dict() for a scripted archive (fp16, as OpenAI's) and a traced open_clip
    CLIP (buffers such as the causal mask included, as there); a global outside the closed list is
    refused before anything runs; load_state_dict falls back to torch.jit.load only when the reader fails."""
    import copy
    import logging
    import pickle
    import zipfile

    from langclip.weights import read_torchscript

    m = copy.deepcopy(tiny_clip[0]).half()       # the session's model stays float32
    traced = tmp_path / "traced.pt"
    torch.jit.trace(m, (IMG.half(), torch.randint(0, 49408, (2, 77))), check_trace=False).save(str(traced))
    for f in (weight_files["torchscript"], str(traced)):
        ours, jit = read_torchscript(f), torch.jit.load(f, map_location="cpu").state_dict()
        assert sorted(ours) == sorted(jit), f
        for k in jit:
            assert ours[k].dtype == jit[k].dtype and torch.equal(ours[k], jit[k]), (f, k)
    assert "attn_mask" in ours and ours["visual.conv1.weight"].dtype == torch.float16
    # a pickle that names any other global is refused: the global is never called
    with zipfile.ZipFile(weight_files["torchscript"]) as z:
        names = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    names[pkl] = b"\x80\x02cbuiltins\nprint\nX\x05\x00\x00\x00owned\x85R."     # print("owned")
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        for n, b in names.items():
            z.writestr(n, b)
    with pytest.raises(pickle.UnpicklingError, match="refused global builtins.print"):
        read_torchscript(evil)
    with caplog.at_level(logging.WARNING, logger="langclip.weights"):
        with pytest.raises(Exception):
            load_state_dict(evil)       # torch.jit.load cannot read it either; the warning says why
    assert "refused global builtins.print" in caplog.text


@pytest.mark.slow
def test_torchscript_reader_at_vit_b32_shape(tmp_path):
    """The reader on an archive of OpenAI's size and structure: ViT-B-32-quickgelu, fp16, traced (the
    way OpenAI's files were made): the same 300 MB state dict as torch.jit.load's, name for name."""
    import open_clip

    from langclip.weights import read_torchscript

    torch.manual_seed(0)
    m = open_clip.CLIP(**open_clip.get_model_config("ViT-B-32-quickgelu")).eval().half()
    f = tmp_path / "ViT-B-32.pt"
    with torch.no_grad():
        torch.jit.trace(m, (torch.randn(1, 3, 224, 224).half(), torch.randint(0, 49408, (1, 77))),
                        check_trace=False).save(str(f))
    del m
    ours, jit = read_torchscript(f), torch.jit.load(str(f), map_location="cpu").state_dict()
    assert sorted(ours) == sorted(jit) and len(ours) > 150
    assert all(ours[k].dtype == jit[k].dtype and torch.equal(ours[k], jit[k]) for k in jit)
    assert ours["visual.conv1.weight"].shape == (768, 3, 32, 32) and ours["token_embedding.weight"].shape == (49408, 512)


def test_image_tower_locked_and_trainable_count(tiny_arch, tiny_clip, ru_tokenizer):
    model, _, _ = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip")
    assert all(not p.requires_grad for p in model.visual.parameters())
    text = sum(p.numel() for p in model.text_parameters().values())
    assert model.num_trainable() == text > 0
    model.train()
    assert not model.visual.training


def test_fast_text_forward_equals_open_clip(tiny_arch, tiny_clip, ru_tokenizer):
    model, _, _ = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="scratch")
    toks = ru_tokenizer(["кот", "две красные звезды на синем фоне", "", "a photo " * 40], context_length=77)
    with torch.no_grad():
        ref = model.clip.encode_text(toks)
        fast = fast_encode_text(model.clip, toks)
    assert (ref - fast).abs().max() <= 1e-5


def test_clip_init_preserves_english_exactly(tiny_arch, tiny_clip, ru_tokenizer):
    orig, path = tiny_clip
    texts = ["a photo of a cat", "two red stars on a blue background", "Hello, World!"]
    model, _, info = build_student(tiny_arch, path, ru_tokenizer, init="clip")
    assert info["new_ids_from_pieces"] == 1500
    with torch.no_grad():
        ours = model.encode_text(ru_tokenizer(texts), normalize=False)
        theirs = orig.encode_text(Tokenizer.clip()(texts))
    assert (ours - theirs).abs().max() <= 1e-5
    # shorter context: still exact for texts that fit
    model32, _, _ = build_student(tiny_arch, path, ru_tokenizer, init="clip", context_length=32)
    with torch.no_grad():
        ours32 = model32.encode_text(ru_tokenizer(texts, context_length=32), normalize=False)
    assert (ours32 - theirs).abs().max() <= 1e-5


def test_clip_init_from_a_traced_open_clip_archive(tiny_arch, tiny_clip, ru_tokenizer, tmp_path):
    """A CLIP traced with torch.jit.trace keeps open_clip's causal mask (`attn_mask`) among its tensors,
    which no state dict has: `clip` init leaves it out (it refused it before) and keeps English exactly."""
    orig, _ = tiny_clip
    traced = tmp_path / "traced.pt"
    torch.jit.trace(orig, (IMG, torch.randint(0, 49408, (2, 77))), check_trace=False).save(str(traced))
    assert "attn_mask" in torch.jit.load(str(traced)).state_dict()
    texts = ["a photo of a cat", "two red stars on a blue background"]
    model, _, _ = build_student(tiny_arch, traced, ru_tokenizer, init="clip")
    with torch.no_grad():
        ours = model.encode_text(ru_tokenizer(texts), normalize=False)
        theirs = orig.encode_text(Tokenizer.clip()(texts))
    assert (ours - theirs).abs().max() <= 1e-5
    # a new Russian token starts from the mean of CLIP's embeddings of its pieces: "дом" is one new
    # whole-word token here, and CLIP's tokenizer cuts the same word into several pieces
    new_id, = ru_tokenizer.encode("дом")
    assert new_id >= 49406 and ru_tokenizer.hf.id_to_token(new_id).endswith("</w>")
    pieces = Tokenizer.clip().encode("дом")
    assert len(pieces) > 1
    expect = orig.token_embedding.weight[pieces].mean(0)
    assert (model.clip.token_embedding.weight[new_id] - expect).abs().max() <= 1e-6
    assert (model.clip.token_embedding.weight[new_id] - orig.token_embedding.weight[pieces[0]]).abs().max() > 1e-3


def test_run_folder_round_trip(tmp_path, tiny_arch, tiny_clip, ru_tokenizer):
    model, ref, info = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip", context_length=32)
    save_model_files(tmp_path / "run", model, ru_tokenizer, ref, {"init": info})
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"model.json", "tokenizer", "text_tower.safetensors"}
    loaded, tok, meta = load_model(tmp_path / "run")
    t = tok(["кот на столе"], context_length=32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(t), model.eval().encode_text(t))
    assert meta["image_tower"]["sha256"] == ref.sha256


def test_text_only_load_needs_no_clip_file_and_equals_the_full_load(tmp_path, tiny_arch, tiny_clip, ru_tokenizer):
    """`load_model(image=False)` (what `langclip search` by text uses): a text tower alone, built without
    open_clip (TextCLIP) and without initialising anything, it needs no CLIP weights file, holds the full
    load's text weights under the same names, gives the full load's text embeddings (bit for bit; and
    open_clip's own forward of the full model, the independent reference, to float rounding), carries the
    run's recorded digest and refuses pictures. A run from before digests records none to compare with:
    it is loaded whole."""
    import json
    import shutil

    from langclip.build import load_image_tower

    model, ref, info = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip", context_length=32)
    clip_file = tmp_path / "clip.pt"
    shutil.copy(tiny_clip[1], clip_file)
    ref = ImageTowerRef.of(ref.arch, clip_file, ref.tower_sha256)
    run = save_model_files(tmp_path / "run", model, ru_tokenizer, ref, {"init": info})
    full = load_model(run)[0]
    clip_file.rename(tmp_path / "moved.pt")          # the text-only load must not look for it
    text, tok, _ = load_model(run, image=False)
    assert isinstance(text.clip, TextCLIP)
    assert not text.image_ready and text.tower_sha256 == full.tower_sha256 != ""
    a, b = full.text_state_dict(), text.text_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [k for k in text.state_dict() if "visual" in k]
    assert torch.equal(text.clip.attn_mask, full.clip.attn_mask)    # the non-persistent buffer, rebuilt
    assert (text.context_length, text.vocab_size) == (full.context_length, full.vocab_size)
    t = tok(["кот на столе", "a photo of a dog", "синий"], context_length=32)
    with torch.no_grad():
        assert torch.equal(text.encode_text(t), full.encode_text(t))
        torch.testing.assert_close(text.clip.encode_text(t), full.clip.encode_text(t), rtol=0, atol=1e-5)
    size = full.visual.image_size
    x = torch.randn(2, 3, *((size, size) if isinstance(size, int) else size))
    with pytest.raises(RuntimeError, match="texts only"):
        text.encode_image(x)
    with pytest.raises(ValueError, match="image=True"):
        load_image_tower(text, tmp_path / "moved.pt")
    empty = LangCLIP.empty(json.loads((run / "model.json").read_text())["model_cfg"])   # open_clip's, unfilled
    with pytest.raises(RuntimeError, match="texts only"):
        empty.encode_image(x)
    load_image_tower(empty, tmp_path / "moved.pt")
    assert torch.equal(empty.encode_image(x), full.encode_image(x))
    with pytest.raises(FileNotFoundError, match="image-tower weights"):
        load_model(run)                               # the full load still needs the file
    meta = json.loads((run / "model.json").read_text())
    del meta["image_tower"]["tower_sha256"]             # a run folder written before round 2
    (run / "model.json").write_text(json.dumps(meta))
    old = load_model(run, weights=tmp_path / "moved.pt", image=False)[0]
    assert old.image_ready and torch.equal(old.encode_image(x), full.encode_image(x))
    # a text query never imports open_clip (most of a cold query's time; cpu_search_cold_start.jsonl): a fresh process
    code = ("import sys, langclip; m = langclip.load(sys.argv[1], device='cpu', image=False); "
            "e = m.encode_text(['кот на столе']); "
            "print(tuple(e.shape), sorted(k for k in ('open_clip', 'torchvision', 'transformers') if k in sys.modules))")
    meta["image_tower"]["tower_sha256"] = full.tower_sha256
    (run / "model.json").write_text(json.dumps(meta))
    from langclip.cli import main

    assert main(["export", "--model", str(run), "--weights", str(tmp_path / "moved.pt"), "--out", str(tmp_path / "exp")]) == 0
    for folder in (run, tmp_path / "exp"):     # an export: its one file's text tensors alone
        r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split() == ["(1,", f"{full.visual.output_dim})", "[]"], r.stdout
    import langclip

    lite, whole = (langclip.load(tmp_path / "exp", device="cpu", image=i) for i in (False, True))
    assert isinstance(lite.model.clip, TextCLIP) and not lite.model.image_ready
    assert torch.equal(lite.encode_text(["кот на столе", "синий"]), whole.encode_text(["кот на столе", "синий"]))
    with pytest.raises(RuntimeError, match="texts only"):
        lite.model.encode_image(x)


def test_text_only_build_at_the_real_shape():
    """`LangCLIP.empty` and the open_clip-free `text_only_clip` with ViT-B-32-quickgelu's own config (the
    recipe's tower, context 77): the same buffers and text embeddings as a normal build given the same
    text weights (open_clip's own forward the reference)."""
    from langclip.model import LangCLIP, TextCLIP, model_config, student_config, text_only_clip

    cfg = student_config(model_config("ViT-B-32-quickgelu"), Tokenizer.clip().vocab_size, 77)
    full = LangCLIP(cfg).eval()
    t = Tokenizer.clip()(["a photo of a cat", "two red stars on a blue field"], context_length=77)
    lite = text_only_clip(cfg)
    assert isinstance(lite.clip, TextCLIP)
    for text in (LangCLIP.empty(cfg), lite):
        assert not text.image_ready
        missing, unexpected = text.clip.load_state_dict(full.text_state_dict(), strict=False)
        assert not unexpected and all(k.startswith("visual.") for k in missing)
        assert torch.equal(text.clip.attn_mask, full.clip.attn_mask)
        with torch.no_grad():
            assert torch.equal(text.eval().encode_text(t), full.encode_text(t))
            torch.testing.assert_close(text.clip.encode_text(t), full.clip.encode_text(t), rtol=0, atol=1e-5)
    # configs TextCLIP does not reproduce go through open_clip
    assert text_only_clip({**cfg, "text_cfg": {**cfg["text_cfg"], "no_causal_mask": True}}) is None
    assert text_only_clip({**cfg, "init_logit_bias": -10.0}) is None
    assert text_only_clip({**cfg, "text_cfg": {**cfg["text_cfg"], "ls_init_value": 1e-5}}) is not None


@pytest.mark.parametrize("quick_gelu,ls", [(True, None), (False, 0.1)])
def test_text_only_tower_variants_equal_open_clip(quick_gelu, ls):
    """TextCLIP's options — QuickGELU or GELU, LayerScale or none, another MLP ratio and head count —
    against open_clip's own text forward with the same weights (the independent reference)."""
    from conftest import TINY_CFG

    from langclip.model import student_config, text_only_clip

    cfg = student_config({**TINY_CFG, "quick_gelu": quick_gelu}, 300, 24,
                         {"ls_init_value": ls, "mlp_ratio": 2.0, "heads": 4})
    torch.manual_seed(0)
    full = LangCLIP(cfg).eval()
    with torch.no_grad():   # LayerScale starts at 0.1: random gammas, so that they matter
        for n, p in full.clip.named_parameters():
            if n.endswith("gamma"):
                p.uniform_(0.5, 1.5)
    lite = text_only_clip(cfg)
    assert isinstance(lite.clip, TextCLIP)
    lite.clip.load_state_dict(full.text_state_dict())        # strict: the same names, nothing left over
    t = torch.randint(1, 298, (5, 24))
    t[torch.arange(5), torch.tensor([3, 23, 7, 1, 12])] = 299   # end-of-text (the largest id) at various places
    with torch.no_grad():
        assert torch.equal(lite.eval().encode_text(t), full.encode_text(t))
        torch.testing.assert_close(lite.clip.encode_text(t), full.clip.encode_text(t), rtol=0, atol=1e-5)


def test_image_tower_checked_by_tensors_and_old_runs_by_file(tmp_path, tiny_arch, tiny_clip, ru_tokenizer):
    """A run records its tower's tensor digest: the same weights in another file format load; other
    weights are refused after loading. A run folder from before digests is checked by file SHA-256."""
    import json

    from safetensors.torch import save_file

    from langclip.weights import WeightsError, load_state_dict

    model, ref, info = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip", context_length=32)
    run = save_model_files(tmp_path / "run", model, ru_tokenizer, ref, {"init": info})
    sd = load_state_dict(tiny_clip[1])
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(tmp_path / "same.safetensors"))
    other = {k: (v + 0.01 if k.startswith("visual.") else v).contiguous() for k, v in sd.items()}
    save_file(other, str(tmp_path / "other.safetensors"))
    # fp16 is a different tower only if rounding changes a value: compare with the fp16-rounded digest
    m16 = load_model(run, weights=tmp_path / "same.safetensors", check_sha=False)[0]
    same = {k: v.half().float() for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in same.items()}, str(tmp_path / "same32.safetensors"))
    m32 = load_model(run, weights=tmp_path / "same32.safetensors", check_sha=False)[0]
    assert m16.tower_sha256 == m32.tower_sha256        # fp16 file and its fp32 copy: one tower
    load_model(run, weights=tiny_clip[1])              # the training file, by digest
    with pytest.raises(WeightsError, match="image tower differs"):
        load_model(run, weights=tmp_path / "other.safetensors")
    meta = json.loads((run / "model.json").read_text())
    del meta["image_tower"]["tower_sha256"]             # a run folder written before round 2
    (run / "model.json").write_text(json.dumps(meta))
    load_model(run)
    with pytest.raises(WeightsError, match="SHA-256 differs"):
        load_model(run, weights=tmp_path / "same32.safetensors")


def test_bad_weight_files(tmp_path, tiny_arch, tiny_clip, ru_tokenizer):
    m, good = tiny_clip
    notckpt = tmp_path / "notes.pt"
    notckpt.write_text("hello, this is not a checkpoint")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(open(good, "rb").read()[:5000])
    text_only = tmp_path / "text_only.pt"
    torch.save({k: v for k, v in m.state_dict().items() if not k.startswith("visual.")}, text_only)
    wrong = tmp_path / "wrong_arch.pt"
    sd = dict(m.state_dict())
    sd["visual.conv1.weight"] = torch.zeros(32, 3, 32, 32)
    torch.save(sd, wrong)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": Evil()}}, evil)
    cases = {notckpt: "not a readable checkpoint", trunc: "truncated", text_only: "no image tower",
             wrong: "does not match architecture", evil: "refused to load", tmp_path / "nope.pt": "not found"}
    for f, msg in cases.items():
        with pytest.raises((WeightsError, FileNotFoundError)) as e:
            build_student(tiny_arch, f, ru_tokenizer, init="scratch")
        assert msg in str(e.value) and str(f.name) in str(e.value), (f, e.value)


def test_export_loads_in_stock_open_clip(tmp_path, tiny_arch, tiny_clip, ru_tokenizer):
    import open_clip
    from PIL import Image

    from langclip.cli import main
    from langclip.model import image_transform

    model, ref, _ = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip", context_length=32)
    with torch.no_grad():  # make the text tower differ from CLIP's
        model.clip.token_embedding.weight.add_(0.01 * torch.randn_like(model.clip.token_embedding.weight))
    save_model_files(tmp_path / "run", model, ru_tokenizer, ref)
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    oc, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'exp'}")
    oc_tok = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'exp'}")
    texts = ["Две красные звезды", "a photo of a cat", "фото  полосатого   КОТА &amp; собаки", "очень " * 50,
             "кот!", "three stars!! wow"]   # "!" at a word's end is "!</w>": the pad token must not cut it out
    ours, theirs = ru_tokenizer(texts, context_length=32), oc_tok(texts)
    eot = ru_tokenizer.eot_token_id
    for a, b in zip(ours, theirs):   # the same ids up to end-of-text; the export pads with end-of-text
        n = int(a.argmax()) + 1
        assert torch.equal(a[:n], b[:n]) and bool((b[n:] == eot).all()) and bool((a[n:] == 0).all())
    img = Image.fromarray((torch.rand(80, 70, 3) * 255).byte().numpy())
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    x_ours = image_transform(meta["preprocess_cfg"])(img)[None]
    assert torch.equal(preprocess(img)[None], x_ours)
    loaded, tok, _ = load_model(tmp_path / "run")
    with torch.no_grad():
        t_ref, t_oc = loaded.encode_text(tok(texts, context_length=32)), oc.encode_text(oc_tok(texts), normalize=True)
        i_ref, i_oc = loaded.encode_image(x_ours), oc.encode_image(x_ours, normalize=True)
    assert (t_ref - t_oc).abs().max() <= 1e-5 and (i_ref - i_oc).abs().max() <= 1e-5


def test_hf_text_tower_init_save_load_export(tmp_path, tiny_arch, tiny_clip, tiny_bert):
    import open_clip
    from PIL import Image
    from transformers import BertModel

    from langclip.cli import main
    from langclip.model import image_transform
    from langclip.tokenizer import HFTextTokenizer

    tok = HFTextTokenizer.load(tiny_bert, context_length=24)
    model, ref, info = build_student(tiny_arch, tiny_clip[1], tok, init=f"hf:{tiny_bert}", context_length=24)
    assert info["hf_model"] == str(tiny_bert) and model.is_hf
    # the text tower is the pretrained encoder; the image tower is CLIP's, locked
    bert = BertModel.from_pretrained(str(tiny_bert))
    assert torch.equal(model.clip.text.transformer.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert all(not p.requires_grad for p in model.visual.parameters())
    assert torch.equal(model.logit_scale.detach(), tiny_clip[0].logit_scale.detach())
    texts = ["две красные звезды", "кот на фото", "синий круг " * 20]
    t = tok(texts, context_length=24)
    assert t.shape == (3, 24) and t[2, -1] == tok.tok.sep_token_id  # truncation keeps [SEP]
    with torch.no_grad():
        e = model.eval().encode_text(t)
    assert e.shape == (3, 32) and torch.allclose(e.norm(dim=-1), torch.ones(3))
    # run folder round trip, then export to stock open_clip
    save_model_files(tmp_path / "run", model, tok, ref, {"init": info})
    loaded, tok2, _ = load_model(tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tok2(texts)), e)
    text_only = load_model(tmp_path / "run", image=False)[0]    # its image tower was never filled: refused
    with pytest.raises(RuntimeError, match="texts only"):
        text_only.encode_image(torch.zeros(1, 3, 32, 32))
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    oc, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'exp'}")
    oc_tok = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'exp'}")
    assert torch.equal(oc_tok(texts, context_length=24), t)
    img = Image.fromarray((torch.rand(80, 70, 3) * 255).byte().numpy())
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    x = image_transform(meta["preprocess_cfg"])(img)[None]
    with torch.no_grad():
        assert (oc.eval().encode_text(t, normalize=True) - e).abs().max() <= 1e-5
        assert (oc.encode_image(x, normalize=True) - loaded.encode_image(x)).abs().max() <= 1e-5
    # the export names its own folder as hf_model_name; langclip.load still works after a move
    (tmp_path / "exp").rename(tmp_path / "moved")
    import langclip

    lm = langclip.load(tmp_path / "moved", device="cpu")
    assert lm.model.context_length == 24      # the configured context, not the encoder's 40 positions
    assert torch.equal(lm.tokenizer(texts), t)
    assert torch.equal(langclip.load(tmp_path / "run", device="cpu").tokenizer(texts), t)
    with torch.no_grad():
        assert (lm.model.encode_text(t, normalize=True) - e).abs().max() <= 1e-5
    assert torch.equal(lm.preprocess(img), x[0])
    with pytest.raises(FileNotFoundError, match="could not be loaded"):
        build_student(tiny_arch, tiny_clip[1], None, init=f"hf:{tmp_path / 'nope'}")


@pytest.mark.parametrize("precision", ["auto", "bf16-weights"])
def test_hf_text_tower_trains(tmp_path, world_cache, tiny_arch, tiny_clip, tiny_bert, precision):
    from langclip.config import LossSection, ModelSection, OptimSection, TrainConfig
    from langclip.train import train

    cfg = TrainConfig(cache=str(world_cache), out=str(tmp_path / "run"),
                      model=ModelSection(clip=tiny_arch, weights=tiny_clip[1], init=f"hf:{tiny_bert}", context_length=24,
                                         lang="uk"),
                      optim=OptimSection(lr=1e-3, warmup_steps=1), loss=LossSection(), epochs=2, batch_size=32,
                      val_fraction=0.25, seed=0, log_every=1, tensorboard=False, precision=precision)
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert len(losses) >= 4 and all(np.isfinite(losses))
    import langclip

    m = langclip.load(tmp_path / "run", device="cpu")
    assert m.encode_text(["две красные звезды"]).shape == (1, 32)
    # the language the run was trained for travels (model.json, the open_clip export, its model card)
    assert m.tokenizer.meta["language"] == "uk"
    from langclip.cli import main

    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    assert langclip.load(tmp_path / "exp", device="cpu").tokenizer.meta["language"] == "uk"
    assert "- uk\n" in (tmp_path / "exp" / "README.md").read_text(encoding="utf-8")


def test_fast_text_forward_never_asks_the_device_for_the_length():
    """The eager fast path must not read a device tensor back (`int(idx.max())` was a sync every
    step). On the meta device any such read raises, so the forward must go through without one; and
    a host batch is cut after its longest text with the same result as the full one."""
    import json

    from conftest import TINY_CFG

    from langclip.model import LangCLIP, fast_encode_text, trim_tokens

    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["text_cfg"]["vocab_size"] = 300
    torch.manual_seed(0)
    m = LangCLIP(cfg).eval()
    tok = torch.randint(1, 298, (4, 77))
    tok[:, 9:] = 0
    tok[torch.arange(4), torch.tensor([3, 8, 5, 2])] = 299
    with torch.no_grad():
        full = m.clip.encode_text(tok)                       # open_clip's own forward, the reference
        cut = fast_encode_text(m.clip, tok)
        assert trim_tokens(tok).shape == (4, 9)
        torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-5)
        meta = LangCLIP(cfg).to("meta")
        out = fast_encode_text(meta.clip, tok.to("meta"))  # raises if it reads the device back
    assert out.shape == (4, 32) and out.device.type == "meta"


@pytest.mark.parametrize("field,value", [("no_causal_mask", True), ("pool_type", "last"), ("embed_cls", True)])
def test_clip_init_refuses_text_configs_it_cannot_honour(tmp_path, tiny_clip, ru_tokenizer, field, value):
    import json

    from conftest import TINY_CFG

    from langclip.build import build_student

    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["text_cfg"][field] = value
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"model_cfg": cfg}))
    with pytest.raises(ValueError, match=f"cannot honour text_cfg {field}={value!r}"):
        build_student(str(arch), tiny_clip[1], ru_tokenizer, "clip")


def test_scratch_non_causal_tower_is_computed_as_configured(tiny_arch, tiny_clip, ru_tokenizer):
    """A scratch tower without the causal mask: the fast forward (which assumes one) steps aside."""
    from langclip.model import fast_encode_text
    from langclip.build import build_student

    m, _, _ = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, "scratch", 16, {"no_causal_mask": True})
    tok = ru_tokenizer(["два красных круга", "кот"], context_length=16)
    with torch.no_grad():
        torch.testing.assert_close(fast_encode_text(m.clip, tok), m.clip.encode_text(tok))
        causal, _, _ = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, "scratch", 16)
        causal.load_state_dict(m.state_dict())   # the same weights, with the mask: another function
        assert not torch.allclose(fast_encode_text(causal.clip, tok), m.clip.encode_text(tok), atol=1e-4)


def _fake_hub_cache(root, repo: str, filename: str, sd) -> None:
    """A file laid out as huggingface_hub's cache holds it (refs/main -> snapshots/<rev>/<file>)."""
    from safetensors.torch import save_file

    d = root / f"models--{repo.replace('/', '--')}"
    rev = "0" * 40
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(rev)
    (d / "snapshots" / rev).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "snapshots" / rev / filename))


@pytest.mark.slow
def test_pretrained_tag_from_open_clips_cache_is_the_same_tower_as_the_file(tmp_path, pair_data, capsys, monkeypatch):
    """`--pretrained openai` for a ViT-B/32-shaped CLIP (random weights, laid out in the Hugging Face
    cache that open_clip downloads into): the cache build reads it offline; the same weights saved as
    an fp32 OpenAI-layout .pt are the same tower (equal tensor digest, equal embeddings), so training
    with either accepts the other's cache; offline without the file, the error says what to get.
    In this process: the hub cache is huggingface_hub's HF_HUB_CACHE (read when a lookup runs, as
    HF_HUB_OFFLINE is by langclip), set here as the environment variable would set it."""
    import json

    import huggingface_hub.constants
    import open_clip

    from langclip.cli import main
    from langclip.weights import load_state_dict, split_towers, tower_digest

    torch.manual_seed(0)
    sd = {k: v.half() for k, v in open_clip.create_model("ViT-B-32-quickgelu").state_dict().items()}
    hub = tmp_path / "hub"
    _fake_hub_cache(hub, "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors", sd)
    torch.save({k: v.float() for k, v in sd.items()}, tmp_path / "ViT-B-32.pt")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    common = ["cache", "build", "--data", str(pair_data / "pairs.csv"), "--clip", "ViT-B-32-quickgelu", "--workers", "0"]
    assert main([*common, "--pretrained", "openai", "--out", str(tmp_path / "c1")]) == 0, capsys.readouterr().err[-2000:]
    assert main([*common, "--weights", str(tmp_path / "ViT-B-32.pt"), "--out", str(tmp_path / "c2")]) == 0
    m1, m2 = (json.loads((tmp_path / c / "manifest.json").read_text()) for c in ("c1", "c2"))
    assert m1["pretrained"] == "openai" and m1["weights_sha256"] != m2["weights_sha256"]
    assert m1["tower_sha256"] == m2["tower_sha256"] == tower_digest(split_towers(load_state_dict(tmp_path / "ViT-B-32.pt"))[0])
    from langclip.cache import load_cache

    e1, e2 = load_cache(tmp_path / "c1").image_emb, load_cache(tmp_path / "c2").image_emb
    assert torch.equal(e1, e2)
    # offline, nothing cached: a clear error naming what to download and where it goes
    capsys.readouterr()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert main([*common, "--pretrained", "openai", "--out", str(tmp_path / "c3")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not in open_clip's download cache" in err, err
    assert "timm/vit_base_patch32_clip_224.openai" in err and "ViT-B-32.pt" in err and "--weights FILE" in err
    assert str(tmp_path / "empty") in err   # where the hub cache is
    # an unknown tag is refused before any weights are looked for
    assert main([*common, "--pretrained", "laion9000", "--out", str(tmp_path / "c4")]) == 2
    err = capsys.readouterr().err
    assert "has no pretrained 'laion9000'" in err and "openai" in err
    assert not (tmp_path / "c3").exists() and not (tmp_path / "c4").exists()   # a refused build leaves no folder
    # transformers' copy of OpenAI's weights (openai/clip-vit-base-patch32) alone in the hub cache: the same tower
    from transformers import CLIPConfig

    from langclip.hf_layout import hf_state_dict

    hub2 = tmp_path / "hub-transformers"
    _fake_hub_cache(hub2, "openai/clip-vit-base-patch32", "model.safetensors",
                    {k: v.half() for k, v in hf_state_dict(sd, 12, 12).items()})
    CLIPConfig().save_pretrained(next((hub2 / "models--openai--clip-vit-base-patch32" / "snapshots").iterdir()))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub2))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub2))
    assert main([*common, "--pretrained", "openai", "--out", str(tmp_path / "c5")]) == 0, capsys.readouterr().err[-2000:]
    m5 = json.loads((tmp_path / "c5" / "manifest.json").read_text())
    assert m5["tower_sha256"] == m2["tower_sha256"] and m5["weights"].endswith("model.safetensors")
    # OpenAI's weights under the GELU architecture: refused, naming the right one (open_clip only warns)
    capsys.readouterr()
    assert main([*common[:-4], "--clip", "ViT-B-32", "--workers", "0", "--pretrained", "openai", "--out", str(tmp_path / "c6")]) == 2
    assert "use --clip ViT-B-32-quickgelu" in capsys.readouterr().err and not (tmp_path / "c6").exists()


def test_pretrained_tags_bring_their_own_preprocessing():
    """A tag's mean/std and resize mode, from open_clip's registry, not the architecture's default."""
    from torchvision import transforms as T

    from langclip.model import model_config
    from langclip.model import image_transform

    base = model_config("ViT-L-14")
    assert "preprocess_cfg" not in base or base["preprocess_cfg"].get("mean") != [0.5, 0.5, 0.5]
    for arch, tag, mean, squash in (("ViT-L-14", "laion2b_s32b_b82k", [0.5, 0.5, 0.5], False),
                                    ("ViT-H-14-quickgelu", "dfn5b", [0.48145466, 0.4578275, 0.40821073], True)):
        pp = model_config(arch, tag)["preprocess_cfg"]
        assert pp["mean"] == mean and pp["resize_mode"] == ("squash" if squash else "shortest")
        tf = image_transform(dict(pp, size=224))
        norm = [t for t in tf.transforms if isinstance(t, T.Normalize)][0]
        assert list(norm.mean) == mean
        resize = [t for t in tf.transforms if isinstance(t, T.Resize)][0]
        size = resize.size if isinstance(resize.size, (tuple, list)) else (resize.size,)
        assert (tuple(size) == (224, 224)) == squash   # squash: both sides; shortest: one side + crop
    # open_clip also lists ("ViT-H-14", "dfn5b"), whose weights were trained with QuickGELU: refused
    from langclip.weights import WeightsError
    with pytest.raises(WeightsError, match="use --clip ViT-H-14-quickgelu"):
        model_config("ViT-H-14", "dfn5b")


def test_image_preprocessing_equals_open_clips_own_transform(tmp_path):
    """The preprocessing langclip records and applies (cache, evaluation, inference) equals the
    evaluation transform open_clip's own factory builds for the architecture, on odd image sizes."""
    import open_clip

    from conftest import make_image
    from PIL import Image

    from langclip.model import LangCLIP, model_config
    from langclip.model import image_transform, preprocess_cfg

    _, _, theirs = open_clip.create_model_and_transforms("ViT-B-32-quickgelu")   # no weights: nothing downloaded
    ours = image_transform(preprocess_cfg(LangCLIP(model_config("ViT-B-32-quickgelu"))))
    for i, (size, mode) in enumerate([((500, 375), "RGB"), ((120, 300), "RGBA"), ((224, 224), "L"), ((31, 17), "RGB")]):
        img = Image.open(make_image(tmp_path / f"{i}.png", i, mode, size))
        a, b = ours(img), theirs(img)
        assert a.shape == b.shape == (3, 224, 224) and torch.equal(a, b), (size, mode)
