"""Shared fixtures: everything is tiny and made in tmp folders; nothing touches a hub."""
from __future__ import annotations

import os

from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):   # `-n 2` on 2 cores: one thread per worker, not two each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# session fixtures that take a minute or more: the tests that read one run in one xdist worker
_HEAVY = ("demo_small", "ru_tokenizer_32k")


@pytest.hookimpl(tryfirst=True)   # before xdist turns the groups into scheduling units
def pytest_collection_modifyitems(config, items):
    """Under `-n 2 --dist loadgroup` (pyproject's addopts) the longest work is handed out first: the
    tests of a heavy session fixture (one group, one worker), then the groups the tests name with
    `@pytest.mark.xdist_group` (one worker each, in file order, those marked `after_group` last: a later
    test reuses what an earlier one left, e.g. inductor's compiled kernels), then the ones marked slow,
    then the rest in file order.
    One process (`-n 0`) runs them in the same order."""
    def rank(item):
        names = getattr(item, "fixturenames", ())
        heavy = next((i for i, name in enumerate(_HEAVY) if name in names), None)
        if heavy is not None:
            item.add_marker(pytest.mark.xdist_group(_HEAVY[heavy]))
            return heavy
        if item.get_closest_marker("xdist_group") is not None:   # a group the tests name themselves
            return len(_HEAVY) + 0.5 * (item.get_closest_marker("after_group") is not None)
        return len(_HEAVY) + 1 + (item.get_closest_marker("slow") is None)

    items[:] = [it for _, it in sorted(((rank(it), i), it) for i, it in enumerate(items))]


def cli_leaves(parser, path: list[str] | None = None):
    """(name, parser) of every leaf subcommand of langclip's parser ("tokenizer train", "train", ...)."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path or []), parser
        return
    for name, sp in subs[0].choices.items():
        yield from cli_leaves(sp, (path or []) + [name])


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); None if it is gone
    or unreadable. The name is cut at its last ")", since it may hold spaces and parentheses."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc (Linux); just pid where /proc cannot be read."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = proc_stat(stat.parent.name)
        if fields and len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def torchrun(port: int, args: list[str], timeout: int = 600):
    """`python -m torch.distributed.run --nproc_per_node 2 --master_port PORT *args`: 2 gloo processes
    on one thread each -> its CompletedProcess (text output). A launch that runs past `timeout` is killed
    with its ranks, which torchrun starts in sessions of their own (so no process outlives the test),
    and the test fails with their output."""
    import signal
    import subprocess
    import sys

    with subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1")) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in process_tree(p.pid):   # listed before any dies: an orphan's parent becomes init
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            out, err = p.communicate()
            raise AssertionError(f"torchrun {args} ran past {timeout} s:\n{out[-2000:]}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture(scope="session")
def ru_tokenizer(tmp_path_factory):
    """A small Russian tokenizer: 1,500 merges over wordfreq's 20k most frequent Russian words."""
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("tok_ru")
    return train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, wordfreq_top=20000, merges=1500,
                                                out=str(out)), progress=False)


@pytest.fixture(scope="session")
def ru_tokenizer_32k(tmp_path_factory):
    """The README's real recipe: `tokenizer train --lang ru --wordfreq --merges 32000` (~1-2 minutes)."""
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("tok_ru_32k")
    return train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, merges=32000, out=str(out)), progress=False)


