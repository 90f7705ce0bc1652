"""The simulated city card: an FMCOS-style card OS with the PBOC purse.

Public API (stable, documented in docs/sim.md)::

    from citycard.sim import SimCard, new_card, CardModel, MODELS
    card = new_card("fm1208", rng=recorded_randoms)   # a factory card
    atr = card.power_on()
    response = card.process(bytes.fromhex("0084000008"))   # data ‖ SW
    card.reset()
"""

from .card import SimCard, SwError, new_card
from . import psam as _psam   # registers the "psam" card model's class
from .models import DEFAULT_MODEL, LEGACY_MODEL, MODELS, CardModel
from .nvm import PowerLoss

__all__ = ["SimCard", "new_card", "CardModel", "MODELS", "DEFAULT_MODEL", "LEGACY_MODEL", "SwError",
           "PowerLoss"]
