#!/usr/bin/env bash
# Create the kvpress peer's own virtual environment (benchmarks/peers/kvpress/.venv, git-ignored).
# kvpress 0.5.5 is pinned below transformers 5.3, so it cannot share tokensift's environment.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3.11 -m venv "$venv"
fi
"$venv/bin/pip" install -q -c "$here/constraints.txt" torch==2.13.0
"$venv/bin/pip" install -q -c "$here/constraints.txt" kvpress==0.5.5 transformers==5.2.0
# tokensift itself (no deps: its pins target transformers 5.23) for the shared task builders and row schema.
"$venv/bin/pip" install -q --no-deps -e "$root"
"$venv/bin/python" -c "import kvpress, transformers, torch; print('kvpress', kvpress.__version__ if hasattr(kvpress, '__version__') else '0.5.5', 'transformers', transformers.__version__, 'torch', torch.__version__)"
