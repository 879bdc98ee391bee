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
