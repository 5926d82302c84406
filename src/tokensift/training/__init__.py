"""The training target: per-token loss selection (Rho-1, ESLM, entropy top-k, random) and token-level data
scoring (IFD, T-SHIRT's selective IFD), as drop-ins for a plain PyTorch loop or transformers' ``Trainer``.

* :class:`SelectiveLoss` — ``Trainer(compute_loss_func=SelectiveLoss(build("training", "eslm", keep=0.3)))``
  or ``loss = SelectiveLoss(policy)(logits, labels)`` in a loop; counts the tokens it kept.
* :class:`SelectiveTrainer` — the same for ``rho1``, whose reference model needs the batch's inputs.
* :func:`sparse_step` — the same selection with backward over the selected tokens only (real savings).
* :func:`score_file` / :func:`keep_lines` — rank the rows of an instruction-tuning JSONL file (``score-data``).
* :func:`finetune` / :func:`evaluate` — the CPU fine-tune ``tokensift train`` and ``bench training`` run.

Every policy and scorer class is exported under its class name (read from the method registry). Attributes
load on first use, so ``import tokensift.training`` is cheap and the registry can import this package.
"""

from __future__ import annotations

from tokensift.face import lazy_face

_FACE = {
    "SelectiveLoss": "tokensift.training.loss",
    "Counts": "tokensift.training.loss",
    "SelectiveTrainer": "tokensift.training.trainer",
    "Reference": "tokensift.training.reference",
    "sparse_step": "tokensift.training.sparse",
    "SparseStep": "tokensift.training.sparse",
    "TokenStats": "tokensift.training.stats",
    "token_stats": "tokensift.training.stats",
    "score_file": "tokensift.training.datascore",
    "keep_lines": "tokensift.training.datascore",
    "finetune": "tokensift.training.finetuning",
    "evaluate": "tokensift.training.finetuning",
    "TokenPolicy": "tokensift.training.methods.base",
    "DataScorer": "tokensift.training.methods.data",
}

__getattr__, __dir__ = lazy_face(__name__, "training", _FACE)
