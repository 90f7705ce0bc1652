"""The simulated city card: an FMCOS-style card OS with the PBOC purse (issue 3)."""

from .card import SIM_ATR, SimCard, SwError
from .nvm import PowerLoss

__all__ = ["SimCard", "SwError", "PowerLoss", "SIM_ATR"]
