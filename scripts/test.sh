#!/usr/bin/env bash
# Sets everything up on a fresh machine and runs bua's test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
exec python -m pytest "$@"
