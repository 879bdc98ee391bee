"""Combined queries (`langclip search --add/--subtract`) and `search --images` on a demo's test pictures.

1. Analogy in the demo's language, on its clip student over its index: for every shape S, colours C1 != C2 and
   a helper shape H != S, the query «C1 S» - «C1 H» + «C2 H» (e.g. «estrella roja» - «círculo rojo» + «círculo
   azul») against the direct «C2 S» and the unchanged «C1 S». precision@5: the share of the top 5 test
   pictures that show colour C2 and shape S (world/test.csv). Held-out combinations (never in a training
   caption) are reported apart. One JSON line of means per group.
2. `search --images` on the demo's test folder, through the CLI as a user runs it: the first search (its
   index built into a fresh $LANGCLIP_INDEX_HOME) and a later one (nothing changed), wall seconds.

    DEMO_OUT=/tmp/demo-es bash benchmarks/demo_lang.sh es
    python benchmarks/search_combined.py /tmp/demo-es > benchmarks/results/cpu_search_combined_es.jsonl
"""
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import permutations
from pathlib import Path

from langclip.demo.world import COLOURS, HELD_OUT, LANGS, SHAPES
from langclip.search import Index, QueryModel
from langclip.search.query import combine


def analogy(demo: Path, lang: str) -> list[dict]:
    run = demo / "runs" / "clip"
    qm, idx = QueryModel(run, image=False), Index(demo / "index")
    truth = {Path(r["image"]).name: (r["colour"], r["shape"])
             for r in csv.DictReader(open(demo / "world" / "test.csv", encoding="utf-8"))}
    phrase = lambda c, s: LANGS[lang][0](1, c, s, False)   # noqa: E731 - "a red star" without the number
    groups: dict = {}
    for shape in SHAPES:
        for c1, c2 in permutations(COLOURS, 2):
            helper = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
            a, b, c, d = qm.encode_text([phrase(c1, shape), phrase(c1, helper), phrase(c2, helper), phrase(c2, shape)])

            def p5(vec) -> float:
                hits = idx.search(vec, 5)[0]
                return sum(truth[Path(idx.source(i)).name] == (c2, shape) for i, _ in hits) / 5

            key = "held_out" if (c2, shape) in HELD_OUT else "trained"
            groups.setdefault(key, []).append({"combined": p5(combine([a, b, c], [1, -1, 1])), "direct": p5(d),
                                               "unchanged": p5(a)})
    example = (f"«{phrase('red', 'star')}» - «{phrase('red', 'circle')}» + «{phrase('blue', 'circle')}»")
    return [{"kind": "analogy", "lang": lang, "targets": key, "queries": len(rows), "example": example,
             **{f"p5_{k}": round(statistics.mean(r[k] for r in rows), 3) for k in ("combined", "direct", "unchanged")}}
            for key, rows in sorted(groups.items())]


def folder_search(demo: Path, lang: str) -> dict:
    run = demo / "runs" / "clip"
    query = LANGS[lang][0](2, "blue", "star")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "LANGCLIP_INDEX_HOME": home}
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(["langclip", "search", "--images", str(demo / "world" / "test"), "--model", str(run),
                            query, "-k", "5", "--paths"], check=True, env=env, capture_output=True)
            times.append(round(time.perf_counter() - t0, 2))
    pictures = sum(1 for _ in (demo / "world" / "test").iterdir())
    return {"kind": "search --images", "pictures": pictures, "first_s": times[0], "later_s": times[1:]}


def main(demo: Path) -> None:
    lang = json.loads((demo / "report" / "summary.json").read_text(encoding="utf-8"))["lang"]
    machine = {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d")}
    for rec in analogy(demo, lang) + [folder_search(demo, lang)]:
        print(json.dumps({**rec, "machine": machine}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
