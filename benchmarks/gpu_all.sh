#!/usr/bin/env bash
# All speed benchmarks of the "Fast" issue in one command on the GPU machine (one H100/H200), within
# MGS_BENCH_TOTAL_S (default 540) seconds in all:
#   0. check_cuda         the CUDA-only paths against exact references (varlen packed attention, packed vs padded
#                         log-probs eager and compiled, Triton surgery kernels): PASS/FAIL table
#   1. bench_rl_step      ours vs TRL 1.16 GRPOTrainer, SmolLM2-135M bf16, GSM8K, 64 prompts x 8, 256 new tokens, kl 0;
#                         ours 2 warm-up steps (decode graph + training forward compile, memory-sized budget), TRL 1;
#                         TRL first, then ours; 5 timed per side, each side <= 200 s; a side that runs out of time reports the
#                         steps it finished (marked PARTIAL)
#   2. bench_mgs_overhead MGS (module PCGrad) vs Mixed RL update on identical fixed rollouts, 3 domains x 171 samples
#                         (the rl_step batch), budgets 65536 and 131072 tokens, padded and packed (each side's best
#                         counts), 20 reps, then one profiled update per variant (on 2026-12-01 at 32k/64k each extra
#                         micro-batch cost ~60 ms, and at 64k a domain's 171 padded samples just missed one micro-batch)
#   3. bench_reward       scoring 512 completions per domain (math: fast path + verifier pool; ifeval; chat proxy)
#   4-6. surgery alone, rollout_static, rollout_dynamic: only if time is left (numbers from earlier runs in
#                         docs/performance.md)
# Each part has its own time limit, capped so that the parts after it keep their minimum (RESERVE) before the
# overall deadline, and its own log ($OUT/<part>.log, JSON next to it); a failing part is reported and the others
# still run. The short tables are printed at the end.
#
# Usage (repo root, after the assets are staged; see /work/shared/gpu/README.md):
#   source /tmp/mgs-assets/env.sh && bash benchmarks/gpu_all.sh
# Only some parts (e.g. to split them over two device calls): MGS_BENCH_PARTS=check_cuda,mgs_overhead,surgery_phases
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
  # (with MGS_BENCH_PARTS the reserves, sized for the full list, are dropped: on 2026-12-01 they skipped check_cuda)
  local reserve=$2
  if [ -n "${MGS_BENCH_PARTS:-}" ]; then reserve=0; fi
  local left=$((T_END - SECONDS - reserve))
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

