"""Image-embedding cache build throughput on photo-sized JPEGs: PIL decoding in DataLoader workers
(`--decode pil`, the default), torchvision's kernels in the workers (`--decode torchvision`) and
decoding on the device (`--decode nvjpeg`), each against the bare image-tower forward on the same batch
size, in the same run.

    python benchmarks/cache_throughput.py                          # GPU: 50,000 JPEGs, 500x375, ~100 KB
    python benchmarks/cache_throughput.py --arch tiny --images 256 --device cpu --distinct 32   # CPU mode

The pictures: `--distinct` photo-like pictures (gradients, discs, sensor-like noise; JPEG quality 94,
about 100 KB each at 500x375), each written `images / distinct` times under its own name, so every
file is decoded in full while generating them stays cheap. Measures, one JSON line each:
- bare_image_tower_forward: preprocessed tensors already on the device (the ceiling);
- device_side_decode_forward: encoded bytes already in host memory → decode, resize, crop, normalise
  and forward on the device (what the GPU sustains when the CPU only reads files), with the JPEG
  decoder langclip picks (TorchCodec's where it loads), then `_torchvision`: the same with the other;
- device_side_stages (--stages): the same bytes, each stage timed alone with a device sync between
  (decode, resize/crop/normalise, forward), and the decode split over 1/2/4 threads with a CUDA stream
  each: where the device side's gap to the bare forward goes, before choosing a fix;
- worker_cost_per_picture: what one decoding worker spends a picture (one core): PIL to float (the
  default path before session 7), PIL to uint8 (the default path now) and torchvision;
  and an index thumbnail's cost, langclip's (reduced-scale decode of large JPEGs) vs a full decode first;
- cache_build_<mode>: `langclip.cache.build_cache` end to end (table reading, model load and SHA-256,
  workers, shards, consolidation), images/s over the whole call; `_ahead` (--decode-ahead): nvjpeg
  with the next batch decoded in a thread during the forward;
- agreement: cosine between the two caches' embeddings of the same pictures.
"""
import argparse
import csv
import io
import json
import os
import platform
import shutil
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

TINY = json.loads((Path(__file__).parent / "tiny_clip.json").read_text())  # the CPU-mode model, shared


