"""CLIP weights saved by Hugging Face transformers (`CLIPModel.save_pretrained`, a Hub snapshot such as
openai/clip-vit-base-patch32) serve as --weights: a folder or its file, safetensors or pickle, one file
or shards. The reference is transformers' own forward pass on the same weights (its random init, not
langclip's), and a cache built from the transformers folder equals one built from the same weights in
OpenAI's layout, tower digest included."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_CFG

IMG = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
SOT, EOT = 49406, 49407


def hf_config(act: str = "quick_gelu"):
    """transformers' CLIPConfig of TINY_CFG's shapes (end-of-text pooled at CLIP's id 49407)."""
    from transformers import CLIPConfig

    t, v = TINY_CFG["text_cfg"], TINY_CFG["vision_cfg"]
    return CLIPConfig(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"], intermediate_size=4 * t["width"],
                         num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                         max_position_embeddings=t["context_length"], hidden_act=act, bos_token_id=SOT,
                         eos_token_id=EOT, pad_token_id=0, projection_dim=TINY_CFG["embed_dim"]),
        vision_config=dict(hidden_size=v["width"], intermediate_size=4 * v["width"], num_hidden_layers=v["layers"],
                           num_attention_heads=v["width"] // v["head_width"], image_size=v["image_size"],
                           patch_size=v["patch_size"], hidden_act=act, projection_dim=TINY_CFG["embed_dim"]),
        projection_dim=TINY_CFG["embed_dim"])


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """(transformers CLIPModel with its own random weights, {layout: path}): a save_pretrained folder
    (safetensors), the same as pytorch_model.bin with the old position_ids buffers, and in shards."""
    from transformers import CLIPModel

    torch.manual_seed(3)
    m = CLIPModel(hf_config()).eval()
    d = tmp_path_factory.mktemp("hf_clip")
    m.save_pretrained(d / "folder")
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    (d / "bin").mkdir()
    torch.save(sd, d / "bin" / "pytorch_model.bin")
    (d / "bin" / "config.json").write_text((d / "folder" / "config.json").read_text())
    m.save_pretrained(d / "shards", max_shard_size="1MB")
    assert (d / "shards" / "model.safetensors.index.json").is_file()
    return m, {"folder": d / "folder", "file": d / "folder" / "model.safetensors", "bin": d / "bin",
               "shards": d / "shards"}


def _tokens():
    ids = torch.zeros(2, 77, dtype=torch.long)
    ids[0, :5] = torch.tensor([SOT, 320, 1929, 539, EOT])
    ids[1, :8] = torch.tensor([SOT, 49, 1000, 2000, 3000, 4000, 269, EOT])
    return ids


@pytest.mark.parametrize("layout", ["folder", "file", "bin", "shards"])
def test_transformers_weights_give_transformers_embeddings(layout, hf_clip, tiny_arch):
    """Both towers, loaded from transformers' layout as a stage loads them (load_image_tower for the
    image tower, its remainder for the English text tower), embed as transformers does."""
    import open_clip

    from langclip.build import load_image_tower
    from langclip.model import LangCLIP, model_config

    hf, paths = hf_clip
    model = LangCLIP.empty(model_config(tiny_arch))
    rest = load_image_tower(model, paths[layout], tiny_arch)
    full = open_clip.CLIP(**TINY_CFG).eval()
    full.load_state_dict(dict(rest, **{f"visual.{k}": v for k, v in model.clip.visual.state_dict().items()}))
    with torch.no_grad():
        a, b = model.encode_image(IMG, normalize=False), hf.get_image_features(pixel_values=IMG)
        c, d = full.encode_text(_tokens()), hf.get_text_features(input_ids=_tokens())
    b = getattr(b, "pooler_output", b)   # transformers 5 returns an output object
    d = getattr(d, "pooler_output", d)
    assert (a - b).abs().max() <= 1e-5 and (c - d).abs().max() <= 1e-5
    assert float(full.logit_scale.detach()) == pytest.approx(float(hf.logit_scale.detach()))


