"""The training target: per-token loss selection (Rho-1, ESLM, entropy top-k, random) and token-level data
scoring (IFD, T-SHIRT's selective IFD), as drop-ins for a plain PyTorch loop or transformers' ``Trainer``.

* :class:`SelectiveLoss` — ``Trainer(compute_loss_func=SelectiveLoss(build("training", "eslm", keep=0.3)))``
  or ``loss = SelectiveLoss(policy)(logits, labels)`` in a loop; counts the tokens it kept.
* :class:`~tokensift.training.trainer.SelectiveTrainer` — the same for ``rho1``, whose reference model needs
  the batch's inputs.
* :func:`sparse_step` — the same selection with backward over the selected tokens only (real savings).
* :func:`score_file` — rank the rows of an instruction-tuning JSONL file (``tokensift score-data``).
* :func:`finetune` / :func:`evaluate` — the CPU fine-tune ``tokensift train`` and ``bench training`` run.
"""

from tokensift.training.datascore import keep_lines, score_file
from tokensift.training.finetune import evaluate, finetune
from tokensift.training.loss import SelectiveLoss
from tokensift.training.reference import Reference
from tokensift.training.sparse import sparse_step

__all__ = ["Reference", "SelectiveLoss", "evaluate", "finetune", "keep_lines", "score_file", "sparse_step"]
