"""The simulated FMCOS-style card (SPEC.md §1, §2, §6 and decisions D1–D8): the OS core
(``core.py``) with the file (``files.py``), security (``security.py``) and purse
(``purse.py``) command families, joined by one dispatch table.

Where SPEC.md leaves the card's behaviour open the choice is marked "Decision" in the
handler and listed in docs/sim.md.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .core import ISO, ISO_PLAIN, PROPRIETARY, PROPRIETARY_PLAIN, PROTECTED_ONLY, Route, SwError
from .files import FileCommands
from .fs import DF, factory_mf
from .models import DEFAULT_MODEL, CardModel, get_model
from .nvm import Nvm
from .purse import PurseCommands, PurseSession
from .security import SecurityCommands

__all__ = ["SimCard", "SwError", "PurseSession", "new_card"]


_MAC_ONLY = ((0x80, 0x6982),)   # the plain form of a MAC-only command: security state not satisfied

#: the class of each card model ``kind`` other than the FMCOS card (``citycard.sim.psam``
#: registers ``psam``): ``SimCard(model=...)`` builds the model's class
CARD_CLASSES: dict[str, type[SimCard]] = {}


class SimCard(FileCommands, SecurityCommands, PurseCommands):
    """An FMCOS-style multi-application card with the PBOC ED/EP."""

    COMMANDS = {
        # ISO 7816-4
        0xA4: (Route("_select", ISO),),
        0x84: (Route("_get_challenge", ISO),),
        0x82: (Route("_external_auth", ISO_PLAIN),),
        0x88: (Route("_internal_auth", ISO_PLAIN),),
        0x20: (Route("_verify", ISO),),                       # 04: line protection (SPEC §6.4)
        0xB0: (Route("_read_binary", ISO),),
        0xD6: (Route("_update_binary", ISO),),
        0xB2: (Route("_read_record", ISO),),
        0xE2: (Route("_append_record", ISO),),
        0xDC: (Route("_update_record", ISO), Route("_update_capp_cache", PROPRIETARY)),
        0x22: (Route("_set_auth_code", ISO_PLAIN),),
        # FMCOS administration
        0xE0: (Route("_create_file", PROPRIETARY_PLAIN),),
        0x0E: (Route("_erase_df", PROPRIETARY_PLAIN),),
        0xD4: (Route("_write_key", PROPRIETARY),),
        0x5E: (Route("_pin_change", PROPRIETARY, p1=0x01), Route("_pin_reload", PROPRIETARY_PLAIN, p1=0x00)),
        0x24: (Route("_pin_unblock", PROTECTED_ONLY, _MAC_ONLY),),
        0x16: (Route("_card_block", PROTECTED_ONLY, _MAC_ONLY),),
        0x1E: (Route("_app_block", PROTECTED_ONLY, _MAC_ONLY),),
        0x18: (Route("_app_unblock", PROTECTED_ONLY, _MAC_ONLY),),
        # PBOC ED/EP
        0x50: (Route("_initialize", PROPRIETARY_PLAIN),),
        0x52: (Route("_credit_for_load", PROPRIETARY_PLAIN),),
        0x54: (Route("_debit", PROPRIETARY_PLAIN),),
        0x5A: (Route("_transaction_prove", PROPRIETARY),),
        0x5C: (Route("_get_balance", PROPRIETARY),),
        0x58: (Route("_update_overdraw_limit", PROPRIETARY_PLAIN),),
        0xCA: (Route("_get_data", PROPRIETARY),),
    }

    def __new__(cls, *args: Any, **kwargs: Any) -> SimCard:
        if cls is SimCard:
            cls = CARD_CLASSES.get(get_model(kwargs.get("model", DEFAULT_MODEL)).kind, SimCard)
        return super().__new__(cls)

    def __init__(self, mf: DF | None = None, *, card_blocked: bool = False, atr: bytes | None = None,
                 rng: Callable[[int], bytes] | None = None, model: str | CardModel = DEFAULT_MODEL) -> None:
        """A card with the file tree ``mf`` (a factory card of ``model`` when None).

        Without ``model`` the card is the real-card model ``fm1208`` (as :func:`citycard.sim.new_card`).
        ``rng(n)`` supplies every random number the card makes (GET CHALLENGE, purse randoms).
        """
        self.model = get_model(model)
        self.mf = mf if mf is not None else factory_mf(self.model)
        self.card_blocked = card_blocked
        self.atr = atr if atr is not None else self.model.atr
        self.rng = rng if rng is not None else os.urandom
        self.nvm = Nvm()
        self.generation = 0           # bumped by every persistent change (image saving)
        self.powered = False
        self._bind_routes()
        self._reset_state()


def new_card(model: str | CardModel = "fm1208", *, rng: Callable[[int], bytes] | None = None) -> SimCard:
    """A factory card of ``model`` (a name from :data:`~citycard.sim.models.MODELS` or a
    :class:`~citycard.sim.models.CardModel`); ``rng(n)`` supplies every random number the card
    makes (default ``os.urandom``).  Public API (docs/sim.md)."""
    return SimCard(model=model, rng=rng)
