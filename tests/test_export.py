"""`langclip export --format hf`: stock transformers loads the folder (CLIPModel, AutoTokenizer,
AutoProcessor, the zero-shot pipeline) and computes langclip's embeddings; every export carries a
model card whose usage snippets run."""
import json
import re

import pytest
import torch
import yaml

from langclip.cli import main

TEXTS = ["два красных круга", "синяя звезда слева", "a photo of a cat", "кот and a dog, 3 stars!", "ёлка"]


def test_transformers_loads_the_export_with_langclips_embeddings(tmp_path, trained_run):
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer, CLIPModel, pipeline

    import langclip
    from langclip.tokenizer import clean

    assert main(["export", "--model", str(trained_run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    m = langclip.load(trained_run, device="cpu")
    hf = CLIPModel.from_pretrained(str(tmp_path / "hf")).eval()
    cfg = hf.config.text_config
    V = m.tokenizer.vocab_size
    assert (cfg.vocab_size, cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id, cfg.hidden_act) == (V, V - 1, V - 2, V - 1, "quick_gelu")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    cleaned = [clean(t) for t in TEXTS]
    assert tok(cleaned)["input_ids"] == [[m.tokenizer.sot_token_id] + ids + [m.tokenizer.eot_token_id]
                                         for ids in m.tokenizer.encode_batch(cleaned)]
    batch = tok(cleaned, padding="max_length", max_length=m.model.context_length, return_tensors="pt")
    with torch.no_grad():
        theirs = hf.get_text_features(**batch)
        theirs = getattr(theirs, "pooler_output", theirs)
        ours = m.model.encode_text(m.tokenizer(cleaned), normalize=False)
        assert (theirs - ours).abs().max() <= 1e-4
        x = torch.randn(3, 3, 64, 64)
        their_img = hf.get_image_features(pixel_values=x)
        their_img = getattr(their_img, "pooler_output", their_img)
        assert (their_img - m.model.encode_image(x, normalize=False)).abs().max() <= 1e-4
    proc = AutoProcessor.from_pretrained(str(tmp_path / "hf"))
    img = Image.new("RGB", (120, 80), (200, 30, 30))
    px = proc(images=img, return_tensors="pt")["pixel_values"][0]
    assert px.shape == (3, 64, 64) and (px - m.preprocess(img)).abs().max() < 0.05   # PIL vs torchvision resize
    clf = pipeline("zero-shot-image-classification", model=str(tmp_path / "hf"))
    res = clf(img, candidate_labels=["кот", "собака"], hypothesis_template="фото {}")
    assert sorted(r["label"] for r in res) == ["кот", "собака"] and abs(sum(r["score"] for r in res) - 1) < 1e-4


def test_an_older_runs_export_lower_cases_greek_as_clip_does(tmp_path, trained_run):
    """A run whose tokenizer.json predates the final-sigma rule (Lowercase alone: "ΟΔΟΣ" -> "οδοσ")
    exports today's normaliser: transformers' tokenizer gives langclip's ids on typed Greek capitals."""
    import shutil

    from transformers import AutoTokenizer

    import langclip

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    f = run / "tokenizer" / "tokenizer.json"
    doc = json.loads(f.read_text(encoding="utf-8"))
    steps = doc["normalizer"]["normalizers"]
    assert any("03A3" in json.dumps(n) for n in steps)            # today's rule is there ...
    doc["normalizer"]["normalizers"] = [n for n in steps if "03A3" not in json.dumps(n)]   # ... an old run's is not
    f.write_text(json.dumps(doc), encoding="utf-8")
    assert main(["export", "--model", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    m = langclip.load(run, device="cpu")
    queries = ["ΟΔΟΣ ΣΤΗ ΘΑΛΑΣΣΑ", "Ένας Σκύλος", "ΚΑΦΕΣ."]
    assert tok(queries)["input_ids"] == [[m.tokenizer.sot_token_id] + ids + [m.tokenizer.eot_token_id]
                                         for ids in m.tokenizer.encode_batch(queries)]


def test_hf_text_towers_are_refused_for_the_transformers_format():
    from langclip.export_hf import check_exportable

    with pytest.raises(ValueError, match="hf:<encoder> text tower .* --format open_clip"):
        check_exportable({"text_cfg": {"hf_model_name": "bert"}, "vision_cfg": {}})
    with pytest.raises(ValueError, match="text_cfg.ls_init_value"):
        check_exportable({"text_cfg": {"ls_init_value": 0.1}, "vision_cfg": {"layers": 2}})


@pytest.mark.parametrize("fmt", ["hf", "open_clip", "onnx", "immich"])
def test_every_export_has_a_model_card_whose_snippets_run(tmp_path, trained_run, fmt, capsys):
    out = tmp_path / fmt
    assert main(["eval-retrieval", "--model", str(trained_run), "--data", str(json.loads(
        (trained_run / "model.json").read_text())["cache"]), "--device", "cpu", "--out", str(trained_run / "eval")]) == 0
    assert main(["export", "--model", str(trained_run), "--format", fmt, "--out", str(out)]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "English text keeps CLIP's ids." in card
    front = yaml.safe_load(card.split("---")[1])
    assert front["pipeline_tag"] == "zero-shot-image-classification" and "ru" in front["language"]
    assert front["library_name"] == {"hf": "transformers", "open_clip": "open_clip"}.get(fmt, "onnxruntime")
    assert front["license"]
    assert "## Results" in card and "Held-out recall at the end of training" in card and "eval/retrieval.md" in card
    assert "## Limitations" in card and "tiny-quickgelu" in card and ".json" not in front["tags"][-1]
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(snippets) == (2 if fmt in ("open_clip", "hf") else 1)   # open_clip or transformers + langclip; onnxruntime
    assert ("## Use in Immich" in card) == (fmt == "immich")
    from langclip.runfolder import model_language

    assert model_language(trained_run) == "ru" and model_language(out) == {"open_clip": "ru", "onnx": "ru", "hf": "ru"}.get(fmt), fmt
    for code in snippets:
        exec(compile(code, f"README.md ({fmt})", "exec"), {})
    assert capsys.readouterr().out.count("\n") >= len(snippets)


def test_a_card_in_a_language_without_shipped_labels_takes_the_runs_own_evaluation(tmp_path, trained_run, capsys):
    """langclip ships example labels for ru and uk only. For another language the card takes the first
    three class names of an evaluation saved with the run (`eval --classnames --templates --out RUN/eval`,
    as a user of that language runs it) and a prompt of theirs as the template; without one, English
    labels. The snippets run as written, in both cases."""
    import shutil

    from conftest import make_image
    from langclip.model_card import example_labels

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.rmtree(run / "eval", ignore_errors=True)
    meta_file = run / "tokenizer" / "langclip_tokenizer.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    # a German tokenizer whose ASCII words may merge: the card says which English words keep their ids
    meta_file.write_text(json.dumps(dict(meta, language="de", english_words=100_000), ensure_ascii=False), encoding="utf-8")
    assert example_labels(run, "de") == ('["cat", "dog", "horse"]', "a photo of a {}")   # nothing saved yet
    for i, c in enumerate(["a_cat", "b_dog", "c_horse", "d_cow"]):
        (tmp_path / "photos" / c).mkdir(parents=True)
        make_image(tmp_path / "photos" / c / "a.png", i)
    (tmp_path / "de.json").write_text(json.dumps(['ein Foto von "{}"', "ein Foto von {}"]), encoding="utf-8")
    assert main(["eval", "--model", str(run), "--dataset", f"imagefolder:{tmp_path / 'photos'}", "--device", "cpu",
                 "--classnames", "Katze,Hund,Pferd,Kuh", "--templates", str(tmp_path / "de.json"),
                 "--out", str(run / "eval")]) == 0
    # the first prompt has quotes (it would break the snippet's string): the second is the template
    assert example_labels(run, "de") == ('["Katze", "Hund", "Pferd"]', "ein Foto von {}")
    assert main(["export", "--model", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert "de" in yaml.safe_load(card.split("---")[1])["language"]
    assert "the 100,000 most frequent English words (wordfreq) keep CLIP's ids" in card
    assert "English text keeps CLIP's ids" not in card
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert snippets and all('["Katze", "Hund", "Pferd"]' in c and '"ein Foto von {}"' in c for c in snippets)
    for code in snippets:
        exec(compile(code, "README.md (de)", "exec"), {})
    assert capsys.readouterr().out.count("\n") >= len(snippets)


def test_a_ukrainian_models_card_shows_ukrainian_labels_that_run(tmp_path, trained_run, capsys):
    """The model card's snippets use labels in the model's language (here a run whose tokenizer says
    Ukrainian), and langclip's snippet inflects them with lang="uk"; they run as written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta_file = run / "tokenizer" / "langclip_tokenizer.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta_file.write_text(json.dumps(dict(meta, language="uk"), ensure_ascii=False), encoding="utf-8")
    assert main(["export", "--model", str(run), "--format", "open_clip", "--out", str(tmp_path / "oc")]) == 0
    card = (tmp_path / "oc" / "README.md").read_text(encoding="utf-8")
    assert "uk" in yaml.safe_load(card.split("---")[1])["language"]
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert all('["кіт", "собака", "кінь"]' in c for c in snippets) and 'lang="uk"' in snippets[-1]
    for code in snippets:
        exec(compile(code, "README.md (uk)", "exec"), {})
    assert capsys.readouterr().out.count("\n") >= len(snippets)


@pytest.mark.parametrize("fmt", ["open_clip", "hf"])
def test_retrieval_on_a_cache_checks_an_exports_own_image_tower(tmp_path, trained_run, capsys, fmt):
    """An export holds both towers: eval-retrieval on a cache compares the export's loaded image tower
    with the one the cache was built with (its digest), not only what the export records. The
    transformers folder is loaded by langclip too (its tensors renamed back, hf_layout)."""
    from safetensors.torch import load_file, save_file

    cache = json.loads((trained_run / "model.json").read_text())["cache"]
    out = tmp_path / fmt
    assert main(["export", "--model", str(trained_run), "--format", fmt, "--out", str(out)]) == 0
    args = ["eval-retrieval", "--data", cache, "--split", "all", "--device", "cpu"]
    assert main(args + ["--model", str(trained_run)]) == 0
    from_run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args + ["--model", str(out)]) == 0
    from_export = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: v for k, v in from_export.items() if k != "data"} == {k: v for k, v in from_run.items() if k != "data"}
    f = out / ("open_clip_model.safetensors" if fmt == "open_clip" else "model.safetensors")
    sd = load_file(str(f))
    k = next(k for k in sd if k.startswith(("visual.", "vision_model.")) and sd[k].is_floating_point() and sd[k].dim() == 2)
    sd[k] = sd[k] + 0.01                 # another image tower under the same record
    save_file(sd, str(f))
    assert main(args + ["--model", str(out)]) == 2
    assert "was built with image tower" in capsys.readouterr().err


HUB_SCRIPT = r'''
import json, re, sys
import open_clip, torch
from transformers import AutoTokenizer, CLIPModel

repo, texts, cards = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model, _, preprocess = open_clip.create_model_and_transforms("hf-hub:" + repo + "-oc")
tok = open_clip.get_tokenizer("hf-hub:" + repo + "-oc")
hf = CLIPModel.from_pretrained(repo + "-hf")
hf_tok = AutoTokenizer.from_pretrained(repo + "-hf")
with torch.no_grad():
    oc = model.encode_text(tok(texts), normalize=True)
    t = hf.get_text_features(**hf_tok(texts, padding=True, return_tensors="pt"))
    t = t if torch.is_tensor(t) else t.pooler_output
    hfe = torch.nn.functional.normalize(t, dim=-1)
print(json.dumps({"open_clip": oc.tolist(), "hf": hfe.tolist(), "tokenizer": type(tok).__name__}))
for card in cards:   # the model cards' snippets, as written for the Hub
    for code in re.findall(r"```python\n(.*?)```", open(card, encoding="utf-8").read(), re.S):
        exec(compile(code, card, "exec"), {})
from langclip.cli import main   # langclip's commands take the Hub's name too
assert main(["encode", "--model", "hf-hub:" + repo + "-oc", "--texts", *texts, "--out", "encoded.npy"]) == 0
assert main(["encode", "--model", "hf-hub:someone/absent", "--texts", "x", "--out", "x.npy"]) == 2
'''


def test_an_export_for_the_hub_loads_from_it(tmp_path, trained_run):
    """Shared on the Hugging Face Hub, an open_clip export is loaded with `hf-hub:owner/name`, and open_clip then
    fetches the tokenizer by the name the config gives: it was "langclip" (any name worked for local-dir:), a
    repository that does not exist, so the model loaded and its tokenizer did not. `--hub-id owner/name` names the
    repository the folder goes to. Checked in a fresh process on the folders laid out as the Hub's download cache,
    offline: open_clip (model and tokenizer), transformers and langclip (`--model hf-hub:owner/name`) give langclip's
    embeddings, and the model cards' snippets, written for the Hub, run."""
    import shutil
    import subprocess
    import sys

    import langclip

    hub = tmp_path / "hub"
    for fmt, suffix in (("open_clip", "oc"), ("hf", "hf")):
        out = tmp_path / fmt
        assert main(["export", "--model", str(trained_run), "--format", fmt, "--out", str(out),
                     "--hub-id", f"someone/ru-clip-{suffix}"]) == 0
        repo = hub / f"models--someone--ru-clip-{suffix}"   # huggingface_hub's cache: refs/main -> snapshots/<rev>/
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0" * 40)
        shutil.copytree(out, repo / "snapshots" / ("0" * 40))
        if fmt == "open_clip":   # transformers asks for config.json, which the Hub answers 404; the cache keeps that
            (repo / ".no_exist" / ("0" * 40)).mkdir(parents=True)
            (repo / ".no_exist" / ("0" * 40) / "config.json").touch()
    assert main(["export", "--model", str(trained_run), "--format", "onnx", "--out", str(tmp_path / "x"),
                 "--hub-id", "someone/x"]) == 2
    texts = ["две красные звезды", "a photo of a cat", "синий квадрат"]
    env = {**__import__("os").environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", HUB_SCRIPT, "someone/ru-clip", json.dumps(texts),
                        json.dumps([str(tmp_path / f / "README.md") for f in ("open_clip", "hf")])],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.splitlines()[0])
    want = langclip.load(trained_run, device="cpu").encode_text(texts)
    assert got["tokenizer"] == "HFTokenizer"
    for key in ("open_clip", "hf"):
        assert torch.allclose(torch.tensor(got[key]), want, atol=1e-4), key
    import numpy as np

    assert torch.allclose(torch.from_numpy(np.load(tmp_path / "encoded.npy")), want, atol=1e-5)
    assert "could not be fetched from the Hugging Face Hub" in r.stderr and "hf download someone/absent" in r.stderr