TINY_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory):
    """A ViT-B-32-quickgelu-shaped open_clip architecture (same blocks), 2 layers of width 32."""
    import json

    p = tmp_path_factory.mktemp("arch") / "tiny-quickgelu.json"
    p.write_text(json.dumps({"model_cfg": TINY_CFG}))
    return str(p)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(open_clip CLIP with random weights, path of its state dict saved in OpenAI's layout)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    m = open_clip.CLIP(**TINY_CFG).eval()
    with torch.no_grad():
        m.logit_scale.fill_(3.0)
    p = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    torch.save(m.state_dict(), p)
    return m, str(p)


def run_with_own_clip_file(run, clip_file, tmp_path):
    """A copy of a run folder whose image tower points at a copy of its CLIP file, which a test may then
    delete: -> (run copy, CLIP file copy)."""
    import json
    import shutil

    copy, clip = tmp_path / "run", tmp_path / "clip.pt"
    shutil.copytree(run, copy)
    shutil.copy(clip_file, clip)
    meta = json.loads((copy / "model.json").read_text())
    meta["image_tower"]["weights"] = str(clip)
    (copy / "model.json").write_text(json.dumps(meta))
    return copy, clip


def make_dng(path, rgb, preview: bytes | None = None, orientation: int = 1) -> bytes:
    """A RAW photo as a camera's DNG holds it, written by hand (TIFF, little-endian): IFD0 the JPEG preview
    (`preview`, else `rgb` encoded), its SubIFD the raw pixels (`rgb` as 16-bit LinearRaw), the orientation tag.
    LibRaw (rawpy) reads it as it reads a camera's. -> the preview's bytes."""
    import io
    import struct

    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    if preview is None:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=90)
        preview = buf.getvalue()
    pw, ph = Image.open(io.BytesIO(preview)).size
    out = bytearray(b"II*\x00\x00\x00\x00\x00")

    def blob(b: bytes) -> int:
        out.extend(b"\x00" * (len(out) % 2))
        out.extend(b)
        return len(out) - len(b)

    def ifd(tags) -> int:   # (tag, type, values): 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 10 SRATIONAL
        packed = []
        for tag, typ, vals in sorted(tags):
            data = {1: lambda v: bytes(v), 2: lambda v: v.encode() + b"\x00", 3: lambda v: struct.pack(f"<{len(v)}H", *v),
                    4: lambda v: struct.pack(f"<{len(v)}I", *v),
                    5: lambda v: b"".join(struct.pack("<II", *x) for x in v),
                    10: lambda v: b"".join(struct.pack("<ii", *x) for x in v)}[typ](vals)
            count = len(data) if typ in (1, 2) else len(vals)
            packed.append((tag, typ, count, struct.pack("<I", blob(data)) if len(data) > 4 else data.ljust(4, b"\x00")))
        at = blob(struct.pack("<H", len(packed)) + b"".join(struct.pack("<HHI", t, y, c) + f for t, y, c, f in packed)
                  + b"\x00\x00\x00\x00")
        return at

    raw = (rgb.astype(np.uint16) * 257).tobytes()
    raw_at, jpeg_at = blob(raw), blob(preview)
    sub = ifd([(254, 4, [0]), (256, 4, [w]), (257, 4, [h]), (258, 3, [16, 16, 16]), (259, 3, [1]), (262, 3, [34892]),
               (273, 4, [raw_at]), (277, 3, [3]), (278, 4, [h]), (279, 4, [len(raw)]), (284, 3, [1]), (50717, 4, [65535])])
    eye = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]
    first = ifd([(254, 4, [1]), (256, 4, [pw]), (257, 4, [ph]), (258, 3, [8, 8, 8]), (259, 3, [7]), (262, 3, [6]),
                 (271, 2, "langclip"), (272, 2, "test"), (273, 4, [jpeg_at]), (274, 3, [orientation]), (277, 3, [3]),
                 (278, 4, [ph]), (279, 4, [len(preview)]), (330, 4, [sub]), (50706, 1, [1, 4, 0, 0]),
                 (50707, 1, [1, 1, 0, 0]), (50708, 2, "langclip test"), (50721, 10, eye), (50728, 5, [(1, 1)] * 3),
                 (50778, 3, [21])])
    out[4:8] = struct.pack("<I", first)
    Path(path).write_bytes(bytes(out))
    return preview


