import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml

from langclip.cli import main
from langclip.runfolder import load_model
from langclip.config import LossSection, ModelSection, OptimSection, TrainConfig
from langclip.train import train


def val_recall(run):
    recs = [json.loads(l) for l in open(run / "metrics.jsonl")]
    return [r for r in recs if "val/t2i_r@1" in r]


def val_recall_text(run):
    return [r for r in map(json.loads, open(run / "metrics.jsonl")) if "val/to_en_r@1" in r]


def test_training_raises_recall_and_keeps_image_tower(train_cfg, tiny_clip):
    before = {k: v.clone() for k, v in tiny_clip[0].visual.state_dict().items()}
    run = train(train_cfg, progress=False)
    vals = val_recall(run)
    n_val_images = 48
    chance = 1 / n_val_images
    # a random 2-layer image tower carries little of the picture (t2i R@1 ~2.7x chance here); the
    # "far above chance" check is test_demo.py, whose cache comes from a trained tiny teacher.
    # Here: above chance, and better than the same model before training (measured, same split).
    assert vals[-1]["val/t2i_r@1"] > 2 * chance and vals[-1]["val/t2i_r@5"] > 2 * (5 * chance), vals[-1]
    untrained = _recall_before_training(train_cfg)
    assert vals[-1]["val/mean_recall"] > untrained["mean_recall"] + 0.05, (untrained, vals[-1])
    model, tok, meta = load_model(run)
    for k, v in model.visual.state_dict().items():
        assert torch.equal(v, before[k]), k   # bit-identical image tower
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "model.json", "tokenizer", "text_tower.safetensors",
                                               "text_tower_best.safetensors", "checkpoints", "metrics.jsonl"}


def _recall_before_training(cfg: TrainConfig) -> dict:
    """Held-out recall of the freshly initialised student (what epoch 0 would log), on the run's split."""
    from langclip.train.batches import TokenTable
    from langclip.cache import load_cache
    from langclip.runfolder import split_by_image
    from langclip.build import build_student
    from langclip.tokenizer import Tokenizer
    from langclip.train import validate

    tok = Tokenizer.load(cfg.model.tokenizer)
    model, _, _ = build_student(cfg.model.clip, cfg.model.weights, tok, cfg.model.init, cfg.model.context_length,
                                seed=cfg.seed)
    data = load_cache(cfg.cache)
    _, val_idx = split_by_image(data, cfg.val_fraction, cfg.seed)
    tokens = TokenTable.encode(tok, data.captions, cfg.model.context_length, None)
    return validate(model, tokens, data.image_emb, data.caption_image, val_idx, torch.device("cpu"), False)


