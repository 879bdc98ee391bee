"""The whole training loop (`langclip.train`) vs its bare step, in the same run.

train_throughput.py times one compiled step on fixed tensors. A real epoch also draws the epoch order,
gathers token rows and image embeddings on the host, copies them to the device, logs, validates and
checkpoints. This script writes a synthetic cache in langclip's format (random unit image embeddings,
Russian-like queries of 2-6 wordfreq words, their English-like counterparts and teacher embeddings),
trains one epoch with `train()`, and compares the loop's pairs/s (metrics.jsonl, after warm-up) with
the bare step (same model, optimizer, precision and compile mode) run on random tokens with the
same sequence of batch lengths as the loop's first 40 batches.

    python benchmarks/train_loop.py                             # GPU: ViT-B-32 text tower, 210k images x 5
    python benchmarks/train_loop.py --english                   # with English replay (2B a step)
    python benchmarks/train_loop.py --tiny --device cpu --images 6000 --batch 128   # CPU mode
    python benchmarks/train_loop.py --precision bf16-weights --profile prof/        # + where a step's time goes

`--profile DIR` puts `--profile-steps` steps of the loop (from a quarter of the epoch) and of the bare step
under torch.profiler (loop_profile.py): per-step device and host time, operators and kernels launched,
and on CUDA every host-device sync with the line that asked for it; tables in DIR. The profiled steps are
left out of neither rate (a profiler slows them a little; the rates are medians over the epoch).
"""
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

TINY = json.loads((Path(__file__).parent / "tiny_clip.json").read_text())  # the CPU-mode model, shared


