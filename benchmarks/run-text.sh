#!/usr/bin/env bash
# Produces benchmarks/RESULTS-text.md: tokensift's prompt-compression methods beside LLMLingua 0.2.2
# on SmolLM2-135M (resumable: rerun to continue; rows in $OUT/rows.jsonl).
# SAMPLES / GSM_SAMPLES set the rows per cell (the issue asks for >= 50); RATIOS the fractions removed.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# one thread for ours and for LLMLingua alike, so compress_seconds compare like with like
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
SAMPLES=${SAMPLES:-50}
GSM_SAMPLES=${GSM_SAMPLES:-$SAMPLES}
RATIOS=${RATIOS:-0.5}
MAX_LENGTH=${MAX_LENGTH:-4000}
OUT=${OUT:-benchmarks/out/text}
bash benchmarks/peers/llmlingua/setup.sh
run() { nice -n 10 .venv/bin/tokensift bench text --out "$OUT" --peers llmlingua --distractors 2 --ratios "$RATIOS" "$@"; }
# every registered text method (the default; `coarse` wraps lingua2 by default), LLMLingua beside, task by task in
# order of the issue's targets: agnostic NQ, GSM8K chain-of-thought, rate adherence, question-aware NQ, NQ as one
# text, and the summary-style WikiText-2 task
run --tasks nq_agnostic --samples "$SAMPLES"
run --tasks gsm8k_cot --samples "$GSM_SAMPLES"
run --tasks rate_adherence --max-length "$MAX_LENGTH"
run --tasks nq_qa --samples "$SAMPLES"
run --tasks nq_single --samples "$SAMPLES"
run --tasks wiki_summary --samples "$SAMPLES"
.venv/bin/tokensift bench text --out "$OUT" --samples "$SAMPLES" --distractors 2 --max-length "$MAX_LENGTH" \
  --ratios "$RATIOS" --results benchmarks/RESULTS-text.md --report-only \
  --command "SAMPLES=$SAMPLES GSM_SAMPLES=$GSM_SAMPLES RATIOS=$RATIOS bash benchmarks/run-text.sh"
