#!/usr/bin/env bash
# The one prepared GPU check for a lent H100/H200 (the device tool's machine: torch, no open_clip, no
# network). About 9 minutes, every step under its own timeout so one failing does not stop the next,
# every result line written to $OUT as it comes:
#   1. the step: open_clip's locked-image baseline at context 77 and 32, then langclip's compiled step
#      (bf16 autocast) at 32 and 77, the levers (bf16 weights/residual/optimizer states; max-autotune)
#      and English replay's cost (2x the texts), all in one process: every ratio is against the
#      baseline of the same run and the same context;
#   2. the cache on 50,000 photo-sized JPEGs: PIL in workers vs decoding on the GPU (--decode nvjpeg),
#      against the bare image-tower forward;
#   3. one epoch of the whole train() loop (210k images x 5 captions) against its bare step.
#
# On the development machine first (the device cannot reach PyPI), a site folder with what the image
# lacks (open_clip 3.3.0 and its few pure-Python needs; wordfreq with only its ru/en lists, to fit):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d /tmp/w open_clip_torch==3.3.0 ftfy wcwidth braceexpand \
#       wordfreq langcodes locate
#   pip download … --platform manylinux_2_28_x86_64 -d /tmp/w torchcodec==0.16.0    # since session 8 (22 MB)
#   pip install --no-deps --target .whl --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --only-binary=:all: /tmp/w/*.whl
#   # then delete .whl/wordfreq/data/* but {large,small}_{ru,en}
# then through the device tool with carry [".whl"]:  bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-/tmp/langclip-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/.whl:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, open_clip; print(torch.__version__, torchvision.__version__, open_clip.__version__)" \
    | tee -a "$OUT/gpu.txt"
timeout 290 python3 benchmarks/train_throughput.py --base-ctx 77 32 \
    --runs amp:default:32 amp:default:77 bf16:default:77 amp:default:32:replay amp:max-autotune:77 \
    2>"$OUT/train_throughput.err" | tee "$OUT/train_throughput.jsonl"
timeout 110 python3 -W ignore benchmarks/cache_throughput.py --images 50000 \
    2>"$OUT/cache_throughput.err" | tee "$OUT/cache_throughput.jsonl"
timeout 130 python3 -W ignore benchmarks/train_loop.py 2>"$OUT/train_loop.err" | tee "$OUT/train_loop.jsonl"
tail -n 3 "$OUT"/*.err
