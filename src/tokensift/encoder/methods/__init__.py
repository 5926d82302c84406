"""Encoder token-reduction methods, one module per paper; see :mod:`tokensift.encoder.methods.base`."""

from tokensift.encoder.methods.base import EncoderMethod, LayerContext, Plan
from tokensift.encoder.methods.divprune import DivPrune
from tokensift.encoder.methods.evit import EViT
from tokensift.encoder.methods.pitome import PiToMe
from tokensift.encoder.methods.random import RandomPrune
from tokensift.encoder.methods.repshift import RepShift
from tokensift.encoder.methods.tome import ToMe
from tokensift.encoder.methods.zero_tprune import ZeroTPrune

__all__ = [
    "DivPrune",
    "EViT",
    "EncoderMethod",
    "LayerContext",
    "PiToMe",
    "Plan",
    "RandomPrune",
    "RepShift",
    "ToMe",
    "ZeroTPrune",
]
