"""`--clip` may be left out: the architecture is read from the weights (shapes from the tensors, the
activation from what the files declare), and a training run takes the cache's. The references are
open_clip's own registry (each architecture built on the meta device must be named back as itself) and
the arguments the cache was built with."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_CFG


def test_every_plain_vit_in_open_clips_registry_is_named_back_from_its_tensors():
    """All of open_clip's plain CLIP ViTs (ViT-B-32 to ViT-bigG-14) and OpenAI's ResNets (RN50 to RN50x64),
    either activation: built with empty tensors, their shapes give their own name first — ViT-B-32 and
    ViT-B-32-quickgelu told apart by the activation alone. An image tower of neither kind (timm's) needs
    --clip."""
    import open_clip

    from langclip.clip_arch import registered_names, shape_config
    from langclip.weights import WeightsError

    seen = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        plain = (set(cfg) <= {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"} and "patch_size" in v
                 and "width" in v and not {"hf_model_name", "pool_type", "no_causal_mask", "act_kwargs",
                                           "norm_kwargs", "proj_bias", "ls_init_value"} & (set(v) | set(t)))
        if not plain and not name.startswith("RN"):
            continue
        with torch.device("meta"):
            sd = open_clip.CLIP(**cfg).state_dict()
        assert registered_names(shape_config(sd), bool(cfg.get("quick_gelu")))[:1] == [name], name
        seen.append(name)
    assert {"ViT-B-32", "ViT-B-32-quickgelu", "ViT-B-16", "ViT-L-14-336", "ViT-H-14", "ViT-g-14",
            "ViT-bigG-14", "RN50", "RN50-quickgelu", "RN101", "RN50x4", "RN50x16", "RN50x64"} <= set(seen), seen
    with torch.device("meta"):   # a timm image tower: neither a ViT nor a ResNet in OpenAI's naming
        sd = open_clip.CLIP(**open_clip.get_model_config("convnext_base")).state_dict()
    with pytest.raises(WeightsError, match="no ViT or ResNet image tower.*give its architecture with --clip"):
        shape_config(sd)
    # the same image tower under open_clip's custom text tower: no plain name stands for it (the folder's
    # own config must), though its image tower alone would fit ViT-B-32
    with torch.device("meta"):
        sd = open_clip.CustomTextCLIP(**open_clip.get_model_config("ViT-B-32")).state_dict()
    assert registered_names(shape_config(sd), False) == []


def test_files_that_do_not_say_enough_are_refused_with_the_fix(tmp_path, tiny_clip):
    """A plain state dict does not say its activation: --clip is asked for. A TorchScript archive says it,
    but a shape no registered architecture has, with no config beside it, needs a JSON config."""
    import open_clip

    from langclip.clip_arch import infer_arch
    from langclip.weights import WeightsError

    with pytest.raises(WeightsError, match="does not say which activation.*give --clip"):
        infer_arch(tiny_clip[1])
    m = open_clip.CLIP(**TINY_CFG).eval()
    img, ids = torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)
    torch.jit.trace(m, (img, ids), check_trace=False).save(str(tmp_path / "traced.pt"))
    with pytest.raises(WeightsError, match="no open_clip architecture has these shapes.*quick_gelu.*JSON"):
        infer_arch(tmp_path / "traced.pt")


def test_an_open_clip_folder_is_its_own_config_with_its_preprocessing(tmp_path, tiny_clip):
    """An open_clip folder (open_clip_model.safetensors + open_clip_config.json, as on the Hub) of a shape
    without a registered name: its JSON is the architecture, and reading it keeps the folder's own
    preprocessing (mean/std 0.5, as LAION's ViT-L-14 has) — which open_clip's config file holds beside
    model_cfg. Its declared activation is checked against a --clip given by hand."""
    from safetensors.torch import save_file

    from langclip.build import load_image_tower
    from langclip.clip_arch import infer_arch
    from langclip.model import LangCLIP, model_config
    from langclip.weights import WeightsError

    d = tmp_path / "oc"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_clip[0].state_dict().items()}, str(d / "open_clip_model.safetensors"))
    pp = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": pp}))
    arch = infer_arch(d)
    assert arch == str(d / "open_clip_config.json")
    cfg = model_config(arch)
    assert cfg["preprocess_cfg"] == pp and cfg["vision_cfg"] == TINY_CFG["vision_cfg"]
    load_image_tower(LangCLIP.empty(cfg), d, arch)
    with pytest.raises(WeightsError, match="open_clip_config.json gives quick_gelu=True.*uses gelu"):
        load_image_tower(LangCLIP.empty(dict(TINY_CFG, quick_gelu=False)), d, "tiny-gelu")


def test_a_resnet_clip_is_read_and_embeds_as_open_clip_does(tmp_path):
    """OpenAI's ResNet image tower (open_clip's ModifiedResNet) at a tiny shape: its tensors give the four
    stages' block counts and widths; with no registered name for them, an open_clip folder is its own
    config, and the student's image tower embeds as open_clip's model of that config."""
    import open_clip
    from safetensors.torch import save_file

    from langclip.build import load_image_tower
    from langclip.clip_arch import infer_arch, shape_config
    from langclip.model import LangCLIP, model_config

    cfg = dict(TINY_CFG, vision_cfg={"image_size": 64, "layers": [1, 2, 1, 1], "width": 8, "patch_size": None})
    torch.manual_seed(3)
    ref = open_clip.CLIP(**cfg).eval()
    sd = ref.state_dict()
    assert shape_config(sd)["vision_cfg"] == cfg["vision_cfg"] and shape_config(sd)["embed_dim"] == 32
    d = tmp_path / "rn"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "open_clip_model.safetensors"))
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    arch = infer_arch(d)
    assert arch == str(d / "open_clip_config.json")
    model = LangCLIP.empty(model_config(arch))
    load_image_tower(model, d, arch)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.encode_image(x, normalize=False) - ref.encode_image(x)).abs().max() <= 1e-5


def test_cache_build_without_clip_records_the_folders_arch_and_training_takes_the_caches(tmp_path, pair_data):
    """`cache build --weights FOLDER` without --clip (a transformers folder of an unregistered shape): the
    same embeddings as with `--clip FOLDER`, the arch recorded. A training config that leaves model.clip
    and model.weights out gets the cache's; with the cache's file gone, it names the file."""
    import numpy as np
    from transformers import CLIPModel

    from langclip.cli import main
    from langclip.config import ConfigError, ModelSection, TrainConfig
    from test_weights_hf import hf_config

    torch.manual_seed(5)
    folder = tmp_path / "hf"
    CLIPModel(hf_config()).eval().save_pretrained(folder)
    args = ["cache", "build", "--data", str(pair_data / "pairs.csv"), "--weights", str(folder), "--workers", "0"]
    assert main(args + ["--out", str(tmp_path / "c1")]) == 0
    assert main(args + ["--clip", str(folder), "--out", str(tmp_path / "c2")]) == 0
    man = json.loads((tmp_path / "c1" / "manifest.json").read_text())
    assert man["arch"] == str(folder)
    for f in ("emb/normalized.npy", "teacher/dense.npy"):
        a, b = np.load(tmp_path / "c1" / f), np.load(tmp_path / "c2" / f)
        assert a.shape[0] > 0 and np.array_equal(a, b), f
    (tmp_path / "tok").mkdir()
    cfg = TrainConfig(cache=str(tmp_path / "c1"), model=ModelSection(tokenizer=str(tmp_path / "tok")))
    cfg.validate()
    assert (cfg.model.clip, cfg.model.weights, cfg.model.pretrained) == (str(folder), man["weights"], "")
    shutil.move(folder, tmp_path / "moved")
    cfg = TrainConfig(cache=str(tmp_path / "c1"), model=ModelSection(tokenizer=str(tmp_path / "tok")))
    with pytest.raises(ConfigError, match="model.weights: not given.*is gone.*model.safetensors"):
        cfg.validate()


@pytest.mark.slow
def test_openais_vit_b32_folder_is_named_vit_b32_quickgelu_and_gelu_is_vit_b32(tmp_path):
    """At the real shape: transformers' default CLIPConfig is OpenAI's ViT-B/32; its folder is read as
    ViT-B-32-quickgelu (config.json's hidden_act), and the same tensors declared GELU as ViT-B-32. A
    preprocessor_config.json with other mean/std keeps the folder as the architecture (its preprocessing).
    The weights file alone loads (`langclip.load`) as the English original, embedding as transformers does."""
    from transformers import CLIPConfig, CLIPModel

    import langclip
    from langclip.clip_arch import infer_arch

    d = tmp_path / "clip-vit-base-patch32"
    hf = CLIPModel(CLIPConfig()).half()
    hf.save_pretrained(d)
    assert infer_arch(d) == "ViT-B-32-quickgelu"
    assert infer_arch(d / "model.safetensors") == "ViT-B-32-quickgelu"
    # a CLIP weights file is a model too: the English original, as transformers embeds with it
    lm = langclip.load(d / "model.safetensors", device="cpu")
    assert lm.meta["image_tower"]["arch"] == "ViT-B-32-quickgelu" and lm.tokenizer.meta["language"] == "en"
    ids = lm.tokenizer(["a photo of a cat", "two red stars"])
    x = torch.randn(2, 3, 224, 224)
    hf = hf.float().eval()
    with torch.no_grad():
        t, i = hf.get_text_features(input_ids=ids), hf.get_image_features(pixel_values=x)
        t, i = getattr(t, "pooler_output", t), getattr(i, "pooler_output", i)
        assert (lm.model.encode_text(ids, normalize=False) - t).abs().max() <= 1e-4
        assert (lm.model.encode_image(x, normalize=False) - i).abs().max() <= 1e-4
    cfg = json.loads((d / "config.json").read_text())
    for tower in ("text_config", "vision_config"):
        cfg[tower] = dict(cfg.get(tower) or {}, hidden_act="gelu")
    (d / "config.json").write_text(json.dumps(cfg))
    assert infer_arch(d) == "ViT-B-32"
    (d / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224}, "do_center_crop": True,
        "resample": 3, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    assert infer_arch(d) == str(d)


def test_an_hf_tower_export_indexes_without_the_files_its_run_recorded(tmp_path, tiny_arch, tiny_clip, tiny_bert,
                                                                       pair_data):
    """`index build --model EXPORT` for an open_clip export of an hf: text tower (M-CLIP's kind), with the
    CLIP file and the architecture file the run recorded both gone (a downloaded export): the export's own
    config and weights give the image tower, the same tower (digest) as the run's."""
    from langclip.build import build_student
    from langclip.cli import main
    from langclip.runfolder import save_model_files
    from langclip.tokenizer import HFTextTokenizer

    arch, clip = tmp_path / "arch.json", tmp_path / "clip.pt"
    shutil.copy(tiny_arch, arch)
    shutil.copy(tiny_clip[1], clip)
    tok = HFTextTokenizer.load(tiny_bert, context_length=24)
    model, ref, info = build_student(str(arch), str(clip), tok, init=f"hf:{tiny_bert}", context_length=24)
    save_model_files(tmp_path / "run", model, tok, ref, {"init": info})
    assert main(["export", "--model", str(tmp_path / "run"), "--format", "open_clip", "--out", str(tmp_path / "exp")]) == 0
    arch.unlink()
    clip.unlink()
    assert main(["index", "build", "--model", str(tmp_path / "exp"), "--images", str(pair_data / "img"),
                 "--out", str(tmp_path / "idx"), "--workers", "0"]) == 0
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert man["tower_sha256"] == ref.tower_sha256 and man["count"] == 16, man


def test_clips_own_file_indexes_and_answers_as_the_english_model(tmp_path, pair_data, capsys, monkeypatch):
    """`index build --model FILE` and `search --model FILE` with CLIP's own weights file (here a transformers
    model.safetensors of a tiny shape, its arch read from the config.json beside it): the index records the
    file's tower, and `langclip.load(FILE)` is English with that tower. Each reads the file's tensors once
    (for the architecture and the towers alike)."""
    from transformers import CLIPModel

    import langclip
    import langclip.build
    import langclip.clip_arch
    import langclip.weights
    from langclip.cli import main
    from test_weights_hf import hf_config

    torch.manual_seed(2)
    CLIPModel(hf_config()).save_pretrained(tmp_path / "hf")
    f = tmp_path / "hf" / "model.safetensors"
    reads, read = [], langclip.weights.load_state_dict
    for mod in (langclip.weights, langclip.build, langclip.clip_arch):
        monkeypatch.setattr(mod, "load_state_dict", lambda p: reads.append(Path(p)) or read(p))
    assert main(["index", "build", "--images", str(pair_data / "img"), "--model", str(f), "--out", str(tmp_path / "idx"),
                 "--workers", "0"]) == 0
    assert reads == [f]
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    lm = langclip.load(f, device="cpu")
    assert lm.tokenizer.meta["language"] == "en" and man["count"] == 16 and reads == [f, f]
    assert man["tower_sha256"] == lm.meta["image_tower"]["tower_sha256"] == lm.model.tower_sha256 != ""
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", str(f), "a picture", "-k", "3", "--json"]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]) == 3 and reads == [f, f, f]


def test_train_without_a_config_takes_the_caches_clip(tmp_path, world_cache, tiny_arch, tiny_clip, ru_tokenizer):
    """`langclip train cache=… model.tokenizer=… out=…` with no YAML and no model.clip/weights: the run is
    built on the cache's image tower (its model.json records the cache's arch and digest)."""
    import yaml

    from langclip.cli import main

    ru_tokenizer.save(tmp_path / "tok")
    assert main(["train", f"cache={world_cache}", f"model.tokenizer={tmp_path / 'tok'}", f"out={tmp_path / 'run'}",
                 "epochs=1", "batch_size=64", "model.context_length=16", "tensorboard=false"]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    man = json.loads((world_cache / "manifest.json").read_text())
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert cfg["model"]["clip"] == tiny_arch and cfg["model"]["weights"] == man["weights"]
    assert meta["image_tower"]["tower_sha256"] == man["tower_sha256"]


def test_a_relative_arch_file_is_recorded_absolute_and_matches_either_way(tmp_path, tiny_arch, tiny_clip, pair_data,
                                                                          monkeypatch):
    """`cache build --clip arch.json` (relative): the manifest records the absolute path, so a run started from
    another folder finds it; a run given the same file relatively still matches the cache."""
    from langclip.cache import build_cache
    from langclip.cache.store import check_cache_matches
    from langclip.config import CacheConfig, ModelSection, TrainConfig
    from langclip.model import model_config

    shutil.copy(tiny_arch, tmp_path / "arch.json")
    monkeypatch.chdir(tmp_path)
    build_cache(CacheConfig(data=[str(pair_data / "pairs.csv")], clip="arch.json", weights=tiny_clip[1],
                            out=str(tmp_path / "c"), workers=0), progress=False)
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert man["arch"] == str((tmp_path / "arch.json").resolve())
    check_cache_matches(man, {"arch": "arch.json", "tower_sha256": man["tower_sha256"]})
    with pytest.raises(ValueError, match="built with image tower"):
        check_cache_matches(man, {"arch": tiny_arch, "tower_sha256": man["tower_sha256"]})   # another file
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (tmp_path / "tok").mkdir()
    cfg = TrainConfig(cache=str(tmp_path / "c"), model=ModelSection(tokenizer=str(tmp_path / "tok")))
    cfg.validate()
    assert cfg.model.clip == man["arch"] and model_config(cfg.model.clip)["embed_dim"] == TINY_CFG["embed_dim"]
    # given relatively to the run itself (as the demo does), the run records it absolute too
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(cache=str(tmp_path / "c"), model=ModelSection(clip="arch.json", tokenizer=str(tmp_path / "tok")))
    cfg.validate()
    assert cfg.model.clip == man["arch"]
