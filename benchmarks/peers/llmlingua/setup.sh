#!/usr/bin/env bash
# Create the LLMLingua peer's own virtual environment (benchmarks/peers/llmlingua/.venv, git-ignored):
# llmlingua==0.2.2 with CPU torch 2.13.0 and the transformers the project uses, all pinned.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
if ! .venv/bin/python -c "import llmlingua, torch, transformers" 2>/dev/null; then
  .venv/bin/pip install -q -c constraints.txt torch==2.13.0 llmlingua==0.2.2 transformers==5.23.0 accelerate==1.15.0
fi
.venv/bin/python -c "import llmlingua, torch, transformers; print('llmlingua peer ready: torch', torch.__version__, 'transformers', transformers.__version__)"
