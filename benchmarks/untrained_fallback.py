"""Tried in session 26, not kept: answering a word whose tokens no training caption held (coverage.py) by
un-merging each such token into the two pieces its merge joined, recursively, until every piece occurred in
the training captions (or is a byte). Plain tokens vs un-merged ones, the clip student of a demo folder,
the test pictures' top 10 by what they show (world/test.csv).

    DEMO_OUT=/tmp/demo-ru bash benchmarks/demo_lang.sh ru
    python benchmarks/untrained_fallback.py /tmp/demo-ru "две красные звезды" >> benchmarks/results/cpu_untrained_fallback.jsonl
"""
import csv
import json
import sys
from pathlib import Path

import torch

from langclip.coverage import load_counts
from langclip.search import Index, QueryModel
from langclip.tokenizer import Tokenizer


def main(demo: Path, query: str) -> None:
    run = demo / "runs" / "clip"
    tok, counts = Tokenizer.load(run / "tokenizer"), load_counts(run)
    bpe = json.loads(tok.hf.to_str())["model"]
    vocab = bpe["vocab"]
    name = {v: k for k, v in vocab.items()}
    made = {a + b: (a, b) for a, b in (m.split(" ") if isinstance(m, str) else m for m in bpe["merges"])}

    def unmerge(i: int) -> list[int]:
        if counts[i] > 0 or name[i] not in made:
            return [i]
        a, b = made[name[i]]
        return unmerge(vocab[a]) + unmerge(vocab[b])

    ids = tok.encode(query)
    fallback = [j for i in ids for j in unmerge(i)]
    qm, idx = QueryModel(run, image=False), Index(demo / "index")
    truth = {Path(r["image"]).name: f"{r['count']} {r['colour']} {r['shape']}"
             for r in csv.DictReader(open(demo / "world" / "test.csv", encoding="utf-8"))}

    def top10(seq: list[int]) -> list[str]:
        row = [tok.sot_token_id, *seq, tok.eot_token_id]
        t = torch.zeros(1, max(len(row), qm.model.context_length), dtype=torch.long)
        t[0, :len(row)] = torch.tensor(row)
        with torch.no_grad():
            v = torch.nn.functional.normalize(qm.model.encode_text(t.to(qm.device)).float(), dim=-1).numpy()[0]
        return [truth[Path(idx.source(i)).name] for i, _ in idx.search(v, 10)[0]]

    print(json.dumps({"lang": json.loads((demo / "report" / "summary.json").read_text())["lang"], "query": query,
                      "tokens": [tok.decode([i]) for i in ids], "untrained": [tok.decode([i]) for i in ids if counts[i] == 0],
                      "unmerged_untrained_left": int(sum(counts[i] == 0 for i in fallback)), "unmerged_tokens": len(fallback),
                      "top10_plain": top10(ids), "top10_unmerged": top10(fallback)}, ensure_ascii=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