part() {  # part NAME LIMIT CMD...: run with a time limit, log to $OUT/NAME.log, remember the outcome
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  if [ -n "${MGS_BENCH_PARTS:-}" ] && [ "$name" != prepare ] && [[ ",$MGS_BENCH_PARTS," != *",$name,"* ]]; then
    return  # not selected
  fi
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

part check_cuda "$(cap 150 420)" "$PY" benchmarks/check_cuda.py --model smollm2-135m-instruct

# minimum seconds kept for the parts after rl_step: mgs_overhead 120, reward 30. TRL's side runs first: on
# 2026-11-25 ours went first, spent its compile warm-up and a mid-run recompile, and left TRL one timed step.
RL_LIMIT=$(cap 380 150)
part rl_step "$RL_LIMIT" "$PY" benchmarks/bench_rl_step.py --device cuda --model smollm2-135m-instruct \
  --dtype bfloat16 "${DATA_ARG[@]}" --prompts 64 --samples 8 --max-new-tokens 256 --temperature 0.7 --kl 0 \
  --steps 5 --warmup 1 --ours-warmup 2 --sides trl,ours --timeout 200 --total-timeout $((RL_LIMIT - 15)) \
  --out "$OUT/rl_step.json"

# 1b. ours alone with padded micro-batches (train.pack=off, 32k padded tokens; rl_step runs ours packed, the
#     trainer's default on a GPU): what packing buys in a whole trainer step. Only when selected (MGS_BENCH_PARTS).
if [[ ",${MGS_BENCH_PARTS:-}," == *",rl_step_padded,"* ]]; then
  part rl_step_padded "$(cap 200 0)" "$PY" benchmarks/bench_rl_step.py --device cuda --model smollm2-135m-instruct \
    --dtype bfloat16 "${DATA_ARG[@]}" --prompts 64 --samples 8 --max-new-tokens 256 --temperature 0.7 --kl 0 \
    --steps 5 --ours-warmup 2 --sides ours --pack off --micro-batch-tokens 32768 --timeout 185 \
    --out "$OUT/rl_step_padded.json"
fi

part mgs_overhead "$(cap 240 30)" "$PY" benchmarks/bench_mgs_overhead.py --device cuda \
  --model smollm2-135m-instruct --dtype bfloat16 --domains 3 --per-domain 171 --max-new-tokens 256 \
  --variants mixed,mgs-module --micro-batch-tokens 65536,131072 --pack off,on --reps 20 --warmup 2 --time-budget 90 \
  --profile --out "$OUT/mgs_overhead.json"

part reward "$(cap 60 0)" "$PY" benchmarks/bench_reward.py --n 512 --reps 7 --chat --out "$OUT/reward.json"

part surgery_phases "$(cap 60 100)" "$PY" benchmarks/bench_surgery.py --phases --device cuda

part surgery "$(cap 100 100)" "$PY" benchmarks/bench_surgery.py --device cuda --layers 28 --iters 3 --warmup 1

part rollout_static "$(cap 100 25)" "$PY" benchmarks/bench_rollout.py --device cuda --model smollm2-135m-instruct \
  --dtype bfloat16 --prompts 64 --samples 8 --max-new-tokens 256 --modes static-compiled --runs 2 --warmup 1

part rollout_dynamic "$(cap 60 0)" "$PY" benchmarks/bench_rollout.py --device cuda --model smollm2-135m-instruct \
  --dtype bfloat16 --prompts 64 --samples 8 --max-new-tokens 256 --modes dynamic --runs 1 --warmup 0

# 7. sharing: N processes on one GPU, time-sliced and (when nvidia-cuda-mps-control exists) under CUDA MPS; the
#    experiment's --parallel and gpu_call.sh's MGS_MPS follow from it. Only when selected (MGS_BENCH_PARTS).
if [[ ",${MGS_BENCH_PARTS:-}," == *",sharing,"* ]]; then
  part sharing "$(cap 120 60)" "$PY" scripts/probe_gpu_sharing.py --procs 1,8 --out "$OUT/sharing.json"
  if command -v nvidia-cuda-mps-control >/dev/null; then
    nvidia-cuda-mps-control -d && sleep 1
    part sharing_mps "$(cap 90 0)" "$PY" scripts/probe_gpu_sharing.py --procs 8 --tag mps --out "$OUT/sharing_mps.json"
    echo quit | nvidia-cuda-mps-control; sleep 1
  else
    echo "=== sharing_mps: no nvidia-cuda-mps-control on this machine"
  fi
fi

echo
echo "################ summary ($((SECONDS - T_ALL)) s in all; logs in $OUT)"
cat "$OUT/gpu.txt"
for s in "${STATUS[@]}"; do echo "  $s"; done
echo
show() { [ -f "$OUT/$1.log" ] && sed -n "$2" "$OUT/$1.log"; }
echo "---- ours vs TRL (bench_rl_step)"; show rl_step '/^workload:/,$p'
[ -f "$OUT/rl_step_padded.log" ] && echo "---- ours, padded (bench_rl_step --pack off)" && show rl_step_padded '/^workload:/,$p'
echo "---- MGS overhead (bench_mgs_overhead)"; show mgs_overhead '/^model:/,$p'
echo "---- reward scoring (bench_reward)"; [ -f "$OUT/reward.log" ] && tail -n 12 "$OUT/reward.log"
echo "---- surgery alone (bench_surgery)"; [ -f "$OUT/surgery.log" ] && grep -E '^(device:|\|)' "$OUT/surgery.log"
echo "---- GPU sharing (probe_gpu_sharing)"; [ -f "$OUT/sharing.log" ] && grep '^|' "$OUT/sharing.log"
[ -f "$OUT/sharing_mps.log" ] && grep '^| [0-9]' "$OUT/sharing_mps.log" | sed 's/^/MPS /'
echo "---- rollout (bench_rollout): compiled static, then dynamic"
show rollout_static '/^model:/,$p'; show rollout_dynamic '/^model:/,$p'
# exit status: 1 when a part failed or timed out (the summary's last test would otherwise decide it)
for s in "${STATUS[@]}"; do [[ "$s" == *FAILED* || "$s" == *"TIMED OUT"* ]] && exit 1; done
exit 0
