"""Visual-token selection methods for VLMs: one module per paper, each a dataclass registered with ``@register``
(see :mod:`tokensift.vision.methods.base`). Every module in this folder is imported here, so a new method is one
new file and nothing else.
"""

from tokensift.registry import import_all

import_all(__name__, __path__)
