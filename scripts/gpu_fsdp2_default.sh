#!/usr/bin/env bash
# The distributed MGS step (mgs.dist, FSDP2, world size 1) on the default model (SmolLM2-135M-Instruct, bf16) with
# synthetic rollouts: prints step time (train / surgery / optim split) and peak GPU memory per step.
# Usage (repository root, on a GPU machine): bash scripts/gpu_fsdp2_default.sh [extra args of bench_dist_step.py]
# Runs on CPU too (gloo, slow): add `--dtype float32 --samples 8 --completion-tokens 32`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for parallel in fsdp2 ddp; do
  for buffers in float32 bfloat16; do
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 scripts/bench_dist_step.py \
      --parallel "$parallel" --buffer-dtype "$buffers" "$@"
  done
done
