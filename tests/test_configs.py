from pathlib import Path

import pytest

from langclip.config import ConfigError, load_config
from langclip.config import TrainConfig

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses(path, tmp_path):
    # the paths in shipped configs are placeholders: point them at existing files, then validate
    for k in ("cache", "model.weights", "model.tokenizer"):
        (tmp_path / k).mkdir()
    cfg = load_config(TrainConfig, path, [f"cache={tmp_path / 'cache'}", f"model.tokenizer={tmp_path / 'model.tokenizer'}"])
    assert cfg.epochs >= 1 and (cfg.model.init in ("clip", "scratch") or cfg.model.init.startswith("hf:"))
    assert cfg.model.pretrained == "openai" and not cfg.model.weights   # through open_clip's download cache
    with pytest.raises(ConfigError, match="not both"):                   # a file instead, not as well
        load_config(TrainConfig, path, [f"cache={tmp_path / 'cache'}", f"model.tokenizer={tmp_path / 'model.tokenizer'}",
                                        f"model.weights={tmp_path / 'model.weights'}"])
    cfg = load_config(TrainConfig, path, [f"cache={tmp_path / 'cache'}", f"model.tokenizer={tmp_path / 'model.tokenizer'}",
                                          f"model.weights={tmp_path / 'model.weights'}", "model.pretrained="])
    assert cfg.model.weights and not cfg.model.pretrained


def test_config_errors_name_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: three\n")
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        load_config(TrainConfig, p)
    p.write_text("optim:\n  lrate: 1\n")
    with pytest.raises(ConfigError, match="unknown key optim.'lrate'"):
        load_config(TrainConfig, p)
