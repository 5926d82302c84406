#!/usr/bin/env bash
# Produces benchmarks/RESULTS-scale.md: rows/s of `tokensift batch embed` (2,000 NQ-Open gold passages,
# all-MiniLM-L6-v2) and `tokensift batch inspect` (160 WikiText-2 paragraphs, SmolLM2-135M) in one process
# (off: torch's threads; off-1: one thread) and on 1 and 2 Ray actors of one CPU each, every output checked
# against off-1 row for row. Run it on an otherwise idle machine: the figures are rates.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TOKENSIFT=${TOKENSIFT:-.venv/bin/tokensift}
"$TOKENSIFT" bench scale --out benchmarks/out/scale --results benchmarks/RESULTS-scale.md \
  --command "bash benchmarks/run-scale.sh"
