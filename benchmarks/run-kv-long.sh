#!/usr/bin/env bash
# The long-context measurements of RESULTS-kv.md (run alone: they time prefill and decode on 2 CPU threads).
# OUT defaults to benchmarks/out/kv-long; PY to .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/kv-long}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Gemma-3-270M (32,768 positions) answers the passkey task uncompressed: 4k-16k, then 32k (32,000 tokens leave
# room for the chat template, the question and the answer)
$PY benchmarks/kv_long.py grid --model gemma3-270m --task passkey --lengths 4096,8192,16384 --samples 3 --out "$OUT"
$PY benchmarks/kv_long.py grid --model gemma3-270m --task passkey --lengths 32000 --samples 2 --out "$OUT"
# SmolLM2-135M (8,192 positions) does not answer passkey even uncompressed at 2k: the essays' needle at 4k
$PY benchmarks/kv_long.py grid --model smollm2-135m --task niah --lengths 4096 --samples 3 --out "$OUT"
# peak memory, one child process per configuration (the one-pass prefill last: the longest)
for only in "full cache" bounded gemfilter; do
  $PY benchmarks/kv_long.py memory --model gemma3-270m --length 32000 --only "chunks of 2048, $only" --out "$OUT"
done
$PY benchmarks/kv_long.py memory --model gemma3-270m --length 32000 --only "one pass" --out "$OUT"
$PY benchmarks/kv_long.py report --out "$OUT"
