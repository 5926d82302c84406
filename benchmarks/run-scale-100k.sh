#!/usr/bin/env bash
# The 100k-row `tokensift batch score-data` job (sifd, SmolLM2-135M, 2 Ray actors): 100,000 NQ-Open
# question/answer rows with 100 bad ones (benchmarks/scale_rows.py). Prints the job's JSON report (rows,
# errors, peak RSS of the driver and of any worker) and the driver's peak RSS from /usr/bin/time. Resumable:
# stop it (Ctrl+C / SIGTERM) and run it again; finished shards are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TOKENSIFT=${TOKENSIFT:-.venv/bin/tokensift}
DATA=${TOKENSIFT_DATA:-../shared/data}
OUT=${OUT:-benchmarks/out/scale-100k}
mkdir -p "$OUT"
[ -f "$OUT/rows.jsonl" ] || .venv/bin/python benchmarks/scale_rows.py "$DATA" "$OUT/rows.jsonl" 100000
/usr/bin/time -v "$TOKENSIFT" batch score-data "$OUT/rows.jsonl" "$OUT/scores.parquet" --actors 2 --batch-size 16 \
  --json 2> >(tee "$OUT/stderr.log" >&2) | tee "$OUT/report.json"
grep "Maximum resident" "$OUT/stderr.log" || true
