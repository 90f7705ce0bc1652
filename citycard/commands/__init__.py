"""The command vocabulary of citycard: every APDU the host sends, built in one place.

* :mod:`~citycard.commands.iso` — ISO 7816-4: SELECT, READ/UPDATE BINARY and RECORD,
  APPEND RECORD, GET CHALLENGE, EXTERNAL/INTERNAL AUTHENTICATE, VERIFY, GET RESPONSE;
* :mod:`~citycard.commands.fmcos` — FMCOS administration: CREATE FILE per file type,
  ERASE DF, WRITE KEY and its record, PINs, blocking; :class:`KeyType`, :class:`FileType`;
* :mod:`~citycard.commands.purse` — PBOC ED/EP: INITIALIZE, CREDIT, DEBIT, GET BALANCE,
  GET TRANSACTION PROVE, CAPP cache, MOHURD GET DATA, with frozen answer parsers;
* :mod:`~citycard.commands.walk` — small helpers that walk a card over a session (select a
  DF, read a file to its end, the serial and its diversification factor, EXTERNAL AUTH).

Builders return :class:`~citycard.apdu.CommandApdu` values and talk to no card; line
protection is the transport stack's job (:class:`citycard.transport.LineProtection`).
Every encoder is pinned by published bytes in ``tests/test_commands.py``.

The submodules and the names below are imported when first used (PEP 562): the transport
stack needs only :mod:`~citycard.commands.iso` (GET RESPONSE, GET CHALLENGE), so a raw
``citycard apdu`` does not pay for the FMCOS and purse modules (issue 19 item 3, CLI start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

#: the names this package re-exports -> the submodule defining them
_NAMES = {"KeyType": "fmcos", "FileType": "fmcos", "Protection": "fmcos", "PurseKind": "purse"}
#: the submodules reachable as attributes of the package (``commands.fmcos``) without an import
_SUBMODULES = frozenset({"fmcos", "iso", "purse", "psam", "walk"})

if TYPE_CHECKING:
    from . import fmcos, iso, purse
    from .fmcos import FileType, KeyType, Protection
    from .purse import PurseKind

__all__ = ["iso", "fmcos", "purse", "KeyType", "FileType", "Protection", "PurseKind"]


__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, _SUBMODULES)
