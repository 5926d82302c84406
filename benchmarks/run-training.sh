#!/usr/bin/env bash
# Produces benchmarks/RESULTS-training.md: GSM8K fine-tunes of SmolLM2-135M-Instruct on the CPU — the full loss
# against the default policies at 60 % and 30 % of tokens (sparse backward), Rho-1 and ESLM at 30 % with the
# exact masked loss, the interleaved timing of one step per backward mode (the whole response back-propagated
# included; --backward response trains that way too), the policies at 30 % on a fixed backward compute (sparse
# backward until 1/2 and 1/2.5 of the full run's positions), and data selection by score-data (top vs random
# vs all). Resumable: rerun to continue; rows in
# benchmarks/out/training/rows.jsonl. STEPS, SAMPLES (held-out problems), ANSWERS (of those answered greedily)
# and POOL (problems scored for data selection) set the size.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STEPS=${STEPS:-30}
SAMPLES=${SAMPLES:-60}
ANSWERS=${ANSWERS:-20}
POOL=${POOL:-120}
TOKENSIFT=${TOKENSIFT:-.venv/bin/tokensift}
size=(--steps "$STEPS" --samples "$SAMPLES" --pool "$POOL" --reference-steps "$STEPS")
run() { "$TOKENSIFT" bench training --out benchmarks/out/training "${size[@]}" "$@"; }
run --answers "$ANSWERS" --tasks selective --ratios 0.4,0.7 --backward sparse
run --answers "$ANSWERS" --tasks selective --ratios 0.7 --backward exact --methods rho1,eslm
run --tasks speed --ratios 0.7 --backward sparse,response,exact
run --answers "$ANSWERS" --tasks budget --ratios 0.7 --budget-factor 2
run --answers "$ANSWERS" --tasks budget --ratios 0.7 --budget-factor 2.5 --methods rho1,random
run --answers 0 --tasks data_selection  # greedy answers skipped here to fit the session; logprob only
"$TOKENSIFT" bench training --out benchmarks/out/training "${size[@]}" --answers "$ANSWERS" --ratios 0.4,0.7 \
  --backward sparse,response,exact --results benchmarks/RESULTS-training.md --report-only \
  --command "STEPS=$STEPS SAMPLES=$SAMPLES ANSWERS=$ANSWERS POOL=$POOL bash benchmarks/run-training.sh"
