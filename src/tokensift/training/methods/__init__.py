"""Training methods, one file each: per-token selection policies for the loss and data scorers for ``score-data``."""

from tokensift.registry import import_all

import_all(__name__, __path__)
