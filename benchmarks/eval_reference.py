"""`langclip eval --reference` on one dataset: the pictures read and embedded once, the English reference row
taking the student's image embeddings (`evaluate.image_features`, session 29), vs the code before it, which
passed over every picture again for the reference (both towers' image embeddings are the one frozen tower's).
Same process, alternating, median of 3; the two results' metrics must be equal.

The data: a demo folder's test pictures (600 PNGs) as an image folder by shape, the demo's `clip` student
and its English teacher as the reference. Make the demo first (`langclip demo --out /tmp/demo`).

    python benchmarks/eval_reference.py /tmp/demo > benchmarks/results/cpu_eval_reference.jsonl
"""
import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def shapes_folder(demo: Path, out: Path) -> list[str]:
    """The demo's test pictures, linked into out/<shape>/; -> the class folders in sorted order."""
    for r in csv.DictReader(open(demo / "world" / "test.csv", encoding="utf-8")):
        d = out / r["shape"]
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(demo / "world" / r["image"], d / Path(r["image"]).name)
    return sorted(p.name for p in out.iterdir())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", help="a `langclip demo --out` folder")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="picture-decoding processes of the loader")
    a = ap.parse_args()
    import torchvision.datasets as tvd

    from langclip.evaluate import _reference, evaluate, image_features
    from langclip.inference import load

    demo = Path(a.demo)
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
                      "threads": torch.get_num_threads(), "python": platform.python_version(),
                      "torch": torch.__version__, "demo": str(demo)}))
    m = load(demo / "runs" / "clip", device="cpu")
    ref = _reference(m, None, m.device)
    with tempfile.TemporaryDirectory() as tmp:
        classes = shapes_folder(demo, Path(tmp))
        ds = tvd.ImageFolder(tmp, transform=m.preprocess)
        loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=a.workers)
        lang = m.tokenizer.meta.get("language", "ru")
        from langclip.datasets import shipped_templates

        templates, en_templates = shipped_templates(lang), shipped_templates("en")
        names = classes   # the folders' English names serve both rows: the cost measured is the pictures'

        def now():
            feats = image_features(m.model, loader, m.device)
            return (evaluate(m.model, loader, m.tokenizer, names, templates, m.device, feats),
                    evaluate(ref[0], loader, ref[1], names, en_templates, m.device, feats))

        def before():   # the reference row passed over the pictures again
            return (evaluate(m.model, loader, m.tokenizer, names, templates, m.device),
                    evaluate(ref[0], loader, ref[1], names, en_templates, m.device))

        times = {"before": [], "now": []}
        results = {}
        for _ in range(a.repeats):
            for name, fn in (("before", before), ("now", now)):
                t0 = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t0)
        same = all(results["before"][i][k] == results["now"][i][k]
                   for i in (0, 1) for k in ("acc1", "acc5", "mean_per_class_recall"))
        b, n = statistics.median(times["before"]), statistics.median(times["now"])
        print(json.dumps({"name": "eval_reference_600_pictures", "pictures": len(ds), "classes": len(classes),
                          "workers": a.workers, "before_s": round(b, 3), "now_s": round(n, 3),
                          "speedup": round(b / n, 2), "before_each": [round(t, 3) for t in times["before"]],
                          "now_each": [round(t, 3) for t in times["now"]], "same_metrics": same,
                          "acc1": results["now"][0]["acc1"], "reference_acc1": results["now"][1]["acc1"]}))


if __name__ == "__main__":
    main()
