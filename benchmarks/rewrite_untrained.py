"""Searching a word whose tokens no training caption held as a form of it the captions held (coverage.rewrite,
`langclip search`'s default: a pymorphy3 form in Russian and Ukrainian, the dictionary form in Spanish and
about 50 other languages) vs the query as typed (`--as-typed`), on a demo's
clip student: every phrase of a held-out colour-shape combination the demo world says (counts 1-5, with and
without the number, and the bare plural) that has such a word; precision@5 is the share of the top 5 test
pictures that show the phrase's colour and shape (world/test.csv). One JSON line a phrase, then the means.

    DEMO_OUT=/tmp/demo-ru bash benchmarks/demo_lang.sh ru
    python benchmarks/rewrite_untrained.py /tmp/demo-ru > benchmarks/results/cpu_rewrite_untrained_ru.jsonl
    (es: DEMO_OUT=/tmp/demo-es bash benchmarks/demo_lang.sh es, then cpu_rewrite_untrained_es.jsonl)
"""
import csv
import json
import sys
from pathlib import Path

from langclip.coverage import rewrite, unseen_words
from langclip.demo.world import HELD_OUT, LANGS
from langclip.search import Index, QueryModel
from langclip.tokenizer import Tokenizer


def main(demo: Path) -> None:
    run = demo / "runs" / "clip"
    lang = json.loads((demo / "report" / "summary.json").read_text(encoding="utf-8"))["lang"]
    tok, qm, idx = Tokenizer.load(run / "tokenizer"), QueryModel(run, image=False), Index(demo / "index")
    truth = {Path(r["image"]).name: (r["colour"], r["shape"])
             for r in csv.DictReader(open(demo / "world" / "test.csv", encoding="utf-8"))}
    phrase = LANGS[lang][0]
    rows = []
    for colour, shape in sorted(HELD_OUT):
        texts = dict.fromkeys([phrase(n, colour, shape) for n in range(1, 6)] + [phrase(1, colour, shape, False)])
        for text in texts:
            if not unseen_words(run, tok, [text]):
                continue
            used, subs = rewrite(run, tok, text, lang)

            def p5(q: str) -> float:
                hits = idx.search(qm.encode_text([q])[0], 5)[0]
                return sum(truth[Path(idx.source(i)).name] == (colour, shape) for i, _ in hits) / 5

            rows.append({"lang": lang, "phrase": text, "unseen": list(unseen_words(run, tok, [text])),
                         "searched": used, "rewritten": subs, "p5_as_typed": p5(text), "p5_rewritten": p5(used)})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    done = [r for r in rows if r["rewritten"]]
    print(json.dumps({"lang": lang, "phrases_with_untrained_words": len(rows), "rewritten": len(done),
                      "mean_p5_as_typed": round(sum(r["p5_as_typed"] for r in done) / max(len(done), 1), 3),
                      "mean_p5_rewritten": round(sum(r["p5_rewritten"] for r in done) / max(len(done), 1), 3)},
                     ensure_ascii=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
