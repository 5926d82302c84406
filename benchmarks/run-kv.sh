#!/usr/bin/env bash
# The KV benchmark end to end (resumable: rerun to continue), then benchmarks/RESULTS-kv.md.
#   tokensift grid -> kvpress peer on the same instances -> decode speed at 2k -> report
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-benchmarks/out/kv}
SAMPLES=${SAMPLES:-30}
PEER_SAMPLES=${PEER_SAMPLES:-20}
nice -n 10 .venv/bin/tokensift bench kv --model smollm2-135m --tasks niah,niah_multikey,nq_qa,fidelity \
  --samples "$SAMPLES" --fidelity-samples 10 --seed 0 --speed-tokens 0 --out "$OUT"
bash benchmarks/peers/kvpress/setup.sh
(cd benchmarks/peers/kvpress && nice -n 10 .venv/bin/python run.py --out "../../../$OUT" --samples "$PEER_SAMPLES" \
  --tasks niah,niah_multikey,nq_qa --equivalence 3)
nice -n 10 .venv/bin/tokensift bench kv --model smollm2-135m --samples 0 --fidelity-samples 0 --speed-tokens 16 \
  --methods snapkv,adakv,chunkkv,streaming_llm --out "$OUT"
.venv/bin/python benchmarks/kv_results.py --out "$OUT"
