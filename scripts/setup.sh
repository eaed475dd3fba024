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
# llama.cpp for this CPU (its SIMD kernels, never the AMX backend), from bua's own wheelhouse
# (~/.cache/bua/wheels, one folder per flag set); the first time it compiles, about 10 minutes
# on 2 cores. It replaces an installed llama-cpp-python built with other flags.
python scripts/llama_build.py ensure
# bua._native compiles against the llama-cpp-python installed above (no build isolation, so pip
# cannot bring in a cached build of its own): one libllama for the extension and llama_cpp.
python -m pip install --quiet "scikit-build-core>=0.11" "pybind11>=2.13"
echo "[setup] installing bua[$extras] (editable; compiles bua._native against that llama-cpp-python)"
python -m pip install --quiet --no-build-isolation -e ".[$extras]"
python -c "import bua, bua._native; print('[setup] bua', bua.__version__, 'native extension OK')"
