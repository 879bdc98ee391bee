"""What asks the index: a text (and image) encoder whose image tower is the index's. A langclip run or
export (any language it was trained on), or an original CLIP weights file (English). The index and the
model must share the image tower's tensor digest, or the scores mean nothing: a mismatch is refused."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class QueryModel:
    """`image=False`: for text queries only. A run folder then loads its text tower alone, without
    importing open_clip (model.TextCLIP; the CLIP weights file is not read, the digest compared is the one
    the run recorded): a ViT-B/32 `langclip search` by text takes 2.3 s and 1.2 GB on 2 CPU cores, against
    5.5 s through open_clip's classes and 6.3 s / 2.0 GB with both towers (cpu_search_cold_start.jsonl)."""

    def __init__(self, model: str | Path, arch: str = "", device: str | None = None,
                 weights: str | None = None, image: bool = True):
        model = Path(model)
        self.folder = model if model.is_dir() else None   # a run records the tokens it trained on (coverage.py)
        if model.is_dir():
            from ..inference import image_tower_ref, load

            lm = load(model, device=device, weights=weights, image=image)
            ref = image_tower_ref(lm.meta or {})
            self.model, self.tokenizer, self.device = lm.model, lm.tokenizer, lm.device
            self._preprocess = lambda: lm.preprocess   # open_clip's transform, made when first needed
            self.tower_sha256 = lm.model.tower_sha256 or ref.get("tower_sha256", "")
            lang = (getattr(lm.tokenizer, "meta", {}) or {}).get("language")
            self.name, self.lang = f"{model.name} (langclip{', ' + lang if lang else ''})", lang
        elif model.is_file():
            from ..build import load_reference_clip
            from ..files import pick_device
            from ..model import image_transform, preprocess_cfg

            sd = None
            if not arch:   # read from the file, as `cache build` does without --clip (the tensors read once)
                from ..clip_arch import infer_arch
                from ..weights import load_state_dict

                sd = load_state_dict(model)
                arch = infer_arch(model, sd)
            m, tok = load_reference_clip(arch, model, sd)
            self.device = pick_device(device)
            self.model, self.tokenizer = m.to(self.device), tok
            tf = image_transform(preprocess_cfg(m))
            self._preprocess = lambda: tf
            self.tower_sha256 = m.tower_sha256
            self.name, self.lang = f"{model.name} (CLIP {arch}, English)", "en"
        else:
            raise FileNotFoundError(f"model not found: {model} (a langclip run or export folder, or a CLIP weights file)")

    @property
    def preprocess(self):
        return self._preprocess()

    def check(self, index) -> None:
        if index.tower_sha256 and self.tower_sha256 and index.tower_sha256 != self.tower_sha256:
            raise ValueError(f"the index {index.path} was made by another image tower (digest "
                             f"{index.tower_sha256[:12]}…) than this model's ({self.tower_sha256[:12]}…): "
                             f"its scores would mean nothing. Use a model trained on that tower, or rebuild the index")

    def unseen(self, texts: list[str]) -> dict[str, list[str]]:
        """{word: its tokens the run's training captions never held} (coverage.py); {} for CLIP's own file."""
        from ..coverage import unseen_words

        return unseen_words(self.folder, self.tokenizer, texts)

    def prepare(self, text: str, as_typed: bool = False) -> dict:
        """What a text query searches with: each word whose tokens no training caption held replaced by a form
        of the same word they held (coverage.rewrite: a pymorphy3 form in Russian and Ukrainian, the
        dictionary form elsewhere), unless `as_typed`.
        -> {"text": searched with, "unseen": {word: tokens}, "rewritten": {word: form}}"""
        from ..coverage import rewrite

        used, subs = (text, {}) if as_typed else rewrite(self.folder, self.tokenizer, text, self.lang)
        return {"text": used, "unseen": self.unseen([text]), "rewritten": subs}

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        from ..metrics import encode_texts

        f = encode_texts(self.model, self.tokenizer, list(texts), self.device)
        return torch.nn.functional.normalize(f.float(), dim=-1).numpy()

    @torch.no_grad()
    def encode_image(self, images) -> np.ndarray:
        x = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1).cpu().numpy()


@dataclass
class Term:
    """One part of a combined query: a text or a picture (a path), its weight signed (subtracted: < 0)."""
    value: str
    weight: float = 1.0
    picture: bool = False


WEIGHT = re.compile(r"^(\d+(?:\.\d+)?):(?=[^\d\s])")   # "2:собака", "0.5:./cat.jpg"; not "10:30 утра"


def query_terms(query: str | None = None, image: str | None = None, add=(), subtract=(),
                pictures: bool = True, looking_for: bool = False) -> list[Term]:
    """The terms of `search "…" --image … --add … --subtract …`, as rclip combines them: each may start with a
    weight ("2:собака"); an --add or --subtract term is a picture when it names a file or ends like one
    (".jpg"), else a text. Pictures must exist (named when not), and something must be added.
    `pictures=False` (the HTTP API, which never reads a file by its path): every term is a text;
    `looking_for`: something else is added (the API's pictures of the index), so texts may only subtract."""
    from ..pairs import IMAGE_EXTS
    from ..pixels import RAW_EXTS

    def term(raw: str, sign: float, picture: bool | None, where: str) -> Term:
        m = WEIGHT.match(raw)
        w, value = (float(m.group(1)), raw[m.end():]) if m else (1.0, raw)
        if not value.strip():
            raise ValueError(f"{where}: an empty term ({raw!r})")
        if picture is None:
            picture = pictures and (Path(value).is_file() or Path(value).suffix.lower() in IMAGE_EXTS + RAW_EXTS)
        if picture and not Path(value).is_file():
            raise FileNotFoundError(f"{where}: picture not found: {value}")
        return Term(value, sign * w, picture)

    terms = ([term(query, 1.0, False, "the query")] if query else []) + \
            ([term(image, 1.0, True, "--image")] if image else []) + \
            [term(t, 1.0, None, "--add") for t in add] + [term(t, -1.0, None, "--subtract") for t in subtract]
    if not looking_for and not any(t.weight > 0 for t in terms):
        raise ValueError("give a query text, --image or --add: something to look for (--subtract only takes away)")
    return terms


def combine(vectors: np.ndarray, weights) -> np.ndarray:
    """The weighted sum of L2-normalised embeddings, normalised again: one query vector (D,)."""
    v = (np.asarray(weights, dtype=np.float32)[:, None] * np.asarray(vectors, dtype=np.float32)).sum(0)
    n = float(np.linalg.norm(v))
    if n < 1e-6:
        raise ValueError("the terms cancel out: their weighted sum is zero")
    return v / n
