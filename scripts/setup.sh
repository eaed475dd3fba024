#!/usr/bin/env bash
# Creates (or reuses) .venv and installs bua into it, editable, with the extras given as
# arguments (default: test). Safe to rerun: finished steps are quick no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# CPU torch first: with it installed, the extras' `torch>=2.4` adds nothing (a plain `torch`
# requirement would otherwise pull a multi-GB CUDA build).
python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0
# The first install compiles llama.cpp inside llama-cpp-python (about 10 minutes on 2 cores);
# pip caches that wheel, so later installs take seconds.
echo "[setup] installing bua[$extras] (editable; compiles bua._native against llama-cpp-python==0.3.36)"
python -m pip install --quiet -e ".[$extras]"
python -c "import bua, bua._native; print('[setup] bua', bua.__version__, 'native extension OK')"
