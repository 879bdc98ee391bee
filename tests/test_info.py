"""`langclip info`: each kind of folder is recognised and described from its records, and several are
compared by image tower. The references are the records the stages wrote (the cache's manifest, the run's
model.json) and a cache built with other CLIP weights."""
from __future__ import annotations

import json

import torch

from conftest import TINY_CFG


def _info(capsys, *args) -> tuple[int, str, str]:
    from langclip.cli import main

    capsys.readouterr()
    rc = main(["info", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_run_its_cache_tokenizer_exports_and_index_are_one_tower(tmp_path, trained_run, world_cache, capsys):
    from langclip.cli import main

    assert main(["export", "--model", str(trained_run), "--format", "open_clip", "--out", str(tmp_path / "oc")]) == 0
    assert main(["export", "--model", str(trained_run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert main(["index", "build", "--data", str(world_cache), "--out", str(tmp_path / "idx")]) == 0
    paths = [trained_run, world_cache, trained_run / "tokenizer", tmp_path / "oc", tmp_path / "onnx", tmp_path / "idx"]
    rc, out, _ = _info(capsys, *paths, "--json")
    assert rc == 0
    doc = json.loads(out)
    kinds = [d["kind"] for d in doc["items"]]
    assert kinds == ["run", "cache", "tokenizer", "export-open_clip", "export-onnx", "index"]
    man = json.loads((world_cache / "manifest.json").read_text())
    meta = json.loads((trained_run / "model.json").read_text())
    assert doc["same_image_tower"] is True
    for d in doc["items"]:
        if d["kind"] != "tokenizer":
            assert d["tower"]["tower_sha256"] == man["tower_sha256"] == meta["image_tower"]["tower_sha256"], d
    run, cache, tok = doc["items"][:3]
    assert run["language"] == tok["language"] == "ru" and run["steps"] == meta["steps"]
    assert run["cache"]["present"] and run["cache"]["tower_sha256"] == man["tower_sha256"]
    assert cache["num_images_ok"] == man["num_images_ok"] and cache["num_captions"] == man["num_captions"]
    assert doc["items"][5]["count"] == man["num_images_ok"]
    rc, out, _ = _info(capsys, *paths)
    assert rc == 0 and f"image tower: all 5 share {man['tower_sha256'][:12]}" in out
    assert f"{trained_run}: langclip run (ru)" in out and "(present, same image tower)" in out


def test_another_tower_is_named_and_weights_are_read_as_clip_would(tmp_path, trained_run, pair_data, capsys):
    """A cache built with other CLIP weights is another tower (the line says so); a transformers folder
    is described by the arch `--clip` would read and its declared activation; unknown paths are errors."""
    import open_clip
    from transformers import CLIPModel

    from langclip.cli import main
    from test_weights_hf import hf_config

    torch.manual_seed(11)
    torch.save(open_clip.CLIP(**TINY_CFG).state_dict(), tmp_path / "other.pt")
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"model_cfg": TINY_CFG}))
    assert main(["cache", "build", "--data", str(pair_data / "pairs.csv"), "--clip", str(arch), "--weights",
                 str(tmp_path / "other.pt"), "--workers", "0", "--out", str(tmp_path / "c")]) == 0
    rc, out, _ = _info(capsys, trained_run, tmp_path / "c")
    assert rc == 0 and "image tower: DIFFERENT" in out
    rc, out, _ = _info(capsys, trained_run, tmp_path / "c", "--json")
    assert json.loads(out)["same_image_tower"] is False
    CLIPModel(hf_config()).save_pretrained(tmp_path / "hf")
    rc, out, _ = _info(capsys, tmp_path / "hf", "--json")
    d = json.loads(out)["items"][0]
    assert (d["kind"], d["arch"], d["activation"]) == ("transformers", str(tmp_path / "hf"), "quick_gelu")
    assert len(d["tower"]["tower_sha256"]) == 64
    rc, out, _ = _info(capsys, tmp_path / "other.pt")
    assert rc == 0 and "not read (" in out and "give --clip" in out and "activation   not recorded" in out
    # a path that is not recognised is named, the others are still described, and the exit code says so
    ck = json.loads((trained_run / "checkpoints" / "latest.json").read_text())
    rc, out, _ = _info(capsys, pair_data / "img", trained_run / "checkpoints" / ck["file"],
                       trained_run / "text_tower.safetensors", trained_run)
    assert rc == 2
    assert f"{pair_data / 'img'}: not recognised — not a langclip tokenizer, cache, run, export or index, nor CLIP weights" in out
    assert f"langclip training checkpoint\n  resumes      {trained_run} at step {ck['step']}" in out
    assert "text_tower.safetensors: not recognised — CLIP-like weights without an image tower" in out
    assert f"{trained_run}: langclip run (ru)" in out
