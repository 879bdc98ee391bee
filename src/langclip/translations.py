"""The public data of the real recipe: Google's machine translations of Conceptual Captions (CC3M) and
COCO (Karpathy split) into 34 languages, published with Crossmodal-3600 (CC-BY-4.0), joined with the
images, so that each picture has its English caption (the teacher's and English replay's input) and the
target-language one (the student's).

Translation files: JSON lines with `src_lang`, `trg_lang`, `caption_tokenized` (English),
`translation_tokenized` (target), `backtranslation_tokenized`, and `image_id` (COCO: "<image id>_<N>",
one line per caption) or `rec_num` (CC3M: the record's row in the published CC3M split TSV). A file
whose name holds "dev" is the validation split. Numbers in the English captions were replaced by "#"
before translation; both sides keep it.

CC3M's images come from its TSV through img2dataset. `cc3m_tsv` writes the TSV with a header and the
row number as a column, which img2dataset carries into every sample's .json sidecar
(`--save_additional_columns '["rec_num"]'`); `join` reads it back from the shards, so the join does
not depend on download order or on which downloads failed. COCO joins by image id (the digits of its
file names). Rows whose picture is missing (a failed download) are counted, not fatal. The result is a
table `cache build` reads directly: image ("shard.tar::member" or a path), caption, caption_en.
"""
from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from pathlib import Path

_SPACE_BEFORE = re.compile(r" ([,.!?;:%)\]}'])")
_SPACE_AFTER = re.compile(r"([(\[{]) ")
# Chinese and Japanese write no spaces: a space between two of their characters (or their full-width
# punctuation) is the tokeniser's. Thai and Korean do write spaces, between phrases or words: kept.
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}\u30FC\u3000-\u303F\uFF00-\uFFEF]"


@functools.lru_cache()
def _cjk_space():
    import regex

    return regex.compile(f"(?<={_CJK}) (?={_CJK})")


def detokenize(text: str) -> str:
    """Undo the published files' tokenisation: "a man , standing ." -> "a man, standing.";
    "一 只 猫 坐在 桌子 上 。" -> "一只猫坐在桌子上。" (a space between Latin and CJK stays)."""
    text = _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", " ".join(text.split()))).replace(" n't", "n't")
    return text if text.isascii() else _cjk_space().sub("", text)


def read_translations(files: list[str], lang: str) -> tuple[dict, dict]:
    """-> ({("cc3m", rec_num) | ("coco", image_id): [(english, target, split), ...]}, counts).
    Only lines translated from English into `lang`; a line without its fields is an error naming it."""
    out: dict[tuple, list] = defaultdict(list)
    counts = {"lines": 0, "kept": 0, "other_languages": 0}
    for f in files:
        f = Path(f)
        split = "dev" if "dev" in f.name.lower() else "train"
        with open(f, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                counts["lines"] += 1
                try:
                    r = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
                except UnicodeDecodeError:
                    raise ValueError(f"{f}:{n}: not UTF-8") from None
                except json.JSONDecodeError as e:
                    raise ValueError(f"{f}:{n}: not JSON ({e.msg})") from None
                if not isinstance(r, dict):
                    raise ValueError(f"{f}:{n}: expected a JSON object with trg_lang, caption_tokenized, ..., "
                                     f"got {type(r).__name__}")
                if r.get("trg_lang") != lang or r.get("src_lang", "en") != "en":
                    counts["other_languages"] += 1
                    continue
                missing = [k for k in ("caption_tokenized", "translation_tokenized") if not r.get(k)]
                if missing or ("rec_num" not in r and "image_id" not in r):
                    raise ValueError(f"{f}:{n}: missing {', '.join(missing) or 'rec_num / image_id'}")
                try:
                    key = ("cc3m", int(r["rec_num"])) if "rec_num" in r else ("coco", int(str(r["image_id"]).split("_")[0]))
                except (TypeError, ValueError):
                    raise ValueError(f"{f}:{n}: rec_num / image_id is not a number: "
                                     f"{r.get('rec_num', r.get('image_id'))!r}") from None
                out[key].append((detokenize(r["caption_tokenized"]), detokenize(r["translation_tokenized"]), split))
                counts["kept"] += 1
    if not out:
        raise ValueError(f"no {lang!r} translations in {', '.join(map(str, files))} (trg_lang values differ?)")
    return dict(out), counts


def cc3m_tsv(tsv: str | Path, out: str | Path) -> int:
    """CC3M's published split TSV (caption<TAB>url, no header) -> the same rows with a header and
    `rec_num` (the 0-based row number, as the translations count it), for img2dataset. -> rows."""
    n = 0
    with open(tsv, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        dst.write("rec_num\tcaption\turl\n")
        for n, line in enumerate(src):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise ValueError(f"{tsv}:{n + 1}: expected caption<TAB>url, got {len(parts)} fields")
            dst.write(f"{n}\t{parts[0]}\t{parts[1]}\n")
        n += 1
    return n


def join(translations: dict, shards: list[str] | None = None, coco_images: str | None = None) -> tuple[list[dict], dict]:
    """Pair every translated caption with its picture. -> (rows, counts)."""
    from .pairs import Pairs, expand, read_tar

    where: dict[tuple, str] = {}
    for spec in shards or []:
        for s in expand(spec):
            p = Path(s)
            if not p.is_file():
                continue
            meta: dict[str, dict] = {}
            read_tar(p.resolve(), Pairs(), meta)      # a failed download has no picture: not listed
            for key, m in meta.items():
                if m.get("status", "success") == "success" and m.get("rec_num") is not None:
                    where[("cc3m", int(m["rec_num"]))] = key
    if coco_images:
        from .folders import walk

        for f in (Path(root, name) for root, names in walk(coco_images) for name in names):   # linked folders too
            digits = re.findall(r"\d+", f.stem)
            if f.suffix.lower() in (".jpg", ".jpeg", ".png") and digits:
                where[("coco", int(digits[-1]))] = str(f.resolve())
    rows, missing = [], 0
    for key, caps in translations.items():
        img = where.get(key)
        if img is None:
            missing += 1
            continue
        rows += [{"image": img, "caption": t, "caption_en": e, "split": s} for e, t, s in caps]
    counts = {"pictures_translated": len(translations), "pictures_found": len(translations) - missing,
              "pictures_missing": missing, "pairs": len(rows)}
    if not rows:
        raise ValueError(f"none of the {len(translations)} translated pictures was found in the shards/images given "
                         f"(img2dataset run with --save_additional_columns '[\"rec_num\"]'?)")
    return rows, counts


def prepare(translations: list[str], lang: str, out: str | Path, shards: list[str] | None = None,
            coco_images: str | None = None) -> dict:
    """`langclip data translations`: read, join, write the pairs table `out`. One split a run: CC3M's
    train and dev translations number the rows of two different TSVs (so two sets of shards)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .files import check_out_file

    out = check_out_file(out, "pairs table", lambda p: p.suffix == ".parquet")
    tr, c1 = read_translations(translations, lang)
    splits = {s for key, caps in tr.items() if key[0] == "cc3m" for _, _, s in caps}
    if len(splits) > 1:
        raise ValueError("CC3M train and dev translations in one run: their rec_num count rows of different TSVs "
                         "(training and validation), so each split is joined with its own shards — run once per split")
    rows, c2 = join(tr, shards, coco_images)
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in ("image", "caption", "caption_en")}), out)
    report = {**c1, **c2, "split": "/".join(sorted({r["split"] for r in rows})), "out": str(out)}
    print(json.dumps(report, ensure_ascii=False))
    return report