def _write_cfg(cfg: TrainConfig, path):
    from dataclasses import asdict

    path.write_text(yaml.safe_dump(asdict(cfg), allow_unicode=True))
    return path


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, train_cfg, capsys):
    from safetensors.torch import load_file

    train_cfg.epochs, train_cfg.checkpoint_every, train_cfg.val_fraction = 3, 2, 0.25
    train_cfg.loss.distill = 0.5
    ref_cfg = _write_cfg(train_cfg, tmp_path / "ref.yaml")
    assert main(["train", "--config", str(ref_cfg), f"out={tmp_path / 'ref'}"]) == 0
    cfg_path = _write_cfg(train_cfg, tmp_path / "k.yaml")
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "fault_train.py"), "7",   # SIGKILL
                        "train", "--config", str(cfg_path), f"out={tmp_path / 'k'}"],                  # mid-epoch 2
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    assert json.loads((tmp_path / "k" / "checkpoints" / "latest.json").read_text())["step"] == 6
    # refused before anything is written: a fresh start over it, a resume with other settings
    before = {f: f.read_bytes() for f in (tmp_path / "k").rglob("*") if f.is_file()}
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'k'}"]) == 2
    assert "already holds a run (checkpoint at step 6)" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'k'}", "batch_size=16", "--resume", "latest"]) == 2
    assert "batch_size: checkpoint 32, now 16" in capsys.readouterr().err
    # the schedule's length (the cosine follows it) and the tokenizer are part of the run too
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'k'}", "epochs=4", "--resume", "latest"]) == 2
    err = capsys.readouterr().err
    assert "epochs: checkpoint 3, now 4" in err and f"model.init=run:{tmp_path / 'k'} and a new out" in err
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'k'}", "max_steps=9", "--resume", "latest"]) == 2
    assert "max_steps: checkpoint 0, now 9" in capsys.readouterr().err
    from langclip.config import TokenizerTrainConfig
    from langclip.tokenizer.train import train_tokenizer

    train_tokenizer(TokenizerTrainConfig(lang="ru", wordfreq=True, wordfreq_top=2000, merges=300,
                                         out=str(tmp_path / "other-tok")), progress=False)
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'k'}", f"model.tokenizer={tmp_path / 'other-tok'}",
                 "--resume", "latest"]) == 2
    assert "tokenizer: checkpoint" in capsys.readouterr().err
    assert {f: f.read_bytes() for f in (tmp_path / "k").rglob("*") if f.is_file()} == before
    # the cache moved (another machine, local disk): the same content resumes
    import shutil

    shutil.copytree(train_cfg.cache, tmp_path / "moved-cache")
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'k'}", f"cache={tmp_path / 'moved-cache'}",
                 "--resume", "latest"]) == 0
    a = load_file(str(tmp_path / "ref" / "text_tower.safetensors"))
    b = load_file(str(tmp_path / "k" / "text_tower.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # metrics.jsonl: each step once, as in the uninterrupted run (the steps after the checkpoint were
    # logged before the kill and again after the resume)
    def records(run):
        return [(r["step"], r.get("loss"), r.get("val/mean_recall")) for r in map(json.loads, open(run / "metrics.jsonl"))]
    assert records(tmp_path / "k") == records(tmp_path / "ref")


def test_a_signal_stops_training_after_a_step_with_a_checkpoint_there(tmp_path, train_cfg):
    """SIGTERM (a cluster preempting the job) or Ctrl-C mid-epoch: the run stops after the step it was in, with a
    checkpoint at that step and the shell's status for the signal; --resume latest from it ends with the
    uninterrupted run's weights, bit for bit (train/stop.py)."""
    from safetensors.torch import load_file

    train_cfg.epochs, train_cfg.val_fraction = 3, 0.25   # 4 steps an epoch
    cfg_path = _write_cfg(train_cfg, tmp_path / "k.yaml")
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'ref'}"]) == 0
    for sig, code in (("TERM", 143), ("INT", 130)):
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "fault_train.py"), f"5:{sig}",
                            "train", "--config", str(cfg_path), f"out={tmp_path / sig}"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == code, r.stderr[-2000:]
        assert f"training stopped by SIG{sig} after step 6: checkpoint saved in {tmp_path / sig / 'checkpoints'}; " \
               f"continue it with --resume latest" in r.stderr
        assert json.loads((tmp_path / sig / "checkpoints" / "latest.json").read_text())["step"] == 6
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'TERM'}", "--resume", "latest"]) == 0
    a = load_file(str(tmp_path / "ref" / "text_tower.safetensors"))
    b = load_file(str(tmp_path / "TERM" / "text_tower.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_signal_stops_every_torchrun_rank_after_the_same_step(tmp_path, train_cfg):
    """Under torchrun the ranks agree at a log step (every 5 here): each rank signalled after step 5 stops after
    step 10, rank 0's checkpoint is there, and one process resumes it to the end."""
    from conftest import torchrun

    train_cfg.epochs, train_cfg.val_fraction = 3, 0.25   # 12 steps
    cfg_path = _write_cfg(train_cfg, tmp_path / "k.yaml")
    r = torchrun(29571, [os.path.join(os.path.dirname(__file__), "fault_train.py"), "5:TERM", "train", "--config",
                         str(cfg_path), f"out={tmp_path / 'k'}"], timeout=300)
    assert r.returncode != 0 and r.stderr.count("training stopped by SIGTERM after step 10") == 2, r.stderr[-3000:]
    assert json.loads((tmp_path / "k" / "checkpoints" / "latest.json").read_text())["step"] == 10
    assert main(["train", "--config", str(cfg_path), f"out={tmp_path / 'k'}", "--resume", "latest"]) == 0
    assert json.loads((tmp_path / "k" / "model.json").read_text())["steps"] == 12


def test_resume_refuses_a_checkpoint_that_does_not_fit(tmp_path, train_cfg):
    """Text weights load strictly: a checkpoint missing a weight (or holding another) is an error."""
    from langclip.config import ConfigError
    from langclip.train import load_text_weights, rng_state, set_rng_state

    model, _, _ = load_model(train(dataclasses.replace(train_cfg, epochs=1), progress=False))
    sd = model.text_state_dict()
    load_text_weights(model, sd, "ck.pt")
    for bad in ({k: v for k, v in sd.items() if k != "ln_final.weight"}, dict(sd, extra=torch.zeros(1))):
        with pytest.raises(ConfigError, match="ck.pt: its text tower does not fit"):
            load_text_weights(model, bad, "ck.pt")
    st = rng_state()   # every stream; checkpoints of round 1 (a CPU tensor) still restore
    a = torch.rand(3)
    set_rng_state(st)
    assert torch.equal(torch.rand(3), a)
    set_rng_state(st["cpu"])
    assert torch.equal(torch.rand(3), a)


def test_bad_configuration_is_caught_before_work(tmp_path, train_cfg, capsys):
    p = _write_cfg(train_cfg, tmp_path / "c.yaml")
    cases = [(["epochs=x"], "expected an integer"), (["optim.lrr=1"], "unknown key optim.'lrr'"),
             (["batch_size=100000"], "larger than the"), (["model.weights=/nope.pt"], "not found"),
             (["cache=/nope"], "not found")]
    for ov, msg in cases:
        assert main(["train", "--config", str(p), *ov]) == 2
        err = capsys.readouterr().err
        assert msg in err, (ov, err)
    # a cache made with another image tower is refused
    other = tmp_path / "other.pt"
    sd = torch.load(train_cfg.model.weights, weights_only=True)
    sd["visual.proj"] = sd["visual.proj"] * 2
    torch.save(sd, other)
    assert main(["train", "--config", str(p), f"model.weights={other}"]) == 2
    assert "rebuild the cache" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_trains_further_from_another_run(tmp_path, trained_run, world_cache, tiny_clip, capsys, caplog):
    """model.init=run:<folder>: the text tower starts from that run's last weights, shape and tokenizer (at lr 0 the
    new run's weights are the old file's, bit for bit), its token counts add the old run's, and what does not fit
    is named before any work."""
    import numpy as np
    from safetensors.torch import load_file

    from langclip.coverage import load_counts, pretrained_of
    from langclip.tokenizer import Tokenizer

    same = dict(cache=str(world_cache), loss=LossSection(distill=0.5), batch_size=32, val_fraction=0.25,
                tensorboard=False, epochs=1, max_steps=1)
    cfg = TrainConfig(out=str(tmp_path / "r0"), model=ModelSection(init=f"run:{trained_run}", context_length=24),
                      optim=OptimSection(lr=0.0, warmup_steps=1, weight_decay=0.0), **same)
    out = train(cfg, progress=False)
    new, old = load_file(str(out / "text_tower.safetensors")), load_file(str(trained_run / "text_tower.safetensors"))
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in old)
    meta, parent = (json.loads((d / "model.json").read_text()) for d in (out, trained_run))
    assert meta["init"] == {"init": f"run:{trained_run.resolve()}", "from_run": str(trained_run.resolve()),
                            "from_init": "clip", "from_steps": parent["steps"]}
    assert parent["steps"] > 0 and meta["model_cfg"] == parent["model_cfg"]
    # the same cache and split: this run's captions are the old run's, so every count doubles
    assert np.array_equal(load_counts(out), 2 * load_counts(trained_run)) and load_counts(trained_run).sum() > 0
    assert pretrained_of(out) == pretrained_of(trained_run) == "clip"   # it knows CLIP's English as its run did
    # run:<folder>/<weights>: those weights (the run's best, made to differ from its last here), not its last
    import shutil

    from safetensors.torch import save_file

    parent = shutil.copytree(trained_run, tmp_path / "parent")
    save_file({k: v * 2 if k == "token_embedding.weight" else v for k, v in old.items()},
              str(parent / "text_tower_best.safetensors"))
    best = train(dataclasses.replace(cfg, out=str(tmp_path / "rb"),
                                     model=ModelSection(init=f"run:{parent / 'text_tower_best.safetensors'}",
                                                        context_length=24)), progress=False)
    new, want = (load_file(str(f)) for f in (best / "text_tower.safetensors", parent / "text_tower_best.safetensors"))
    assert new.keys() == want.keys() and all(torch.equal(new[k], want[k]) for k in want)
    assert not torch.equal(new["token_embedding.weight"], old["token_embedding.weight"])
    assert json.loads((best / "model.json").read_text())["init"]["from_weights"] == "text_tower_best.safetensors"
    # another held-out split of the same cache is said to overstate
    caplog.clear()
    train(dataclasses.replace(cfg, out=str(tmp_path / "r1"), seed=1), progress=False)
    assert "held-out split: not the one" in caplog.text
    # what does not fit, named before anything is written
    other = tmp_path / "other.pt"
    sd = torch.load(tiny_clip[1], weights_only=True)
    sd["visual.proj"] = sd["visual.proj"] * 2
    torch.save(sd, other)
    Tokenizer.clip().save(tmp_path / "cliptok")
    run_arg = f"model.init=run:{trained_run}"
    cases = [([run_arg], "the text tower of run:"),   # context 77, the run's 24
             ([f"model.init=run:{tmp_path}", "model.context_length=24"], "is not a langclip run folder"),
             ([run_arg, "model.context_length=24", f"out={trained_run}"], "is the run model.init starts from"),
             ([run_arg, "model.context_length=24", f"model.tokenizer={tmp_path / 'cliptok'}"], "is not the tokenizer of run:"),
             ([run_arg, "model.context_length=24", f"model.weights={other}"], "was trained with another image tower")]
    for ov, msg in cases:
        assert main(["train", f"cache={world_cache}", f"out={tmp_path / 'bad'}", "batch_size=32", *ov]) == 2, ov
        err = capsys.readouterr().err
        assert msg in err, (ov, err)
        assert not (tmp_path / "bad").exists()
    assert main(["train", f"cache={world_cache}", "model.context_length=24", run_arg, "epochs=1", "batch_size=32",
                 f"out={tmp_path / 'cli'}", "tensorboard=false", "max_steps=2"]) == 0


GROUP_FIRST = """
import gc, os, sys, torch, torch.distributed as dist
threads = lambda: len(os.listdir("/proc/self/task"))   # gloo's workers and transport loop included
before = threads()
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
if sys.argv[2] == "ddp-first":   # DDP imports torch.distributed.nn: after the group started
    from torch.nn.parallel import DistributedDataParallel
    m = DistributedDataParallel(torch.nn.Linear(2, 2))
    m(torch.randn(3, 2)).sum().backward()
    del m
import langclip.dist   # what `from langclip.train import train` imports
x = torch.ones(2)
dist.all_reduce(x)
if sys.argv[2] == "langclip-first":
    from torch.nn.parallel import DistributedDataParallel
    m = DistributedDataParallel(torch.nn.Linear(2, 2))
    m(torch.randn(3, 2)).sum().backward()
    del m
gc.collect()
dist.destroy_process_group()
gc.collect()
print(before, threads())
"""


@pytest.mark.parametrize("order", ["ddp-first", "langclip-first"])
def test_a_group_a_script_started_ends_with_its_threads_whenever_langclip_is_imported(tmp_path, order):
    """A script that starts its own process group and then imports langclip's training (or made a DDP model
    first): torch.distributed.nn, imported after the group started, held the group in its functions'
    default arguments, so destroy_process_group left gloo's threads running into the interpreter's exit
    (where a rank could abort: session 30). langclip's import sets those defaults back to None."""
    r = subprocess.run([sys.executable, "-c", GROUP_FIRST, str(tmp_path / "store"), order], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    before, after = map(int, r.stdout.split())
    assert after == before, (before, after)


@pytest.mark.slow
def test_ddp_two_processes_equal_one_for_every_loss_combination(tmp_path):
    """2-process gloo run (torchrun) vs 1 process on the same global batch, two steps each, for every
    combination of contrastive / distillation / English replay: same losses and gradients (float64).
    Without the contrastive loss the temperature gets no gradient, which DDP's reducer used to reject
    at the second step."""
    from conftest import torchrun
    from ddp_worker import COMBOS, batch, loss_cfg, two_steps

    from langclip.train import TextTower, compute_loss, distill_loss

    model, tok, ims, tch, has, tok_en = batch()
    _, parts = compute_loss(TextTower(model), tok, ims, tch, loss_cfg(), 1, has, tok_en)
    assert set(parts) == {"clip", "distill", "english"}
    with torch.no_grad():  # one forward of both languages (padded to one length) = two separate ones
        sep = distill_loss(TextTower(model)(tok_en), tch, "cosine", has)
    assert abs(float(parts["english"]) - float(sep)) <= 1e-12
    out = tmp_path / "g.pt"
    r = torchrun(29544, [os.path.join(os.path.dirname(__file__), "ddp_worker.py"), str(out)], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "is deprecated" not in r.stderr, r.stderr[-2000:]   # torch.distributed.nn's all_gather (torch >= 2.9)
    got = torch.load(out, weights_only=True)
    # the group ended with its threads: left running into the interpreter's exit, a gloo worker that
    # released a finished collective's tensors there aborted the rank (exit -6, about one launch in a hundred: benchmarks/ddp_exit.py)
    before, after = got.pop("threads")
    assert after == before, (before, after)
    # English replay of a fraction under torchrun: each rank replays the first pairs of its share, and
    # the replay loss averages over all replayed pairs; the reference is one process on the batch
    # reordered so that those pairs come first (the other losses do not depend on the order)
    from ddp_worker import FRACTION_N

    n = FRACTION_N
    order = torch.tensor([0, 1, 4, 5, 2, 3, 6, 7])   # rank 0's first 2, rank 1's first 2, the rest
    ref = two_steps((1.0, 0.5, 0.3), n_en=2 * n, order=order)
    for (l2, g2), (l1, g1) in zip(got.pop("fraction"), ref):
        assert abs(l2 - l1) <= 1e-10 and set(g2) == set(g1)
        assert all((g2[k] - g1[k]).abs().max() <= 1e-10 for k in g1)
    assert abs(ref[0][0] - two_steps((1.0, 0.5, 0.3))[0][0]) > 1e-3   # replaying a fraction is not replaying all
    assert len(COMBOS) == 7 and set(got) == {str(c) for c in COMBOS}
    for combo in COMBOS:
        ref = two_steps(combo)
        for step, ((l2, g2), (l1, g1)) in enumerate(zip(got[str(combo)], ref)):
            assert abs(l2 - l1) <= 1e-10, (combo, step, l2, l1)
            assert set(g2) == set(g1) and g1, (combo, step)
            assert ("logit_scale" in g1) == (combo[0] > 0), combo   # frozen without the contrastive loss
            for n in g1:
                assert (g2[n] - g1[n]).abs().max() <= 1e-10, (combo, step, n)


@pytest.mark.slow
@pytest.mark.xdist_group("compile")
def test_compiled_training_matches_eager(tmp_path, train_cfg):
    """torch.compile path (length buckets of 16, one static graph each) trains to the same weights.
    Batch 16 and distillation: the graphs each rank of the torchrun test's compiled run builds (its
    global batch of 32 on 2 processes), so that test, run after this one in the same worker (xdist
    group "compile"), reads inductor's kernels from the cache instead of compiling them again."""
    from safetensors.torch import load_file

    train_cfg.epochs, train_cfg.val_fraction, train_cfg.batch_size, train_cfg.loss.distill = 2, 0.25, 16, 0.5
    train_cfg.out = str(tmp_path / "eager")
    train(train_cfg, progress=False)
    train_cfg.compile, train_cfg.out = True, str(tmp_path / "compiled")
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    train(train_cfg, progress=False)
    assert counters["stats"]["unique_graphs"] >= 1   # it did compile
    a = load_file(str(tmp_path / "eager" / "text_tower.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "text_tower.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("attn.in_proj_bias"):  # the key bias cannot change any output (softmax is shift-
            w = a[k].shape[0] // 3           # invariant): its gradient is rounding noise that Adam
            keep = torch.cat([torch.arange(w), torch.arange(2 * w, 3 * w)])  # scales up to lr-sized
            a[k], b[k] = a[k][keep], b[k][keep]  # steps, so only the query and value biases are compared
        # atol: Adam turns a rounding difference in a near-zero gradient into part of a step (lr 3e-3);
        # on an AVX-512 machine inductor's kernels left up to 8e-5 in a few elements; a wrong graph moves
        # many elements by whole steps
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-4, msg=k)
    # bf16 weights compiled (what a GPU run uses): the same losses within bf16's rounding (batch 32,
    # the contrastive loss alone: at 16 with distillation one step of 18 rounds 2.2% apart)
    losses = {}
    for d, comp in (("bf16-eager", False), ("bf16-compiled", True)):
        torch._dynamo.reset()
        train(dataclasses.replace(train_cfg, compile=comp, precision="bf16-weights", out=str(tmp_path / d), log_every=1,
                                  batch_size=32, loss=LossSection()), progress=False)
        losses[d] = torch.tensor([r["loss"] for r in map(json.loads, open(tmp_path / d / "metrics.jsonl")) if "loss" in r])
    torch.testing.assert_close(losses["bf16-compiled"], losses["bf16-eager"], rtol=2e-2, atol=0)


def test_compile_where_it_cannot_build_trains_eagerly(tmp_path, train_cfg, caplog):
    """compile: true on a machine where torch.compile cannot build (here: no working C++ compiler for
    the CPU backend) warns once, names why, and trains the eager tower: the same weights as compile: false."""
    import logging

    import torch._inductor.config as inductor
    from safetensors.torch import load_file

    from langclip import files as loop   # where the compile check lives

    train_cfg.epochs, train_cfg.val_fraction, train_cfg.out = 2, 0.25, str(tmp_path / "eager")
    train(train_cfg, progress=False)
    loop._compile_problem.cache_clear()
    state = torch.get_rng_state()
    assert loop.compile_problem(torch.device("cpu")) is None            # the check itself draws no random numbers
    assert torch.equal(state, torch.get_rng_state())
    loop._compile_problem.cache_clear()
    torch._dynamo.reset()
    try:
        with inductor.patch({"cpp.cxx": ("/nonexistent/g++",), "force_disable_caches": True}):
            assert "compiler" in (loop.compile_problem(torch.device("cpu")) or "").lower()
            with caplog.at_level(logging.WARNING, logger="langclip.train.losses"):
                train(dataclasses.replace(train_cfg, compile=True, out=str(tmp_path / "fallback")), progress=False)
    finally:
        loop._compile_problem.cache_clear()
        torch._dynamo.reset()
    assert "torch.compile cannot build on cpu" in caplog.text and "training without it" in caplog.text
    a, b = (load_file(str(tmp_path / d / "text_tower.safetensors")) for d in ("eager", "fallback"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_held_out_set_too_small_to_rank_is_named(tmp_path, train_cfg, capsys):
    train_cfg.epochs, train_cfg.val_fraction, train_cfg.out = 1, 0.03, str(tmp_path / "run")
    train(train_cfg, progress=False)
    out = capsys.readouterr().out
    n = int(out.split("held out: ")[1].split()[0])
    assert 0 < n < 20 and f"held-out recall over {n} images says little" in out
    train_cfg.val_fraction, train_cfg.out = 0.25, str(tmp_path / "run2")
    train(train_cfg, progress=False)
    assert "says little" not in capsys.readouterr().out


@pytest.mark.parametrize("pad_id", [None, 7])
def test_token_table_gives_the_padded_batches(ru_tokenizer, pad_id):
    """Ragged storage, chunked encoding: every batch equals the padded tokens cut to its length."""
    from langclip.train.batches import TokenTable, bucket_length, text_length

    texts = ["кот", "две красные звезды на синем фоне", "", "a photo " * 40, "синий круг"] * 7
    padded = ru_tokenizer(texts, context_length=32)
    if pad_id is not None:  # a Hugging Face-style table: [ids..., pad, pad], pad id not 0
        padded = torch.where(padded == 0, pad_id, padded)

        class Tok:
            def __call__(self, t, context_length):
                x = ru_tokenizer(t, context_length=context_length)
                return torch.where(x == 0, pad_id, x)
        tok = Tok()
    else:
        tok = ru_tokenizer
    table = TokenTable.encode(tok, texts, 32, pad_id, chunk=4)   # 9 chunks
    assert len(table) == len(texts)
    assert table.nbytes < padded.numel() * 4
    g = torch.Generator().manual_seed(0)
    for idx in [torch.arange(len(texts)), torch.tensor([0, 2]), torch.randperm(len(texts), generator=g)[:6]]:
        for multiple in (1, 8, 16):
            L = bucket_length(text_length(padded[idx], pad_id), 32, multiple)
            assert torch.equal(table.batch(idx, multiple), padded[idx][:, :L]), (idx, multiple)


def test_caption_ids_are_tokenized_once_and_kept_beside_the_cache(tmp_path, train_cfg, world_cache, ru_tokenizer,
                                                                 monkeypatch):
    """The first run tokenizes every caption (and English caption, when replayed) into <cache>/tokens/;
    the ids equal the tokenizer's on the strings; a later run reads neither the strings nor the
    tokenizer's output again and trains the same; a read-only cache keeps them in the run folder; a
    table a killed run left without its json, or another context length, is tokenized afresh."""
    import shutil

    import langclip.cache as lc
    from langclip.cache import load_cache
    from langclip.train import loop
    from langclip.train.batches import TokenTable
    from langclip.train.tokens import load_table

    cache = tmp_path / "cache"
    shutil.copytree(world_cache, cache, ignore=shutil.ignore_patterns("tokens"))
    cfg = dataclasses.replace(train_cfg, cache=str(cache), epochs=2, log_every=1,
                              loss=dataclasses.replace(train_cfg.loss, distill=0.5, english=0.5))
    data = load_cache(cache)
    want = {"caption": ru_tokenizer(data.captions, context_length=16),
            "caption_en": ru_tokenizer([e or "" for e in data.captions_en], context_length=16)}
    assert load_cache(cache, texts=False).captions is None
    assert torch.equal(load_cache(cache, texts=False).has_en, torch.tensor([bool(e) for e in data.captions_en]))
    a = train(cfg, progress=False)
    kept = list((cache / "tokens").iterdir())
    assert len(kept) == 1
    for name, w in want.items():
        t = load_table(kept[0], name)
        b = t.batch(torch.arange(len(t)), multiple=1)
        assert len(t) == len(w) and torch.equal(b, w[:, :b.shape[1]]) and not w[:, b.shape[1]:].any(), name
        idx = torch.tensor([5, 0, 17, 3])
        assert torch.equal(t.subset(idx).batch(torch.arange(4), 1), t.batch(idx, 1))

    def losses(run):
        return [r["loss"] for r in map(json.loads, open(run / "metrics.jsonl")) if "loss" in r]

    def refuse(*a, **k):
        raise AssertionError("tokenized or read the captions again")

    with monkeypatch.context() as mp:
        mp.setattr(TokenTable, "encode", classmethod(refuse))
        mp.setattr(lc, "read_captions", refuse)
        mp.setattr(loop, "read_captions", refuse)
        b = train(dataclasses.replace(cfg, out=str(tmp_path / "b")), progress=False)
    assert losses(b) == losses(a) and len(losses(a)) >= 4
    # the cache folder cannot take them: the run folder does
    shutil.rmtree(cache / "tokens")
    (cache / "tokens").write_text("a file where the folder would go")
    c = train(dataclasses.replace(cfg, out=str(tmp_path / "c")), progress=False)
    assert len(list((c / "tokens").iterdir())) == 1 and losses(c) == losses(a)
    # a table without its json (a run killed while writing) is made again; a new context, new ids
    (cache / "tokens").unlink()
    train(dataclasses.replace(cfg, out=str(tmp_path / "d")), progress=False)
    (next((cache / "tokens").iterdir()) / "caption.json").unlink()
    calls = []
    real = TokenTable.encode.__func__
    monkeypatch.setattr(TokenTable, "encode", classmethod(lambda cls, *a, **k: calls.append(1) or real(cls, *a, **k)))
    assert losses(train(dataclasses.replace(cfg, out=str(tmp_path / "e")), progress=False)) == losses(a)
    assert calls == [1]
    train(dataclasses.replace(cfg, out=str(tmp_path / "f"), model=dataclasses.replace(cfg.model, context_length=24)),
          progress=False)
    assert len(list((cache / "tokens").iterdir())) == 2 and len(calls) == 3
    # which rows are used is part of the key (an image that failed drops its captions' rows)
    from langclip.train.tokens import tokens_key

    rows = load_cache(cache, texts=False).caption_rows
    assert tokens_key(cache, rows, ru_tokenizer, 16, None) != tokens_key(cache, rows[3:], ru_tokenizer, 16, None)


def test_a_killed_writers_temporary_token_files_are_removed(tmp_path, ru_tokenizer):
    """A run killed while writing token ids leaves `<name>.<part>.<host>-<pid>.tmp.npy` files; the next
    writer on that host removes those whose process is gone, and keeps a live writer's and another
    host's (a shared file system under multi-node torchrun)."""
    import socket

    from langclip.train.batches import TokenTable
    from langclip.train.tokens import load_table, save_table

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    host = socket.gethostname().replace(".", "_")
    d = tmp_path / "tokens" / "k"
    d.mkdir(parents=True)
    stale = [d / f"caption.flat.{host}-{dead}.tmp.npy", d / f"caption.{host}-{dead}.tmp.json"]
    kept = [d / f"caption.flat.{host}-{os.getppid()}.tmp.npy", d / f"caption.flat.other-host-{dead}.tmp.npy"]
    for f in stale + kept:
        f.write_bytes(b"half")
    t = TokenTable.encode(ru_tokenizer, ["красный круг", "синяя звезда"], 16, None)
    assert save_table([d], "caption", t) == d
    assert [f.exists() for f in stale + kept] == [False, False, True, True]
    assert torch.equal(load_table(d, "caption").batch(torch.arange(2), 1), t.batch(torch.arange(2), 1))
    assert sorted(f.name for f in d.iterdir() if ".tmp." not in f.name) == [
        "caption.flat.npy", "caption.json", "caption.lengths.npy"]


TORCHRUN_JOBS = {"contrastive": {"contrastive": 1.0}, "distill-replay": {"contrastive": 0.0, "distill": 1.0, "english": 0.5},
                 "bf16-weights": {"contrastive": 1.0, "distill": 0.5, "precision": "bf16-weights"},
                 "compiled": {"contrastive": 1.0, "distill": 0.5, "compile": True},
                 "hf-encoder": {"contrastive": 1.0, "distill": 1.0, "hf": True},
                 "run-init": {"contrastive": 1.0, "distill": 0.5, "run": True, "zeroshot": True}}


def _torchrun_job(cfg: TrainConfig, loss: dict, d, tiny_bert, parent=None) -> tuple[TrainConfig, object]:
    """One of TORCHRUN_JOBS as a config file in d (2 epochs, a loss logged every step; `parent`: the run a
    run: init starts from)."""
    cfg.epochs, cfg.val_fraction, cfg.log_every = 2, 0.25, 1
    loss = dict(loss)
    if loss.pop("run", False):   # trained further from a run (its tokenizer, its context of 24)
        cfg.model.init, cfg.model.tokenizer, cfg.model.context_length = f"run:{parent}", "", 24
    if loss.pop("zeroshot", False):   # rank 0 alone measures it after each epoch while the others wait
        from conftest import make_image

        for i in range(12):
            (d / "zs" / ("кот", "собака", "круг")[i % 3]).mkdir(parents=True, exist_ok=True)
            make_image(d / "zs" / ("кот", "собака", "круг")[i % 3] / f"{i}.jpg", i)
        cfg.zeroshot.datasets = [f"imagefolder:{d / 'zs'}"]
    cfg.precision = loss.pop("precision", "fp32")
    cfg.compile = loss.pop("compile", False)   # the real recipe compiles: DDP + torch.compile
    if loss.pop("hf", False):   # the encoder without dropout, so that one process and two draw nothing differently
        import shutil

        from transformers import BertConfig

        enc = shutil.copytree(tiny_bert, d / "bert")
        c = BertConfig.from_pretrained(str(enc))
        c.hidden_dropout_prob = c.attention_probs_dropout_prob = 0.0
        c.save_pretrained(str(enc))
        cfg.model.init, cfg.model.tokenizer = f"hf:{enc}", ""
        cfg.optim.lr = 1e-3
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    return cfg, _write_cfg(cfg, d / "c.yaml")


def test_a_torchrun_launch_past_its_timeout_leaves_no_process(tmp_path):
    """The suite's launcher (conftest.torchrun) kills a launch that runs past its timeout together with
    its ranks, which torchrun starts in sessions of their own: the test fails at the timeout, not when the
    ranks end, and no rank outlives it (killing the launcher's process group alone left them running)."""
    import time

    from conftest import proc_stat, torchrun

    started = tmp_path / "ranks"
    started.mkdir()
    script = tmp_path / "sleep.py"
    script.write_text("import os, pathlib, sys, time\n(pathlib.Path(sys.argv[1]) / str(os.getpid())).touch()\ntime.sleep(300)\n")
    t = time.perf_counter()
    with pytest.raises(AssertionError, match="ran past 15 s"):
        torchrun(29598, [str(script), str(started)], timeout=15)
    assert time.perf_counter() - t < 60
    pids = [int(f.name) for f in started.iterdir()]
    assert len(pids) == 2, pids   # both ranks were running

    def alive(pid):   # a killed rank is gone, or a zombie until init reaps it
        fields = proc_stat(pid)
        return bool(fields) and fields[0] != "Z"

    deadline = time.time() + 10
    while any(map(alive, pids)) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, pids)), pids


def _torchrun(jobs: list[list[str]], port: int, d):
    """The langclip command lines in one torchrun launch of 2 gloo processes (tests/torchrun_jobs.py)."""
    from conftest import torchrun

    (d / "jobs.json").write_text(json.dumps(jobs))
    return torchrun(port, [os.path.join(os.path.dirname(__file__), "torchrun_jobs.py"), str(d / "jobs.json")])


@pytest.fixture(scope="session")
def torchrun_runs(tmp_path_factory, world_cache, tiny_arch, tiny_clip, ru_tokenizer, tiny_bert, trained_run):
    """The uncompiled TORCHRUN_JOBS, each trained to <its folder>/two in one shared torchrun launch."""
    from conftest import make_train_cfg

    jobs = {}
    for name, loss in TORCHRUN_JOBS.items():
        if not loss.get("compile"):
            d = tmp_path_factory.mktemp(f"torchrun-{name}")
            jobs[name] = _torchrun_job(make_train_cfg(d, world_cache, tiny_arch, tiny_clip, ru_tokenizer), loss, d, tiny_bert,
                                       trained_run)
    r = _torchrun([["train", "--config", str(c), f"out={c.parent / 'two'}"] for _, c in jobs.values()], 29564,
                  tmp_path_factory.mktemp("torchrun-jobs"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert ", compiled" not in r.stdout, r.stdout[-2000:]
    return jobs


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group("compile" if n == "compiled" else "torchrun"))
                                  for n in TORCHRUN_JOBS])
@pytest.mark.slow
def test_torchrun_training_run_matches_one_process(tmp_path, train_cfg, name, request):
    """The whole `langclip train` job under torchrun (2 gloo processes, same global batch) logs the
    same losses and ends with the same weights as one process, and its run folder loads — with the
    contrastive loss, without it (distillation + English replay, which used to crash at step 2), with
    bf16 weights (gradients averaged in float32 by a DDP hook; compared at bf16's tolerance), compiled
    (against one eager process), with a pretrained encoder as the text tower (the shipped hf
    config's losses), and trained further from a run (`run:` init: each rank loads it; there rank 0 also
    measures zero-shot accuracy after each epoch, equal to one process's). The uncompiled jobs share one torchrun launch (torchrun_runs, one worker: xdist
    group "torchrun"); the compiled one runs after test_compiled_training_matches_eager, whose kernels
    it reads from inductor's cache (group "compile")."""
    from safetensors.torch import load_file

    import langclip

    if name == "compiled":
        train_cfg, cfg = _torchrun_job(train_cfg, TORCHRUN_JOBS[name], tmp_path, None)
        r = _torchrun([["train", "--config", str(cfg), f"out={tmp_path / 'two'}"]], 29554, tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        assert ", compiled" in r.stdout, r.stdout[-2000:]
    else:
        train_cfg, cfg = request.getfixturevalue("torchrun_runs")[name]
    two = cfg.parent / "two"
    # one eager process: the reference (test_compiled_training_matches_eager compares compiled with
    # eager in one process; here, the compiled ranks with eager)
    assert main(["train", "--config", str(cfg), f"out={tmp_path / 'one'}", "compile=false"]) == 0
    losses = [[r_["loss"] for r_ in map(json.loads, open(d / "metrics.jsonl")) if "loss" in r_]
              for d in (tmp_path / "one", two)]
    assert len(losses[0]) == len(losses[1]) == 8
    a = load_file(str(tmp_path / "one" / "text_tower.safetensors"))
    b = load_file(str(two / "text_tower.safetensors"))
    bf16 = train_cfg.precision == "bf16-weights"   # bf16 gradients: a half batch's sum rounds differently
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=5e-3 if bf16 else 1e-4, atol=1e-5)
    lr, far, n = train_cfg.optim.lr, 0, 0
    for k in a:
        if k.endswith("attn.in_proj_bias"):  # key bias: see test_compiled_training_matches_eager
            w = a[k].shape[0] // 3
            keep = torch.cat([torch.arange(w), torch.arange(2 * w, 3 * w)])
            a[k], b[k] = a[k][keep], b[k][keep]
        if bf16:   # every weight within 2 lr-sized steps of the one-process run, 99% of them within 1e-3
            d = (b[k] - a[k]).abs()
            assert d.max() < 2 * lr, (k, d.max())
            far += int((d > 1e-3).sum())
            n += d.numel()
            continue
        if k == "token_embedding.weight" or k.endswith("word_embeddings.weight"):
            # float32: a rare token's row gets rounding-level gradients, which Adam scales up to a
            # fraction of lr either way (the method itself is checked in float64 at 1e-10 in
            # test_ddp_two_processes_equal_one_for_every_loss_combination): all rows within lr/3,
            # all but a handful within 1e-4
            d = (b[k] - a[k]).abs().amax(-1)
            assert d.max() < train_cfg.optim.lr / 3 and int((d > 1e-4).sum()) <= 4, (d.max(), (d > 1e-4).sum())
            continue
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    assert far <= 0.01 * n, (far, n)
    assert langclip.load(two, device="cpu").encode_text(["кот"]).shape[0] == 1
    from langclip.coverage import load_counts   # rank 0 counted the same tokens as one process (coverage.py)

    assert (load_counts(two) == load_counts(tmp_path / "one")).all() and load_counts(two).sum() > 0
    if train_cfg.zeroshot.datasets:   # measured on rank 0 as in one process (weights equal to rounding)
        zs = [[r_["zeroshot/zs/mean_per_class_recall"] for r_ in map(json.loads, open(d / "metrics.jsonl"))
               if "zeroshot/zs/acc1" in r_] for d in (tmp_path / "one", two)]
        assert len(zs[0]) == 2 and zs[0] == zs[1], zs


def test_diverged_training_stops_with_a_clear_error(tmp_path, train_cfg, capsys):
    train_cfg.optim.lr, train_cfg.optim.grad_clip, train_cfg.log_every = 1e6, 0.0, 1
    train_cfg.checkpoint_every, train_cfg.epochs = 1, 2
    cfg = _write_cfg(train_cfg, tmp_path / "c.yaml")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "training diverged: non-finite loss or weights by step" in err and "the last checkpoint" in err, err
    assert "Lower optim.lr" in err
    recs = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert recs and all(r["loss"] == r["loss"] for r in recs)   # the finite steps before are logged


def test_divergence_between_log_steps_never_reaches_a_checkpoint(tmp_path, train_cfg, capsys):
    """Logging rarely, checkpointing every step: the run still stops at the first checkpoint after the
    loss went non-finite; every checkpoint on disk holds finite weights (rotation kept the last good
    one), and the error names it."""
    train_cfg.optim.lr, train_cfg.optim.grad_clip, train_cfg.log_every = 1e6, 0.0, 1000
    train_cfg.checkpoint_every, train_cfg.epochs, train_cfg.keep_checkpoints = 1, 3, 1
    cfg = _write_cfg(train_cfg, tmp_path / "c.yaml")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err
    cks = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert len(cks) == 1 and str(cks[0]) in err, (cks, err)
    st = torch.load(cks[0], weights_only=True)
    assert all(v.isfinite().all() for v in st["text"].values())
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["file"] == cks[0].name
    assert not (tmp_path / "run" / "text_tower_best.safetensors").exists()   # nothing non-finite saved


def test_resume_with_new_optimizer_settings_uses_them(tmp_path, train_cfg, capsys):
    """A checkpoint restores its optimizer's lr/weight decay; overrides given with --resume win."""
    from langclip.train import lr_lambda

    train_cfg.epochs, train_cfg.log_every = 2, 1
    cfg = _write_cfg(train_cfg, tmp_path / "c.yaml")
    assert main(["train", "--config", str(cfg)]) == 0
    first = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))[0]   # the end of epoch 1
    assert main(["train", "--config", str(cfg), "optim.lr=1e-4", "optim.weight_decay=0.1",
                 "--resume", str(first)]) == 0
    out = capsys.readouterr().out
    assert "new optimizer settings from this step: optim.lr=0.0001, optim.weight_decay=0.1" in out, out
    recs = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl") if '"lr"' in l]
    steps_per_epoch = recs[-1]["step"] // 2
    f = lr_lambda(2 * steps_per_epoch, 1)
    after = [r for r in recs if r["step"] > steps_per_epoch]
    assert after and all(abs(r["lr"] - 1e-4 * f(r["step"])) <= 1e-12 for r in after), after


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_distillation_averages_over_captions_with_english(kind):
    """Captions without an English caption (zeros in the dense teacher) take no part in distillation."""
    from langclip.train import distill_loss

    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    teacher = torch.randn(6, 8, generator=g, dtype=torch.float64)
    has = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    teacher[~has] = 0
    t = torch.nn.functional.normalize(teacher[has], dim=-1)
    want = (1 - (text[has] * t).sum(-1)).mean() if kind == "cosine" else ((text[has] - t) ** 2).mean()
    assert abs(float(distill_loss(text, teacher, kind, has)) - float(want)) <= 1e-12
    assert abs(float(distill_loss(text[has], teacher[has], kind)) - float(want)) <= 1e-12
    assert float(distill_loss(text, teacher, kind, torch.zeros(6, dtype=torch.bool))) == 0.0


@pytest.mark.parametrize("init", ["scratch", "hf"])
def test_text_only_parallel_corpus_distillation(tmp_path, tiny_arch, tiny_clip, ru_tokenizer, capsys, init, request,
                                                world_cache):
    """No images: a cache of (Russian, English) pairs holds the English CLIP text embeddings, and
    distillation alone teaches the student to land each Russian text on its English embedding — a
    text tower of langclip's (scratch) or a pretrained encoder (hf: Multilingual-CLIP's own recipe); then a
    second stage on pictures starts from it (`run:` init: at lr 0 its weights are the first stage's)."""
    import csv
    import random

    from langclip.cache import load_cache
    from langclip.demo.world import captions, sample_scenes

    rows = []
    for i, sc in enumerate(sample_scenes(400, seed=3)):
        en, ru = captions(sc.count, sc.colour, sc.shape, sc.position, random.Random(i))
        rows.append({"text": ru[0], "english": en[0]})
    rows.append({"text": "кот", "english": ""})            # no English: skipped and counted
    with open(tmp_path / "parallel.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "english"], delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    assert main(["cache", "build", "--text-only", "--data", str(tmp_path / "parallel.tsv"), "--clip", tiny_arch,
                 "--weights", tiny_clip[1], "--out", str(tmp_path / "cache"), "--workers", "0"]) == 0
    c = load_cache(tmp_path / "cache")
    assert c.text_only and len(c.captions) == 400 and bool(c.teacher_has.all()) and c.image_emb.shape[0] == 0
    assert c.manifest["text_only"] and len(c.manifest["skipped"]) == 1
    ru_tokenizer.save(tmp_path / "tok")
    cfg = _write_cfg(TrainConfig(cache=str(tmp_path / "cache"), out=str(tmp_path / "run"),
                                 model=ModelSection(clip=tiny_arch, weights=tiny_clip[1],
                                                    tokenizer=str(tmp_path / "tok") if init == "scratch" else "",
                                                    init="scratch" if init == "scratch" else
                                                    f"hf:{request.getfixturevalue('tiny_bert')}", context_length=24),
                                 optim=OptimSection(lr=3e-3, warmup_steps=5, weight_decay=0.0),
                                 loss=LossSection(contrastive=0.0, distill=1.0, english=0.5),
                                 epochs=15, batch_size=32, val_fraction=0.2, tensorboard=False), tmp_path / "c.yaml")
    assert main(["train", "--config", str(cfg), "loss.contrastive=1", "out=" + str(tmp_path / "refused")]) == 2
    assert "text-only parallel corpus" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg)]) == 0
    vals = val_recall_text(tmp_path / "run")
    # 80 held-out pairs, chance 1/80 (measured: R@1 0.91 after 15 epochs, 0.09 after 1)
    assert vals[-1]["val/to_en_r@1"] > 20 / 80 and vals[-1]["val/mean_recall"] > vals[0]["val/mean_recall"]
    import langclip

    assert langclip.load(tmp_path / "run", device="cpu").encode_text(["два красных круга"]).shape == (1, 32)
    # eval-retrieval on the text-only cache: the same held-out pairs, the same recall as the last epoch
    from langclip.retrieval import evaluate_retrieval_cli

    res = evaluate_retrieval_cli(str(tmp_path / "run"), [str(tmp_path / "cache")], device="cpu")
    assert res["texts"] == 80 and abs(res["t2i_r@1"] - vals[-1]["val/to_en_r@1"]) < 1e-6
    # the second stage: contrastive on the image cache, from the distilled tower
    from safetensors.torch import load_file

    assert main(["train", f"cache={world_cache}", f"model.init=run:{tmp_path / 'run'}", "model.context_length=24",
                 f"out={tmp_path / 'stage2'}", "batch_size=32", "max_steps=1", "optim.lr=0", "optim.weight_decay=0",
                 "optim.warmup_steps=1", "tensorboard=false"]) == 0
    a, b = (load_file(str(tmp_path / d / "text_tower.safetensors")) for d in ("run", "stage2"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert langclip.load(tmp_path / "stage2", device="cpu").encode_text(["два красных круга"]).shape == (1, 32)


def test_english_replay_trains_and_validates_english(tmp_path, train_cfg):
    """loss.english feeds the English captions through the student too (distilled to English CLIP);
    validation then also reports the English captions' recall on the same held-out images."""
    train_cfg.epochs, train_cfg.loss.distill, train_cfg.loss.english, train_cfg.log_every = 6, 0.5, 1.0, 1
    run = train(train_cfg, progress=False)
    recs = [json.loads(l) for l in open(run / "metrics.jsonl")]
    steps = [r for r in recs if "loss" in r]
    assert steps and all("english" in r and r["english"] == r["english"] for r in steps)
    vals = [r for r in recs if "val/mean_recall" in r]
    assert vals and all({"val/en_t2i_r@1", "val/en_i2t_r@10"} <= set(r) for r in vals)
    # the same run without replay: on the held-out images' English captions the student's embeddings
    # stay much further from English CLIP's (the quantity replay trains, measured on unseen captions)
    off = train(dataclasses.replace(train_cfg, out=str(tmp_path / "off"),
                                    loss=dataclasses.replace(train_cfg.loss, english=0.0)), progress=False)
    d_on, d_off = (_english_distance(r, train_cfg) for r in (run, off))
    assert d_on < 0.7 * d_off, (d_on, d_off)


def _english_distance(run, cfg) -> float:
    """Mean cosine distance between the student's embedding of each held-out English caption and
    English CLIP's (the cache's teacher embedding of that caption)."""
    from langclip.cache import load_cache
    from langclip.runfolder import split_by_image

    data = load_cache(cfg.cache)
    _, val_idx = split_by_image(data, cfg.val_fraction, cfg.seed)
    val_idx = val_idx[data.teacher_has[val_idx]]
    model, tok, _ = load_model(run)
    with torch.no_grad():
        student = model.encode_text(tok([data.captions_en[i] for i in val_idx.tolist()], context_length=16))
    teacher = F.normalize(data.teacher[val_idx].float(), dim=-1)
    return float(1 - (student * teacher).sum(-1).mean())


def test_contrastive_logits_are_float32_under_bf16_autocast():
    """At a temperature of 100, bf16 logits have a 0.25-0.5 resolution: the similarity and the loss
    must be float32 even inside the training step's bf16 autocast."""
    from langclip.train import clip_loss

    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(64, 32, generator=g), dim=-1)
    image = F.normalize(text + 0.3 * torch.randn(64, 32, generator=g), dim=-1)
    scale = torch.tensor(math.log(100.0))
    # reference, independent of clip_loss: float64 by hand
    logits = 100.0 * text.double() @ image.double().T
    lab = torch.arange(64)
    ref = (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)) / 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = clip_loss(text, image, scale)
        bf16 = 100.0 * text @ image.T          # what autocast makes of a plain product
    assert got.dtype == torch.float32
    assert abs(float(got) - float(ref)) < 1e-5
    assert bf16.dtype == torch.bfloat16        # the hazard is real on this build: the test can fail
    assert (bf16.double() - logits).abs().max() > 0.05


