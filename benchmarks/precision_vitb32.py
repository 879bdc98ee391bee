"""Numerics of the training precisions at the real shape: a ViT-B/32 text tower (12 layers, width 512,
the 81k bilingual vocabulary's size class), the recipe's optimiser (AdamW, lr 1e-4, weight decay 0.2),
trained with `langclip.train` in float32, bf16 autocast (`bf16`) and bf16 weights over float32 masters
(`bf16-weights`) on the same data, seed and steps. The task is synthetic but learnable: each picture's
embedding is the normalised sum of fixed random vectors of its caption's words (2-6 of wordfreq's 1,000
most frequent Russian words), so the tower has something to fit and the curves can part if a precision loses updates.
Writes the loss curves and held-out recall to benchmarks/results/cpu_precision_vitb32.json.

    python benchmarks/precision_vitb32.py              (~30 minutes on 2 CPU cores)
    python benchmarks/precision_vitb32.py --steps 20   (a quick look)
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from train_loop import write_cache  # noqa: E402  (the synthetic cache in langclip's format)

PRECISIONS = ("fp32", "bf16", "bf16-weights")


def learnable_images(cache: Path, dim: int, seed: int = 1) -> None:
    """Replace the cache's random picture embeddings with normalised sums of per-word vectors."""
    import pyarrow.parquet as pq
    from safetensors.torch import load_file, save_file

    caps = pq.read_table(cache / "captions.parquet").to_pydict()
    words = sorted({w for c in caps["caption"] for w in c.split()})
    g = torch.Generator().manual_seed(seed)
    vec = dict(zip(words, torch.randn(len(words), dim, generator=g)))
    n = max(caps["image_row"]) + 1
    emb = torch.zeros(n, dim)
    for c, r in zip(caps["caption"], caps["image_row"]):
        emb[r] += sum(vec[w] for w in c.split())
    emb = F.normalize(emb, dim=-1).half()
    shard = load_file(str(cache / "emb" / "shard_00000.safetensors"))
    save_file({"emb": emb.contiguous(), "ok": shard["ok"]}, str(cache / "emb" / "shard_00000.safetensors"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--merges", type=int, default=4000)
    ap.add_argument("--words", type=int, default=1000, help="captions draw from this many frequent words (each is seen often)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_precision_vitb32.json"))
    ap.add_argument("--plot", default=str(Path(__file__).parent.parent / "docs" / "img" / "precision_vitb32.png"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the picture from --out's results")
    a = ap.parse_args()
    if a.plot_only:
        return plot(json.loads(Path(a.out).read_text()), a.plot)
    import open_clip

    from langclip.config import LossSection, ModelSection, OptimSection, TokenizerTrainConfig, TrainConfig
    from langclip.tokenizer.train import train_tokenizer
    from langclip.train import train

    tmp = Path(tempfile.mkdtemp(prefix="langclip-precision-"))
    cfg = open_clip.get_model_config("ViT-B-32-quickgelu")
    arch = tmp / "arch.json"
    arch.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**cfg).state_dict(), tmp / "clip.pt")   # random weights, OpenAI's layout
    train_tokenizer(TokenizerTrainConfig(lang="ru", merges=a.merges, wordfreq=True, wordfreq_top=50000,
                                         out=str(tmp / "tok")), progress=False)
    write_cache(tmp / "cache", str(arch), tmp / "clip.pt", a.images, 1, cfg["embed_dim"], words=a.words)
    learnable_images(tmp / "cache", cfg["embed_dim"])
    res = {"machine": {"date": time.strftime("%Y-%m-%d"), "arch": platform.machine(), "cpus": os.cpu_count(),
                       "torch": torch.__version__},
           "setup": {"model": "ViT-B-32-quickgelu text tower (clip init from random weights)", "images": a.images,
                     "batch": a.batch, "steps": a.steps, "lr": 1e-4, "weight_decay": 0.2, "context_length": 32,
                     "task": "picture = normalised sum of random vectors of its caption's words",
                     "words": a.words},
           "command": "python benchmarks/precision_vitb32.py", "runs": {}}
    epochs = -(-a.steps * a.batch // int(a.images * 0.99))
    for p in PRECISIONS:
        t = time.perf_counter()
        run = train(TrainConfig(
            cache=str(tmp / "cache"), out=str(tmp / p),
            model=ModelSection(clip=str(arch), weights=str(tmp / "clip.pt"), tokenizer=str(tmp / "tok"), init="clip",
                               context_length=32),
            optim=OptimSection(lr=1e-4, warmup_steps=max(1, a.steps // 10), weight_decay=0.2),
            loss=LossSection(contrastive=1.0), epochs=epochs, max_steps=a.steps, batch_size=a.batch,
            val_fraction=0.01, log_every=5, tensorboard=False, precision=p, device="cpu"), progress=False)
        recs = [json.loads(x) for x in open(run / "metrics.jsonl")]
        res["runs"][p] = {"seconds": round(time.perf_counter() - t, 1),
                          "step": [r["step"] for r in recs if "loss" in r],
                          "loss": [round(r["loss"], 5) for r in recs if "loss" in r],
                          "val": [{k: round(v, 4) for k, v in r.items() if k.startswith("val/")} for r in recs
                                  if "val/mean_recall" in r]}
        print(p, res["runs"][p]["seconds"], "s, last loss", res["runs"][p]["loss"][-1], res["runs"][p]["val"][-1:],
              flush=True)
    ref = res["runs"]["fp32"]["loss"]
    for p in PRECISIONS[1:]:
        d = [x - y for x, y in zip(res["runs"][p]["loss"], ref)]
        res[f"{p}_vs_fp32"] = {"loss_max_abs_diff": round(max(map(abs, d)), 4),
                               "loss_mean_diff_last_half": round(sum(d[len(d) // 2:]) / len(d[len(d) // 2:]), 4),
                               "first_loss": ref[0], "last_loss": {"fp32": ref[-1], p: res["runs"][p]["loss"][-1]}}
        print(p, "vs fp32", json.dumps(res[f"{p}_vs_fp32"]), flush=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    plot(res, a.plot)
    shutil.rmtree(tmp, ignore_errors=True)   # the three runs' checkpoints: several GB


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 6), sharex=True)
    ref = res["runs"]["fp32"]
    for p, style in zip(PRECISIONS, ("-", "--", ":")):
        r = res["runs"][p]
        top.plot(r["step"], r["loss"], style, label=p)
        if p != "fp32":
            bottom.plot(r["step"], [x - y for x, y in zip(r["loss"], ref["loss"])], style, label=f"{p} − fp32")
    top.set_title("ViT-B/32 text tower, AdamW lr 1e-4, batch 128: training loss")
    bottom.set_title("difference from the float32 run")
    bottom.axhline(0, color="grey", lw=0.5)
    bottom.set_xlabel("step")
    top.legend()
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
