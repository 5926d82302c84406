#!/usr/bin/env bash
# Produces benchmarks/RESULTS-vision.md: the LLaVA (DINOv2-small + SmolLM2-135M + the projector trained by
# benchmarks/train_projector.py) on easy-VQA test questions with every visual-token method at 50/25/11/5 % of
# its 256 visual tokens (224 px) kept, batch-1 prefill timings, and DINOv2-small's token reduction ([CLS] fidelity, linear
# probes of shape and colour, images/s at batch 32). Resumable: rerun to continue (rows in benchmarks/out/vision).
# SAMPLES (questions), PROBE_TRAIN / PROBE_TEST (images) and SPEED (questions timed at batch 1) set the size.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SAMPLES=${SAMPLES:-500}
PROBE_TRAIN=${PROBE_TRAIN:-600}
PROBE_TEST=${PROBE_TEST:-300}
SPEED=${SPEED:-16}
TOKENSIFT=${TOKENSIFT:-.venv/bin/tokensift}
args=(--out benchmarks/out/vision --samples "$SAMPLES" --ratios 0.5,0.75,0.89,0.95 --vit-ratios 0.25,0.5
      --probe-train "$PROBE_TRAIN" --probe-test "$PROBE_TEST" --speed-images "$SPEED")
"$TOKENSIFT" bench vision "${args[@]}"
"$TOKENSIFT" bench vision "${args[@]}" --results benchmarks/RESULTS-vision.md --report-only \
  --command "SAMPLES=$SAMPLES PROBE_TRAIN=$PROBE_TRAIN PROBE_TEST=$PROBE_TEST SPEED=$SPEED bash benchmarks/run-vision.sh"