def test_held_out_split_travels_with_the_run_and_its_export(tmp_path, train_cfg, capsys):
    """eval-retrieval on an export scores exactly the images the run held out (recorded fraction, seed
    and a digest of the held-out rows), equal to the run's last validation; an export without the
    record, or a cache whose held-out images differ, is refused rather than guessed."""
    train_cfg.epochs, train_cfg.val_fraction, train_cfg.seed = 2, 0.3, 5   # not the defaults
    run = train(train_cfg, progress=False)
    last = val_recall(run)[-1]
    split = json.loads((run / "model.json").read_text())["split"]
    assert split["val_fraction"] == 0.3 and split["seed"] == 5 and split["val_images"] == 58
    assert main(["export", "--model", str(run), "--out", str(tmp_path / "exp")]) == 0
    capsys.readouterr()
    for model in (run, tmp_path / "exp"):
        assert main(["eval-retrieval", "--model", str(model), "--data", train_cfg.cache, "--device", "cpu"]) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["images"] == 58, model
        for k in ("t2i_r@1", "t2i_r@5", "i2t_r@1", "i2t_r@10"):
            assert res[k] == pytest.approx(last[f"val/{k}"], abs=1e-6), (model, k)
    cfg_f = tmp_path / "exp" / "open_clip_config.json"
    doc = json.loads(cfg_f.read_text())
    doc["langclip"]["split"]["val_images_sha256"] = "0" * 64      # as if the held-out rows differed
    cfg_f.write_text(json.dumps(doc))
    assert main(["eval-retrieval", "--model", str(tmp_path / "exp"), "--data", train_cfg.cache, "--device", "cpu"]) == 2
    assert "are not the ones the model was trained without" in capsys.readouterr().err
    del doc["langclip"]["split"]
    cfg_f.write_text(json.dumps(doc))
    assert main(["eval-retrieval", "--model", str(tmp_path / "exp"), "--data", train_cfg.cache, "--device", "cpu"]) == 2
    assert "does not record the split" in capsys.readouterr().err


