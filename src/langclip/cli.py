"""`langclip` command line: maps subcommands to the stage functions; no logic of its own."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from .cli_help import EPILOGS, as_stored_option, templates_option, workers_option


def _p(sub, name: str, help: str, epilogs: dict = EPILOGS) -> argparse.ArgumentParser:
    return sub.add_parser(name.split()[-1], help=help, epilog=epilogs.get(name),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """Defaults come from the stages' configuration dataclasses (config.py): one source of truth."""
    from .config import DECODE_MODES, CacheConfig, DemoConfig, TokenizerTrainConfig

    TOK, CACHE, DEMO = TokenizerTrainConfig(), CacheConfig(), DemoConfig()
    ap = argparse.ArgumentParser(prog="langclip", description="Teach OpenAI's CLIP a new language.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="start here:\n  langclip demo --out demo/")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    tk = sub.add_parser("tokenizer", help="train / inspect the bilingual tokenizer")
    tsub = tk.add_subparsers(dest="tcmd", required=True)
    p = _p(tsub, "tokenizer train", "extend CLIP's BPE with merges for a language")
    p.add_argument("--lang", required=True, help="language code (wordfreq's), e.g. ru, el, ar, zh")
    p.add_argument("--merges", type=int, default=TOK.merges, help=f"merges to add (default {TOK.merges})")
    p.add_argument("--corpus", nargs="*", default=[], help="text files (a text a line) or CSV/TSV/Parquet/JSONL")
    p.add_argument("--column", help="text column of table corpora")
    p.add_argument("--wordfreq", action="store_true", help="add wordfreq's frequency list for --lang")
    p.add_argument("--wordfreq-top", type=int, help="only the N most frequent wordfreq words")
    p.add_argument("--english-words", type=int, metavar="N",
                   help="a Latin-script language: let its ASCII words merge too; wordfreq's N most frequent English "
                        "words keep CLIP's ids (unset: all ASCII text keeps them)")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", help="key=value for any TokenizerTrainConfig field")
    p = _p(tsub, "tokenizer stats", "tokens per word before/after, context use")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--lang", required=True)
    p.add_argument("--top", type=int, default=100_000)
    p.add_argument("--corpus", nargs="*", default=None)
    p.add_argument("--column")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _p(tsub, "tokenizer encode", "show ids and tokens of texts")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("texts", nargs="+")

    c = sub.add_parser("cache", help="image-embedding cache")
    csub = c.add_subparsers(dest="ccmd", required=True)
    p = _p(csub, "cache build", "embed every distinct image once with the frozen image tower")
    p.add_argument("--data", required=True, nargs="+", help="table(s), tar shards (brace patterns) or an image folder")
    p.add_argument("--clip", default="", help="open_clip architecture, e.g. ViT-B-32-quickgelu (or its JSON file, or a transformers "
                   "CLIP folder); default: the one --weights holds (its shapes and declared activation)")
    p.add_argument("--weights", default="", help="CLIP weights: OpenAI .pt, state dict, open_clip, safetensors, transformers' CLIPModel; or a folder holding one (a Hub snapshot)")
    p.add_argument("--pretrained", default="",
                   help="or open_clip's pretrained tag (e.g. openai), read from open_clip's download cache "
                        "(downloaded there when online)")
    p.add_argument("--out", required=True)
    p.add_argument("--image-column"); p.add_argument("--caption-column"); p.add_argument("--english-column")
    p.add_argument("--batch-size", type=int, default=CACHE.batch_size)
    p.add_argument("--workers", type=int, default=CACHE.workers,
                   help="image-decoding processes per rank (default -1: the cores, shared among torchrun's local ranks, minus one)")
    p.add_argument("--shard-size", type=int, default=CACHE.shard_size, help="images per embedding shard (the unit of resume)")
    p.add_argument("--teacher-shard-size", type=int, default=CACHE.teacher_shard_size,
                   help="English captions per teacher-embedding shard (the unit of resume)")
    p.add_argument("--text-only", action="store_true",
                   help="--data is a parallel corpus (target-language text + English, no images): cache the "
                        "English CLIP text embeddings for distillation-only training")
    p.add_argument("--device", default=None)
    p.add_argument("overrides", nargs="*", help="key=value for any CacheConfig field, e.g. shard_size=4096, "
                                                 "compile=true (the image tower through torch.compile)")
    p.add_argument("--decode", choices=DECODE_MODES, default=CACHE.decode,
                   help="pil: decode and resize in the worker processes with PIL, open_clip's own transform "
                        "(default); torchvision: the same work in the workers with torchvision's kernels, about "
                        "2x less CPU a picture, pixels within 2 grey levels of PIL's; nvjpeg: workers only "
                        "read the files, the GPU decodes JPEGs and resizes them (few CPU cores per GPU; "
                        "overrides decode_threads=N and decode_ahead=true overlap more of it). "
                        "Non-JPEGs fall back to PIL")
    p.add_argument("--max-failure-rate", type=float, default=CACHE.max_failure_rate,
                   help=f"stop when more than this share of images fails (after the first 100; default {CACHE.max_failure_rate})")

    from .data_cli import add_parsers as add_data

    add_data(sub, _p)

    p = _p(sub, "train", "train the text tower on a cache")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--resume", help="'latest' or a checkpoint path")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4")

    p = _p(sub, "eval", "zero-shot classification and retrieval benchmarks")
    p.add_argument("--model", required=True, help="run folder or export folder")
    p.add_argument("--dataset", required=True, nargs="+",
                   help="zero-shot: cifar10 cifar100 caltech101 babel_imagenet imagenet1k food101 flowers102 imagefolder:PATH; "
                        "retrieval: xm3600 xtd10 xtd200 flickr30k_200; either: wds:DIR, CLIP_benchmark's webdataset copy (layouts: docs/benchmarks.md)")
    p.add_argument("--lang", nargs="+", help="the language of class names, templates and captions (default: the model's own; several: a column each)")
    p.add_argument("--data-root", default="~/data")
    p.add_argument("--download", action="store_true")
    p.add_argument("--classnames", help="class names: a JSON file (a list, or {lang: list}), a text file (one a line), "
                                        "\"кошка,собака\" (in the folders' sorted order), or a folder of <dataset>.json "
                                        "files in the shipped layout (a language langclip ships no names for)")
    templates_option(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--out", help="folder for results.json/.md, table.md/.json (ruCLIP's layout), confusion_<dataset>.png "
                                 "and clip_benchmark_{classnames,templates}.json")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reference", action="store_true",
                   help="also evaluate the original English CLIP (English names and templates) as a reference row")
    p.add_argument("--weights", help="the CLIP weights file, if it moved since training")

    p = _p(sub, "eval-retrieval", "text<->image recall@1/5/10 on held-out pairs")
    p.add_argument("--model", required=True, help="run folder or export folder")
    p.add_argument("--data", required=True, nargs="+", help="a langclip cache folder, or pairs: table(s), tar shards, image folder")
    p.add_argument("--split", default="val", choices=["val", "all"],
                   help="cache only: val = the images the run held out in training (default), all = every pair")
    p.add_argument("--val-fraction", type=float, help="override the run's held-out fraction")
    p.add_argument("--seed", type=int, help="override the run's split seed")
    p.add_argument("--image-column"); p.add_argument("--caption-column")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--weights", help="the CLIP weights file, if it moved since training")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", help="folder for retrieval.json and retrieval.md")

    p = _p(sub, "predict", "classify an image among labels")
    p.add_argument("--model", required=True)
    p.add_argument("--image", required=True, nargs="+", help="picture files and folders (their pictures, recursively)")
    p.add_argument("--labels", required=True, help="comma-separated labels, or a file: one a line, or a JSON list "
                                                   "or {lang: list} (FILE or @FILE)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--out", help="also write the predictions to this .csv (image, rank, label, prob) or .jsonl")
    as_stored_option(p)
    workers_option(p)
    p.add_argument("--lang", default=None,
                   help="use this language's shipped prompt templates (ru: 'фото {gen}', ...); labels are "
                        "written in the nominative and inflected into the form each template asks for "
                        "(ru: pymorphy3; 'кот' -> 'фото кота'; words it does not know stay as written)")
    templates_option(p)
    p.add_argument("--weights", help="the CLIP weights file, if it moved since training")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")

    p = _p(sub, "similarity", "images x texts similarity picture")
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True, nargs="+", help="picture files and folders (their pictures, recursively)")
    as_stored_option(p)
    workers_option(p)
    p.add_argument("--texts", required=True, nargs="+",
                   help="the texts (\"две красные звезды\" \"синий круг\"), or a UTF-8 file with one a line (FILE or @FILE)")
    p.add_argument("--out", required=True, help="picture path (.png); .csv and .json written beside it")
    p.add_argument("--weights", help="the CLIP weights file, if it moved since training")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")

    p = _p(sub, "encode", "embeddings of texts or pictures into a .npy or .parquet file")
    p.add_argument("--model", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--texts", nargs="+", help="the texts, or a UTF-8 file with one a line (FILE or @FILE)")
    g.add_argument("--images", nargs="+", help="picture files and folders (their pictures, recursively)")
    p.add_argument("--out", required=True, help=".npy (a .json beside it names each row) or .parquet")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    as_stored_option(p)
    workers_option(p)
    p.add_argument("--weights", help="the CLIP weights file, if it moved since training (pictures only)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")

    p = _p(sub, "export", "a folder stock open_clip, transformers, onnxruntime or Immich loads")
    p.add_argument("--model", required=True, help="a run folder, or an open_clip or transformers export of one")
    p.add_argument("--format", default="open_clip", choices=["open_clip", "hf", "onnx", "immich"],
                   help="open_clip: stock open_clip's local-dir: folder; hf: transformers' CLIPModel folder; "
                        "onnx: textual.onnx + visual.onnx + tokenizer.json; immich: Immich's model-folder layout, to replace "
                        "the model an Immich library was indexed with (docs/deploy.md)")
    p.add_argument("--out", required=True)
    p.add_argument("--weights", help="the CLIP weights file, if it moved since training")
    p.add_argument("--device", default="cpu", help="where the model is built to be saved (default cpu)")
    p.add_argument("--hub-id", metavar="OWNER/NAME", help="the Hugging Face Hub repository it is to be uploaded to "
                   "(open_clip, hf): open_clip's hf-hub: loading then finds its tokenizer there; the model card says how")

    from .info import add_parser as add_info
    from .search.cli import add_parsers

    add_parsers(sub, _p)
    add_info(sub, _p)

    p = _p(sub, "demo", "the whole method on a built-in bilingual world")
    p.add_argument("--lang", default=DEMO.lang, choices=["ru", "uk", "de", "el", "es"], help="the target language (default ru)")
    p.add_argument("--out", default=DEMO.out)
    p.add_argument("--seed", type=int, default=DEMO.seed)
    p.add_argument("--size", default=DEMO.size, choices=["default", "small", "tiny"],
                   help="tiny: a seconds-long smoke run (tests)")
    p.add_argument("--no-english-replay", action="store_true",
                   help="train the students without English replay (loss.english 0): the README's comparison")
    p.add_argument("overrides", nargs="*", help="key=value for any DemoConfig field")
    p.add_argument("--precision", default=DEMO.precision, choices=["auto", "bf16", "bf16-weights", "fp32"],
                   help="the students' training precision (auto: bf16 on GPU, fp32 on CPU; bf16-weights: the text "
                        "tower runs on a bf16 copy, float32 master weights)")
    return ap


def _config(cls, args: argparse.Namespace, flags: dict):
    """A stage's config from its flags plus trailing key=value overrides (the same loader as `train`)."""
    from .config import load_config

    return load_config(cls, None, list(getattr(args, "overrides", None) or []), validate=False, base=flags)


def _tokenizer(args: argparse.Namespace) -> int:
    from .tokenizer import load_tokenizer
    from .config import TokenizerTrainConfig
    from .tokenizer.train import format_stats, tokenizer_stats, train_tokenizer

    if args.tcmd == "train":
        cfg = _config(TokenizerTrainConfig, args, dict(lang=args.lang, merges=args.merges, corpus=args.corpus,
                                                       column=args.column, wordfreq=args.wordfreq,
                                                       wordfreq_top=args.wordfreq_top,
                                                       english_words=args.english_words, out=args.out))
        tok = train_tokenizer(cfg)
        m = tok.meta
        print(f"saved {args.out}: {m['merges_added']:,} merges added (vocab {tok.vocab_size:,}) "
              f"in {m['train_seconds']} s; end-of-text id {tok.eot_token_id} (argmax pooling)")
    elif args.tcmd == "stats":
        s = tokenizer_stats(load_tokenizer(args.tokenizer), args.lang, args.top, args.corpus, args.column)
        print(json.dumps(s, indent=2, ensure_ascii=False) if args.json else format_stats(s))
    else:
        tok = load_tokenizer(args.tokenizer)
        for t in args.texts:
            print(json.dumps({"text": t, "ids": tok.encode(t), "tokens": tok.tokens(t), "pieces": tok.pieces(t)}, ensure_ascii=False))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from .cache import build_cache
    from .config import CacheConfig

    cfg = _config(CacheConfig, args, dict(
        data=args.data, clip=args.clip, weights=args.weights, pretrained=args.pretrained, out=args.out,
        image_column=args.image_column, caption_column=args.caption_column, english_column=args.english_column,
        batch_size=args.batch_size, workers=args.workers, shard_size=args.shard_size,
        teacher_shard_size=args.teacher_shard_size, text_only=args.text_only, device=args.device,
        max_failure_rate=args.max_failure_rate, decode=args.decode))
    build_cache(cfg)
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import TrainConfig, load_config
    from .train import train

    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    train(load_config(TrainConfig, args.config, overrides))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_cli

    evaluate_cli(model=args.model, dataset=args.dataset, lang=args.lang, data_root=args.data_root,
                 download=args.download, classnames=args.classnames, batch_size=args.batch_size,
                 device=args.device, out=args.out, workers=args.workers, reference=args.reference,
                 weights=args.weights, templates=args.templates)
    return 0


def _eval_retrieval(args: argparse.Namespace) -> int:
    from .retrieval import evaluate_retrieval_cli

    evaluate_retrieval_cli(model=args.model, data=args.data, split=args.split, val_fraction=args.val_fraction,
                           seed=args.seed, batch_size=args.batch_size, device=args.device, weights=args.weights,
                           out=args.out, workers=args.workers, image_column=args.image_column,
                           caption_column=args.caption_column)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .inference import predict_cli

    predict_cli(args.model, args.image, args.labels, top=args.top, lang=args.lang, weights=args.weights,
                out=args.out, upright=not args.as_stored, device=args.device, workers=args.workers,
                templates=args.templates)
    return 0


def _similarity(args: argparse.Namespace) -> int:
    from .inference import similarity_cli

    similarity_cli(args.model, args.images, args.texts, args.out, weights=args.weights, device=args.device,
                   upright=not args.as_stored, workers=args.workers)
    return 0


def _encode(args: argparse.Namespace) -> int:
    from .encode import encode_cli

    encode_cli(args.model, args.out, texts=args.texts, images=args.images, dtype=args.dtype, weights=args.weights,
               device=args.device, upright=not args.as_stored, workers=args.workers)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export

    out = export(args.model, args.out, args.format, weights=args.weights, device=args.device, hub_id=args.hub_id)
    how = {"hf": f"transformers.CLIPModel.from_pretrained('{out}')",
           "onnx": f"onnxruntime.InferenceSession('{out / 'textual.onnx'}') (see the model card)",
           "immich": f"Immich's machine-learning service as its model {out.name} (docs/deploy.md)"}.get(
        args.format, f"open_clip.create_model_and_transforms('local-dir:{out}')"
        + (f", or, uploaded to {args.hub_id}, 'hf-hub:{args.hub_id}'" if args.hub_id else ""))
    print(f"exported to {out} (model card: {out / 'README.md'}); load with {how}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(_config(DemoConfig, args, dict(lang=args.lang, out=args.out, seed=args.seed, size=args.size,
                                            english_replay=not args.no_english_replay, precision=args.precision)))
    return 0