def write_cache(d: Path, arch: str, weights: Path, n_images: int, per_image: int, dim: int, seed: int = 0,
                words: int = 20000) -> None:
    """A cache folder in langclip's format, without images: what `langclip cache build` writes. Captions
    are 2-6 words of wordfreq's `words` most frequent."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file
    from wordfreq import top_n_list

    from langclip.files import sha256_file

    g = torch.Generator().manual_seed(seed)
    ru, en = top_n_list("ru", words), top_n_list("en", words)
    n_caps = n_images * per_image
    lens = torch.randint(2, 7, (n_caps,), generator=g).tolist()
    wi = torch.randint(0, words, (n_caps, 6), generator=g).tolist()
    caps = [" ".join(ru[j] for j in w[:k]) for w, k in zip(wi, lens)]
    caps_en = [" ".join(en[j] for j in w[:k]) for w, k in zip(wi, lens)]
    (d / "emb").mkdir(parents=True)
    S = 65536
    emb = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1).half()
    for k in range(0, n_images, S):
        save_file({"emb": emb[k: k + S].contiguous(), "ok": torch.ones(min(S, n_images - k), dtype=torch.bool)},
                  str(d / "emb" / f"shard_{k // S:05d}.safetensors"))
    (d / "teacher").mkdir()
    teacher = F.normalize(torch.randn(n_caps, dim, generator=g), dim=-1).half()
    save_file({"idx": torch.arange(n_caps), "emb": teacher}, str(d / "teacher" / "shard_00000.safetensors"))
    image_row = torch.arange(n_images).repeat_interleave(per_image).tolist()
    pq.write_table(pa.table({"caption": caps, "image_row": image_row, "caption_en": caps_en}), d / "captions.parquet")
    pq.write_table(pa.table({"row": list(range(n_images)), "source": [f"img{i}" for i in range(n_images)]}),
                   d / "images.parquet")
    man = {"format": "langclip-cache/1", "arch": arch, "weights": str(weights), "weights_sha256": sha256_file(weights),
           "preprocess": {}, "dim": dim, "dtype": "float16", "shard_size": S, "num_shards": (n_images + S - 1) // S,
           "num_images": n_images, "num_images_ok": n_images, "num_images_failed": 0, "num_captions": n_caps,
           "teacher": True, "text_only": False, "failures": [], "skipped": [], "data": ["synthetic"]}
    (d / "manifest.json").write_text(json.dumps(man))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--images", type=int, default=210_000, help="x5 captions: >= 1M training pairs after the 1%% held out")
    ap.add_argument("--per-image", type=int, default=5, help="captions per image (the origin: 5 queries)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--merges", type=int, default=4000, help="tokenizer merges (fewer than 32k: quicker to train)")
    ap.add_argument("--english", action="store_true", help="English replay on (loss.english=1)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile", action="store_true", help="compile on the CPU too (the CPU backend of inductor)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16-weights"],
                    help="the loop's and the bare step's precision (auto: bf16 autocast on GPU)")
    ap.add_argument("--profile", metavar="DIR", help="profile a window of loop steps and of bare steps (see above)")
    ap.add_argument("--profile-steps", type=int, default=20)
    a = ap.parse_args()
    import open_clip

    from langclip.train.batches import CaptionGroups, TokenTable, epoch_order
    from langclip.cache import load_cache
    from langclip.runfolder import split_by_image
    from langclip.model import LangCLIP
    from langclip.tokenizer import Tokenizer
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer.train import train_tokenizer
    from langclip.config import LossSection, ModelSection, OptimSection, TrainConfig
    from langclip.train import clip_loss, train
    from langclip.train.loop import param_groups

    dev = a.device
    compile_ = (dev == "cuda" or a.compile) and not a.no_compile
    torch.backends.cuda.matmul.allow_tf32 = True
    print(json.dumps({"device": torch.cuda.get_device_name(0) if dev == "cuda" else platform.machine(),
                      "torch": torch.__version__, "images": a.images, "captions": a.images * a.per_image,
                      "batch": a.batch, "english_replay": a.english, "compiled": compile_, "tiny": a.tiny,
                      "precision": a.precision}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="langclip-loop-"))
    cfg = TINY if a.tiny else open_clip.get_model_config("ViT-B-32-quickgelu")
    arch = tmp / "arch.json"
    arch.write_text(json.dumps(cfg))
    torch.save(open_clip.CLIP(**cfg).state_dict(), tmp / "clip.pt")
    t = time.perf_counter()
    tok = train_tokenizer(TokenizerTrainConfig(lang="ru", merges=a.merges, wordfreq=True, wordfreq_top=50000,
                                               out=str(tmp / "tok")), progress=False)
    write_cache(tmp / "cache", str(arch), tmp / "clip.pt", a.images, a.per_image, cfg["embed_dim"])
    print(json.dumps({"name": "setup", "seconds": round(time.perf_counter() - t, 1)}), flush=True)

    # the loop: one epoch of train()
    tcfg = TrainConfig(cache=str(tmp / "cache"), out=str(tmp / "run"),
                       model=ModelSection(clip=str(arch), weights=str(tmp / "clip.pt"), tokenizer=str(tmp / "tok"),
                                          init="clip", context_length=32),
                       optim=OptimSection(lr=1e-4, warmup_steps=100),
                       loss=LossSection(contrastive=1.0, distill=1.0, english=1.0 if a.english else 0.0),
                       epochs=1, batch_size=a.batch, val_fraction=0.01, compile=compile_, log_every=20,
                       tensorboard=False, device=dev, precision=a.precision)
    import langclip.train.report as report
    val_s, inner = [], report.validate

    def timed_validate(*args, **kw):            # validation's wall time at the end of the epoch
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        r = inner(*args, **kw)
        val_s.append(time.perf_counter() - t)
        return r

    report.validate = timed_validate
    import langclip.train.loop as loop_mod
    from torch._dynamo.utils import counters

    inner_after, prof = loop_mod.after_step, None
    if a.profile:
        from loop_profile import StepProfiler

        spe = int(a.images * 0.99) // a.batch
        prof = StepProfiler(dev, max(2, spe // 4), min(a.profile_steps, spe // 2), Path(a.profile), f"loop_{a.precision}")

        def after_step(run, loss, parts):
            inner_after(run, loss, parts)
            prof.tick()

        loop_mod.after_step = after_step
    counters.clear()
    t = time.perf_counter()
    train(tcfg, progress=False)
    wall = time.perf_counter() - t
    report.validate, loop_mod.after_step = inner, inner_after
    loop_graphs = counters["stats"].get("unique_graphs", 0)
    if prof:
        print(json.dumps(prof.summary()), flush=True)
    recs = [json.loads(line) for line in open(tmp / "run" / "metrics.jsonl")]
    rates = [r["pairs_per_s"] for r in recs if "pairs_per_s" in r][2:-1] or [r["pairs_per_s"] for r in recs if "pairs_per_s" in r]
    steps = max(r["step"] for r in recs)

    # the bare step on the same shapes: the loop's own sequence of batch lengths
    data = load_cache(tmp / "cache")
    table = TokenTable.encode(Tokenizer.load(tmp / "tok"), data.captions, 32)
    mult = 16 if compile_ else 8
    train_idx, val_idx = split_by_image(data, 0.01, 0)
    order = epoch_order(CaptionGroups(train_idx, data.caption_image), 0, 0)
    lengths = [table.batch(order[s: s + a.batch], mult).shape[1]          # the loop's batch lengths, in order
               for s in range(0, min(len(order), 40 * a.batch) - a.batch + 1, a.batch)]
    c = json.loads(json.dumps(cfg))
    c["text_cfg"].update(vocab_size=tok.vocab_size, context_length=32)
    model = LangCLIP(c).to(dev)
    from langclip.train.precision import Bf16Weights, optimizer_step

    twin = Bf16Weights(model) if a.precision == "bf16-weights" else None
    fwd = twin.model if twin else model
    model.clip.visual = None
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-4, **({"fused": True} if dev == "cuda" else {}))
    B = a.batch * (2 if a.english else 1)
    tks = {}
    for L in set(lengths):
        tks[L] = torch.randint(1, tok.vocab_size - 2, (B, L), device=dev)
        tks[L][:, -1] = tok.vocab_size - 1
    fi = F.normalize(torch.randn(a.batch, cfg["embed_dim"], device=dev), dim=-1).half()
    amp = dict(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda" and twin is None)

    def loss_fn(tk, fi):
        with torch.autocast(**amp):
            ft = fwd.encode_text(tk)
            return clip_loss(ft[: fi.shape[0]], fi, fwd.logit_scale) + (1 - (ft[: fi.shape[0]].float() * ft[-fi.shape[0]:].float()).sum(-1)).mean()

    f = torch.compile(loss_fn, dynamic=False) if compile_ else loss_fn

    def step(L):
        f(tks[L], fi).backward()
        optimizer_step(opt, twin)          # the loop's own (grads to masters, step, masters to twin)

    counters.clear()
    for L in sorted(set(lengths)):   # compile / warm every shape first
        step(L)
        step(L)
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for L in lengths:
        step(L)
    if dev == "cuda":
        torch.cuda.synchronize()
    bare = a.batch * len(lengths) / (time.perf_counter() - t)
    bare_graphs = counters["stats"].get("unique_graphs", 0)
    if a.profile:                    # a window of bare steps, after the timed ones
        bp = StepProfiler(dev, 2, min(a.profile_steps, len(lengths) - 2), Path(a.profile), f"bare_{a.precision}")
        for L in lengths[: 2 + bp.steps]:
            step(L)
            bp.tick()
        print(json.dumps(bp.summary()), flush=True)
    loop = statistics.median(rates)
    print(json.dumps({"name": "bare_step", "lengths": {L: lengths.count(L) for L in sorted(set(lengths))},
                      "pairs_per_s": round(bare), "compiled_graphs": bare_graphs}), flush=True)
    print(json.dumps({"name": "train_loop", "steps": steps, "epoch_wall_s": round(wall, 1), "compiled_graphs": loop_graphs,
                      "validation_s": [round(v, 2) for v in val_s], "val_captions": len(val_idx),
                      "pairs_per_s_median": round(loop), "loop_vs_bare_step": round(loop / bare, 3),
                      "epoch_3_7M_pairs_min_at_this_rate": round(3.7e6 / loop / 60, 2)}), flush=True)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)   # the cache and the run's checkpoints


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
