#!/usr/bin/env bash
# Issue #17's remaining GPU measurements, for the next session lent an H100/H200 (prepared and run on the
# CPU in CPU mode; see benchmarks/gpu_session.sh for the site folder .whl it needs, carried with the
# device tool as carry [".whl"]). Two parts, one device call each, so that the budget (15 device-minutes,
# start included) holds both with a little room:
#   bash benchmarks/gpu_levers.sh step       (~6.7 min) the step at context 77 and 32: open_clip baseline,
#        autocast (langclip's bf16) vs bf16-weights (bf16 twin + float32 masters, train/precision.py),
#        English replay of a quarter of each batch; then the cache's device side stage by stage (decode,
#        resize, forward; decode over 1/2/4 threads; TorchCodec's nvJPEG decoder and torchvision's) on
#        20,000 photo-sized JPEGs, `cache build
#        --decode nvjpeg` end to end with decode_threads 1 and 4, each with and without decode_ahead (the
#        next batch decoded in a thread while this one is embedded), `--decode torchvision` (the workers with
#        torchvision's kernels: 1.9x less CPU a picture than PIL on the 2-core machine) and `--decode pil`
#        (uint8 handover since session 7; session 5: 1,515 img/s), with one worker's cost a picture
#   bash benchmarks/gpu_levers.sh autotune   (~8 min) torch.compile max-autotune on the bf16-weights step at
#        context 77, alone (its GEMM autotuning took 11-24 s a shape last time and outran a shared call)
#   bash benchmarks/gpu_levers.sh loop       (~2.5 min, if the budget allows, or in a later session) one epoch
#        of train() with precision bf16-weights on >= 1M pairs vs its bare step (the loop's >= 95% target
#        for the precision that would become the default); `loop auto`: the same with the default precision
#        (session 11 ran both on one H200: results/h200_levers_*)
#   bash benchmarks/gpu_levers.sh cache      (~4 min, session 12's levers) 50,000 photo-sized JPEGs: the
#        image tower compiled (cache build's `compile`) vs eager, bare and on the device side, each with and
#        without decode_ahead; builds with `--decode torchvision` and nvjpeg (4 threads, ± decode_ahead), the
#        latter also compiled; every build's rate while embedding (manifest timing) apart from its fixed cost.
#        Call `profile` at once after it (the machine is released after 30 s idle; a new start costs minutes)
#   bash benchmarks/gpu_levers.sh profile    (~4 min) one epoch of train() on 300k pairs with bf16-weights and
#        with autocast, each with 20 steps of the loop and of the bare step under torch.profiler
#        (train_loop.py --profile): why the bf16-weights loop ran at 0.763x its step in session 11
# Session 12's order (the step's targets are met): `cache`, then `profile`, then `autotune` if 9 minutes
# are left. Before that, `step` first (bf16-weights is the lever most likely to reach 350 TFLOP/s); `autotune` only if
# the device budget still has 9 minutes (the machine's start counts too), else `loop`, else leave both
# to a later session. Every result line goes to $OUT as it comes; copy them to
# benchmarks/results/<card>_levers*.jsonl.
set -uo pipefail
OUT=${OUT:-/tmp/langclip-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/.whl:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
CPU=()
if ! command -v nvidia-smi >/dev/null; then   # a dry run of the same commands on a CPU, tiny shapes
  CPU=(--tiny --device cpu --batch 32 --n 2)
  CACHE=(--arch tiny --images 128 --distinct 16 --batch 32 --device cpu)
else
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
  CACHE=(--images 20000)
fi
# TorchCodec (carried in .whl) is langclip's JPEG decoder; if it cannot even be imported in a process of
# its own (a crash, not an exception), the cache part uses torchvision's and says so
if ! python3 -c "import torch; from torchcodec.decoders import decode_jpeg" 2>"$OUT/torchcodec.err"; then
  export LANGCLIP_JPEG_DECODER=torchvision
  echo "torchcodec not usable here (torchcodec.err): torchvision's JPEG decoder only" | tee -a "$OUT/gpu.txt"
fi
case "${1:-step}" in
  step)
    timeout 230 python3 benchmarks/train_throughput.py "${CPU[@]}" --base-ctx 77 32 \
        --runs amp:default:77 bf16w:default:77 amp:default:32 bf16w:default:32 amp:default:32:replay0.25 \
        2>"$OUT/levers_step.err" | tee "$OUT/levers_step.jsonl"
    timeout 170 python3 -W ignore benchmarks/cache_throughput.py "${CACHE[@]}" --stages --decode pil torchvision nvjpeg \
        --decode-threads 1 4 --decode-ahead --worker-pictures 96 \
        2>"$OUT/cache_stages.err" | tee "$OUT/cache_stages.jsonl" ;;
  cache)
    if [ ${#CPU[@]} -gt 0 ]; then IMAGES=(); else IMAGES=(--images 50000); fi
    timeout 300 python3 -W ignore benchmarks/cache_throughput.py "${CACHE[@]}" "${IMAGES[@]}" --decode torchvision nvjpeg \
        --decode-threads 4 --decode-ahead --compile --worker-pictures 32 \
        2>"$OUT/cache_levers.err" | tee "$OUT/cache_levers.jsonl" ;;
  profile)
    if [ ${#CPU[@]} -gt 0 ]; then LOOP=(--tiny --device cpu --images 3000 --batch 128 --merges 500 --profile-steps 6)
    else LOOP=(--images 60000); fi
    for PREC in bf16-weights auto; do
      timeout 170 python3 -W ignore benchmarks/train_loop.py "${LOOP[@]}" --precision "$PREC" --profile "$OUT/prof" \
          2>"$OUT/profile_$PREC.err" | tee "$OUT/profile_$PREC.jsonl"
    done ;;
  autotune)
    timeout 470 python3 benchmarks/train_throughput.py "${CPU[@]}" --base-ctx 77 --runs bf16w:max-autotune:77 \
        2>"$OUT/levers_autotune.err" | tee "$OUT/levers_autotune.jsonl"
    grep -c "AUTOTUNE benchmarking" "$OUT/levers_autotune.err" | sed 's/^/GEMM shapes autotuned: /' ;;
  loop)   # `loop` (bf16-weights) or `loop auto` (langclip's default: bf16 autocast on a GPU)
    PREC=${2:-bf16-weights}
    SUFFIX=$([ "$PREC" = bf16-weights ] && echo "" || echo "_$PREC")
    if [ ${#CPU[@]} -gt 0 ]; then LOOP=(--tiny --device cpu --images 3000 --batch 128 --merges 500); else LOOP=(); fi
    timeout 150 python3 -W ignore benchmarks/train_loop.py "${LOOP[@]}" --precision "$PREC" \
        2>"$OUT/levers_loop$SUFFIX.err" | tee "$OUT/levers_loop$SUFFIX.jsonl" ;;
  *) echo "usage: bash benchmarks/gpu_levers.sh step|cache|profile|autotune|loop [auto]" >&2; exit 2 ;;
esac
tail -n 3 "$OUT"/*.err
