"""The `langclip data` subcommands (public data for the real recipe, docs/recipe.md): argument parsing mapped
onto translations.py's and shards.py's stage functions."""
from __future__ import annotations

from .cli_help import EPILOGS

SHARDS_EPILOG = ("example:\n  langclip data shards --data 'train-{00000..00011}-of-00012.parquet' --out shards/\n"
                 "  langclip data shards --data coco_ru.parquet --caption-column caption_ru --english-column caption "
                 "--out shards/\n  langclip cache build --data 'shards/{00000..00059}.tar' --clip ViT-B-32-quickgelu "
                 "--pretrained openai --out cache/   # the pattern it prints")


def add_parsers(sub, make) -> None:
    d = sub.add_parser("data", help="prepare public data (the real recipe: docs/recipe.md)")
    dsub = d.add_subparsers(dest="dcmd", required=True)
    p = make(dsub, "data cc3m-tsv", "CC3M's split TSV with a header and the row number (rec_num), for img2dataset")
    p.add_argument("--tsv", required=True, help="Train_GCC-training.tsv or Validation_GCC-1.1.0-Validation.tsv")
    p.add_argument("--out", required=True)
    p = make(dsub, "data translations", "join the CC3M/COCO machine translations with the downloaded pictures")
    p.add_argument("--translations", required=True, nargs="+", help="the published JSONL files (a 'dev' name: validation)")
    p.add_argument("--lang", required=True, help="target language code, e.g. ru, uk")
    p.add_argument("--shards", nargs="*", help="img2dataset webdataset shards (brace patterns) of CC3M")
    p.add_argument("--coco-images", help="a folder of COCO pictures (joined by image id)")
    p.add_argument("--out", required=True, help="pairs table (.parquet); one split a run (train, or dev with the validation shards)")
    p = make(dsub, "data shards", "Parquet tables that hold their pictures (Hugging Face datasets) -> webdataset "
                                  "shards the cache and the index read", {**EPILOGS, "data shards": SHARDS_EPILOG})
    p.add_argument("--data", required=True, nargs="+", help="Parquet files (brace patterns: 'train-{00000..00011}.parquet')")
    p.add_argument("--out", required=True, help="a folder for the shards (an interrupted run resumes into it)")
    p.add_argument("--image-column", help="the column of pictures (default: the first that holds pictures' bytes)")
    p.add_argument("--caption-column", help="captions (default: caption, text, ...; none: pictures alone)")
    p.add_argument("--english-column", help="English captions, for distillation (default: caption_en, english, ...)")
    p.add_argument("--shard-size", type=int, default=10_000, help="rows a shard (default 10000)")


def run(args) -> int:
    if args.dcmd == "shards":
        from .shards import write_shards

        write_shards(args.data, args.out, args.image_column, args.caption_column, args.english_column, args.shard_size)
        return 0
    from . import translations

    if args.dcmd == "cc3m-tsv":
        print(f"{args.out}: {translations.cc3m_tsv(args.tsv, args.out):,} rows with rec_num")
    else:
        translations.prepare(args.translations, args.lang, args.out, args.shards, args.coco_images)
    return 0
