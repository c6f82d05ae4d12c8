#!/usr/bin/env bash
# All speed benchmarks of the "Fast" issue in one command on the GPU machine (one H100/H200), within
# MGS_BENCH_TOTAL_S (default 540) seconds in all:
#   1. bench_rl_step      ours vs TRL 1.16 GRPOTrainer, SmolLM2-135M bf16, GSM8K, 64 prompts x 8, 256 new tokens, kl 0;
#                         1 warm-up step (compile) + 4 timed per side, each side <= 200 s; a side that runs out of
#                         time still reports the steps it finished (marked PARTIAL)
#   2. bench_mgs_overhead MGS (sum/module/tensor/global) vs Mixed RL update, SmolLM2 bf16, 3 domains x 32 samples,
#                         128 new tokens, 10 reps (fewer if its time budget runs out)
#   3. surgery            surgery alone on Qwen2.5-7B-shaped gradients (28 layers, as many as fit), 3 iterations
#   4. rollout_static     our generate backend, compiled static cache, 64 x 8 x 256 (first call = compile)
#   5. rollout_dynamic    the same rollout with the dynamic cache, one run (the uncompiled reference)
# Each part has its own time limit, capped so that the parts after it keep their minimum (RESERVE) before the
# overall deadline, and its own log ($OUT/<part>.log, JSON next to it); a failing part is reported and the others
# still run. The short tables are printed at the end.
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
T_END=$((SECONDS + ${MGS_BENCH_TOTAL_S:-540}))

cap() {  # cap LIMIT RESERVE: LIMIT, lowered so that RESERVE seconds stay before the overall deadline
  local left=$((T_END - SECONDS - $2))
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

part() {  # part NAME LIMIT CMD...: run with a time limit, log to $OUT/NAME.log, remember the outcome
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  if [ "$limit" -lt 15 ]; then
    STATUS+=("$name: SKIPPED (no time left before the overall deadline)")
    echo "=== $name: SKIPPED (no time left)"
    return
  fi
  echo "=== $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local what="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then what="TIMED OUT"; elif [ $rc -ne 0 ]; then what="FAILED (exit $rc)"; fi
  STATUS+=("$name: $what in $((SECONDS - t0)) s")
  echo "=== $name: $what in $((SECONDS - t0)) s"
  if [ "$what" != "ok" ]; then tail -n 15 "$OUT/$name.log"; fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

# The GGUF -> safetensors conversion (~20 s, once per machine) before anything is timed.
part prepare "$(cap 90 400)" "$PY" -c "from mgs.rl.model import cached_alias_dir; print(cached_alias_dir('smollm2-135m-instruct'))"

# minimum seconds kept for the parts after rl_step: mgs_overhead 45, surgery 60, rollout_static 75, dynamic 25
RL_LIMIT=$(cap 420 205)
part rl_step "$RL_LIMIT" "$PY" benchmarks/bench_rl_step.py --device cuda --model smollm2-135m-instruct \
  --dtype bfloat16 "${DATA_ARG[@]}" --prompts 64 --samples 8 --max-new-tokens 256 --temperature 0.7 --kl 0 \
  --steps 4 --warmup 1 --timeout 200 --total-timeout $((RL_LIMIT - 15)) --out "$OUT/rl_step.json"

part mgs_overhead "$(cap 60 160)" "$PY" benchmarks/bench_mgs_overhead.py --device cuda \
  --model smollm2-135m-instruct --dtype bfloat16 --domains 3 --per-domain 32 --max-new-tokens 128 --reps 10 \
  --warmup 2 --time-budget 20 --out "$OUT/mgs_overhead.json"

part surgery "$(cap 100 100)" "$PY" benchmarks/bench_surgery.py --device cuda --layers 28 --iters 3 --warmup 1

part rollout_static "$(cap 100 25)" "$PY" benchmarks/bench_rollout.py --device cuda --model smollm2-135m-instruct \
  --dtype bfloat16 --prompts 64 --samples 8 --max-new-tokens 256 --modes static-compiled --runs 2 --warmup 1

part rollout_dynamic "$(cap 60 0)" "$PY" benchmarks/bench_rollout.py --device cuda --model smollm2-135m-instruct \
  --dtype bfloat16 --prompts 64 --samples 8 --max-new-tokens 256 --modes dynamic --runs 1 --warmup 0

echo
echo "################ summary ($((SECONDS - T_ALL)) s in all; logs in $OUT)"
cat "$OUT/gpu.txt"
for s in "${STATUS[@]}"; do echo "  $s"; done
echo
show() { [ -f "$OUT/$1.log" ] && sed -n "$2" "$OUT/$1.log"; }
echo "---- ours vs TRL (bench_rl_step)"; show rl_step '/^workload:/,$p'
echo "---- MGS overhead (bench_mgs_overhead)"; show mgs_overhead '/^model:/,$p'
echo "---- surgery alone (bench_surgery)"; [ -f "$OUT/surgery.log" ] && grep -E '^(device:|\|)' "$OUT/surgery.log"
echo "---- rollout (bench_rollout): compiled static, then dynamic"
show rollout_static '/^model:/,$p'; show rollout_dynamic '/^model:/,$p'
