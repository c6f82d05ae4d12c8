#!/usr/bin/env bash
# One GPU device call of the matrix (calls last at most 10 minutes; see README "On the GPU"). Arguments go to
# run.py (give it --deadline-s / --stop-grace-s that end well inside the call). Results collect into the ignored
# runs/exp-results, which stays on the warm machine between calls and is first filled from the committed
# results/ (so finished runs are skipped on a fresh machine); everything small comes back as $OUT/exp.tgz.
# Needs the staged assets: source /tmp/mgs-assets/env.sh first (sets MGS_DATA).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # run.py imports mgs (the GPU machine has it only here)
results=runs/exp-results
mkdir -p "$results"
cp -rn experiments/smollm2-3domain/results/. "$results/" 2>/dev/null || true
# MGS_MPS=1: the runs share the GPU through CUDA MPS (kernels of different processes run at once) instead of
# time slices; scripts/probe_gpu_sharing.py measures which gets more done
if [ "${MGS_MPS:-0}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  nvidia-cuda-mps-control -d && echo "CUDA MPS daemon started"
  trap 'echo quit | nvidia-cuda-mps-control' EXIT
fi
python3 experiments/smollm2-3domain/run.py --data-dir "${MGS_DATA:?source /tmp/mgs-assets/env.sh first}" \
  --results-dir "$results" --report-dir runs/exp-report "$@" 2>&1 | tail -60
# + the metrics of unfinished runs (runs/ is lost with the machine: on 2026-12-01 a released machine took nine
# half-done runs' step timings with it)
tar czf "${OUT:-/tmp}/exp.tgz" "$results" runs/exp-report runs/smollm2-3domain/logs \
  runs/smollm2-3domain/*/metrics.jsonl runs/smollm2-3domain/*/summary.json 2>/dev/null
echo "archive: ${OUT:-/tmp}/exp.tgz"
