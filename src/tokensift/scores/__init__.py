"""Per-token informativeness signals. Pure tensor functions, higher = more worth keeping.

* LM signals: :func:`next_token_scores` (surprisal, entropy), :func:`lm_scores` (windowed, any length).
* Attention received: :func:`attention_received` (H2O / A2SF), :func:`observation_window` (SnapKV);
  :func:`reconstruction_attention` (KVzip: attention from a pass that repeats the context) and
  :func:`attend_and_reconstruct` (the same scores formed inside the pass's own attention). Their inputs
  (the exact query rows and keys) come from the adapters, through the attention router (:mod:`tokensift.hooks`).
* Key statistics: :func:`key_norm_score`, :func:`key_diff_score`, :func:`key_distance_to_mean`;
  :func:`expected_attention_scores` (attention from the estimated distribution of future queries).
* :func:`random_scores`, the baseline.
"""

from tokensift.scores.attention import (
    attend_and_reconstruct,
    attention_received,
    observation_window,
    pool_scores,
    reconstruction_attention,
)
from tokensift.scores.expected import average_rotation, expected_attention_scores, unrotate
from tokensift.scores.keys import key_diff_score, key_distance_to_mean, key_norm_score
from tokensift.scores.lm import LMScores, lm_scores, next_token_scores, plan_windows
from tokensift.scores.random import random_scores

__all__ = [
    "LMScores",
    "attend_and_reconstruct",
    "attention_received",
    "average_rotation",
    "expected_attention_scores",
    "key_diff_score",
    "key_distance_to_mean",
    "key_norm_score",
    "lm_scores",
    "next_token_scores",
    "observation_window",
    "plan_windows",
    "pool_scores",
    "random_scores",
    "reconstruction_attention",
    "unrotate",
]
