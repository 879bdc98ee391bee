"""The GPU session's benchmark scripts run: the 15 device-minutes a session may get must not go to an
ImportError. Each script runs here in its CPU mode on tiny shapes (the same code paths as on a GPU,
minus compile and CUDA) and prints the lines the next session reads; no figure is checked."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TOKENIZERS_PARALLELISM="false")
    r = subprocess.run([sys.executable, "-W", "ignore", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]


@pytest.mark.slow
def test_step_levers_run():
    lines = _run(["benchmarks/train_throughput.py", "--tiny", "--device", "cpu", "--batch", "8", "--vocab", "2000",
                  "--base-ctx", "16", "--runs", "bf16w:default:16", "amp:default:16:replay0.25", "amp:default:16:replay"])
    names = [x.get("name") for x in lines]
    assert names[1:] == ["open_clip_locked_image_ctx16", "langclip_cached_ctx16_bf16w", "langclip_cached_ctx16_replay0.25",
                         "langclip_cached_ctx16_replay"], names
    assert lines[3]["english_fraction"] == 0.25 and lines[4]["english_fraction"] == 1.0


@pytest.mark.slow
@pytest.mark.xdist_group("compile")
@pytest.mark.after_group
def test_cache_stages_and_threaded_builds_run(tiny_arch):
    """The suite's tiny architecture and test_cache's batches of 5 (a last one of 1 padded to 5): the compiled
    image tower's graph is the one test_cache's compile test builds before it in the same worker
    (xdist group "compile", this test after the group's others), so inductor's cache serves them."""
    lines = _run(["benchmarks/cache_throughput.py", "--arch", tiny_arch, "--images", "16", "--distinct", "4", "--batch", "5",
                  "--device", "cpu", "--stages", "--decode", "pil", "nvjpeg", "--decode-threads", "1", "2",
                  "--decode-ahead", "--compile"])
    names = {x.get("name") for x in lines}
    assert {"device_side_stages", "device_decode_threads", "cache_build_nvjpeg_threads1",
            "cache_build_nvjpeg_threads2", "cache_build_nvjpeg_threads1_ahead", "cache_build_nvjpeg_threads2_ahead",
            "agreement_pil_vs_nvjpeg_ahead", "device_side_decode_forward_torchvision",
            "bare_image_tower_forward_compiled", "device_side_decode_forward_ahead",
            "device_side_decode_forward_compiled_ahead", "cache_build_nvjpeg_threads2_ahead_compiled",
            "agreement_pil_vs_nvjpeg_ahead_compiled"} <= names, names
    assert all(x["embed_images_per_s"] > 0 for x in lines if x.get("name", "").startswith("cache_build"))
    assert next(x for x in lines if x.get("name") == "device_side_decode_forward")["jpeg_decoder"] == "torchcodec"
    assert all(x["failed"] == 0 for x in lines if x.get("name", "").startswith("cache_build"))


@pytest.mark.slow
def test_loop_with_bf16_weights_runs(tmp_path):
    lines = _run(["benchmarks/train_loop.py", "--tiny", "--device", "cpu", "--images", "400", "--batch", "32",
                  "--merges", "100", "--precision", "bf16-weights", "--profile", str(tmp_path), "--profile-steps", "3"])
    assert lines[0]["precision"] == "bf16-weights" and lines[-1]["name"] == "train_loop" and lines[-1]["steps"] > 0
    prof = {x["name"]: x for x in lines if x.get("name", "").startswith("profile_")}
    assert set(prof) == {"profile_loop_bf16-weights", "profile_bare_bf16-weights"}, lines
    assert all(p["aten_ops_per_step"] > 0 and Path(p["table"]).is_file() for p in prof.values())


@pytest.mark.parametrize("script", ["gpu_session.sh", "gpu_levers.sh"])
def test_device_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)]).returncode == 0
