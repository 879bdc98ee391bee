"""The model card every export carries: README.md with Hugging Face Hub front matter, what the model
is, the results the run has, limitations, and usage snippets (run by the tests) for transformers,
open_clip and langclip."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from .coverage import COUNTS_FILE, load_counts, summary, summary_text
from .folders import last_metrics

def _results(run: Path) -> list[str]:
    """The run's own figures: zero-shot accuracy and held-out recall at the last validation (the exported
    weights are the final ones), and any evaluation saved under the run folder (`langclip eval ... --out <run>/eval`,
    `eval-retrieval ... --out <run>/eval`)."""
    lines = []
    last, zs = last_metrics(run)
    if zs:   # measured after each epoch (config `zeroshot:`), the last epoch's: the exported weights'
        names = sorted(k[9:-5] for k in zs if k.startswith("zeroshot/") and k.endswith("/acc1"))
        cap = (_run_config(run).get("zeroshot") or {}).get("max_images") or 0
        lines += [f"Zero-shot classification at the end of training (step {zs.get('step')}"
                  + (f", {cap:,} test pictures of each" if cap else "") + "; as `langclip eval` measures it):", "",
                  "| dataset | acc@1 | acc@5 | mean per-class recall |", "|---|---|---|---|"]
        lines += [f"| {n} | {zs[f'zeroshot/{n}/acc1']:.3f} | {zs[f'zeroshot/{n}/acc5']:.3f} | "
                  f"{zs[f'zeroshot/{n}/mean_per_class_recall']:.3f} |" for n in names] + [""]
    if last:
        keys = [k for k in last if k.startswith("val/") and "@" in k]
        lines += ["Held-out recall at the end of training (images the run never trained on, step "
                  f"{last.get('step')}):", "", "| " + " | ".join(k[4:] for k in keys) + " |",
                  "|" + "---|" * len(keys), "| " + " | ".join(f"{last[k]:.3f}" for k in keys) + " |", ""]
    for f in sorted(run.glob("eval*/results.md")) + sorted(run.glob("eval*/retrieval.md")):
        lines += [f"From `{f.relative_to(run)}`:", "", f.read_text(encoding="utf-8").strip(), ""]
    return lines or ["No evaluation was saved with this run: run `langclip eval --model RUN --out RUN/eval` "
                     "before exporting to have it here.", ""]


def _run_config(run: Path) -> dict:
    try:
        return yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


EXAMPLE_LABELS = {"ru": ('["кот", "собака", "лошадь"]', "фото {}"), "uk": ('["кіт", "собака", "кінь"]', "фото {}")}


def _english_ids(tm: dict) -> str:
    """What the tokenizer keeps of CLIP's English ids (its metadata's `english_words`)."""
    n = tm.get("english_words")
    if n is None:
        return "English text keeps CLIP's ids."
    return (f"the {n:,} most frequent English words (wordfreq) keep CLIP's ids; rarer English words may be "
            "cut into other pieces (`english_words`).")


def example_labels(run: Path, lang: str) -> tuple[str, str]:
    """The card's example labels (a JSON list) and hypothesis template: langclip's own for a language it
    ships them for; else the first three class names of an evaluation saved with the run (`langclip eval
    ... --classnames ... --out RUN/eval` keeps them as clip_benchmark_classnames.json), with the first
    prompt that writes the name as given as the template ("{}" if every prompt inflects it); else
    English ones (English text keeps CLIP's ids)."""
    if lang in EXAMPLE_LABELS:
        return EXAMPLE_LABELS[lang]
    for f in sorted(run.glob("eval*/clip_benchmark_classnames.json")):
        try:
            names = json.loads(f.read_text(encoding="utf-8"))
            prompts = json.loads(f.with_name("clip_benchmark_templates.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for ds, ns in names.items() if isinstance(names, dict) else ():
            ns = [n for n in ns if isinstance(n, str) and n.strip()] if isinstance(ns, list) else []
            if len(ns) < 3:
                continue
            first = (prompts.get(ds) or {}).get(ns[0], []) if isinstance(prompts, dict) else []
            template = next((p.replace(ns[0], "{}", 1) for p in first if isinstance(p, str) and ns[0] in p
                             and not any(ch in p for ch in '{}"\\')), "{}")   # it goes into code as "..."
            return json.dumps(ns[:3], ensure_ascii=False), template
    return '["cat", "dog", "horse"]', "a photo of a {}"


def _usage(fmt: str, out: Path, lang: str, run: Path, hf: bool = False, mclip: str | None = None,
           hub_id: str | None = None) -> list[str]:
    labels, template = example_labels(run, lang)
    folder = json.dumps(str(out.resolve()))
    where = json.dumps(hub_id) if hub_id else folder   # transformers: the repository's name, or the folder
    blocks = [("upload (once)", f"hf upload {hub_id} {json.dumps(str(out.resolve()))} .", "bash")] if hub_id else []
    if fmt in ("onnx", "immich"):
        return _render([_onnx_usage(fmt, folder, labels, template, hf, mclip)])
    if fmt == "hf":
        blocks.append(("transformers (no custom code)", f'''from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, CLIPModel, pipeline

model = CLIPModel.from_pretrained({where})
tokenizer = AutoTokenizer.from_pretrained({where})
processor = AutoProcessor.from_pretrained({where})
texts = tokenizer({labels}, padding=True, return_tensors="pt")
text_features = model.get_text_features(**texts)
image = Image.new("RGB", (320, 240), "orange")
image_features = model.get_image_features(**processor(images=image, return_tensors="pt"))
classify = pipeline("zero-shot-image-classification", model={where})
print(classify(image, candidate_labels={labels}, hypothesis_template="{template}"))'''))
    else:
        name = json.dumps(f"hf-hub:{hub_id}") if hub_id else '"local-dir:" + ' + folder
        blocks.append(("open_clip (stock)", f'''import open_clip
import torch
from PIL import Image

model, _, preprocess = open_clip.create_model_and_transforms({name})
tokenizer = open_clip.get_tokenizer({name})
image = preprocess(Image.new("RGB", (320, 240), "orange")).unsqueeze(0)
with torch.no_grad():
    probs = (100 * model.encode_image(image, normalize=True) @ model.encode_text(tokenizer({labels}), normalize=True).T).softmax(-1)
print(probs)'''))
    fetch = (f"\nm = langclip.load(\"hf-hub:{hub_id}\")   # and in commands: --model hf-hub:{hub_id}" if hub_id
             else f"\nm = langclip.load({folder})")
    blocks.append(("langclip", f'''import langclip
from PIL import Image
{fetch}
print(m.classify([Image.new("RGB", (320, 240), "orange")], {labels}{f', lang="{lang}"' if lang in EXAMPLE_LABELS else f', ["{template}"]'}))'''))
    return _render(blocks)


def _onnx_usage(fmt: str, folder: str, labels: str, template: str, hf: bool = False,
                mclip: str | None = None) -> tuple[str, str]:
    """onnxruntime + tokenizers + numpy + PIL, no torch: the ids and embeddings langclip computes. mclip:
    the text graph takes input_ids + attention_mask (an Immich M-CLIP name), fed as Immich feeds it."""
    text_dir, image_dir = ('"/textual"', '"/visual"') if fmt == "immich" else ('""', '""')
    graph = ('"/textual/model.onnx"', '"/visual/model.onnx"') if fmt == "immich" else ('"/textual.onnx"', '"/visual.onnx"')
    L = ('L = json.load(open(folder + "/config.json"))["text_cfg"]["context_length"]' if fmt == "immich" else
         'conf = json.load(open(folder + "/onnx_config.json"))\nL = conf["context_length"]\n'
         'dynamic = conf["textual"]["shape"][1] == "sequence"   # then pad to the batch\'s longest text only')
    title = "onnxruntime, as Immich's machine-learning service calls it (no torch)" if fmt == "immich" else \
        "onnxruntime (no torch)"
    pad_len = "length=L, " if fmt == "immich" else '**({} if dynamic else {"length": L}), '
    tok_note = "the encoder's own tokenizer" if hf else "lower-cases and normalises itself"
    if mclip:
        tokenize = '''def tokenize(texts):   # what Immich feeds its M-CLIP models
    enc = tok.encode_batch([" ".join(t.split()) for t in texts])
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int32),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int32)}'''
        feed = "tokenize(texts)"
    else:
        tokenize = '''def tokenize(texts):
    return np.array([e.ids for e in tok.encode_batch([" ".join(t.split()) for t in texts])], dtype=np.int32)'''
        feed = '{"text": tokenize(texts)}'
    return (title, f'''import json

import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer

folder = {folder}
{L}
pad = json.load(open(folder + {text_dir} + "/tokenizer_config.json"))["pad_token"]
tok = Tokenizer.from_file(folder + {text_dir} + "/tokenizer.json")   # {tok_note}
tok.enable_padding({pad_len}pad_token=pad, pad_id=tok.token_to_id(pad))
tok.enable_truncation(max_length=L)


{tokenize}


pp = json.load(open(folder + {image_dir} + "/preprocess_cfg.json"))
S = pp["size"][0] if isinstance(pp["size"], list) else pp["size"]


def preprocess(image):   # open_clip's eval transform: shortest side to S (bicubic), centre crop, normalise
    image = image.convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    size = (S, int(S * long / short)) if w <= h else (int(S * long / short), S)
    image = image.resize(size, Image.BICUBIC)
    left, top = int(round((size[0] - S) / 2.0)), int(round((size[1] - S) / 2.0))
    x = np.asarray(image.crop((left, top, left + S, top + S)), dtype=np.float32) / 255
    return ((x - np.array(pp["mean"], np.float32)) / np.array(pp["std"], np.float32)).transpose(2, 0, 1)[None]


textual = ort.InferenceSession(folder + {graph[0]}, providers=["CPUExecutionProvider"])
visual = ort.InferenceSession(folder + {graph[1]}, providers=["CPUExecutionProvider"])
labels = {labels}
texts = ["{template}".format(c) for c in labels]
text = textual.run(["embedding"], {feed})[0]
image = visual.run(["embedding"], {{"image": preprocess(Image.new("RGB", (320, 240), "orange"))}})[0]
logits = 100 * image @ text.T
print(dict(zip(labels, np.round(np.exp(logits) / np.exp(logits).sum(), 3)[0])))''')


def _immich(arch: str, out: Path, hf: bool = False, mclip: str | None = None) -> list[str]:
    tokenizer = ("`textual/tokenizer.json` is the encoder's own tokenizer" if hf else
                 "`textual/tokenizer.json` lower-cases and normalises (NFC, whitespace) by itself")
    if mclip:
        return ["## Use in Immich", "",
                f"This folder is named as Immich's M-CLIP model `{mclip}`: its text graph takes `input_ids` and "
                "`attention_mask`, which is what Immich feeds the models of that name.",
                f"1. Stop the machine-learning container and replace its cached model folder `/cache/clip/{mclip}/` "
                "with this folder's contents (see docs/deploy.md). Keep a copy of the original.",
                f"2. A library already searched with `{mclip}` keeps its image embeddings: the visual graph is "
                f"the same frozen {arch} image tower. Switching the smart-search setting to `{mclip}` from "
                "another model makes Immich delete every smart-search embedding (it does on any model change), and "
                "the Smart Search job must then embed the whole library again. To keep a `ViT-B-32__openai` "
                "library's embeddings, export under that name instead: the text graph then takes `text`.",
                f"3. Queries: Immich collapses whitespace; {tokenizer}.", ""]
    name = "ViT-B-32__openai" if "ViT-B-32" in arch else f"<the {arch} model your library was indexed with>"
    return ["## Use in Immich", "",
            "Immich's server accepts only the CLIP model names it knows (with their embedding size), so "
            "this folder takes the place of the model your library was indexed with:",
            f"1. Stop the machine-learning container and replace its cached model folder `/cache/clip/{name}/` "
            "with this folder's contents (Immich versions that keep a revision folder: "
            f"`/cache/clip/{name}/<revision>/`; see docs/deploy.md). Keep a copy of the original.",
            "2. Start the container. The smart-search setting stays as it was; the service finds "
            "`textual/model.onnx` in its cache and downloads nothing.",
            f"3. The visual graph is the original {arch} image tower, so the library's image embeddings stay "
            "valid: no re-indexing. Search now takes queries in the new language (and English).",
            f"4. Queries: Immich collapses whitespace; {tokenizer}.", ""]


def _render(blocks: list[tuple]) -> list[str]:
    out_lines = ["## Usage", ""]
    for title, code, *lang in blocks:   # python, unless a block names its language
        out_lines += [f"### {title}", "", f"```{lang[0] if lang else 'python'}", code, "```", ""]
    return out_lines


def _init_text(init: dict) -> str:
    """How the text tower began: `clip` init, or trained further from a run (named, not its local path)."""
    if str(init.get("init")).startswith("run:"):
        steps = f", {init['from_steps']:,} steps" if isinstance(init.get("from_steps"), int) else ""
        named = f", its `{init['from_weights']}`" if init.get("from_weights") else ""
        return (f"trained further from the langclip run `{Path(str(init.get('from_run'))).name}` "
                f"(`{init.get('from_init')}` init{steps}{named})")
    return f"`{init.get('init')}` init"


def write_model_card(out: Path, fmt: str, model, tok, meta: dict, run: Path, hub_id: str | None = None) -> Path:
    tower = meta.get("image_tower", {})
    arch = str(tower.get("arch", ""))
    arch = Path(arch).stem if arch.endswith(".json") else arch   # a model-config file: its name
    lang = (getattr(tok, "meta", {}) or {}).get("language") or "ru"
    init = meta.get("init") if isinstance(meta.get("init"), dict) else {"init": meta.get("init")}
    front = {"language": sorted({lang, "en"}), "license": "mit", "library_name": {"hf": "transformers", "onnx": "onnxruntime", "immich": "onnxruntime"}.get(fmt, "open_clip"),
             "pipeline_tag": "zero-shot-image-classification",
             "tags": ["clip", "langclip", "zero-shot-image-classification", f"{lang}-text-tower", arch]}
    cfg = {}
    if (run / "config.yaml").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    cache = {}
    if cfg.get("cache") and (Path(cfg["cache"]) / "manifest.json").is_file():
        cache = json.loads((Path(cfg["cache"]) / "manifest.json").read_text(encoding="utf-8"))
    tm = getattr(tok, "meta", {}) or {}
    hf = bool(getattr(model, "is_hf", False))
    mclip = None
    if fmt == "immich":
        from .export_onnx import immich_signature

        mclip = immich_signature(out, arch)[0]          # the M-CLIP name, or None
    what = [f"- **Image tower**: {arch} — frozen, unchanged ("
            + (f"open_clip pretrained `{tower['pretrained']}`" if tower.get("pretrained") else f"`{Path(str(tower.get('weights'))).name}`")
            + f", tensor digest `{str(tower.get('tower_sha256', ''))[:12]}`): image embeddings made with it before stay valid.",
            f"- **Text tower**: {_init_text(init)}, context {model.context_length} tokens.",
            (f"- **Tokenizer**: the encoder's own (`{init.get('hf_model') or tm.get('base', '?')}`, vocabulary "
             f"{tok.vocab_size:,})." if hf else
             f"- **Tokenizer**: CLIP's byte-level BPE + {tm.get('merges_added', '?')} merges for `{lang}` "
             f"(vocabulary {tok.vocab_size:,}); " + _english_ids(tm)),
            f"- **Training data**: {cache.get('num_images_ok', '?')} images, {cache.get('num_captions', '?')} captions"
            + (f"; {cfg.get('epochs')} epochs, batch {cfg.get('batch_size')}, losses {cfg.get('loss')}, lr "
               f"{(cfg.get('optim') or {}).get('lr')}" if cfg else "") + "."]
    limits = ["- Text goes to the encoder's own tokenizer as it is." if hf else
              "- Text is cleaned by langclip (ftfy, HTML entities, whitespace, lower case) before tokenization; "
              "the exported tokenizer.json does whitespace, Unicode normalisation and lower case only, so send "
              "it plain text.",
              "- The image tower is the original CLIP's: its English-centric training and biases are unchanged.",
              f"- Texts longer than {model.context_length} tokens are cut (end-of-text kept).",
              "- Quality depends on the training captions; check their licence before publishing the weights."]
    counts = load_counts(run)   # which tokens the training captions used (coverage.py)
    if counts is not None:
        limits.append(f"- T{summary_text(summary(counts, getattr(tok, 'num_added_merges', None)))[1:]}: a word "
                      f"that needs another one is read from an embedding training never changed (langclip's commands "
                      f"name such words, from `{COUNTS_FILE}`).")
    text = ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).strip(), "---", "",
            f"# A {lang} text tower for CLIP {arch} (langclip)", "",
            "Made with langclip: CLIP's image tower stays frozen and a new text "
            "tower reads the language.", "", "## What it is", "", *what, "", "## Results", "", *_results(run),
            "## Limitations", "", *limits, "", *(_immich(arch, out, hf, mclip) if fmt == "immich" else []), *_usage(fmt, out, lang, run, hf, mclip, hub_id)]
    (out / "README.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    return out / "README.md"