def test_a_cache_from_the_transformers_folder_equals_one_from_openais_layout(tmp_path, hf_clip, tiny_arch, pair_data,
                                                                           ru_tokenizer):
    """`cache build --weights FOLDER` (and `--clip FOLDER`): the same embeddings and the same tower digest as the same weights
    saved in OpenAI's layout (so either cache serves a run trained on the other); the English teacher
    embeddings too. Training with `model.weights: FOLDER` (`clip` init from its English text tower,
    distillation) gives the text tower the OpenAI-layout file gives, on the other layout's cache."""
    from safetensors.torch import load_file

    from langclip.config import LossSection, ModelSection, OptimSection, TrainConfig
    from langclip.train import train
    from langclip.cache import load_cache
    from langclip.cli import main
    from langclip.hf_layout import from_transformers

    hf, paths = hf_clip
    pt = tmp_path / "openai-layout.pt"
    torch.save(from_transformers(hf.state_dict()), pt)
    for name, w in (("hf", paths["folder"]), ("pt", pt)):
        assert main(["cache", "build", "--data", str(pair_data / "pairs.csv"), "--clip", tiny_arch, "--weights", str(w),
                     "--out", str(tmp_path / name), "--workers", "0"]) == 0
    # the folder as the architecture too (`--clip FOLDER`: its config.json)
    assert main(["cache", "build", "--data", str(pair_data / "pairs.csv"), "--clip", str(paths["folder"]), "--weights",
                 str(paths["folder"]), "--out", str(tmp_path / "arch"), "--workers", "0"]) == 0
    assert torch.equal(load_cache(tmp_path / "arch").image_emb, load_cache(tmp_path / "hf").image_emb)
    a, b = load_cache(tmp_path / "hf"), load_cache(tmp_path / "pt")
    ma, mb = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("hf", "pt"))
    assert ma["tower_sha256"] == mb["tower_sha256"]
    assert ma["weights"].endswith("model.safetensors")   # the folder's file, hashed and recorded
    assert a.teacher is not None and torch.equal(a.image_emb, b.image_emb) and torch.equal(a.teacher, b.teacher)
    ru_tokenizer.save(tmp_path / "tok")
    runs = {}
    for name, w, cache in (("hf", paths["folder"], "pt"), ("pt", pt, "hf")):
        cfg = TrainConfig(cache=str(tmp_path / cache), out=str(tmp_path / f"run-{name}"),
                          model=ModelSection(clip=tiny_arch, weights=str(w), tokenizer=str(tmp_path / "tok"), init="clip",
                                             context_length=16),
                          optim=OptimSection(lr=3e-3, warmup_steps=1), loss=LossSection(distill=0.5), epochs=1,
                          batch_size=8, val_fraction=0.25, tensorboard=False)
        runs[name] = load_file(str(train(cfg, progress=False) / "text_tower.safetensors"))
    assert runs["hf"].keys() == runs["pt"].keys() and all(torch.equal(runs["hf"][k], runs["pt"][k]) for k in runs["hf"])


def test_the_two_layouts_convert_into_each_other(hf_clip):
    """transformers -> OpenAI -> transformers gives back every tensor (export's writer and the reader are
    inverses), and the OpenAI-layout dict fills open_clip's CLIP exactly (strict)."""
    import open_clip

    from langclip.hf_layout import from_transformers, hf_state_dict

    hf_sd = hf_clip[0].state_dict()
    oc = from_transformers(hf_sd)
    open_clip.CLIP(**TINY_CFG).load_state_dict(oc)   # strict: nothing missing, nothing left over
    back = hf_state_dict(oc, TINY_CFG["text_cfg"]["layers"], TINY_CFG["vision_cfg"]["layers"])
    assert back.keys() == {k for k in hf_sd if not k.endswith("position_ids")}
    assert all(torch.equal(back[k], hf_sd[k]) for k in back)


def test_a_wrong_activation_or_an_unknown_tensor_is_refused(tmp_path, hf_clip, tiny_arch):
    """The weights fit both activations' architectures; config.json tells which one they need."""
    from safetensors.torch import save_file

    from langclip.build import load_image_tower
    from langclip.model import LangCLIP
    from langclip.weights import WeightsError, load_state_dict

    gelu = dict(TINY_CFG, quick_gelu=False)
    with pytest.raises(WeightsError, match="hidden_act='quick_gelu'.*QuickGELU"):
        load_image_tower(LangCLIP.empty(gelu), hf_clip[1]["folder"], "tiny-gelu")
    hf_config("gelu").save_pretrained(tmp_path / "gelu")
    (tmp_path / "gelu" / "model.safetensors").symlink_to(hf_clip[1]["file"])
    with pytest.raises(WeightsError, match="hidden_act='gelu'.*GELU \\(e.g. ViT-B-32\\)"):
        load_image_tower(LangCLIP.empty(TINY_CFG), tmp_path / "gelu", tiny_arch)
    sd = dict(hf_clip[0].state_dict(), **{"vision_model.encoder.layers.0.extra.weight": torch.zeros(2)})
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(WeightsError, match="odd.safetensors.*1 tensors.*vision_model.encoder.layers.0.extra.weight"):
        load_state_dict(tmp_path / "odd.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder without CLIP weights"):
        load_state_dict(tmp_path / "empty")


