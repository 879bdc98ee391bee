#!/usr/bin/env bash
# The one prepared GPU check for a lent H100 (the device tool's machine: torch, no open_clip, no
# network). At most ~9.5 minutes: open_clip's locked-image baseline, then langclip's compiled step at
# context 32 and 77 with the default compile mode and with max-autotune, all in one process, so every
# ratio is against the baseline of the same run; then one epoch of the whole training loop against
# its bare step (benchmarks/train_loop.py).
#
# On the development machine first (the device cannot reach PyPI):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       open_clip_torch==3.3.0 ftfy wcwidth braceexpand wordfreq langcodes msgpack locate
# then run through the device tool with carry [".whl"]:
#   bash benchmarks/gpu_session.sh
# Results land in $OUT/*.jsonl (copy them to benchmarks/results/). Each step has its own timeout, and
# one failing does not stop the next.
set -euo pipefail
OUT=${OUT:-/tmp/langclip-gpu}
mkdir -p "$OUT"
if ! python3 -c "import open_clip, ftfy" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:src
else
    export PYTHONPATH=src
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 420 python3 benchmarks/train_throughput.py --ctx 32 77 --compile-mode default max-autotune \
    | tee "$OUT/train_throughput.jsonl" || true
# the whole loop vs its bare step (200k images x 5 queries, one epoch, compiled)
timeout 150 python3 benchmarks/train_loop.py | tee "$OUT/train_loop.jsonl" || true
