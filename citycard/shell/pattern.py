"""Expected status words and response patterns of the script language (docs/script.md).

* :class:`SwPattern`: four hex digits, ``X`` for any nibble (``9000``, ``61XX``, ``63CX``).
* :class:`ResponsePattern`: the whole response, data then SW1 SW2, written in hex where
  ``..`` is any one byte, ``X`` any nibble and ``*`` any run of bytes (possibly none);
  spaces are ignored.  ``6F..84 0E * 9000`` is an FCI starting ``6F``, any length byte,
  a DF name of 14 bytes, anything, then ``9000``.

Both are pure and carry the text they were written with, for messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..apdu import SwPattern
from ..errors import InputError

_HEX = "0123456789ABCDEF"


SW_OK = SwPattern("9000", 0x9000, 0xFFFF)


@dataclass(frozen=True, slots=True)
class ResponsePattern:
    """A pattern over ``data ‖ SW1 SW2`` (hex; ``..`` one byte, ``X`` a nibble, ``*`` a run)."""

    text: str
    regex: re.Pattern[str]
    min_len: int          # bytes the pattern needs at least

    @classmethod
    def parse(cls, text: str) -> ResponsePattern:
        compact = "".join(text.split()).upper()
        if not compact:
            raise InputError("empty response pattern")
        parts: list[str] = []
        i, n, fixed = 0, len(compact), 0
        while i < n:
            c = compact[i]
            if c == "*":
                if not parts or parts[-1] != "(?:[0-9A-F]{2})*":
                    parts.append("(?:[0-9A-F]{2})*")
                i += 1
                continue
            pair = compact[i:i + 2]
            if len(pair) < 2:
                raise InputError(f"response pattern {text.strip()!r}: odd number of hex digits "
                                 "(a byte is two digits, '..' any byte, '*' any run)")
            regex = ""
            for ch in pair:
                if ch in _HEX:
                    regex += ch
                elif ch in ".X":
                    regex += "[0-9A-F]"
                else:
                    raise InputError(f"response pattern {text.strip()!r}: {ch!r} is not a hex digit, "
                                     "'.', 'X' or '*'")
            parts.append(regex)
            fixed += 1
            i += 2
        if fixed < 2 and "*" not in compact:
            raise InputError(f"response pattern {text.strip()!r}: needs at least the two SW bytes")
        return cls(" ".join(text.split()).upper(), re.compile("".join(parts)), fixed)

    @classmethod
    def exact(cls, data: bytes, sw: int, wild: frozenset[int] = frozenset()) -> ResponsePattern:
        """The pattern of one response, with the data bytes at the indexes in ``wild`` as ``..``."""
        body = "".join(".." if i in wild else f"{b:02X}" for i, b in enumerate(data))
        return cls.parse(f"{body} {sw:04X}" if body else f"{sw:04X}")

    def matches(self, data: bytes, sw: int) -> bool:
        return self.regex.fullmatch((data + sw.to_bytes(2, "big")).hex().upper()) is not None

    def matches_bytes(self, raw: bytes) -> bool:
        """Match any byte string (``expect VALUE ~ PATTERN``)."""
        return self.regex.fullmatch(raw.hex().upper()) is not None

    def __str__(self) -> str:
        return self.text


def volatile_bytes(cmd: bytes, data: bytes) -> frozenset[int]:
    """Indexes of the response data bytes that differ from one run to the next by design:
    a GET CHALLENGE answer, the card's random (and load MAC1) of INITIALIZE FOR LOAD /
    PURCHASE / UNLOAD (SPEC §2.1).  A replayed exchange leaves them unchecked."""
    if len(cmd) < 4:
        return frozenset()
    cla, ins, p1 = cmd[0], cmd[1], cmd[2]
    if ins == 0x84 and cla & 0x80 == 0:
        return frozenset(range(len(data)))
    if ins == 0x50 and cla & 0xF0 == 0x80:
        if p1 in (0x00, 0x05) and len(data) >= 16:        # load / unload: random 4 ‖ MAC1 4
            return frozenset(range(8, 16))
        if p1 in (0x01, 0x02, 0x03) and len(data) >= 15:  # purchase / withdraw / CAPP: random 4
            return frozenset(range(11, 15))
    return frozenset()
