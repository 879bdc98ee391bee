"""Shared fixtures: everything is tiny and made in tmp folders; nothing touches a hub."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


@pytest.fixture(scope="session")
def ru_tokenizer(tmp_path_factory):
    """A small Russian tokenizer: 1,500 merges over wordfreq's 20k most frequent Russian words."""
    from langclip.tokenizer_train import TokenizerTrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tok_ru")
    return train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, wordfreq_top=20000, merges=1500,
                                                out=str(out)), progress=False)


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
