"""Every stage's configuration, as nested dataclasses with defaults and validation, read by the loader
(yamlconfig.py, re-exported here): a YAML file + `key.sub=value` command-line overrides. The command
line takes its defaults from here.

    >>> from langclip.config import TrainConfig
    >>> cfg = load_config(TrainConfig, "configs/ru-vitb32-clip-init.yaml", ["optim.lr=1e-4", "epochs=3"],
    ...                   validate=False)
    >>> cfg.epochs, cfg.optim.lr, cfg.model.init
    (3, 0.0001, 'clip')
    >>> cfg.validate()          # by default load_config validates: the files it names must exist
    Traceback (most recent call last):
    ...
    langclip.yamlconfig.ConfigError: cache: not found: cache/ru-vitb32

Unknown keys and values of the wrong type are errors that name the key and where it came from (the
file and line, or the override), raised before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .folders import SKIPPED_FOLDERS, pin_arch, unfinished_cache
from .yamlconfig import ConfigError, from_dict, load_config  # noqa: F401  (the loader, re-exported)

DECODE_MODES = ("pil", "torchvision", "nvjpeg")   # cache build / index build: who decodes the pictures


# -- the stages' configurations ------------------------------------------------------------------
@dataclass
class TokenizerTrainConfig:
    lang: str = "ru"                       # language code (wordfreq's, e.g. ru, el, ar, zh)
    merges: int = 32000                    # merges to add to CLIP's 48,894
    corpus: list[str] = field(default_factory=list)  # text files (one text a line) or tables
    column: str | None = None              # column for CSV/TSV/Parquet/JSONL corpora
    wordfreq: bool = False                 # use wordfreq's frequency list for `lang`
    wordfreq_top: int | None = None        # only the N most frequent wordfreq words (None: all)
    word_internal: bool = True             # a language written without spaces (zh, ja, ...): also learn
                                           # wordfreq's words as they stand inside running text
    join_marks: bool = True                # a script written with combining marks (Devanagari, Bengali, Tamil)
                                           # or with joiners inside words (Persian's ZWNJ): they count as
                                           # letters, so a word is one pre-token
    english_words: int | None = None       # a Latin-script language: None keeps CLIP's ids for all ASCII text
                                           # (its words in ASCII keep CLIP's pieces); N lets ASCII letters
                                           # merge too, except in wordfreq's N most frequent English words,
                                           # which keep CLIP's ids (rarer English words may not)
    workers: int = -1                      # processes that cut a large corpus into words (-1: the cores)
    out: str = "tokenizer"

    def validate(self) -> None:
        if self.workers < -1:
            raise ValueError(f"workers must be >= 0 (or -1: the cores), got {self.workers}")
        if self.merges < 1:
            raise ValueError(f"--merges must be at least 1 (got {self.merges}): with 0 the tokenizer is "
                             "CLIP's own, use Tokenizer.clip() for that")
        if self.english_words is not None and self.english_words < 0:
            raise ValueError(f"english_words must be >= 0 (got {self.english_words}): the number of English "
                             "words (wordfreq's most frequent) that keep CLIP's ids")
        if not self.corpus and not self.wordfreq:
            raise ValueError("no corpus: give --corpus FILE ... and/or --wordfreq")
        for c in self.corpus:
            if not Path(c).is_file():
                raise FileNotFoundError(f"corpus file not found: {c}")
        if self.wordfreq:
            check_wordfreq_language(self.lang)


def check_wordfreq_language(lang: str) -> None:
    import wordfreq

    langs = sorted(wordfreq.available_languages(wordlist="best"))
    if lang not in langs:
        raise ValueError(f"wordfreq has no word list for language {lang!r}; available: {', '.join(langs)}")


@dataclass
class CacheConfig:
    data: list[str] = field(default_factory=list)
    clip: str = ""                           # open_clip architecture; "": the one --weights holds (clip_arch.py)
    weights: str = ""                        # a CLIP weights file, or:
    pretrained: str = ""                     # open_clip's pretrained tag (e.g. openai), through its download cache
    out: str = "cache"
    image_column: str | None = None
    caption_column: str | None = None
    english_column: str | None = None
    batch_size: int = 256
    workers: int = -1                        # decoding processes per rank; -1: the cores / local ranks, minus one
    shard_size: int = 8192
    teacher_shard_size: int = 65536         # English captions per teacher-embedding shard
    text_only: bool = False                 # a parallel corpus (target text + English), no images
    device: str | None = None
    max_failure_rate: float = 0.5           # stop when more images than this fail (after the first 100):
                                            # a wrong base folder, not a few corrupt files
    decode: str = "pil"                     # pil: decode + resize in the workers (CPU), open_clip's transform;
                                            # torchvision: the same in the workers with torchvision's kernels
                                            # (faster, within 2 grey levels); nvjpeg: workers read bytes, the
                                            # build device decodes and resizes (cache/decode.py)
    decode_threads: int = 1                 # nvjpeg: split each batch's decode over this many threads
                                            # (a CUDA stream each)
    decode_ahead: bool = False              # nvjpeg: decode the next batch in a thread (a CUDA stream of its
                                            # own) while this one is embedded
    exif_orientation: bool = False          # turn pictures upright by their EXIF tag (index builds: photos);
                                            # off: as stored, as open_clip's transform reads them
    compile: bool = False                   # torch.compile the image tower (where it can build; else eager,
                                            # with a warning): fuses its element-wise work; the embeddings
                                            # agree with eager's to bf16/float rounding (tests/test_cache.py)

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no --data given")
        if not 1 <= self.decode_threads <= 64:
            raise ValueError(f"decode_threads must be in 1..64, got {self.decode_threads}")
        if self.weights and self.pretrained:
            raise ValueError("give either --weights FILE or --pretrained TAG, not both")
        if not self.weights and not self.pretrained:
            raise ValueError("the CLIP weights are required: --weights FILE or --pretrained TAG (e.g. openai)")
        if self.weights and not Path(self.weights).exists():   # a file, or a folder holding one
            raise FileNotFoundError(f"CLIP weights file not found: {self.weights}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")
        if self.workers < -1:
            raise ValueError(f"workers must be >= 0 (or -1: automatic), got {self.workers}")
        if not 0 < self.max_failure_rate <= 1:
            raise ValueError(f"max_failure_rate must be in (0, 1], got {self.max_failure_rate}")
        if self.batch_size < 1 or self.shard_size < 1 or self.teacher_shard_size < 1:
            raise ValueError("batch_size, shard_size and teacher_shard_size must be >= 1")
        if self.pretrained and not self.clip:
            raise ValueError("--clip is required with --pretrained (a tag names weights of several architectures), "
                             "e.g. --clip ViT-B-32-quickgelu --pretrained openai")


@dataclass
class IndexConfig:
    """`langclip index build`: what to index and with which image tower (a run/export's, or a CLIP file)."""
    data: list[str] = field(default_factory=list)   # image folders, tables, tar shards, or one langclip cache
    out: str = "index"
    model: str = ""                          # a langclip run or export: its image tower
    clip: str = ""                           # or the CLIP directly (as `cache build`; "": the one --weights
                                             # holds, ViT-B-32-quickgelu for a --pretrained tag)
    weights: str = ""
    pretrained: str = ""
    image_column: str | None = None
    batch_size: int = 256
    workers: int = -1
    shard_size: int = 8192
    device: str | None = None
    decode: str = "torchvision"              # as `cache build`'s; here torchvision's kernels by default: a photo
                                             # folder's large JPEGs decode at reduced scale (cache/decode.py)
    decode_threads: int = 1                  # as `cache build`'s (nvjpeg: the decode split over threads)
    decode_ahead: bool = False               # as `cache build`'s (nvjpeg: the next batch decoded meanwhile)
    compile: bool = False                    # as `cache build`'s (torch.compile the image tower)
    exif_orientation: bool = True            # photos upright as viewers show them (indexes before: as stored)
    max_failure_rate: float = 0.5
    thumb_size: int = 256
    ann_threshold: int = 200_000             # from this many pictures on, approximate search (faiss IVF)
    ann_nprobe: int = 32
    exclude: list[str] = field(default_factory=lambda: list(SKIPPED_FOLDERS))   # folders not entered (names,
                                             # fnmatch patterns): hidden ones, thumbnails, recycle bins (folders.py)

    def validate(self) -> None:
        if not self.data:
            raise ValueError("no --data given")
        if not isinstance(self.exclude, list) or not all(isinstance(x, str) and x and "/" not in x for x in self.exclude):
            raise ValueError(f"exclude is a list of folder names or patterns (\"@eaDir\", \".*\"; a name, not a "
                             f"path: it is matched at any depth), got {self.exclude!r}")
        self.clip = pin_arch(self.clip)
        if len(self.data) == 1 and (why := unfinished_cache(self.data[0])):
            raise ValueError(f"{self.data[0]} is {why}")
        cache = len(self.data) == 1 and (Path(self.data[0]) / "manifest.json").is_file()
        if not cache and not self.model and not self.weights and not self.pretrained:
            raise ValueError("the image tower is required: --model RUN, --weights FILE or --pretrained TAG "
                             "(or index a langclip cache)")
        if self.weights and not Path(self.weights).exists():   # a file, or a folder holding one
            raise FileNotFoundError(f"CLIP weights file not found: {self.weights}")
        if self.thumb_size < 16 or self.ann_threshold < 1 or self.ann_nprobe < 1 or self.batch_size < 1:
            raise ValueError("thumb_size >= 16, ann_threshold, ann_nprobe and batch_size >= 1")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")


@dataclass
class ModelSection:
    clip: str = ""                           # open_clip architecture of the pretrained CLIP ("": the cache's)
    weights: str = ""                        # its weights file (the image tower's, and `clip` init's; "" and no
                                             # pretrained: the file the cache was built from), or:
    pretrained: str = ""                     # open_clip's pretrained tag (e.g. openai), through its download cache
    tokenizer: str = ""                      # tokenizer folder (`langclip tokenizer train`); hf: init: optional
    init: str = "clip"                       # clip | scratch | hf:<name-or-folder> (a pretrained HF encoder) |
                                             # run:<folder> (a langclip run's text tower, trained further;
                                             # run:<folder>/text_tower_best.safetensors: those weights)
    context_length: int = 77
    text_overrides: dict = field(default_factory=dict)  # scratch only: width/heads/layers of the text tower
    lang: str = ""                           # hf: init: the language it is trained for (model card, search page);
                                             # a langclip tokenizer records its own


@dataclass
class OptimSection:
    lr: float = 5e-4
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 500
    grad_clip: float = 1.0                   # 0: off


@dataclass
class LossSection:
    contrastive: float = 1.0                 # weight of the CLIP loss
    distill: float = 0.0                     # weight of distillation towards the English CLIP text embedding
    distill_type: Literal["cosine", "mse"] = "cosine"
    english: float = 0.0                     # English replay: the student's embedding of the English caption
                                             # distilled to English CLIP's (keeps English working)
    english_fraction: float = 1.0            # replay the English of this share of each batch (its first
                                             # ceil(f*B) pairs, a random subset): a step costs (1+f)x, not 2x


@dataclass
class ZeroShotSection:
    """Zero-shot accuracy after each epoch, as `langclip eval` measures it (train/zeroshot.py): the pictures
    embedded once by the frozen image tower, the class prompts by the text tower as it is then."""
    datasets: list[str] = field(default_factory=list)   # cifar10, cifar100, caltech101, food101, flowers102,
                                                        # imagenet1k, babel_imagenet, imagefolder:PATH, wds:DIR
    data_root: str = ""                      # where they are, as `langclip eval --data-root`
    lang: str = ""                           # the class names' language ("": the tokenizer's)
    max_images: int = 0                      # 0: the whole test split; else this many, spread over it
    templates: str | list[str] = ""          # "": langclip's for the language; else the templates (a list), or
                                             # as `eval --templates` (a file)


@dataclass
class TrainConfig:
    cache: str = ""
    out: str = "runs/run"
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    zeroshot: ZeroShotSection = field(default_factory=ZeroShotSection)
    epochs: int = 10
    batch_size: int = 1024                   # global batch (all ranks together)
    val_fraction: float = 0.02               # of images, held out for recall@k
    seed: int = 0
    precision: Literal["auto", "bf16", "bf16-weights", "fp32"] = "auto"   # auto: bf16 on GPU, fp32 on CPU;
                                             # bf16: autocast over float32 weights; bf16-weights: the tower
                                             # runs on a bf16 copy, float32 master weights (train/precision.py)
    compile: bool = False
    compile_mode: Literal["default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead"] = "default"
    device: str | None = None
    checkpoint_every: int = 0                # steps; 0: at epoch end only
    keep_checkpoints: int = 2
    log_every: int = 50
    max_steps: int = 0                       # stop after this many steps (0: all epochs)
    resume: str | None = None                # 'latest' or a checkpoint path
    tensorboard: bool = True

    def validate(self) -> None:
        if self.cache and (why := unfinished_cache(self.cache)):
            raise ConfigError(f"cache: {self.cache} is {why}", "cache")
        self._clip_from_cache()
        m = self.model
        m.clip = pin_arch(m.clip)   # recorded in the run: a JSON file or folder is found from any folder later
        hf = m.init.startswith("hf:")
        if m.init.startswith("run:"):
            self._check_run_init()
        if m.weights and m.pretrained:
            raise ConfigError("give model.weights (a file) or model.pretrained (a tag), not both")
        for what, p in (("cache", self.cache), ("model.weights", m.weights), ("model.tokenizer", m.tokenizer)):
            if (hf or m.init.startswith("run:")) and what == "model.tokenizer" and not p:
                continue  # an hf: text tower brings its own tokenizer; a run: its run's
            if what == "model.weights" and m.pretrained:
                continue  # resolved through open_clip's download cache
            if not p:
                raise ConfigError(f"{what} is required")
            if not Path(p).exists():
                raise ConfigError(f"{what}: not found: {p}", what)
        if self.loss.contrastive <= 0 and self.loss.distill <= 0 and self.loss.english <= 0:
            raise ConfigError("loss: contrastive, distill and english weights are all 0")
        if not 0 < self.loss.english_fraction <= 1:
            raise ConfigError(f"loss.english_fraction: must be in (0, 1], got {self.loss.english_fraction}",
                              "loss.english_fraction")
        if min(self.loss.contrastive, self.loss.distill, self.loss.english) < 0:
            raise ConfigError("loss: weights must be >= 0")
        if self.batch_size < 2 or self.epochs < 1:
            raise ConfigError("batch_size must be >= 2 and epochs >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction must be in [0, 1)", "val_fraction")
        if m.init not in ("clip", "scratch") and not (hf and len(m.init) > 3) and not m.init.startswith("run:"):
            raise ConfigError(f"model.init must be clip, scratch, hf:<name-or-folder> or run:<folder>, got {m.init!r}",
                              "model.init")
        if m.lang and not hf:
            raise ConfigError("model.lang is for an hf: init (a langclip tokenizer records its own language)",
                              "model.lang")
        if hf and m.text_overrides:
            raise ConfigError("model.text_overrides apply to scratch init only (an hf: tower has its own shape)")
        self._check_zeroshot()

    def _check_zeroshot(self) -> None:
        from .benchsets import ZERO_SHOT

        z = self.zeroshot
        known = ("cifar10", "cifar100", "caltech101") + ZERO_SHOT
        for d in z.datasets:
            if d not in known and not (d.startswith(("imagefolder:", "wds:")) and len(d.split(":", 1)[1]) > 0):
                raise ConfigError(f"zeroshot.datasets: unknown dataset {d!r}; one of {', '.join(known)}, "
                                  f"imagefolder:PATH or wds:DIR (CLIP_benchmark's webdataset layout)", "zeroshot.datasets")
        if any(not d.startswith(("imagefolder:", "wds:")) for d in z.datasets) and not (
                z.data_root and Path(z.data_root).expanduser().is_dir()):
            raise ConfigError(f"zeroshot.data_root: {z.data_root or '(not given)'} is not a folder; give where "
                              f"{', '.join(z.datasets)} are (as `langclip eval --data-root`)", "zeroshot.data_root")
        if z.max_images < 0:
            raise ConfigError("zeroshot.max_images must be >= 0 (0: all)", "zeroshot.max_images")

    def _check_run_init(self) -> None:
        """model.init=run:<folder>: a langclip run (recorded absolute, so a resume matches from any folder), whose
        text tower has model.context_length positions; its tokenizer and shape are its own."""
        import json

        m = self.model
        spec = Path(m.init[4:]).expanduser()
        named = spec.is_file() and spec.suffix == ".safetensors"   # run:<folder>/text_tower_best.safetensors
        f = (spec.parent if named else spec) / "model.json"
        if not m.init[4:] or not f.is_file():
            raise ConfigError(f"model.init: {m.init[4:] or '(empty)'} is not a langclip run folder (no model.json); "
                              f"give run:<folder> of a run `langclip train` wrote (or one of its .safetensors "
                              f"text weights)", "model.init")
        m.init = f"run:{spec.resolve()}"
        if Path(self.out).resolve() == f.parent.resolve():
            raise ConfigError(f"out: {self.out} is the run model.init starts from; give a new out folder", "out")
        text = json.loads(f.read_text(encoding="utf-8")).get("model_cfg", {}).get("text_cfg", {})
        if text.get("context_length") and text["context_length"] != m.context_length:
            raise ConfigError(f"model.context_length: the text tower of {m.init} has {text['context_length']} "
                              f"positions; set model.context_length={text['context_length']}", "model.context_length")
        if m.text_overrides or m.lang:
            raise ConfigError("model.text_overrides and model.lang do not apply to a run: init (the run's shape and "
                              "language are its own)", "model.init")

    def _clip_from_cache(self) -> None:
        """model.clip, and the weights where neither model.weights nor model.pretrained is given: the cache's
        (its manifest records the architecture, the file and the tag it was built with)."""
        m = self.model
        f = Path(self.cache) / "manifest.json" if self.cache else None
        if (m.clip and (m.weights or m.pretrained)) or f is None or not f.is_file():
            return
        import json

        man = json.loads(f.read_text(encoding="utf-8"))
        if not m.weights and not m.pretrained:
            if man.get("pretrained"):
                m.pretrained = man["pretrained"]
            elif man.get("weights"):
                if not Path(man["weights"]).exists():
                    raise ConfigError(f"model.weights: not given, and the CLIP file the cache {self.cache} was built "
                                      f"from is gone ({man['weights']}); give model.weights", "model.weights")
                m.weights = man["weights"]
        if not m.clip:
            m.clip = man.get("arch") or ""


@dataclass
class DemoConfig:
    lang: str = "ru"
    out: str = "demo"
    seed: int = 0
    size: str = "default"
    english_replay: bool = True     # the students replay English (loss.english); False: the comparison run
    english_fraction: float = 1.0   # the share of each batch whose English is replayed (loss.english_fraction)
    precision: str = "auto"         # the students' training precision (auto: fp32 on CPU, bf16 on GPU)
