#!/usr/bin/env bash
# The KV benchmark end to end (resumable: rerun to continue), then benchmarks/RESULTS-kv.md.
#   tokensift grid (every registered KV method) -> kvpress peer on the same instances (+ equivalence)
#   -> decode speed at 2k -> report
# SAMPLES / PEER_SAMPLES set the rows per cell (the issue asks for >= 30 / >= 20).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-benchmarks/out/kv}
SAMPLES=${SAMPLES:-30}
PEER_SAMPLES=${PEER_SAMPLES:-20}
nice -n 10 .venv/bin/tokensift bench kv --model smollm2-135m --tasks niah,niah_multikey,nq_qa,kv_retrieval,fidelity \
  --samples "$SAMPLES" --fidelity-samples 10 --seed 0 --speed-tokens 0 --out "$OUT"
bash benchmarks/peers/kvpress/setup.sh
peer() { (cd benchmarks/peers/kvpress && nice -n 10 .venv/bin/python run.py --out "../../../$OUT" "$@"); }
peer --samples "$PEER_SAMPLES" --tasks niah,niah_multikey,nq_qa,kv_retrieval --equivalence 3  # its presses that match ours
# kvpress's KVzip re-runs the prefill and its repeat passes itself: the query-agnostic needle tasks only
peer --samples "$PEER_SAMPLES" --tasks niah,niah_multikey --modes query-agnostic --methods kvzip
# decode ms/token at 2k context, batch 1: the full cache, then every method at every kept fraction (run it alone)
nice -n 10 .venv/bin/tokensift bench kv --model smollm2-135m --samples 0 --fidelity-samples 0 --speed-tokens 32 \
  --out "$OUT"
.venv/bin/python benchmarks/kv_results.py --out "$OUT"