def test_langclip_loads_its_hf_export_as_the_run(tmp_path, trained_run, capsys):
    """`langclip.load` (so predict, similarity, encode, eval) takes an `export --format hf` folder: the
    run's embeddings, language and preprocessing."""
    import langclip
    from langclip.cli import main
    from langclip.runfolder import model_language

    assert main(["export", "--model", str(trained_run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    run, hf = langclip.load(trained_run, device="cpu"), langclip.load(tmp_path / "hf", device="cpu")
    texts = ["красный круг", "две синие звезды", "a photo of a cat"]
    assert torch.equal(run.tokenizer(texts), hf.tokenizer(texts))
    assert (run.encode_text(texts) - hf.encode_text(texts)).abs().max() <= 1e-5
    with torch.no_grad():
        assert (run.model.encode_image(IMG) - hf.model.encode_image(IMG)).abs().max() <= 1e-5
    assert hf.model.tower_sha256 == run.model.tower_sha256
    assert model_language(tmp_path / "hf") == model_language(trained_run) == "ru"
    # for texts alone (search by text, `encode --texts`): the text tower only, the same embeddings
    txt = langclip.load(tmp_path / "hf", device="cpu", image=False)
    assert type(txt.model.clip).__name__ == "TextCLIP" and not txt.model.image_ready
    assert (txt.encode_text(texts) - hf.encode_text(texts)).abs().max() <= 1e-6
    from PIL import Image
    img = Image.new("RGB", (90, 60), (30, 200, 30))
    assert torch.equal(hf.preprocess(img), run.preprocess(img))


def test_a_transformers_folder_without_langclips_record_loads_from_its_config(tmp_path, hf_clip):
    """A CLIPModel saved by transformers, with transformers' CLIPTokenizer (OpenAI's vocabulary and merges,
    as openai/clip-vit-base-patch32 ships them) and a CLIPImageProcessor beside it: the architecture from
    config.json, the preprocessing from preprocessor_config.json, transformers' embeddings, and
    open_clip's SimpleTokenizer's ids from transformers' tokenizer.json."""
    import gzip
    import shutil

    from open_clip.tokenizer import SimpleTokenizer, default_bpe
    from transformers import CLIPImageProcessor, CLIPTokenizer

    import langclip

    hf, paths = hf_clip
    d = tmp_path / "clip"
    shutil.copytree(paths["folder"], d)
    st = SimpleTokenizer()
    vocab = {{"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}.get(k, k): i for k, i in st.encoder.items()}
    merges = [tuple(m.split()) for m in gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]]
    CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, resample=2).save_pretrained(d)
    m = langclip.load(d, device="cpu")
    assert m.model.model_cfg["quick_gelu"] and m.model.context_length == 77
    from langclip.hf_layout import preprocess_from_transformers
    assert preprocess_from_transformers(d) == {"size": 64, "resize_mode": "shortest", "interpolation": "bilinear",
                                               "mean": [0.48145466, 0.4578275, 0.40821073],
                                               "std": [0.26862954, 0.26130258, 0.27577711]}
    with torch.no_grad():
        theirs = hf.get_image_features(pixel_values=IMG)
        theirs = getattr(theirs, "pooler_output", theirs)
        assert (m.model.encode_image(IMG, normalize=False) - theirs).abs().max() <= 1e-5
        t = hf.get_text_features(input_ids=_tokens())
        t = getattr(t, "pooler_output", t)
        assert (m.model.encode_text(_tokens(), normalize=False) - t).abs().max() <= 1e-5
    from PIL import Image
    img = Image.new("RGB", (120, 80), (200, 30, 30))
    px = CLIPImageProcessor.from_pretrained(str(d))(images=img, return_tensors="pt")["pixel_values"][0]
    assert px.shape == (3, 64, 64) and (px - m.preprocess(img)).abs().max() < 0.05   # PIL vs torchvision resize
    assert m.classify([img], ["кот", "собака"]).shape == (1, 2)
    texts = ["a photo of a cat", "Two RED stars!", "café déjà vu", "кот и собака", "emoji 🐈 cat", "  spaced\tout "]
    assert m.tokenizer.encode_batch(texts) == [st.encode(x) for x in texts]
    # the folder alone indexes a photo folder and answers English queries (its own image tower)
    from conftest import make_image
    from langclip.cli import main
    from langclip.search import Index

    (tmp_path / "photos").mkdir()
    for i in range(4):
        make_image(tmp_path / "photos" / f"{i}.jpg", i, size=(48, 36))
    assert main(["index", "build", "--data", str(tmp_path / "photos"), "--model", str(d), "--out", str(tmp_path / "idx"),
                 "--workers", "0"]) == 0
    assert Index(tmp_path / "idx").tower_sha256 == m.model.tower_sha256
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", str(d), "a red picture", "-k", "2"]) == 0


@pytest.mark.parametrize("fmt", ["hf", "open_clip"])
def test_an_export_indexes_pictures_without_its_clip_file(tmp_path, trained_run, tiny_clip, fmt, capsys):
    """`index build --model EXPORT` where the CLIP file and the architecture file the run recorded are
    gone (a downloaded export): the export's own image tower, the same index as from the run; a run
    folder still asks for its file."""
    import shutil

    import numpy as np

    from conftest import make_image
    from langclip.cli import main
    from langclip.search import Index

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = json.loads((run / "model.json").read_text())
    meta["image_tower"].update(weights="/gone/tiny-clip.pt", arch="/gone/tiny-quickgelu.json")
    (run / "model.json").write_text(json.dumps(meta))
    assert main(["export", "--model", str(run), "--format", fmt, "--weights", tiny_clip[1], "--out", str(tmp_path / "exp")]) == 0
    (tmp_path / "photos").mkdir()
    for i in range(6):
        make_image(tmp_path / "photos" / f"{i}.jpg", i, size=(48, 36))
    build = ["index", "build", "--data", str(tmp_path / "photos"), "--workers", "0"]
    assert main(build + ["--model", str(tmp_path / "exp"), "--out", str(tmp_path / "idx")]) == 0
    assert main(build + ["--model", str(trained_run), "--out", str(tmp_path / "ref")]) == 0
    a, b = Index(tmp_path / "idx"), Index(tmp_path / "ref")
    assert a.tower_sha256 == b.tower_sha256 and a.items["source"] == b.items["source"]
    assert np.abs(np.asarray(a.embeddings, np.float32) - np.asarray(b.embeddings, np.float32)).max() <= 1e-3
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", str(tmp_path / "exp"), "красный круг", "-k", "2"]) == 0
    assert capsys.readouterr().out.count("photos") == 2
    assert main(build + ["--model", str(run), "--out", str(tmp_path / "idx2")]) == 2
    assert "/gone/tiny-clip.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_openais_vit_b32_in_transformers_layout_is_open_clips_vit_b32_quickgelu(tmp_path):
    """At the real shape: transformers' default CLIPConfig is OpenAI's ViT-B/32 (what
    openai/clip-vit-base-patch32 holds; its config.json leaves hidden_act at the default, quick_gelu).
    Saved by transformers in half precision, as the Hub's file is, it loads as open_clip's
    ViT-B-32-quickgelu from the folder and embeds as transformers does; ViT-B-32 (GELU) is refused."""
    from transformers import CLIPConfig, CLIPModel

    from langclip.build import load_image_tower
    from langclip.model import LangCLIP, model_config
    from langclip.weights import WeightsError

    torch.manual_seed(0)
    hf = CLIPModel(CLIPConfig()).eval().half()
    hf.save_pretrained(tmp_path / "clip-vit-base-patch32")
    hf = hf.float()
    model = LangCLIP.empty(model_config("ViT-B-32-quickgelu"))
    rest = load_image_tower(model, tmp_path / "clip-vit-base-patch32", "ViT-B-32-quickgelu")
    model.clip.load_state_dict({k: v.float() for k, v in rest.items()}, strict=False)
    x, ids = torch.randn(2, 3, 224, 224), torch.zeros(2, 77, dtype=torch.long)
    ids[:, :4] = torch.tensor([SOT, 320, 1929, EOT])
    with torch.no_grad():
        a, b = model.encode_image(x, normalize=False), hf.get_image_features(pixel_values=x)
        c, d = model.encode_text(ids, normalize=False), hf.get_text_features(input_ids=ids)
    b, d = getattr(b, "pooler_output", b), getattr(d, "pooler_output", d)
    assert a.shape == (2, 512) and (a - b).abs().max() <= 1e-4 and (c - d).abs().max() <= 1e-4
    with pytest.raises(WeightsError, match="ViT-B-32-quickgelu"):
        load_image_tower(LangCLIP.empty(model_config("ViT-B-32")), tmp_path / "clip-vit-base-patch32", "ViT-B-32")


def test_an_export_exports_again_as_its_run_does(tmp_path, trained_run):
    """`export --model EXPORT --format onnx` (a downloaded model made into an Immich or ONNX folder), from a
    transformers and an open_clip export: the same ids and embeddings in onnxruntime as the run's own ONNX
    export, the same preprocessing file, language and image-tower record."""
    import numpy as np
    import onnxruntime as ort

    from langclip.cli import main

    assert main(["export", "--model", str(trained_run), "--format", "onnx", "--out", str(tmp_path / "ref")]) == 0
    for src in ("hf", "open_clip"):
        assert main(["export", "--model", str(trained_run), "--format", src, "--out", str(tmp_path / src)]) == 0
        assert main(["export", "--model", str(tmp_path / src), "--format", "onnx", "--out", str(tmp_path / f"again-{src}")]) == 0
    names = ("again-hf", "again-open_clip", "ref")
    conf = {n: json.loads((tmp_path / n / "onnx_config.json").read_text()) for n in names}
    ids = np.random.default_rng(0).integers(1, conf["ref"]["vocab_size"] - 2, (3, 24)).astype(np.int32)
    ids[:, -1] = conf["ref"]["vocab_size"] - 1
    pics = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    out = {}
    for n in names:
        for k in ("context_length", "vocab_size", "embed_dim", "textual", "visual"):
            assert conf[n][k] == conf["ref"][k], (n, k)
        assert conf[n]["langclip"]["image_tower"] == conf["ref"]["langclip"]["image_tower"]
        assert conf[n]["langclip"]["language"] == "ru"
        for f in ("tokenizer.json", "preprocess_cfg.json"):
            assert (tmp_path / n / f).read_text() == (tmp_path / "ref" / f).read_text(), (n, f)
        text = ort.InferenceSession(str(tmp_path / n / "textual.onnx"), providers=["CPUExecutionProvider"])
        visual = ort.InferenceSession(str(tmp_path / n / "visual.onnx"), providers=["CPUExecutionProvider"])
        out[n] = (text.run(["embedding"], {"text": ids})[0], visual.run(["embedding"], {"image": pics})[0])
    assert all(np.abs(a - b).max() <= 1e-5 for n in names[:2] for a, b in zip(out[n], out["ref"]))


def test_a_torchscript_archive_names_its_activation(tmp_path, tiny_arch):
    """OpenAI's files are TorchScript archives whose code declares their QuickGELU modules (as a traced
    open_clip model's declares QuickGELU or torch's GELU): loading one into the other activation's
    architecture is refused, naming the fix; the matching one loads."""
    import open_clip

    from langclip.build import load_image_tower
    from langclip.model import LangCLIP
    from langclip.weights import WeightsError, torchscript_activation

    for quick in (True, False):
        m = open_clip.CLIP(**dict(TINY_CFG, quick_gelu=quick)).eval()
        f = tmp_path / f"traced-{quick}.pt"
        torch.jit.trace(m, (IMG[:1], _tokens()[:1]), check_trace=False).save(str(f))
        assert torchscript_activation(f) == ("quick_gelu" if quick else "gelu")
        load_image_tower(LangCLIP.empty(dict(TINY_CFG, quick_gelu=quick)), f, "tiny")
        with pytest.raises(WeightsError, match="TorchScript modules give the image and text towers .*"
                           + ("ViT-B-32-quickgelu" if quick else r"GELU \(e.g. ViT-B-32\)")):
            load_image_tower(LangCLIP.empty(dict(TINY_CFG, quick_gelu=not quick)), f, "tiny")
