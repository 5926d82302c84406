#!/usr/bin/env bash
# The KV comparison at equal bytes (eviction, low precision, merging, composite tokens), then the top section of
# benchmarks/RESULTS-kv.md (resumable: rerun to continue). Run it alone: it also times compression and decoding.
#   1k: every family on niah / niah_multikey / nq_qa at 12.5 % and 25 % of the full cache's bytes
#   2k: the best of them on the needle tasks at 12.5 %
#   transformers' quantized cache (quanto, 2 and 4 bits) and kvpress's KVzip on the same 1k instances
#   kvzip's cost against a plain prefill (benchmarks/kvzip_cost.py) and decode time with a packed cache
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SAMPLES=${SAMPLES:-30}
OUT1=${OUT1:-benchmarks/out/kv-bytes-1k}
OUT2=${OUT2:-benchmarks/out/kv-bytes-2k}
ALL=kvzip,quant2:kvzip,qprune:kvzip,qprune:kvzap,merge:kvzip,kvcompose:kvzip,kvzap,quant2:kvzap,snapkv,quant2:snapkv,mikv,zipcache,ems,cam,kvcrush,keydiff
BEST=kvzip,quant2:kvzip,kvzap,quant2:kvzap,kvcompose:kvzip,qprune:kvzip,qprune:kvzap
bench() { .venv/bin/tokensift bench kv --budget bytes --modes query-agnostic --speed-tokens 0 --samples "$SAMPLES" "$@"; }
bench --tasks niah,niah_multikey,nq_qa --methods "$ALL" --ratios 0.875,0.75 --length 1024 --out "$OUT1"
bench --tasks niah,niah_multikey --methods "$BEST" --ratios 0.875 --length 2048 --out "$OUT2"
.venv/bin/python -m pip install -q --no-deps optimum-quanto==0.2.7  # transformers' quantized-cache backend
.venv/bin/python benchmarks/peers/hf_quantized.py --out "$OUT1" --tasks niah,niah_multikey,nq_qa --samples "$SAMPLES"
bash benchmarks/peers/kvpress/setup.sh   # kvpress's KVzip on the same instances (eviction: kept tokens = bytes)
(cd benchmarks/peers/kvpress && .venv/bin/python run.py --out "../../../$OUT1" --samples "$SAMPLES" \
  --tasks niah,niah_multikey --modes query-agnostic --methods kvzip --ratios 0.875,0.75)
.venv/bin/python benchmarks/kvzip_cost.py --lengths 1024,2048
.venv/bin/tokensift bench kv --budget bytes --samples 0 --speed-tokens 32 --methods kvzip,quant2:kvzip \
  --ratios 0.75 --out benchmarks/out/kv-bytes-speed
.venv/bin/python benchmarks/kv_bytes.py --run 1024="$OUT1" --run 2048="$OUT2" \
  --extra benchmarks/RESULTS-kv-bytes/timings.md \
  --lead benchmarks/RESULTS-kv-bytes/qprune.md   # the timings and the qprune runs, as measured (edit after a rerun)
