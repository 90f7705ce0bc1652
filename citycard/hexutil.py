"""Hex at the edges: parse user-supplied hex with clear, located errors.

Inside citycard everything is ``bytes``; hex strings appear only in profiles,
CLI arguments, logs and reports (DESIGN.md, house rules).
"""

from __future__ import annotations

from .errors import InputError

_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_SEPARATORS = " \t\n\r:_"


def parse_hex(text: str, what: str = "hex value", *, length: int | tuple[int, ...] | None = None) -> bytes:
    """Parse ``text`` as hex; spaces, tabs, ``:`` and ``_`` between digits are allowed.

    ``what`` names the value in error messages ("--key", "APDU 2", ...). ``length``
    is the required byte length, or a tuple of allowed lengths.
    Errors name the offending character's 1-based position in ``text``.
    """
    if text.startswith(("0x", "0X")):
        text = "  " + text[2:]  # keep positions stable for error messages
    digits = []
    for pos, ch in enumerate(text, 1):
        if ch in _HEXDIGITS:
            digits.append(ch)
        elif ch not in _SEPARATORS:
            raise InputError(f"{what}: {ch!r} at position {pos} is not a hex digit")
    if len(digits) % 2:
        raise InputError(f"{what}: odd number of hex digits ({len(digits)})")
    value = bytes.fromhex("".join(digits))
    if length is not None:
        allowed = (length,) if isinstance(length, int) else length
        if len(value) not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise InputError(f"{what}: {len(value)} bytes, expected {want}")
    return value

