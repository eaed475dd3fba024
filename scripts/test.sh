#!/usr/bin/env bash
# Sets everything up on a fresh machine, lints (ruff, configured in pyproject.toml) and runs bua's
# test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
. .venv/bin/activate
ruff check .
exec python -m pytest "$@"
