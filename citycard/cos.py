"""What the host can tell of a card's COS from its ATR: the cipher of its line protection
(docs/sm4.md "SM4 line protection").

An FMCOS card keeps its secure-messaging cipher in its COS, for the whole card: an FM1208
does DES/3DES (UM §11), the simulated ``fmcos-sm4`` model SM4.  The host reads the ATR's
historical bytes before the first key goes to the card, so that a profile of the other
cipher is refused with one line instead of spending a try of a key on a MAC or a cryptogram
the card cannot check.  An ATR this table does not know says nothing: then the profile's
``[card] line_protection`` rules, and the first cryptogram of the wrong cipher is refused
for its length before any key is tried (EXTERNAL AUTHENTICATE: 8 bytes 3DES, 16 SM4).

Imports nothing of citycard but the error family: the simulator takes its ATRs from here.
"""

from __future__ import annotations

from typing import Literal

from .errors import CitycardError

LineAlg = Literal["des", "sm4"]

#: FM1208 ATS historical bytes, before the UID (SPEC §6 R19: LAB, CAPT)
FM1208_HISTORICAL = bytes.fromhex("20900000000000")
#: the simulator's own historical bytes: the legacy FMCOS card, the SM4 card, the PSAM
SIM_FMCOS_HISTORICAL = b"CITYCARD FMCOS"
SIM_FMCOS_SM4_HISTORICAL = b"CITYCARD SM4"     # at most 15 historical bytes (ISO 7816-3)
SIM_PSAM_HISTORICAL = b"CITYCARD PSAM"

# the first prefix that matches names the card
_KNOWN: tuple[tuple[bytes, LineAlg, str], ...] = (
    (SIM_FMCOS_SM4_HISTORICAL, "sm4", "a simulated fmcos-sm4 card (SM4 line protection)"),
    (SIM_FMCOS_HISTORICAL, "des", "a simulated FMCOS card (3DES line protection)"),
    (SIM_PSAM_HISTORICAL, "des", "a simulated PSAM (3DES line protection)"),
    (FM1208_HISTORICAL, "des", "an FM1208 (3DES line protection, FMCOS UM §11)"),
)

_NAMES = {"des": "3DES", "sm4": "SM4"}


class WrongLineProtection(CitycardError):
    """The card's ATR names a COS whose line protection is not the profile's: refused before
    any key, MAC or cryptogram is sent."""


def historical_bytes(atr: bytes) -> bytes:
    """The historical bytes of an ATR (ISO 7816-3 §8.2: T0's low nibble counts them; the
    interface bytes TA/TB/TC/TD chained by the high nibbles), or b"" for an ATR too short."""
    if len(atr) < 2:
        return b""
    count, y, i = atr[1] & 0x0F, atr[1] >> 4, 2
    while True:
        i += bin(y & 0x07).count("1")          # TA, TB, TC present
        if not y & 0x08:                       # no TD: the interface bytes end here
            break
        if i >= len(atr):
            return b""
        y, i = atr[i] >> 4, i + 1
    return atr[i:i + count] if i + count <= len(atr) else b""


def line_protection_of(atr: bytes) -> tuple[LineAlg, str] | None:
    """The line-protection cipher of the card with this ATR and what the card is, or None
    when the ATR names no COS this table knows."""
    hist = historical_bytes(atr)
    for prefix, alg, what in _KNOWN:
        if hist.startswith(prefix):
            return alg, what
    return None


def check_line_protection(atr: bytes, alg: LineAlg) -> None:
    """Raise :class:`WrongLineProtection` when the ATR shows a card whose line protection is
    not ``alg``; an unknown ATR passes (the profile rules: module doc)."""
    found = line_protection_of(atr)
    if found is None or found[0] == alg:
        return
    card_alg, what = found
    setting = "sm4" if card_alg == "sm4" else "3des"
    raise WrongLineProtection(
        f"the card is {what} (ATR {atr.hex().upper()}) but the profile's line protection is {_NAMES[alg]}: "
        f"no key, MAC or cryptogram was sent; use a card model with {_NAMES[alg]} line protection, or a profile with "
        f"[card] line_protection = \"{setting}\" (docs/sm4.md)")
