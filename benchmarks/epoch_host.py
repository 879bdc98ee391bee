"""Host-side cost of a training epoch at the origin's scale (3.7M images, 5 captions each), on CPU.

The origin trained 30 epochs of 3.7M image-query pairs; the target is <= 3 min an epoch on one H100.
The GPU step is measured by train_throughput.py; this script measures what the host must do around
it, which a fast GPU step can otherwise wait on:

- grouping the training captions by image (once a run),
- one epoch's order: one random caption per image, images shuffled (every epoch),
- per step: the batch's token rows, padded to its longest text (length bucket), and its image
  embeddings (what `train` does before the copy to the device),
- the memory of the token table: ragged `TokenTable` vs the padded (N, context) table.

Baseline in the same run: what langclip shipped before session 3, copied below verbatim: a dict of
caption lists and one `torch.randint` per image each epoch; a padded int32 token table (built from an
int64 one) gathered row by row and cut after the gather.

    python benchmarks/epoch_host.py                    # 3.7M images x 5 captions, context 77
    python benchmarks/epoch_host.py --images 200000    # quicker
"""
import argparse
import json
import platform
import time

import torch

from langclip.train.batches import CaptionGroups, TokenTable, bucket_length, epoch_order, text_length


# -- baseline: langclip before session 3 ---------------------------------------------------------
def old_group(train_idx, caption_image):
    by_image = {}
    for c in train_idx.tolist():
        by_image.setdefault(int(caption_image[c]), []).append(c)
    return [torch.tensor(v) for _, v in sorted(by_image.items())]


def old_epoch_order(image_caps, seed, epoch):
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    pick = torch.tensor([int(c[torch.randint(len(c), (1,), generator=g)]) for c in image_caps], dtype=torch.long)
    return pick[torch.randperm(len(pick), generator=g)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3_700_000)
    ap.add_argument("--captions", type=int, default=5, help="captions per image")
    ap.add_argument("--context", type=int, default=77)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=300, help="batches assembled for the per-step figure")
    ap.add_argument("--no-baseline", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"machine": platform.machine(), "cpu": platform.processor(), "torch": torch.__version__,
                      "threads": 1, "images": a.images, "captions_per_image": a.captions}), flush=True)

    N, C, V = a.images, a.images * a.captions, 81408
    g = torch.Generator().manual_seed(0)
    caption_image = torch.arange(N).repeat_interleave(a.captions)[torch.randperm(C, generator=g)]
    lengths = torch.randint(4, 24, (C,), generator=g)           # short search queries, as the origin's
    tokens = torch.zeros(C, a.context, dtype=torch.int32)
    tokens[:, :24] = torch.randint(1, V - 2, (C, 24), generator=g, dtype=torch.int32)
    tokens[:, :24] *= torch.arange(24)[None, :] < lengths[:, None]   # padding after end-of-text
    tokens[torch.arange(C), lengths] = V - 1
    images = torch.randn(N, 512, generator=g).half()
    train_idx = torch.arange(C)

    def report(name, sec, base=None, **extra):
        d = {"name": name, "seconds": round(sec, 4), **extra}
        if base:
            d["speedup"] = round(base / sec, 1)
        print(json.dumps(d), flush=True)

    groups, t_group = timed(lambda: CaptionGroups(train_idx, caption_image))
    order, t_order = timed(lambda: epoch_order(groups, 0, 0))
    base_group = base_order = None
    if not a.no_baseline:
        caps, base_group = timed(lambda: old_group(train_idx, caption_image))
        report("baseline_group_by_image", base_group)
        _, base_order = timed(lambda: old_epoch_order(caps, 0, 0))
        report("baseline_epoch_order", base_order)
        del caps
    report("langclip_group_by_image", t_group, base_group)
    report("langclip_epoch_order", t_order, base_order)
    assert len(order) == N and torch.equal(caption_image[order].sort().values, torch.arange(N))

    steps = min(a.steps, N // a.batch)
    epoch_steps = N // a.batch

    def per_step(assemble):
        assemble(0)
        _, t = timed(lambda: [assemble(s) for s in range(steps)])
        return t / steps

    def old_assemble(s):
        cap = order[s * a.batch: (s + 1) * a.batch]
        tk = tokens[cap]
        tk = tk[:, :bucket_length(text_length(tk, None), tk.shape[1], 8)]
        return tk.long(), images[caption_image[cap]]

    table, t_table = timed(lambda: TokenTable(*_ragged(tokens, 1 << 18), None, a.context))

    def new_assemble(s):
        cap = order[s * a.batch: (s + 1) * a.batch]
        return table.batch(cap, 8), images[caption_image[cap]]

    for s in (0, 1, steps - 1):  # the same batches
        assert torch.equal(old_assemble(s)[0], new_assemble(s)[0])
    base_step = per_step(old_assemble)
    report("baseline_batch_assembly", base_step, ms_per_step=round(base_step * 1e3, 3))
    step = per_step(new_assemble)
    report("langclip_batch_assembly", step, base_step, ms_per_step=round(step * 1e3, 3),
           host_pairs_per_s=round(a.batch / step),
           host_seconds_per_epoch=round(t_order + step * epoch_steps, 1), steps_per_epoch=epoch_steps)
    padded = tokens.numel() * tokens.element_size()
    report("langclip_token_table", t_table, table_gib=round(table.nbytes / 2**30, 2),
           baseline_table_gib=round(padded / 2**30, 2), baseline_peak_gib=round(3 * padded / 2**30, 2),
           memory_ratio=round(padded / table.nbytes, 1))


def _ragged(tokens, chunk):
    parts = [TokenTable.from_padded(tokens[s: s + chunk]) for s in range(0, len(tokens), chunk)]
    return torch.cat([p.flat for p in parts]), torch.cat([p.lengths for p in parts])


if __name__ == "__main__":
    main()
