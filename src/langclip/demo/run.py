"""The demo pipeline. Everything lands in `--out`:

    world/            generated pictures, train.csv (captions in Russian — Ukrainian with --lang uk, German
                      with de, Greek with el, Spanish with es — and English), russian.txt (ukrainian.txt, ...)
    teacher/          demo-clip.json + clip-teacher.pt: the stand-in for OpenAI's CLIP (English only)
    tokenizer/        CLIP BPE + Russian (Ukrainian, German, Greek, Spanish) merges
    cache/            image-embedding cache of the training pictures
    runs/clip, runs/scratch   one run folder per text-tower initialisation
    report/           report.md, summary.json, confusion_*.png, similarity.png, curves.png

Stages use only langclip's public functions; continue with `langclip eval|predict|similarity|export
--model OUT/runs/clip`.
"""
from __future__ import annotations

import contextlib
import csv
import json
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import CacheConfig, DemoConfig, LossSection, ModelSection, OptimSection, TokenizerTrainConfig, TrainConfig
from .report import report
from .world import (COLOURS, COUNTS, HELD_OUT, LANGS, NOUN_FIRST, SHAPES, TOKENIZER_OPTIONS, captions, en_phrase,
                    render, sample_scenes)

SIZES = {  # train images, test images, teacher epochs, student epochs, merges
    "default": (2400, 600, 30, 40, 800),
    "small": (1200, 400, 35, 25, 600),
    "tiny": (256, 120, 4, 4, 200),
}
TEACHER = {"embed_dim": 64, "quick_gelu": True,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def _stage(name: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {name}", flush=True)


def _write_world(d: Path, scenes, seed: int, lang: str = "ru") -> list[dict]:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(scenes):
        name = f"{i:05d}.png"
        Image.fromarray(render(s)).save(d / name)
        en, tg = captions(s.count, s.colour, s.shape, s.position, random.Random(seed * 7919 + i), lang)
        rows += [{"image": name, "caption": r, "caption_en": e, "shape": s.shape, "colour": s.colour,
                  "count": s.count} for r, e in zip(tg, en)]
    return rows


def _train_teacher(rows: list[dict], img_dir: Path, out: Path, epochs: int, seed: int, t0: float) -> Path:
    """Stage 0: a small English CLIP (both towers), saved like a pretrained CLIP state dict."""
    import open_clip
    from PIL import Image
    from ..files import progress_bar

    from ..model import image_transform
    from ..tokenizer import Tokenizer
    from ..train import clip_loss

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo-clip.json").write_text(json.dumps({"model_cfg": TEACHER}, indent=1))
    model = open_clip.CLIP(**TEACHER)
    tf = image_transform({"size": 64})
    names = sorted({r["image"] for r in rows})
    idx = {n: i for i, n in enumerate(names)}
    x = torch.stack([tf(Image.open(img_dir / n)) for n in names])
    caps: list[list[str]] = [[] for _ in names]
    for r in rows:
        caps[idx[r["image"]]].append(r["caption_en"])
    tok = Tokenizer.clip()
    ctx = TEACHER["text_cfg"]["context_length"]
    all_caps = [c for cs in caps for c in cs]
    all_tok = tok(all_caps, context_length=ctx)
    starts = torch.tensor([0] + [len(c) for c in caps]).cumsum(0)[:-1]
    n_caps = torch.tensor([len(c) for c in caps])
    B = 128
    steps = epochs * (len(names) // B)
    # The captions use a few hundred of CLIP's 49,408 tokens. Their rows train in a small table (ids
    # renumbered in order: the end-of-text token stays the largest, where the text tower pools); every
    # other row gets no gradient, so AdamW would only decay it, as `rest` is below. The same weights
    # bit for bit (test_demo), without AdamW's pass over 3.2M numbers every step.
    used = torch.unique(all_tok)
    rest = model.token_embedding.weight.detach().clone()
    model.token_embedding = torch.nn.Embedding.from_pretrained(rest[used].clone(), freeze=False)
    all_tok = torch.searchsorted(used, all_tok)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    bar = progress_bar(total=steps, desc="stage 0: English teacher CLIP", unit="step", mininterval=1)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(names), generator=g)
        for s in range(len(names) // B):
            b = perm[s * B:(s + 1) * B]
            pick = starts[b] + (torch.rand(len(b), generator=g) * n_caps[b]).long()
            fi = F.normalize(model.encode_image(x[b]), dim=-1)
            ft = F.normalize(model.encode_text(all_tok[pick]), dim=-1)
            loss = clip_loss(ft, fi, model.logit_scale)
            loss.backward()
            rest.mul_(1 - opt.param_groups[0]["lr"] * 0.05)   # AdamW's decoupled weight decay
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    rest[used] = model.token_embedding.weight.detach()
    model.token_embedding = torch.nn.Embedding.from_pretrained(rest, freeze=False)
    path = out / "clip-teacher.pt"
    torch.save(model.state_dict(), path)
    return path


def _tasks(lang: str):
    """Zero-shot tasks: class forms keyed by the attribute the template fixes."""
    ph = LANGS[lang][0] if lang in LANGS else en_phrase
    shape = ([{c: ph(1, c, s, False) for c in COLOURS} for s in SHAPES], [f"{{{c}}}" for c in COLOURS], SHAPES, "shape")
    colour = ([{s: ph(1, c, s, False) for s in SHAPES} for c in COLOURS], [f"{{{s}}}" for s in SHAPES], list(COLOURS), "colour")
    count = ([{f"{c}_{s}": ph(n, c, s) for c in COLOURS for s in SHAPES} for n in COUNTS],
             [f"{{{c}_{s}}}" for c in COLOURS for s in SHAPES], COUNTS, "count")
    return {"shape": shape, "colour": colour, "count": count}


def _display(lang: str, task: str, value) -> str:
    if lang not in LANGS:
        return str(value)
    ph = LANGS[lang][0]
    first = lang in NOUN_FIRST   # Spanish: "círculo rojo"
    if task == "shape":
        return ph(1, "black", value, False).split()[0 if first else -1]
    if task == "colour":   # the masculine form: the circle's (Ukrainian: the square's, коло is neuter)
        return ph(1, value, "square" if lang == "uk" else "circle", False).split()[-1 if first else 0]
    return str(value)


@torch.no_grad()
def _zero_shot(model, tok, feats, labels_by_task, lang, mask=None) -> dict:
    from ..metrics import classification_metrics, zero_shot_weights

    out = {}
    for task, (classes, templates, values, key) in _tasks(lang).items():
        w = zero_shot_weights(model, tok, classes, templates)
        y = torch.tensor([values.index(v) for v in labels_by_task[key]])
        f = feats if mask is None else feats[mask]
        y = y if mask is None else y[mask]
        out[task] = classification_metrics(f @ w.T, y, [_display(lang, task, v) for v in values])
    return out


def run_demo(cfg: DemoConfig) -> dict:
    """The whole method on the built-in world: world -> teacher -> tokenizer -> cache -> students ->
    evaluation -> search index -> report. -> the summary (also report/summary.json)."""
    from ..files import check_out_dir

    if cfg.lang not in LANGS:
        raise ValueError(f"the built-in world speaks English and {', '.join(LANGS)}: --lang {cfg.lang} is not one of them")
    n_train, n_test, t_epochs, s_epochs, merges = SIZES[cfg.size]
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out = check_out_dir(cfg.out, "demo", ("summary.json", "world"))
    out.mkdir(parents=True, exist_ok=True)
    with _restarts():
        rows, test_rows = _make_world(out, n_train, n_test, cfg.seed, t0, cfg.lang)
        _stage("stage 0: training the English teacher CLIP (stand-in for OpenAI's)", t0)
        weights = _train_teacher(rows, out / "world" / "train", out / "teacher", t_epochs, cfg.seed, t0)
        arch = str(out / "teacher" / "demo-clip.json")   # the model card calls the tower by its name
        runs = _train_students(cfg, out, arch, weights, merges, s_epochs, t0)
        _stage("stage 2: evaluation on held-out pictures", t0)
        ev = _evaluate(out, arch, weights, test_rows, runs, cfg.lang)
        _stage("stage 3: a search index of the test pictures", t0)
        _index_test_pictures(out, arch, weights, ev["first"], ev["test_imgs"])
        found = _held_out_search(out, cfg.lang, ev["first"])
    summary = report(out, ev["results"], ev["retr"], ev["held"], ev["students"], ev["test_imgs"], ev["first"],
                     ev["feats"], t0, cfg, found)
    print(f"search the test pictures in {LANGS[cfg.lang][4]} or English:\n  langclip serve --index {out / 'index'} "
          f"--model {out / 'runs' / 'clip'}\n  langclip search --index {out / 'index'} --model {out / 'runs' / 'clip'} "
          f"\"{found['query']}\"\nwhat each folder is, and that they share one image tower:\n"
          f"  langclip info {out / 'runs' / 'clip'} {out / 'cache'} {out / 'index'}")
    return summary


def _make_world(out: Path, n_train: int, n_test: int, seed: int, t0: float,
                lang: str = "ru") -> tuple[list[dict], list[dict]]:
    """Pictures and captions; the student's table leaves the held-out colour-shape combinations out."""
    _stage("world: generating pictures and captions", t0)
    rows = _write_world(out / "world" / "train", sample_scenes(n_train, seed), seed, lang)
    test_rows = _write_world(out / "world" / "test", sample_scenes(n_test, seed + 1), seed + 1, lang)
    tg_rows = [r for r in rows if (r["colour"], r["shape"]) not in HELD_OUT]  # the student never reads these
    with open(out / "world" / "train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption", "caption_en"])
        w.writeheader()
        w.writerows([{k: "train/" + r[k] if k == "image" else r[k] for k in ("image", "caption", "caption_en")} for r in tg_rows])
    (out / "world" / f"{LANGS[lang][4].lower()}.txt").write_text("\n".join(r["caption"] for r in tg_rows), encoding="utf-8")
    return rows, test_rows


def _train_students(cfg: DemoConfig, out: Path, arch: str, weights: Path, merges: int, epochs: int, t0: float) -> dict:
    """Stage 1: the bilingual tokenizer, the image-embedding cache, one text tower per initialisation."""
    from ..cache import build_cache
    from ..tokenizer.train import train_tokenizer
    from ..train import train

    name = LANGS[cfg.lang][4]
    _stage(f"stage 1: bilingual tokenizer (CLIP BPE + {name} merges)", t0)
    train_tokenizer(TokenizerTrainConfig(lang=cfg.lang, merges=merges, corpus=[str(out / "world" / f"{name.lower()}.txt")],
                                     wordfreq=True, wordfreq_top=20000, out=str(out / "tokenizer"),
                                     **TOKENIZER_OPTIONS.get(cfg.lang, {})))
    _stage("stage 1: image-embedding cache", t0)
    cache = build_cache(CacheConfig(data=[str(out / "world" / "train.csv")], clip=arch, weights=str(weights),
                                    out=str(out / "cache"), batch_size=256, workers=0, shard_size=4096))
    runs = {}
    for init in ("clip", "scratch"):
        _stage(f"stage 1: {name} text tower, init={init}", t0)
        shutil.rmtree(out / "runs" / init, ignore_errors=True)  # the demo regenerates everything it made
        runs[init] = train(TrainConfig(
            cache=str(cache), out=str(out / "runs" / init),
            model=ModelSection(clip=arch, weights=str(weights), tokenizer=str(out / "tokenizer"), init=init,
                               context_length=24),
            optim=OptimSection(lr=2e-3 if init == "clip" else 3e-3, warmup_steps=20, weight_decay=0.05),
            loss=LossSection(contrastive=1.0, distill=1.0, english=1.0 if cfg.english_replay else 0.0,
                             english_fraction=cfg.english_fraction), epochs=epochs, batch_size=128,
            val_fraction=0.1, seed=cfg.seed, log_every=10, tensorboard=True, precision=cfg.precision))
    return runs


@contextlib.contextmanager
def _restarts():
    """Ctrl-C (or SIGTERM while a student trains, train/stop.py) in any stage ends the demo: it starts afresh
    when rerun, so train's "continue it with --resume latest" and the CLI's "rerun to resume" are not the
    demo's to say."""
    from ..train.stop import Stopped

    try:
        yield
    except KeyboardInterrupt as e:
        raise Stopped("demo stopped; `langclip demo` starts afresh when rerun", getattr(e, "code", 130)) from None


def _evaluate(out: Path, arch: str, weights: Path, test_rows: list[dict], runs: dict, lang: str = "ru") -> dict:
    """Stage 2: the teacher and both students, zero-shot (all pictures and the held-out combinations,
    and the students in English too) and retrieval on the test pictures."""
    from PIL import Image

    from ..metrics import recall_at_k
    from ..model import LangCLIP, image_transform, model_config
    from ..runfolder import load_model
    from ..tokenizer import Tokenizer
    from ..weights import load_state_dict

    teacher = LangCLIP.empty(model_config(arch))
    teacher.clip.load_state_dict(load_state_dict(weights))   # strict: every weight
    teacher.image_ready = True
    teacher.eval()
    tf = image_transform({"size": 64})
    test_imgs = sorted({r["image"] for r in test_rows})
    x = torch.stack([tf(Image.open(out / "world" / "test" / n)) for n in test_imgs])
    first = {}
    for r in test_rows:
        first.setdefault(r["image"], r)
    labels = {k: [first[n][k] for n in test_imgs] for k in ("shape", "colour", "count")}
    held = torch.tensor([(first[n]["colour"], first[n]["shape"]) in HELD_OUT for n in test_imgs])
    with torch.no_grad():
        feats = teacher.encode_image(x)
    results = {"teacher_en": _zero_shot(teacher, Tokenizer.clip(), feats, labels, "en"),
               "teacher_en_heldout": _zero_shot(teacher, Tokenizer.clip(), feats, labels, "en", held)}
    students = {}
    for init, run in runs.items():
        m, stok, _ = load_model(run)
        students[init] = (m, stok)
        results[f"student_{init}_{lang}"] = _zero_shot(m, stok, feats, labels, lang)
        results[f"student_{init}_{lang}_heldout"] = _zero_shot(m, stok, feats, labels, lang, held)
        results[f"student_{init}_en"] = _zero_shot(m, stok, feats, labels, "en")   # is English kept?
    retr = {}   # retrieval on the test pictures, first caption of each
    with torch.no_grad():
        idx = torch.arange(len(test_imgs))
        t_en = teacher.encode_text(Tokenizer.clip()([first[n]["caption_en"] for n in test_imgs], context_length=24))
        retr["teacher_en"] = recall_at_k(t_en, feats, idx)
        for init, (m, stok) in students.items():
            t_tg = m.encode_text(stok([first[n]["caption"] for n in test_imgs], context_length=24))
            retr[f"student_{init}_{lang}"] = recall_at_k(t_tg, feats, idx)
    return {"results": results, "retr": retr, "held": held, "students": students, "test_imgs": test_imgs,
            "first": first, "feats": feats}


def _index_test_pictures(out: Path, arch: str, weights: Path, first: dict, test_imgs: list[str]) -> None:
    """Stage 3: the test pictures' ground truth (world/test.csv) and a search index of them."""
    from ..config import IndexConfig
    from ..search import build_index

    with open(out / "world" / "test.csv", "w", newline="", encoding="utf-8") as f:   # ground truth, for searching
        w = csv.DictWriter(f, fieldnames=["image", "colour", "shape", "count", "caption", "caption_en"])
        w.writeheader()
        w.writerows([{k: ("test/" + first[n][k] if k == "image" else first[n][k]) for k in w.fieldnames} for n in test_imgs])
    shutil.rmtree(out / "index", ignore_errors=True)
    build_index(IndexConfig(data=[str(out / "world" / "test")], out=str(out / "index"), clip=arch, weights=str(weights),
                            workers=0, thumb_size=128), progress=False)


def _held_out_search(out: Path, lang: str, first: dict) -> dict:
    """Stage 3: the test pictures searched for two objects of a colour-shape combination the students never
    read (two red stars first), as `langclip search` does. A word whose tokens no training caption of the clip
    student held (coverage.py) is searched as a form of it the captions held (Russian «красные» as «красных»;
    Spanish «rojas», never said since the star is the world's only feminine shape, as its dictionary form
    «rojo»); where none stands in, the phrase tests an untrained embedding, not combining: it is shown too
    and the next combination searched, until one is answered from trained tokens alone.
    -> {"query", "searched", "rewritten", "top5", "skipped": {phrase: {"unseen", "rewritten", "top5"}}}"""
    from ..coverage import rewrite, unseen_words
    from ..search.cli import search
    from ..tokenizer import Tokenizer

    run = out / "runs" / "clip"
    tok, tried = Tokenizer.load(run / "tokenizer"), {}
    for colour, shape in sorted(HELD_OUT, key=lambda c: (c != ("red", "star"), c)):
        query = LANGS[lang][0](2, colour, shape)
        searched, subs = rewrite(run, tok, query, lang)
        hits = [json.loads(line) for line in search(str(out / "index"), str(run), query, k=5, as_json=True)]
        top = [{"rank": h["rank"], "score": h["score"], "picture": Path(h["path"]).name,
                "shows": "{count} {colour} {shape}".format(**first[Path(h["path"]).name])} for h in hits]
        unseen = unseen_words(run, tok, [query])
        tried[query] = {"unseen": unseen, "searched": searched, "rewritten": subs, "top5": top}
        left = "; ".join(f"«{w}»: {', '.join(map(repr, p))}" for w, p in unseen.items() if w not in subs)
        print(f"search «{query}» (a combination the students never read"
              + (f"; searched as «{searched}», forms the captions held" if subs else "") + "): its top 5 show "
              + ", ".join(h["shows"] for h in top) + (f"\n  but no training caption held the tokens of {left}" if left else ""))
        if not left:
            break
    else:   # no phrase answered from trained tokens: the first one stands
        query = next(iter(tried))
    return {"query": query, **{k: v for k, v in tried[query].items() if k != "unseen"},
            "skipped": {q: v for q, v in tried.items() if q != query}}
