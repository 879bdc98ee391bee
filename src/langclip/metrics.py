"""Metrics and text-side helpers shared by training, evaluation, inference and the demo (a leaf:
it imports no stage): zero-shot classifier weights from class names and templates, classification
metrics from integer counts, recall@k in chunks, batched text encoding.

Class names may be plain strings or {form: text} dicts; a template names the form it needs
("фото {gen}"); "{c}" and "{}" are the name as given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import trim_tokens


def _forms(c) -> dict:
    return dict(c, c=c.get("nom", next(iter(c.values())))) if isinstance(c, dict) else _Any(c)


class _Any(dict):
    """Every form of a plain class name is the name itself."""

    def __init__(self, name: str):
        super().__init__(c=name)
        self.name = name

    def __missing__(self, key):
        return self.name


def fill(template: str, classname) -> str:
    """'фото {gen}' + {'nom': 'кот', 'gen': 'кота'} -> 'фото кота'; '{}' and '{c}' are the name as given."""
    return template.replace("{}", "{c}").format_map(_forms(classname))


def display_name(c) -> str:
    return c.get("nom", next(iter(c.values()))) if isinstance(c, dict) else str(c)


@torch.no_grad()
def zero_shot_weights(model, tokenizer, classnames: list, templates: list[str], device="cpu",
                      context_length: int | None = None, batch_texts: int = 256, desc: str = "") -> torch.Tensor:
    """(C, D): per class, the mean of the normalised template embeddings, normalised. All classes'
    texts go through the tower sorted by length, up to `batch_texts` of one length a call (no padding):
    far fewer calls than one a class (CLIP_benchmark's way: ImageNet's 1,000 classes are 1,000 calls of a
    few texts each) and no more tokens (benchmarks/zero_shot_weights.py). An HF tower's texts go as they come.
    `desc`: a progress bar of the prompts, so named, where they are many (Babel-ImageNet: 748 x 80)."""
    T = len(templates)
    texts = [fill(tp, c) for c in classnames for tp in templates]
    tokens = tokenizer(texts, context_length=context_length or model.context_length)
    hf = getattr(model, "is_hf", False)
    length = torch.zeros(len(texts), dtype=torch.long) if hf else tokens.argmax(dim=-1) + 1   # through end-of-text
    order = length.argsort(stable=True)
    length = length[order]
    sums, i = None, 0
    bar = None
    if desc and len(texts) >= 4 * batch_texts:
        from .files import progress_bar

        bar = progress_bar(total=len(texts), desc=desc, unit="text")
    while i < len(texts):
        j = min(i + batch_texts, len(texts))
        j = i + int((length[i:j] == length[i]).sum())        # sorted: the texts of this length come first
        idx = order[i:j]
        t = tokens[idx] if hf else tokens[idx, :int(length[i])]
        e = F.normalize(model.encode_text(t.to(device)).float(), dim=-1)
        sums = torch.zeros(len(classnames), e.shape[1], device=e.device) if sums is None else sums
        sums.index_add_(0, (idx // T).to(e.device), e)
        if bar:
            bar.update(j - i)
        i = j
    if bar:
        bar.close()
    return F.normalize(sums / T, dim=-1)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    C = logits.shape[1]
    top = logits.topk(min(5, C), dim=1).indices
    n = int(labels.numel())
    acc1 = int((top[:, 0] == labels).sum()) / n  # exact counts, float64: comparable with other harnesses
    acc5 = int((top == labels[:, None]).any(1).sum()) / n
    conf = torch.zeros(C, C, dtype=torch.long)
    conf.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    support = conf.sum(1)
    per_class = (conf.diag().double() / support.clamp(min=1).double())
    present = support > 0
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": float(per_class[present].mean()),
            "per_class": {n: float(a) for n, a, p in zip(names, per_class, present) if p},
            "confusion": conf.tolist(), "classnames": names, "n": int(labels.numel())}


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    return head + "\n".join("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows) + "\n"


# -- retrieval ----------------------------------------------------------------------------------
def recall_at_k(text: torch.Tensor, image: torch.Tensor, text_image: torch.Tensor, ks=(1, 5, 10),
                max_elements: int = 1 << 27) -> dict:
    """text (T, D), image (I, D) normalised; text_image (T,) image index of each text.

    The (T, I) similarity matrix is never held whole: texts go in chunks of at most `max_elements`
    similarities (a held-out 1% of 3.7M images with 5 captions each would be 185k x 37k = 27 GB)."""
    text, image = text.float(), image.float()
    T, n_img = text.shape[0], image.shape[0]
    step = max(1, max_elements // max(n_img, 1))
    rank_t2i = torch.empty(T, dtype=torch.long, device=text.device)
    best = torch.full((n_img,), float("-inf"), device=text.device)   # each image's best caption score
    sim = None
    for s in range(0, T, step):
        sim = text[s: s + step] @ image.T
        right = sim.gather(1, text_image[s: s + step, None])
        rank_t2i[s: s + step] = (sim > right).sum(1)                  # images scoring above the right one
        best.scatter_reduce_(0, text_image[s: s + step], right.squeeze(1), reduce="amax")
    rank_i2t = torch.zeros(n_img, dtype=torch.long, device=text.device)  # texts scoring above that best
    for s in range(0, T, step):   # one chunk (the usual case): the matrix is still there, not recomputed
        rank_i2t += ((sim if step >= T else text[s: s + step] @ image.T) > best[None, :]).sum(0)
    present = torch.zeros(n_img, dtype=torch.bool, device=text.device)
    present[text_image] = True
    out = {}
    for k in ks:
        out[f"t2i_r@{k}"] = float((rank_t2i < k).float().mean())
    for k in ks:
        out[f"i2t_r@{k}"] = float((rank_i2t[present] < k).float().mean())
    out["mean_recall"] = sum(out.values()) / len(out)
    return out


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], device, batch_size: int = 512) -> torch.Tensor:
    out = []
    for s in range(0, len(texts), batch_size):
        t = tokenizer(texts[s: s + batch_size], context_length=model.context_length)
        if not getattr(model, "is_hf", False):
            t = trim_tokens(t)   # on the host: the device is never asked for the length
        t = t.to(device)
        out.append(model.encode_text(t).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