def _data(args: argparse.Namespace) -> int:
    from .data_cli import run

    return run(args)


def _search(args: argparse.Namespace) -> int:
    """index/search/serve (search/cli.py) and info (info.py) are parsed and run in their own modules."""
    from .info import run as run_info
    from .search.cli import run as run_search

    return run_info(args) if args.cmd == "info" else run_search(args, _config)


COMMANDS = {"tokenizer": _tokenizer, "cache": _cache, "train": _train, "eval": _eval,
            "eval-retrieval": _eval_retrieval, "predict": _predict, "similarity": _similarity, "encode": _encode,
            "export": _export, "demo": _demo, "data": _data, "index": _search, "search": _search, "serve": _search,
            "info": _search}


def run(args: argparse.Namespace) -> int:
    """Run the parsed subcommand: each maps its flags to a stage function. A --model on the Hugging Face Hub
    ("hf-hub:owner/name", an export uploaded with --hub-id) is its downloaded folder (files.hub_model)."""
    from .files import hub_model

    if getattr(args, "model", None):
        args.model = [hub_model(m) for m in args.model] if isinstance(args.model, list) else hub_model(args.model)
    return COMMANDS[args.cmd](args)


EXPECTED = (ValueError, OSError, FloatingPointError, ImportError)   # bad input, files, divergence, a missing extra
MAX_LINES = 25