def photo(seed: int, w: int = 500, h: int = 375) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / w
    a = np.stack([np.sin(x * rng.uniform(2, 12) + rng.uniform(0, 6)), np.cos(y * rng.uniform(2, 12)),
                  np.sin((x + y) * rng.uniform(2, 12))], -1) * 90 + 128
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, h / w), rng.uniform(0.03, 0.2)
        a[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    a += rng.normal(0, 12, a.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=94)
    return buf.getvalue()


def write_pictures(d: Path, n: int, distinct: int, procs: int, size: tuple[int, int] = (500, 375)) -> float:
    from functools import partial

    (d / "img").mkdir(parents=True)
    with Pool(procs) as pool:
        pics = pool.map(partial(photo, w=size[0], h=size[1]), range(distinct))
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i in range(n):
            (d / "img" / f"{i:06d}.jpg").write_bytes(pics[i % distinct])
            w.writerow([f"img/{i:06d}.jpg", f"фото {i}"])
    return float(np.mean([len(p) for p in pics]))


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def stage_times(prep, blobs, m, amp, batch, dev):
    """Each device-side stage alone over the same pictures (sync between stages), images/s per stage;
    then the decode split over threads, each with its own CUDA stream."""
    from concurrent.futures import ThreadPoolExecutor

    def timed(fn):
        sync(dev)
        t = time.perf_counter()
        r = fn()
        sync(dev)
        return r, time.perf_counter() - t

    chunks = [blobs[s: s + batch] for s in range(0, len(blobs), batch)]
    tot = {"decode": 0.0, "resize_crop_normalise": 0.0, "forward": 0.0}
    with torch.inference_mode():
        prep._resize(list(prep._decode(chunks[0], list(range(len(chunks[0])))).values()))   # warm
        for c in chunks:
            pics, t1 = timed(lambda: prep._decode(c, list(range(len(c)))))
            x, t2 = timed(lambda: prep._resize([pics[i] for i in range(len(c))]))
            with amp:
                _, t3 = timed(lambda: m.clip.visual(x))
            for k, v in zip(tot, (t1, t2, t3)):
                tot[k] += v
    n = len(blobs)
    print(json.dumps({"name": "device_side_stages", "images": n,
                      **{f"{k}_images_per_s": round(n / v) for k, v in tot.items()},
                      "share": {k: round(v / sum(tot.values()), 3) for k, v in tot.items()}}), flush=True)

    def decode_part(part):
        ctx = torch.cuda.stream(torch.cuda.Stream()) if dev == "cuda" else torch.inference_mode()
        with ctx, torch.inference_mode():
            out = prep._decode(part, list(range(len(part))))
            if dev == "cuda":
                torch.cuda.current_stream().synchronize()
            return out

    for threads in (1, 2, 4):
        with ThreadPoolExecutor(threads) as pool:
            def run():
                for c in chunks:
                    k = -(-len(c) // threads)
                    list(pool.map(decode_part, [c[i: i + k] for i in range(0, len(c), k)]))
            _, t = timed(run)
        print(json.dumps({"name": "device_decode_threads", "threads": threads, "decode_images_per_s": round(n / t)}),
              flush=True)


def worker_cost(pairs, pp, n: int) -> None:
    """What one decoding worker spends a picture (one core, one thread, files in the page cache):
    open_clip's whole transform to float (`pil_float`: the PIL path before session 7), the PIL path as it
    is (`pil`: the transform stopped before its tensor conversion, uint8 out) and `--decode torchvision`
    (uint8 out); the device normalises the uint8 ones."""
    from langclip.cache.decode import DecodedImages, uint8_transform
    from langclip.model import image_transform
    from langclip.pairs import ImageDataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)               # as in a DataLoader worker
    rows = list(range(n))
    tf = image_transform(pp)
    paths = {"pil_float": ImageDataset(pairs.images, rows, tf),
             "pil": ImageDataset(pairs.images, rows, uint8_transform(tf, pp)),
             "torchvision": DecodedImages(pairs.images, rows, pp)}
    def best_ms(fn) -> float:      # best of 3 passes over the pictures, ms a picture
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for i in rows:
                fn(i)
            best = min(best, time.perf_counter() - t)
        return best / n * 1e3

    def decoded(ds):
        def one(i):
            assert ds[i][1] is not None
        return one

    ms = {name: best_ms(decoded(ds)) for name, ds in paths.items()}
    # index thumbnails (256 px): langclip's (a large JPEG decoded at reduced scale) vs a full decode first
    from langclip.pairs import open_image
    from langclip.search.thumbs import _Thumbs

    def full_decode_thumb(i):
        im = open_image(pairs.images[i]).convert("RGB")
        im.thumbnail((256, 256))
        im.save(io.BytesIO(), "JPEG", quality=85)

    thumbs = _Thumbs(pairs.images[:n], 256)
    ms["thumb_full_decode"] = best_ms(full_decode_thumb)
    ms["thumb_langclip"] = best_ms(thumbs.__getitem__)
    torch.set_num_threads(threads)
    print(json.dumps({"name": "worker_cost_per_picture", "pictures": n, "pil_float_ms": round(ms["pil_float"], 3),
                      "pil_ms": round(ms["pil"], 3),
                      "torchvision_ms": round(ms["torchvision"], 3), "pil_float_over_pil": round(ms["pil_float"] / ms["pil"], 2),
                      "pil_float_over_torchvision": round(ms["pil_float"] / ms["torchvision"], 2),
                      "thumbnail_full_decode_ms": round(ms["thumb_full_decode"], 3),
                      "thumbnail_langclip_ms": round(ms["thumb_langclip"], 3),
                      "note": "one core, best of 3 passes, decode + resize + crop (+ pil_float: ToTensor/normalise); "
                              "thumbnails: 256 px JPEGs as `index build` writes them"}),
          flush=True)


def device_side_rate(prep, blobs, tower, amp, batch: int, dev: str, ahead: bool = False, pad: bool = False) -> float:
    """Images/s of decode + preprocess + forward on the device, the bytes already in host memory (two
    warm-up batches first). `tower`: the image tower to call (eager or compiled); `ahead`: the next
    batch decoded in a thread (langclip's decode_ahead) while this one goes through the tower; `pad`: a
    last, smaller batch padded to `batch`, as cache build does for a compiled tower (one graph)."""
    from langclip.cache.decode import decode_ahead
    from langclip.cache.embed import embed_batch

    def batches(lo, hi):
        for s in range(lo, hi, batch):
            chunk = blobs[s: min(s + batch, hi)]
            yield list(range(s, s + len(chunk))), chunk, [""] * len(chunk)

    def run(lo, hi):
        it = decode_ahead(batches(lo, hi), prep, torch.device(dev)) if ahead else (prep(*b) for b in batches(lo, hi))
        for _, _, xb, _ in it:
            with amp:
                embed_batch(tower, xb, batch if pad else 0)

    with torch.inference_mode():
        run(0, 2 * batch)
        sync(dev)
        t = time.perf_counter()
        run(0, len(blobs))
        sync(dev)
        return len(blobs) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--distinct", type=int, default=1000)
    ap.add_argument("--arch", default="ViT-B-32-quickgelu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--worker-pictures", type=int, default=256, help="pictures for worker_cost_per_picture")
    ap.add_argument("--size", default="500x375", help="WxH of the generated JPEGs (4000x3000: a camera's photos)")
    ap.add_argument("--decode", nargs="+", default=["pil", "torchvision", "nvjpeg"], choices=["pil", "torchvision", "nvjpeg"])
    ap.add_argument("--stages", action="store_true", help="also time the device side's stages one by one")
    ap.add_argument("--no-build", action="store_true", help="skip the end-to-end cache builds")
    ap.add_argument("--decode-threads", type=int, nargs="+", default=[1],
                    help="nvjpeg builds: one per value of decode_threads (the batch's decode split over threads)")
    ap.add_argument("--decode-ahead", action="store_true",
                    help="nvjpeg builds: each also with decode_ahead (the next batch decoded in a thread meanwhile)")
    ap.add_argument("--compile", action="store_true",
                    help="also the compiled image tower (cache build's `compile`): bare forward, device side "
                         "(with and without decode_ahead) and the nvjpeg build once more with compile")
    a = ap.parse_args()
    import open_clip

    from langclip.build import load_image_tower
    from langclip.cache import build_cache, load_cache
    from langclip.cache.decode import JPEG_DECODERS, DevicePreprocess, jpeg_decoder
    from langclip.cache.embed import auto_workers
    from langclip.config import CacheConfig
    from langclip.model import LangCLIP, model_config, preprocess_cfg
    from langclip.pairs import read_pairs

    d = Path(tempfile.mkdtemp(prefix="langclip-cache-bench-"))
    arch = a.arch
    if arch == "tiny":
        (d / "tiny.json").write_text(json.dumps({"model_cfg": TINY}))
        arch = str(d / "tiny.json")
    cfg = model_config(arch)
    torch.save(open_clip.CLIP(**cfg).state_dict(), d / "w.pt")
    t = time.perf_counter()
    W, H = map(int, a.size.split("x"))
    kb = write_pictures(d, a.images, a.distinct, os.cpu_count() or 1, (W, H)) / 1e3
    dev = a.device
    print(json.dumps({"device": torch.cuda.get_device_name(0) if dev == "cuda" else platform.machine(),
                      "cpus": os.cpu_count(), "workers": auto_workers(), "images": a.images,
                      "distinct": a.distinct, "size": a.size, "mean_kb": round(kb, 1), "arch": a.arch,
                      "batch": a.batch, "torch": torch.__version__, "jpeg_decoder": jpeg_decoder()[0],
                      "write_s": round(time.perf_counter() - t, 1)}),
          flush=True)
    m = LangCLIP(cfg)
    load_image_tower(m, d / "w.pt", arch)
    m.to(dev).eval()
    S = cfg["vision_cfg"]["image_size"]
    amp = torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda")
    x = torch.randn(a.batch, 3, S, S, device=dev)
    reps = max(2, min(a.images, 20_000) // a.batch)
    with torch.inference_mode(), amp:
        for _ in range(3):
            m.clip.visual(x)
        sync(dev)
        t = time.perf_counter()
        for _ in range(reps):
            m.clip.visual(x)
        sync(dev)
        bare = reps * a.batch / (time.perf_counter() - t)
    print(json.dumps({"name": "bare_image_tower_forward", "images_per_s": round(bare)}), flush=True)
    tower = m.clip.visual
    if a.compile:
        tower = torch.compile(m.clip.visual, dynamic=False)
        t = time.perf_counter()
        with torch.inference_mode(), amp:
            tower(x)
            sync(dev)
            warm = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(reps):
                tower(x)
            sync(dev)
            bare_c = reps * a.batch / (time.perf_counter() - t)
            out_e, out_c = m.clip.visual(x[:64]).float(), tower(x)[:64].float()   # the compiled graph's shape
        cos = torch.nn.functional.cosine_similarity(out_e, out_c, dim=-1)
        print(json.dumps({"name": "bare_image_tower_forward_compiled", "images_per_s": round(bare_c),
                          "vs_eager": round(bare_c / bare, 3), "compile_s": round(warm, 1),
                          "cosine_to_eager_min": round(cos.min().item(), 5)}), flush=True)

    # device side: bytes already in host memory, decoded + preprocessed + embedded on the device
    pairs = read_pairs([str(d / "pairs.csv")])
    n_dev = min(a.images, reps * a.batch)
    blobs = [torch.frombuffer(bytearray(Path(pairs.images[i].path).read_bytes()), dtype=torch.uint8)
             for i in range(n_dev)]
    prep = DevicePreprocess(preprocess_cfg(m), torch.device(dev), pairs.images)
    side = device_side_rate(prep, blobs, m.clip.visual, amp, a.batch, dev)
    print(json.dumps({"name": "device_side_decode_forward", "images_per_s": round(side), "images": n_dev,
                      "ratio_to_bare_forward": round(side / bare, 3), "jpeg_decoder": prep.decoder}), flush=True)
    if a.compile or a.decode_ahead:     # the levers on the device side: overlap, a compiled tower, both
        for name, tw, ahead in (("ahead", m.clip.visual, True), ("compiled", tower, False),
                                ("compiled_ahead", tower, True)):
            if tw is m.clip.visual and name.startswith("compiled") or (ahead and not a.decode_ahead):
                continue
            r = device_side_rate(prep, blobs, tw, amp, a.batch, dev, ahead, pad=tw is not m.clip.visual)
            print(json.dumps({"name": f"device_side_decode_forward_{name}", "images_per_s": round(r),
                              "vs_device_side": round(r / side, 3), "ratio_to_bare_forward": round(r / bare, 3)}),
                  flush=True)
    forced = os.environ.get("LANGCLIP_JPEG_DECODER")   # then that one alone
    for other in [x for x in JPEG_DECODERS if x != prep.decoder and not forced]:   # the same bytes, the other one
        try:
            alt = DevicePreprocess(preprocess_cfg(m), torch.device(dev), pairs.images, decoder=other)
        except ImportError as e:
            print(json.dumps({"name": f"device_side_decode_forward_{other}", "error": str(e)[:200]}), flush=True)
            continue
        alt_side = device_side_rate(alt, blobs, m.clip.visual, amp, a.batch, dev)
        print(json.dumps({"name": f"device_side_decode_forward_{other}", "images_per_s": round(alt_side),
                          "ratio_to_bare_forward": round(alt_side / bare, 3)}), flush=True)
    if a.stages:
        stage_times(prep, blobs[:n_dev], m, amp, a.batch, dev)
    # pixels: the device path vs PIL's transform on the same pictures, in 0..255 grey levels
    from langclip.model import image_transform
    from langclip.pairs import open_image

    k = min(64, n_dev)
    with torch.inference_mode():
        _, _, xb, _ = prep(list(range(k)), blobs[:k], [""] * k)
    tf = image_transform(preprocess_cfg(m))
    ref = torch.stack([tf(open_image(pairs.images[i])) for i in range(k)]).to(dev)
    diff = ((xb.float() - ref) * torch.tensor(preprocess_cfg(m)["std"], device=dev).view(3, 1, 1) * 255).abs()
    print(json.dumps({"name": "pixels_device_vs_pil", "images": k, "mean_abs_grey_levels": round(diff.mean().item(), 3),
                      "p99_grey_levels": round(diff.flatten().float()[::97].quantile(0.99).item(), 2)}), flush=True)
    del blobs
    worker_cost(pairs, preprocess_cfg(m), min(a.images, a.worker_pictures))

    caches = {}
    builds = [(m, t, ahead, False) for m in ([] if a.no_build else a.decode)
              for t in (a.decode_threads if m == "nvjpeg" else [1])
              for ahead in ([False, True] if m == "nvjpeg" and a.decode_ahead else [False])]
    if a.compile:   # the nvjpeg build's fastest variant (or, without nvjpeg, each mode's) with the compiled tower:
        # the CPU-decoding modes are bound by their workers, not by the tower
        modes = [] if a.no_build else ["nvjpeg"] if "nvjpeg" in a.decode else a.decode
        builds += [(m, max(a.decode_threads) if m == "nvjpeg" else 1, m == "nvjpeg" and a.decode_ahead, True)
                   for m in modes]
    for mode, threads, ahead, comp in builds:
        t = time.perf_counter()
        name = (mode + (f"_threads{threads}" if mode == "nvjpeg" and len(a.decode_threads) > 1 else "")
                + ("_ahead" if ahead else "") + ("_compiled" if comp else ""))
        out = build_cache(CacheConfig(data=[str(d / "pairs.csv")], clip=arch, weights=str(d / "w.pt"),
                                      out=str(d / f"cache_{name}"), batch_size=a.batch, shard_size=8192,
                                      device=dev, decode=mode, decode_threads=threads, decode_ahead=ahead,
                                      compile=comp),
                          progress=False)
        sec = time.perf_counter() - t
        key = mode + ("_ahead" if ahead else "") + ("_compiled" if comp else "")
        caches[key] = load_cache(out)
        man = caches[key].manifest
        tm = man.get("timing", {})
        embed = tm.get("images_embedded", 0) / tm["embed_seconds"] if tm.get("embed_seconds") else None
        print(json.dumps({"name": f"cache_build_{name}", "images_per_s": round(a.images / sec), "seconds": round(sec, 1),
                          "ratio_to_bare_forward": round(a.images / sec / bare, 3), "failed": man["num_images_failed"],
                          "embed_images_per_s": round(embed) if embed else None,
                          "fixed_s": round(sec - tm["embed_seconds"], 2) if embed else None,
                          "note": "end to end: table, model load + SHA-256, workers, shards, consolidation; embed: "
                                  "the loop over the pictures alone (manifest timing); fixed: the rest"}), flush=True)
    for mode in [m for m in caches if m != "pil" and "pil" in caches]:
        p, q = caches["pil"], caches[mode]
        cos = (p.image_emb.float() * q.image_emb.float()).sum(-1)[p.image_ok & q.image_ok]
        print(json.dumps({"name": f"agreement_pil_vs_{mode}", "cosine_min": round(cos.min().item(), 5),
                          "cosine_mean": round(cos.mean().item(), 6)}), flush=True)
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
