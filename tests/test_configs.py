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
    with pytest.raises(ConfigError, match=r"^command line 'optim.lr=fast': optim.lr: expected a number"):
        load_config(TrainConfig, path, ["optim.lr=fast"])


def test_config_errors_name_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: three\n")
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        load_config(TrainConfig, p)
    p.write_text("optim:\n  lrate: 1\n")
    with pytest.raises(ConfigError, match="unknown key optim.'lrate'"):
        load_config(TrainConfig, p)


def test_config_errors_say_where_the_value_came_from(tmp_path):
    """A bad value in the file names the file and its line; one from the command line names the
    key=value as typed; a near-miss key gets a suggestion; validation errors about a key do the same."""
    p = tmp_path / "c.yaml"
    p.write_text("# a comment\nepochs: 3\n\noptim:\n  warmup_steps: 10\n  lr: fast\nmodel:\n  init: clip\n")
    with pytest.raises(ConfigError, match=r"c\.yaml, line 6: optim\.lr: expected a number, got 'fast'"):
        load_config(TrainConfig, p)
    with pytest.raises(ConfigError, match=r"^command line 'epochs=zz': epochs: expected an integer"):
        load_config(TrainConfig, p, ["optim.lr=1e-4", "epochs=zz"])
    with pytest.raises(ConfigError, match=r"^command line 'optim.lrr=1': unknown key optim.'lrr' \(did you mean optim.lr\?\)"):
        load_config(TrainConfig, p, ["optim.lr=1e-4", "optim.lrr=1"])
    p.write_text("epochs: 3\ncorpus_extra: 1\n")
    with pytest.raises(ConfigError, match=r"line 2: unknown key 'corpus_extra'"):
        load_config(TrainConfig, p)
    p.write_text("epochs: 3\nmodel:\n  init: clip\n  tokenizer: x\ncache: /no/such/cache\n")
    with pytest.raises(ConfigError, match=r"c\.yaml, line 5: cache: not found: /no/such/cache"):
        load_config(TrainConfig, p)
    with pytest.raises(ConfigError, match=r"^command line 'cache=/elsewhere': cache: not found"):
        load_config(TrainConfig, p, ["cache=/elsewhere"])
    with pytest.raises(ConfigError, match=r"override 'optim.lr=\[1': invalid value"):
        load_config(TrainConfig, p, ["optim.lr=[1"])


def test_model_lang_is_for_hf_towers_only(tmp_path):
    """A langclip tokenizer records its language; `model.lang` is for an hf: encoder's, which cannot."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "tok").mkdir()
    (tmp_path / "w.pt").write_bytes(b"x")
    p = tmp_path / "c.yaml"
    p.write_text(f"cache: {tmp_path / 'cache'}\nmodel:\n  init: clip\n  weights: {tmp_path / 'w.pt'}\n"
                 f"  tokenizer: {tmp_path / 'tok'}\n  lang: uk\n")
    with pytest.raises(ConfigError, match=r"c\.yaml, line 6: model\.lang is for an hf: init"):
        load_config(TrainConfig, p)
    assert load_config(TrainConfig, p, ["model.init=hf:some/encoder"]).model.lang == "uk"
