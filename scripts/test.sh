#!/usr/bin/env bash
# Set up (once), then lint, type-check and run the whole test suite (unit + embedded-model tests).
# Pass pytest arguments through, e.g. `bash scripts/test.sh -m "not model"` for the unit tests alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
exec .venv/bin/pytest "$@"
