"""The demo's report (stage 4): report/summary.json, report.md, the zero-shot table, the confusion,
similarity and training-curve pictures."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..metrics import markdown_table
from .world import HELD_OUT


def report(out, results, retr, held, students, test_imgs, first, feats, t0, cfg, search: dict | None = None) -> dict:
    from PIL import Image

    from ..pictures import plot_confusion
    from ..inference import save_similarity

    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    lang, LG = cfg.lang, cfg.lang.upper()
    rows = []
    for task in ("shape", "colour", "count"):
        for split in ("", "_heldout"):
            t = results[f"teacher_en{split}"][task]["acc1"]
            r = {"task": task + (" (held-out combos)" if split else ""), "teacher EN": t}
            for init in ("clip", "scratch"):
                s = results[f"student_{init}_{lang}{split}"][task]["acc1"]
                r[f"student {LG} {init}"] = s
                r[f"{init} / teacher"] = s / t if t else 0.0
            r["chance"] = 1 / len(results["teacher_en"][task]["classnames"])
            rows.append(r)
    for r, task in zip(rows[::2], ("shape", "colour", "count")):
        for init in ("clip", "scratch"):   # the same students, English class names: is English kept?
            r[f"student EN {init}"] = results[f"student_{init}_en"][task]["acc1"]
    cols = ["task", "teacher EN", f"student {LG} clip", "clip / teacher", f"student {LG} scratch", "scratch / teacher",
            "student EN clip", "student EN scratch", "chance"]
    retr_rows = [{"model": k, **{m: v for m, v in d.items()}} for k, d in retr.items()]
    for init in ("clip", "scratch"):
        for task in ("shape", "colour", "count"):
            res = results[f"student_{init}_{lang}"][task]
            plot_confusion(res["confusion"], res["classnames"], rep / f"confusion_{init}_{task}.png",
                           f"студент ({init}), {task}")
    m, stok = students["clip"]
    pick = list(range(8))
    ims = [Image.open(out / "world" / "test" / test_imgs[i]) for i in pick]
    texts = [first[test_imgs[i]]["caption"] for i in pick]
    with torch.no_grad():
        sim = (feats[pick] @ m.encode_text(stok(texts, context_length=24)).T).numpy()
    save_similarity(sim, ims, [test_imgs[i] for i in pick], texts, rep / "similarity.png")
    _curves(out, rep)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "lang": lang, "seed": cfg.seed, "size": cfg.size,
               "english_replay": cfg.english_replay, "english_fraction": cfg.english_fraction, "precision": cfg.precision,
               "zero_shot": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
               "retrieval": retr, "held_out_combinations": sorted(map(list, HELD_OUT)),
               "n_test_images": len(test_imgs), "n_test_heldout": int(held.sum())}
    if search:
        summary["search"] = search
    (rep / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    md = ["# langclip demo report", "", f"Seed {cfg.seed}, size {cfg.size}, {summary['seconds']} s.", "",
          "## Zero-shot accuracy (acc@1) on held-out pictures", "", markdown_table(rows, cols),
          "## Retrieval on the test pictures (one caption each)", "",
          markdown_table(retr_rows, ["model", "t2i_r@1", "t2i_r@5", "i2t_r@1", "i2t_r@5", "mean_recall"]),
          *(_search_md(search) if search else []), "## Pictures", "", "![similarity](similarity.png)", "", "![curves](curves.png)", "",
          *[f"![{i} {t}](confusion_{i}_{t}.png)" for i in ("clip", "scratch") for t in ("shape", "colour", "count")]]
    (rep / "report.md").write_text("\n".join(md), encoding="utf-8")
    print("\n" + markdown_table(rows, cols))
    print(f"report: {rep / 'report.md'}  ({summary['seconds']} s)")
    return summary


def _search_md(search: dict) -> list[str]:
    md = ["## Search (a held-out combination, over the test pictures)", ""]
    for q, r in search["skipped"].items():
        left = [w for w in r["unseen"] if w not in r["rewritten"]]
        md += [f"«{q}»: no training caption held the tokens of " + ", ".join(f"«{w}»" for w in left)
               + " — an untrained embedding, so the next combination is searched too.", "",
               markdown_table(r["top5"], ["rank", "score", "picture", "shows"]), ""]
    swapped = ", ".join(f"«{w}» → «{f}»" for w, f in search["rewritten"].items())
    return md + [f"«{search['query']}»" + (f", searched as «{search['searched']}» ({swapped}: forms of the same "
                                          f"words that the training captions held)" if swapped else "") + ":", "",
                 markdown_table(search["top5"], ["rank", "score", "picture", "shows"]), ""]


def _curves(out: Path, rep: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for init in ("clip", "scratch"):
        recs = [json.loads(l) for l in open(out / "runs" / init / "metrics.jsonl", encoding="utf-8")]
        tr = [r for r in recs if "loss" in r]
        va = [r for r in recs if "val/mean_recall" in r]
        a.plot([r["step"] for r in tr], [r["loss"] for r in tr], label=init)
        b.plot([r["epoch"] for r in va], [r["val/mean_recall"] for r in va], label=init)
    a.set_title("training loss")
    a.set_xlabel("step")
    b.set_title("validation mean recall@{1,5,10}")
    b.set_xlabel("epoch")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(rep / "curves.png", dpi=100)
    plt.close(fig)