def make_image(path, seed, mode="RGB", size=(40, 30)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ch = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = rng.integers(0, 255, size=(size[1], size[0], ch), dtype=np.uint8)
    img = Image.fromarray(a[..., 0] if ch == 1 else a, mode)
    img.save(path)
    return path


@pytest.fixture()
def pair_data(tmp_path):
    """16 images as files + a CSV table with 2 captions each (Russian + English), and 2 tar shards."""
    import csv
    import io
    import tarfile

    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    rows = []
    for i in range(16):
        ext = "png" if i % 4 == 0 else "jpg"
        make_image(d / "img" / f"{i:02d}.{ext}", i)
        rows.append({"image": f"img/{i:02d}.{ext}", "caption": f"картинка номер {i}", "caption_en": f"picture number {i}"})
        rows.append({"image": f"img/{i:02d}.{ext}", "caption": f"изображение {i}", "caption_en": f"image {i}"})
    with open(d / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption", "caption_en"])
        w.writeheader()
        w.writerows(rows)
    for s in range(2):
        with tarfile.open(d / f"shard-{s:05d}.tar", "w") as tf:
            for i in range(4):
                key = f"{s:05d}{i:04d}"
                buf = io.BytesIO()
                from PIL import Image
                import numpy as np
                Image.fromarray(np.random.default_rng(100 + s * 10 + i).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
                for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.txt", f"подпись {s} {i}".encode())):
                    ti = tarfile.TarInfo(name)
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
    return d


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory, tiny_arch, tiny_clip):
    """A cache over 192 generated world pictures, 3 Russian + 3 English captions each."""
    import csv
    import random

    from PIL import Image

    from langclip.cache import build_cache
    from langclip.config import CacheConfig
    from langclip.demo.world import captions, render, sample_scenes

    d = tmp_path_factory.mktemp("world")
    rows = []
    for i, s in enumerate(sample_scenes(192, seed=1)):
        Image.fromarray(render(s)).save(d / f"{i:03d}.png")
        en, ru = captions(s.count, s.colour, s.shape, s.position, random.Random(i))
        rows += [{"image": f"{i:03d}.png", "caption": r, "caption_en": e} for r, e in zip(ru, en)]
    with open(d / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption", "caption_en"])
        w.writeheader()
        w.writerows(rows)
    return build_cache(CacheConfig(data=[str(d / "pairs.csv")], clip=tiny_arch, weights=tiny_clip[1],
                                   out=str(d / "cache"), batch_size=64, workers=0, shard_size=100), progress=False)


def make_train_cfg(d: Path, world_cache, tiny_arch, tiny_clip, ru_tokenizer):
    """The small training job the training tests start from (its tokenizer saved in d, its run in d/run)."""
    from langclip.config import LossSection, ModelSection, OptimSection, TrainConfig

    ru_tokenizer.save(d / "tok")
    return TrainConfig(cache=str(world_cache), out=str(d / "run"),
                       model=ModelSection(clip=tiny_arch, weights=tiny_clip[1], tokenizer=str(d / "tok"),
                                          init="clip", context_length=16),
                       optim=OptimSection(lr=3e-3, warmup_steps=5, weight_decay=0.0),
                       loss=LossSection(), epochs=25, batch_size=32, val_fraction=0.25, seed=0,
                       log_every=5, tensorboard=False)


@pytest.fixture()
def train_cfg(tmp_path, world_cache, tiny_arch, tiny_clip, ru_tokenizer):
    return make_train_cfg(tmp_path, world_cache, tiny_arch, tiny_clip, ru_tokenizer)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, world_cache, tiny_arch, tiny_clip, ru_tokenizer):
    """A small clip-init run on the world cache (2 epochs, context 24): what exports are made from."""
    from langclip.train import train
    from langclip.config import LossSection, ModelSection, OptimSection, TrainConfig

    d = tmp_path_factory.mktemp("export")
    ru_tokenizer.save(d / "tok")
    cfg = TrainConfig(cache=str(world_cache), out=str(d / "run"),
                      model=ModelSection(clip=tiny_arch, weights=tiny_clip[1], tokenizer=str(d / "tok"), context_length=24),
                      optim=OptimSection(lr=3e-3, warmup_steps=2, weight_decay=0.0), loss=LossSection(distill=0.5),
                      epochs=2, batch_size=32, val_fraction=0.25, tensorboard=False)
    return train(cfg, progress=False)


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory):
    """`langclip demo --size small`, once a session (its test and the search page's browser test read it)."""
    import os

    from langclip.cli import main

    if os.environ.get("LANGCLIP_TEST_DEMO"):      # developing: reuse a small demo made before
        return Path(os.environ["LANGCLIP_TEST_DEMO"])
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--size", "small", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer, width-32 BERT with a WordPiece vocabulary, saved as a Hugging Face model folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny_bert")
    words = ["кот", "кошка", "собака", "красный", "синий", "круг", "звезда", "две", "три", "на", "фото", "##а", "##ы"]
    chars = sorted(set("".join(words).replace("#", "")) | set("абвгдеёжзийклмнопрстуфхцчшщъыьэюя0123456789"))
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##" + c for c in chars]))
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})   # transformers 5 ignores vocab_file=
    ids = tok("кот на фото")["input_ids"]
    assert len(tok) == len(vocab) and tok.unk_token_id not in ids, ids    # words, not [UNK]s
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=40)).save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def tiny_xlmr(tmp_path_factory):
    """A 2-layer, width-32 XLM-RoBERTa (M-CLIP's encoder family): pad id 1, positions counted from the
    pad id, a SentencePiece-style tokenizer (Metaspace, <s> ... </s>) built with `tokenizers`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    d = tmp_path_factory.mktemp("tiny_xlmr")
    tk = Tokenizer(models.Unigram())
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    corpus = ["две красные звезды", "кот на фото", "синий круг и собака", "a photo of a cat", "ёлка"] * 20
    tk.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=120, unk_token="<unk>",
                                                           special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tk.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    assert 3 not in tk.encode("две красные звезды кот на фото").ids      # pieces, not <unk>s
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>").save_pretrained(str(d))
    torch.manual_seed(1)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                                     pad_token_id=1), add_pooling_layer=False).save_pretrained(str(d))
    return d


@pytest.fixture()
def cifar_root(tmp_path, monkeypatch):
    """20 test images written in CIFAR-10's own python format, read by torchvision.datasets.CIFAR10.
    torchvision checks the files' MD5 against the real dataset's; the checksums are pointed at ours."""
    import hashlib
    import pickle

    import numpy as np

    import torchvision.datasets as tvd

    d = tmp_path / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    def batch(n, seed):
        r = np.random.default_rng(seed)
        labels = [int(i % 10) for i in range(n)]
        imgs = r.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)
        for i, y in enumerate(labels):  # a class-dependent tint, so predictions are not all alike
            imgs[i, y % 3] = np.clip(imgs[i, y % 3].astype(int) + 40 * (y // 3), 0, 255)
        # str keys: the real files were pickled by Python 2, whose str torchvision reads back as str
        return {"batch_label": "x", "labels": labels, "data": imgs.reshape(n, -1), "filenames": ["f"] * n}

    files = {f"data_batch_{i}": batch(2, i) for i in range(1, 6)}
    files["test_batch"] = batch(20, 99)
    for name, obj in files.items():
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                                   "frog", "horse", "ship", "truck"], "num_vis": 3072},
                                                  protocol=2))
    md5 = lambda f: hashlib.md5((d / f).read_bytes()).hexdigest()
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5("batches.meta")})
    return tmp_path / "cifar"


def write_wds(out: Path, samples: list[tuple[bytes, str, bytes]], shard_size: int = 8, split: str = "test") -> Path:
    """A split in CLIP_benchmark's webdataset layout, as `clip_benchmark_export_wds` writes it:
    out/<split>/0.tar ... with nshards.txt; `samples` are (picture bytes, its extension, the label's or the
    captions' bytes, "cls" or "txt")."""
    import io
    import tarfile

    d = out / split
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, s in enumerate(range(0, len(samples), shard_size)):
        with tarfile.open(d / f"{n}.tar", "w") as tf:
            for i, (img, ext, target, target_ext) in enumerate(samples[s: s + shard_size], start=s):
                for suffix, data in ((ext, img), (target_ext, target)):
                    info = tarfile.TarInfo(f"s{i:07d}.{suffix}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    (d / "nshards.txt").write_text(str(n + 1))
    return out


def cifar_as_wds(cifar_root: Path, out: Path, templates: list[str] | None = None, fmt: str = "png") -> Path:
    """`cifar_root`'s test split as CLIP_benchmark's wds_cifar10 holds it: every picture a PNG or a lossless
    WebP (`fmt` "webp", clip_benchmark_export_wds's default; either way its pixels are the CIFAR file's) with its
    .cls label, classnames.txt from the CIFAR file's own label names (what torchvision, and so
    CLIP_benchmark's export, calls the classes)."""
    import io
    import pickle

    import numpy as np
    from PIL import Image

    d = cifar_root / "cifar-10-batches-py"
    batch = pickle.loads((d / "test_batch").read_bytes())
    samples = []
    for row, y in zip(batch["data"], batch["labels"]):
        buf = io.BytesIO()
        Image.fromarray(np.asarray(row, dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)).save(
            buf, fmt.upper(), **({"lossless": True} if fmt == "webp" else {}))
        samples.append((buf.getvalue(), fmt, str(y).encode(), "cls"))
    write_wds(out, samples)
    names = pickle.loads((d / "batches.meta").read_bytes())["label_names"]
    (out / "classnames.txt").write_text("\n".join(names) + "\n")
    if templates:
        (out / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return out