def test_english_replay_of_a_fraction_of_each_batch(train_cfg):
    """loss.english_fraction: the English of the batch's first ceil(f*B) pairs only (the batch is a shuffled
    draw, so a random share), distilled to their own teacher rows; a run with it trains and logs the part."""
    from ddp_worker import batch, loss_cfg

    from langclip.config import ConfigError
    from langclip.train import TextTower, compute_loss, distill_loss, train

    model, tok, ims, tch, has, tok_en = batch()
    k = 3
    _, parts = compute_loss(TextTower(model), tok, ims, tch, loss_cfg(), 1, has, tok_en[:k])
    with torch.no_grad():
        want = distill_loss(TextTower(model)(tok_en[:k]), tch[:k], "cosine", has[:k])
    assert abs(float(parts["english"]) - float(want)) <= 1e-12
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="english_fraction"):
            dataclasses.replace(train_cfg, loss=dataclasses.replace(train_cfg.loss, english_fraction=bad)).validate()
    cfg = dataclasses.replace(train_cfg, epochs=2, loss=dataclasses.replace(train_cfg.loss, distill=1.0, english=1.0,
                                                                                  english_fraction=0.25))
    run = train(cfg, progress=False)
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/english" in r or "english" in r for r in logged)


def test_bf16_weights_keep_updates_smaller_than_bf16_resolution():
    """precision bf16-weights: the twin runs in bf16, the float32 master takes every update. 50 SGD steps of
    1e-4 on a weight of 1.0 move the master to 0.995; an all-bf16 weight would not move at all (its
    spacing below 1.0 is 2^-8), and the twin holds the master rounded to bf16. The temperature is shared
    (float32), the image tower is not copied."""
    from langclip.model import LangCLIP
    from langclip.train.precision import Bf16Weights
    from conftest import TINY_CFG

    model = LangCLIP(json.loads(json.dumps(TINY_CFG)))
    with torch.no_grad():
        model.clip.ln_final.weight.fill_(1.0)
    twin = Bf16Weights(model)
    assert twin.model.clip.logit_scale is model.clip.logit_scale and model.logit_scale.dtype == torch.float32
    assert sum(p.numel() for p in twin.model.parameters()) < sum(p.numel() for p in model.parameters())
    assert all(p.dtype == torch.bfloat16 for n, p in twin.model.text_parameters().items() if n != "logit_scale")
    w, tw = model.clip.ln_final.weight, twin.model.clip.ln_final.weight
    opt = torch.optim.SGD([w], lr=1e-4)
    pure = torch.ones(3, dtype=torch.bfloat16)
    for _ in range(50):
        tw.grad = torch.ones_like(tw)
        twin.grads_to_master()
        assert w.grad.dtype == torch.float32 and tw.grad is None
        opt.step()
        opt.zero_grad(set_to_none=True)
        twin.master_to_model()
        pure -= torch.tensor(1e-4, dtype=torch.bfloat16)
    assert torch.allclose(w, torch.full_like(w, 1 - 50e-4), atol=1e-6), w[:3]
    assert torch.equal(tw, w.detach().bfloat16())
    assert float(tw[0].detach()) == 0.99609375 and torch.equal(pure, torch.ones(3, dtype=torch.bfloat16))


