"""Numerics of the training precisions on the demo: `langclip demo` (default size, same seed) with the
students trained in float32, in bf16 autocast over float32 weights (`bf16`, what a GPU run does by
default) and with bf16 weights + residual stream over float32 master weights (`bf16-weights`, the
faster GPU step). Same machine, one after another. Writes the zero-shot and retrieval tables and both
students' loss curves to benchmarks/results/cpu_demo_precision.json and the curves to
docs/img/precision_curves.png.

    python benchmarks/demo_precision.py          (~9 minutes on 2 CPU cores)

bf16 on a CPU uses the same number format as on a GPU (8-bit mantissa, float32 accumulation in the
matrix products); the step times it prints are the CPU's, not a GPU's.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16", "bf16-weights")


def curves(run: Path) -> dict:
    recs = [json.loads(x) for x in open(run / "metrics.jsonl", encoding="utf-8")]
    return {"step": [r["step"] for r in recs if "loss" in r], "loss": [r["loss"] for r in recs if "loss" in r],
            "val_mean_recall": [r["val/mean_recall"] for r in recs if "val/mean_recall" in r]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="default", choices=["default", "small", "tiny"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_demo_precision.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "precision_curves.png"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the picture from --out's results")
    a = ap.parse_args()
    if a.plot_only:
        return plot(json.loads(Path(a.out).read_text(encoding="utf-8")), a.plot)
    res = {"machine": {"date": time.strftime("%Y-%m-%d"), "arch": platform.machine(), "cpus": os.cpu_count()},
           "size": a.size, "command": "python benchmarks/demo_precision.py", "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for p in PRECISIONS:
            d = Path(tmp) / p
            r = subprocess.run([sys.executable, "-m", "langclip", "demo", "--out", str(d), "--size", a.size,
                                "--precision", p], capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"demo --precision {p} failed:\n{r.stderr[-3000:]}")
            s = json.loads((d / "report" / "summary.json").read_text(encoding="utf-8"))
            res["runs"][p] = {"seconds": s["seconds"], "zero_shot": s["zero_shot"], "retrieval": s["retrieval"],
                              "curves": {init: curves(d / "runs" / init) for init in ("clip", "scratch")}}
            print(p, s["seconds"], "s", flush=True)
    ref = res["runs"]["fp32"]
    for p in PRECISIONS[1:]:
        run, cmp = res["runs"][p], {}
        for init in ("clip", "scratch"):
            a_, b_ = ref["curves"][init]["loss"], run["curves"][init]["loss"]
            cmp[f"{init}_loss_max_abs_diff"] = round(max(abs(x - y) for x, y in zip(a_, b_)), 4)
            cmp[f"{init}_final_loss"] = {"fp32": round(a_[-1], 4), p: round(b_[-1], 4)}
        cmp["zero_shot_max_abs_diff"] = round(max(abs(r1[k] - r2[k]) for r1, r2 in zip(ref["zero_shot"], run["zero_shot"])
                                                  for k in r1 if k.startswith("student")), 4)
        res[f"{p}_vs_fp32"] = cmp
        print(p, "vs fp32:", json.dumps(cmp), flush=True)
    Path(a.out).write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")
    plot(res, a.plot)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
    for col, init in enumerate(("clip", "scratch")):
        ref = res["runs"]["fp32"]["curves"][init]
        for p, style in zip(PRECISIONS, ("-", "--", ":")):
            c = res["runs"][p]["curves"][init]
            axes[0, col].plot(c["step"], c["loss"], style, label=p)
            if p != "fp32":
                axes[1, col].plot(c["step"], [a - b for a, b in zip(c["loss"], ref["loss"])], style, label=f"{p} − fp32")
        axes[0, col].set_title(f"demo student ({init} init): training loss")
        axes[1, col].set_title("difference from the float32 run")
        axes[1, col].axhline(0, color="grey", lw=0.5)
        axes[1, col].set_xlabel("step")
        axes[0, col].legend()
        axes[1, col].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
