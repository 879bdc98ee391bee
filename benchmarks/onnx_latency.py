"""ONNX Runtime (CPU provider) vs langclip's PyTorch path on the same CPU, same run: single-query text
latency (tokenize + encode, what a search box costs) and batch-64 throughput for texts and images.

    python benchmarks/onnx_latency.py                  # ViT-B/32 shapes (random weights), context 77
    python benchmarks/onnx_latency.py --tiny           # the test suite's tiny model, for a quick check

The model: a ViT-B/32-quickgelu-shaped LangCLIP with random weights and CLIP's own tokenizer (49,408
ids; a langclip tokenizer only adds rows to the embedding table, which costs nothing per query).
langclip's path: `Tokenizer.__call__` + `LangCLIP.encode_text` (which cuts each batch after its
longest text); ONNX: `tokenizers` + `textual.onnx`, padded to the full context as Immich feeds it
(`onnxruntime_ms`) and padded only to the batch's longest text as the model card's snippet does
(`onnxruntime_cut_ms`; the graph's sequence axis is dynamic since session 6). Prints JSON lines:
medians of repeated runs, threads as set.
"""
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TINY = json.loads((Path(__file__).parent / "tiny_clip.json").read_text())
QUERIES = ["две красные звезды слева", "a red car parked near the sea", "кот на диване", "sunset over mountains",
           "фото собаки в парке зимой", "people dancing at a wedding", "старый город ночью", "a bowl of fruit"]


def median_time(fn, reps: int, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    import onnxruntime as ort
    import open_clip

    from langclip.export_onnx import export_graphs
    from langclip.model import LangCLIP, student_config
    from langclip.tokenizer import Tokenizer

    torch.set_num_threads(a.threads)
    tok = Tokenizer.clip()
    base = TINY if a.tiny else open_clip.get_model_config("ViT-B-32-quickgelu")
    cfg = student_config(base, tok.vocab_size, 77)
    torch.manual_seed(0)
    model = LangCLIP(cfg).eval()
    d = Path(tempfile.mkdtemp(prefix="langclip-onnx-bench-"))
    t = time.perf_counter()
    export_graphs(model, d / "textual.onnx", d / "visual.onnx")
    export_s = time.perf_counter() - t
    print(json.dumps({"machine": platform.machine(), "cpu": platform.processor(), "cores": os.cpu_count(),
                      "threads": a.threads, "torch": torch.__version__, "onnxruntime": ort.__version__,
                      "model": "tiny" if a.tiny else "ViT-B-32-quickgelu", "context": 77,
                      "export_and_check_s": round(export_s, 1)}), flush=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    text_s = ort.InferenceSession(str(d / "textual.onnx"), so, providers=["CPUExecutionProvider"])
    image_s = ort.InferenceSession(str(d / "visual.onnx"), so, providers=["CPUExecutionProvider"])
    from tokenizers import Tokenizer as HFTok

    eot = "<|endoftext|>"
    hfs = {}
    for cut in (False, True):   # padded to the context (Immich) or to the batch's longest text (the card)
        hf = hfs[cut] = HFTok.from_str(tok.hf.to_str())
        hf.enable_padding(pad_token=eot, pad_id=hf.token_to_id(eot), **({} if cut else {"length": 77}))
        hf.enable_truncation(max_length=77)

    def ort_text(texts, cut=False):
        ids = np.array([e.ids for e in hfs[cut].encode_batch([" ".join(x.split()) for x in texts])], dtype=np.int32)
        return text_s.run(["embedding"], {"text": ids})[0]

    def ort_cut(texts):
        return ort_text(texts, cut=True)

    @torch.inference_mode()
    def torch_text(texts):
        return model.encode_text(tok(texts, context_length=77)).numpy()

    q = iter(range(10**9))
    one = lambda f: (lambda: f([QUERIES[next(q) % len(QUERIES)]]))   # noqa: E731  a different query each call
    texts64 = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(64)]
    S = cfg["vision_cfg"]["image_size"]
    imgs = torch.randn(64, 3, S, S)
    assert np.abs(ort_text(texts64) - torch_text(texts64)).max() < 1e-4      # same numbers before timing
    assert np.abs(ort_cut(texts64) - torch_text(texts64)).max() < 1e-4

    @torch.inference_mode()
    def torch_image():
        return model.encode_image(imgs)

    rows = []
    for name, ft, fo, fc, n in (
            ("text_single_query", one(torch_text), one(ort_text), one(ort_cut), 1),
            ("text_batch64", lambda: torch_text(texts64), lambda: ort_text(texts64), lambda: ort_cut(texts64), 64),
            ("image_batch64", torch_image, lambda: image_s.run(["embedding"], {"image": imgs.numpy()}), None, 64)):
        reps = a.reps if n == 1 else max(5, a.reps // 6)
        tt, to = median_time(ft, reps), median_time(fo, reps)
        r = {"name": name, "batch": n, "pytorch_ms": round(tt * 1e3, 2), "onnxruntime_ms": round(to * 1e3, 2),
             "pytorch_per_s": round(n / tt, 1), "onnxruntime_per_s": round(n / to, 1),
             "onnxruntime_speedup": round(tt / to, 2), "reps": reps}
        if fc is not None:
            tc = median_time(fc, reps)
            r.update(onnxruntime_cut_ms=round(tc * 1e3, 2), onnxruntime_cut_speedup=round(tt / tc, 2))
        rows.append(r)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