def one_screen(msg: str) -> str:
    lines = msg.splitlines() or [msg]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines)"]
    return "\n".join(ln if len(ln) <= 2000 else ln[:2000] + " ..." for ln in lines)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logging.getLogger("langclip").warning("%s", message)


def main(argv: list[str] | None = None) -> int:
    """Every failure is one screen on stderr, exit code 2, no traceback: what went wrong and where.
    An error langclip did not expect says so and how to see its traceback (`langclip -v ...`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        with warnings.catch_warnings():   # a warning is one line, as the log's are (not Python's two)
            warnings.showwarning = _one_line_warning
            return run(args)
    except KeyboardInterrupt as e:   # train's Stopped (train/stop.py) says where it stopped and saved
        print(f"langclip: {str(e) or 'interrupted; finished work is kept (rerun to resume)'}", file=sys.stderr)
        return getattr(e, "code", 130)
    except Exception as e:  # noqa: BLE001 - the one place every error becomes a message
        if args.verbose:
            raise
        text = str(e) or type(e).__name__
        if isinstance(e, EXPECTED):
            print(f"langclip: error: {one_screen(text)}", file=sys.stderr)
        else:
            print(f"langclip: error: unexpected {type(e).__name__}: {one_screen(text)}\n"
                  f"(this is a bug or an environment problem; run with -v for the traceback: "
                  f"langclip -v {' '.join(argv if argv is not None else sys.argv[1:])})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
