#!/usr/bin/env bash
# The trainer under torchrun with FSDP2 at world size 1 on the embedded default config (SmolLM2-135M-Instruct in
# bf16, math + ifeval + chat, MGS with module-level PCGrad), 3 steps, no eval: the whole distributed path (process
# group, FSDP2 wrap, gathered-parameter rollouts, distributed_update, DCP checkpoint) on a real model. Prints each
# step's time and the peak GPU memory from RUN/metrics.jsonl. Should take well under 3 minutes on an H100.
#
# Usage (repository root): bash scripts/gpu_fsdp2_default.sh [more overrides, e.g. train.steps=5]
#   env: MGS_POLICY_GGUF (the SmolLM2 GGUF, default: the pip package's), MGS_EMBEDDER (MiniLM folder for chat),
#        OUT (run directory, default a fresh temporary one), NPROC (processes, default 1), PY (python).
# CPU (gloo, slow): bash scripts/gpu_fsdp2_default.sh model.dtype=float32 train.steps=1
# The synthetic-rollout step benchmark (FSDP2/DDP, fp32/bf16 buffers) is scripts/bench_dist_step.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d /tmp/mgs_fsdp2_default.XXXXXX)/run}
NPROC=${NPROC:-1}
: "${NCCL_NVLS_ENABLE:=0}"  # NVLink multicast off unless the caller says otherwise
export NCCL_NVLS_ENABLE
start=$(date +%s)
"$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m mgs train \
  train.parallel=fsdp2 train.compare=[] strategy.name=mgs train.steps=3 eval.before=false eval.after=false \
  model.dtype=bfloat16 logging.progress=false "$@" --out "$OUT"
echo "wall time (launch to exit): $(( $(date +%s) - start )) s"
"$PY" - "$OUT/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'step':>4} {'step_s':>8} {'rollout_s':>9} {'train_s':>8} {'surgery_s':>9} {'optim_s':>8} {'peak_gb':>8}")
for m in rows:
    print(f"{m['step']:>4} {m['time/step_s']:>8.2f} {m['time/rollout_s']:>9.2f} {m['time/train_s']:>8.2f} "
          f"{m['time/surgery_s']:>9.3f} {m['time/optim_s']:>8.3f} {m.get('mem/peak_gb', float('nan')):>8.2f}")
later = [m["time/step_s"] for m in rows[1:]] or [rows[0]["time/step_s"]]
print(f"mean step time after the first: {sum(later) / len(later):.2f} s; "
      f"peak GPU memory: {max(m.get('mem/peak_gb', float('nan')) for m in rows):.2f} GB")
EOF
