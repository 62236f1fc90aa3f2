#!/usr/bin/env bash
# The GPU figures oneword still lacks, as runs on a CUDA machine (each < 10 minutes).
#
#   check: run first: does training work on this card? bench/gpu_check.py learns 50 steps at
#          SD 1.5 and SDXL base shapes (random weights) in fp16 (loss scale) and bf16: losses
#          finite and falling, GPU memory per sample, the largest batch that fits, with and
#          without --low-memory (~3 min); exits 1 if a run failed or a loss was not finite;
#   world: train the world model with the `gpu` preset (5.5 min budget), score it with
#          bench/world_model_eval.py, and pack the folder as a tar in <= 15 MB parts;
#   speed: bench/train_speed.py on SD 1.5 shapes (random weights; ~3 min).
#
# From the repository root (where the GPU machine's Python lacks diffusers, transformers and
# regex, put their wheels in .whl/ first):
#     bash bench/gpu_session.sh check      # then:  bash bench/gpu_session.sh world
#     bash bench/gpu_session.sh speed
# Rebuild the model folder from the parts:
#     cat OUT/world.tar.part-* | tar xf - -C /tmp   # -> /tmp/world/{unet,vae,...}
set -uo pipefail
what=${1:?usage: gpu_session.sh check|world|speed}
out=${OUT:-/tmp/gpu_session}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"

case $what in
check)
    python3 bench/gpu_check.py --device cuda --steps 50 --json "$out/gpu_check.json" 2>&1 \
        | tee "$out/gpu_check.log"
    status=${PIPESTATUS[0]}
    cp "$out/gpu_check.json" bench/results/gpu_check.json 2>/dev/null
    exit "$status"
    ;;
world)
    python3 -m oneword.world.model train --out /tmp/world --device cuda --minutes 5.5 \
        --seed 0 2>&1 | tee "$out/world_train.log" || exit 1
    python3 bench/world_model_eval.py /tmp/world --device cuda --n 128 --per-subject 4 \
        --recon 512 --json "$out/world_eval.json" --sheet "$out/world_sheet.png" 2>&1 \
        | tee "$out/world_eval.log"
    tar cf - -C /tmp world | split -b 15m - "$out/world.tar.part-"
    ;;
speed)
    python3 bench/train_speed.py --device cuda --json "$out/speed.json" 2>&1 \
        | tee "$out/speed.log"
    ;;
*)
    echo "gpu_session.sh: unknown part '$what'; give check, world or speed" >&2
    exit 2
    ;;
esac