def test_bf16_weights_training_follows_float32_and_saves_masters(tmp_path, train_cfg):
    """A bf16-weights run trains like a float32 one (loss curve within bf16 noise, recall in the same
    place), resumes, and saves float32 master weights (not bf16 values)."""
    from safetensors.torch import load_file

    train_cfg.epochs, train_cfg.log_every, train_cfg.checkpoint_every = 8, 1, 4
    runs = {}
    for prec in ("fp32", "bf16-weights"):
        cfg = dataclasses.replace(train_cfg, precision=prec, out=str(tmp_path / prec))
        runs[prec] = train(cfg, progress=False)
    loss = {p: torch.tensor([r["loss"] for r in map(json.loads, open(runs[p] / "metrics.jsonl")) if "loss" in r])
            for p in runs}
    assert len(loss["fp32"]) == len(loss["bf16-weights"]) >= 16
    assert loss["bf16-weights"][-4:].mean() < 0.8 * loss["bf16-weights"][:2].mean()     # it trains
    assert (loss["bf16-weights"] - loss["fp32"]).abs().max() < 0.05 * loss["fp32"].max(), loss
    r = {p: val_recall(runs[p])[-1]["val/mean_recall"] for p in runs}
    assert abs(r["bf16-weights"] - r["fp32"]) < 0.1, r
    w = load_file(str(runs["bf16-weights"] / "text_tower.safetensors"))
    big = [v for v in w.values() if v.numel() > 100]
    assert all(v.dtype == torch.float32 for v in w.values())
    assert all(not torch.equal(v, v.bfloat16().float()) for v in big)   # masters, not rounded copies
    # interrupted after step 6 (checkpoint at 4) and resumed: the twin starts from the checkpoint's
    # masters, so the run ends exactly where the one-go run ended
    import langclip.train.loop as loop

    original = loop.after_step

    def crash(run, loss, parts):
        original(run, loss, parts)
        if run.step == 6:
            raise KeyboardInterrupt

    cfg = dataclasses.replace(train_cfg, precision="bf16-weights", out=str(tmp_path / "resumed"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "after_step", crash)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, progress=False)
    b = load_file(str(train(dataclasses.replace(cfg, resume="latest"), progress=False) / "text_tower.safetensors"))
    assert all(torch.equal(b[k], w[k]) for k in w)


