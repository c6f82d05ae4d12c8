#!/usr/bin/env bash
# All speed benchmarks of the "Fast" issue in one command on the GPU machine (one H100/H200), ~7 minutes:
#   1. bench_rl_step      ours vs TRL 1.16 GRPOTrainer, SmolLM2-135M bf16, GSM8K, 64 prompts x 8, 256 new tokens, kl 0
#   2. bench_mgs_overhead MGS (sum/module/tensor/global) vs Mixed RL update, SmolLM2 bf16, 3 domains x 64 samples
#   3. bench_surgery      surgery alone on Qwen2.5-7B-shaped gradients (28 layers, as many as fit)
#   4. bench_rollout      our generate backend: dynamic vs compiled static cache, 64 x 8 x 256
# Each part has its own time limit and log ($OUT/<part>.log, JSON next to it); a failing part is reported and the
# others still run. The short tables are printed at the end.
#
# Usage (repo root, after the assets are staged; see /work/shared/gpu/README.md):
#   source /tmp/mgs-assets/env.sh && bash benchmarks/gpu_all.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/mgs-bench}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DATA="${MGS_DATA:+$MGS_DATA/gsm8k}"
DATA_ARG=()
if [ -n "$DATA" ] && [ -f "$DATA/train.jsonl" ]; then DATA_ARG=(--data "$DATA"); fi
STATUS=()
T_ALL=$SECONDS

part() {  # part NAME LIMIT_S CMD...: run with a time limit, log to $OUT/NAME.log, remember the outcome
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local what="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then what="TIMED OUT"; elif [ $rc -ne 0 ]; then what="FAILED (exit $rc)"; fi
  STATUS+=("$name: $what in $((SECONDS - t0)) s")
  echo "=== $name: $what in $((SECONDS - t0)) s"
  if [ "$what" != "ok" ]; then tail -n 15 "$OUT/$name.log"; fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

# The GGUF -> safetensors conversion (~20 s, once per machine) before anything is timed.
part prepare 120 "$PY" -c "from mgs.rl.model import cached_alias_dir; print(cached_alias_dir('smollm2-135m-instruct'))"

part rl_step 250 "$PY" benchmarks/bench_rl_step.py --device cuda --model smollm2-135m-instruct --dtype bfloat16 \
  "${DATA_ARG[@]}" --prompts 64 --samples 8 --max-new-tokens 256 --temperature 0.7 --kl 0 \
  --steps 5 --warmup 1 --ours-warmup 2 --timeout 118 --out "$OUT/rl_step.json"

part mgs_overhead 80 "$PY" benchmarks/bench_mgs_overhead.py --device cuda --model smollm2-135m-instruct \
  --dtype bfloat16 --domains 3 --per-domain 64 --max-new-tokens 256 --reps 20 --warmup 2 \
  --out "$OUT/mgs_overhead.json"

part surgery 100 "$PY" benchmarks/bench_surgery.py --device cuda --layers 28 --iters 5 --warmup 1

part rollout 130 "$PY" benchmarks/bench_rollout.py --device cuda --model smollm2-135m-instruct --dtype bfloat16 \
  --prompts 64 --samples 8 --max-new-tokens 256 --modes dynamic,static-compiled --runs 2 --warmup 1

echo
echo "################ summary ($((SECONDS - T_ALL)) s in all; logs in $OUT)"
cat "$OUT/gpu.txt"
for s in "${STATUS[@]}"; do echo "  $s"; done
echo
echo "---- ours vs TRL (bench_rl_step)"; sed -n '/^workload:/,$p' "$OUT/rl_step.log"
echo "---- MGS overhead (bench_mgs_overhead)"; sed -n '/^model:/,$p' "$OUT/mgs_overhead.log"
echo "---- surgery alone (bench_surgery)"; grep -E '^(device:|\|)' "$OUT/surgery.log"
echo "---- rollout (bench_rollout)"; sed -n '/^model:/,$p' "$OUT/rollout.log"
