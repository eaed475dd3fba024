#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs bua's main job on the built-in simulated data:
# simulate -> pretrain the behavior encoder -> three-stage curriculum on SmolLM2-135M-Instruct
# -> bua-export --quant q8_0 -> on-device prediction, explanation and generation.
# Extra arguments go to `bua demo` (e.g. --quick, --data foursquare, --fresh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
exec bua demo "$@"