@pytest.mark.parametrize("init", ["clip", "hf"])
def test_zero_shot_each_epoch_is_what_langclip_eval_measures(tmp_path, train_cfg, cifar_root, init, request):
    """`zeroshot.datasets: [cifar10]`: after each epoch the run logs CIFAR-10's zero-shot acc@1, acc@5 and
    mean per-class recall (Russian class names, as the tokenizer's language; an hf: encoder's run too), and
    the last epoch's equal
    `langclip eval` of the finished run exactly (the reference: the eval stage, run afterwards on the saved
    weights). An unknown dataset and a missing data root are named before any work."""
    from dataclasses import replace

    from langclip.config import ConfigError, ZeroShotSection
    from langclip.evaluate import evaluate_cli

    cfg = replace(train_cfg, epochs=2, zeroshot=ZeroShotSection(datasets=["cifar10"], data_root=str(cifar_root)))
    if init == "clip":   # and the same pictures as CLIP_benchmark's webdataset copy holds them: the same numbers
        import io       # (one more sample there, a picture that cannot be read: left out, counted)
        import tarfile

        from conftest import cifar_as_wds

        copy = cifar_as_wds(cifar_root, tmp_path / "wds_cifar10")
        with tarfile.open(copy / "test" / "2.tar", "a") as tf:
            for name, data in (("broken.png", b"\x89PNG not really"), ("broken.cls", b"0")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        cfg.zeroshot.datasets.append(f"wds:{copy}")
    if init == "hf":   # a pretrained encoder's own tokenizer (M-CLIP's kind): the language from the config
        cfg.model = replace(cfg.model, init=f"hf:{request.getfixturevalue('tiny_bert')}", tokenizer="", lang="ru")
    run = train(cfg, progress=False)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    zs = [r for r in recs if "zeroshot/cifar10/acc1" in r]
    assert [r["epoch"] for r in zs] == [1, 2] and all("val/mean_recall" in r for r in zs)
    ev = evaluate_cli(str(run), "cifar10", "ru", str(cifar_root), batch_size=7, device="cpu", workers=0,
                      out=str(tmp_path / "ev"))["cifar10"]
    for k in ("acc1", "acc5", "mean_per_class_recall"):
        assert zs[-1][f"zeroshot/cifar10/{k}"] == pytest.approx(ev[k], abs=1e-12), k
        if init == "clip":
            assert zs[-1][f"zeroshot/wds_cifar10/{k}"] == zs[-1][f"zeroshot/cifar10/{k}"], k
    from langclip.model_card import _results   # an export's model card shows the last epoch's

    assert f"| cifar10 | {ev['acc1']:.3f} | {ev['acc5']:.3f} | {ev['mean_per_class_recall']:.3f} |" in _results(run)
    from langclip.info import describe, render   # and `langclip info RUN`

    assert f"zero-shot    cifar10 acc@1 {ev['acc1']:.3f}" in render(describe(run))
    for z, msg in ((ZeroShotSection(datasets=["cifar11"], data_root=str(cifar_root)), "unknown dataset 'cifar11'"),
                   (ZeroShotSection(datasets=["cifar10"]), "zeroshot.data_root: \\(not given\\) is not a folder")):
        with pytest.raises(ConfigError, match=msg):
            replace(train_cfg, out=str(tmp_path / "x"), zeroshot=z).validate()
    assert not (tmp_path / "x").exists()


def test_zero_shot_pictures_are_embedded_once_per_run(tmp_path, tiny_arch, tiny_clip, ru_tokenizer):
    """The benchmark's picture embeddings are kept in the run folder: a resumed run reads them back (the
    dataset is not read again) unless what they depend on changed (here the picture count)."""
    from types import SimpleNamespace

    from langclip.build import build_student
    from langclip.train.zeroshot import _embedded

    model, _, _ = build_student(tiny_arch, tiny_clip[1], ru_tokenizer, init="clip")
    run = SimpleNamespace(model=model, device=torch.device("cpu"))
    ds = torch.utils.data.TensorDataset(torch.randn(6, 3, 64, 64), torch.arange(6) % 3)
    f = tmp_path / "run" / "zeroshot" / "x.safetensors"
    key = {"dataset": "x", "pictures": 6, "tower": "abc"}
    feats, labels = _embedded(run, f, ds, key, progress=False)
    assert f.is_file() and feats.shape == (6, 32) and labels.tolist() == [0, 1, 2, 0, 1, 2]

    class Unreadable(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            raise AssertionError("read again")

    again, _ = _embedded(run, f, Unreadable(), key, progress=False)
    assert torch.equal(again, feats)
    with pytest.raises(AssertionError, match="read again"):
        _embedded(run, f, Unreadable(), {**key, "pictures": 5}, progress=False)


@pytest.mark.slow
def test_zero_shot_while_training_at_vit_b32_shape(tmp_path, pair_data, cifar_root, ru_tokenizer):
    """The real settings: OpenAI's ViT-B/32 shape (random fp16 weights in OpenAI's naming, --clip
    ViT-B-32-quickgelu), CLIP text-tower init at context 32, a cache with English captions,
    distillation and English replay, and CIFAR-10 zero-shot after the epoch — equal to `langclip eval` of the
    finished run."""
    import open_clip

    from langclip.cli import main
    from langclip.evaluate import evaluate_cli

    torch.manual_seed(0)
    m = open_clip.create_model("ViT-B-32-quickgelu")
    clip = tmp_path / "ViT-B-32.pt"
    torch.save({k: v.half() for k, v in m.state_dict().items()}, clip)
    del m
    assert main(["cache", "build", "--data", str(pair_data / "pairs.csv"), "--clip", "ViT-B-32-quickgelu",
                 "--weights", str(clip), "--out", str(tmp_path / "cache"), "--workers", "0"]) == 0
    ru_tokenizer.save(tmp_path / "tok")
    assert main(["train", f"cache={tmp_path / 'cache'}", f"model.tokenizer={tmp_path / 'tok'}", "model.init=clip",
                 "model.context_length=32", f"out={tmp_path / 'run'}", "epochs=1", "batch_size=8", "val_fraction=0.25",
                 "loss.distill=1.0", "loss.english=1.0", "tensorboard=false", "zeroshot.datasets=[cifar10]",
                 f"zeroshot.data_root={cifar_root}"]) == 0
    rec = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    zs = [r for r in rec if "zeroshot/cifar10/acc1" in r]
    assert len(zs) == 1
    ev = evaluate_cli(str(tmp_path / "run"), "cifar10", "ru", str(cifar_root), batch_size=10, device="cpu", workers=0,
                      out=str(tmp_path / "ev"))["cifar10"]
    for k in ("acc1", "acc5", "mean_per_class_recall"):
        assert zs[0][f"zeroshot/cifar10/{k}"] == pytest.approx(ev[k], abs=1e-12), k
