"""A tiny do-little card for testing hosts through pcscd (implements ``VirtualCard``).

Commands (CLA ``00`` or ``80``, else ``6E00``; unknown INS ``6D00``; under 4 bytes
or an Lc that does not match the body ``6700``; short APDUs only):

* SELECT ``A4``: P1P2 ``0400`` with the AID ``1PAY.SYS.DDF01`` or ``0000`` with
  ``3F00`` -> ``6117``, the FCI waiting for GET RESPONSE (T=0 style); any other
  P1P2 -> ``6A86``; any other selection -> ``6A82``.
* GET RESPONSE ``C0``: up to Le (``00`` = 256) bytes of the pending data with
  ``9000``, or ``61xx`` while more remains; nothing pending -> ``6985``.
* GET CHALLENGE ``84``: Le ``04`` or ``08`` -> that many random bytes, else ``6700``.
* READ BINARY ``B0``: 16 fixed bytes; offset not 0 -> ``6B00``; Le not ``10`` -> ``6C10``.
* ECHO ``EE``: returns the command data (the latency floor).

As with T=0, the pending response is lost on any other command, power off or reset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import reduce

__all__ = ["DEMO_AID", "DEMO_ATR", "DEMO_BINARY", "DEMO_FCI", "DemoCard", "atr_tck"]


def atr_tck(atr_without_tck: bytes) -> int:
    """TCK: the XOR of every ATR byte after TS."""
    return reduce(lambda a, b: a ^ b, atr_without_tck[1:], 0)


_ATR_BODY = bytes([0x3B, 0x80 | 8, 0x01]) + b"CITYCARD"  # TS, T0 (TD1, 8 hist.), TD1 (T=1)
DEMO_ATR = _ATR_BODY + bytes([atr_tck(_ATR_BODY)])
"""``3B 88 01 43 49 54 59 43 41 52 44 TCK``."""
DEMO_AID = b"1PAY.SYS.DDF01"
DEMO_FCI = bytes.fromhex("6F15840E") + DEMO_AID + bytes.fromhex("A503880101")
DEMO_BINARY = bytes(range(1, 17))

SW_OK = b"\x90\x00"
_MF = b"\x3f\x00"


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class DemoCard:
    """The demo card. ``atr`` may be replaced to test hosts with another ATR."""

    def __init__(self, atr: bytes = DEMO_ATR) -> None:
        self.atr = atr
        self.powered = False
        self._pending = b""
        self._handlers: dict[int, Callable[[bytes, bytes | None, int | None], bytes]] = {
            0xA4: self._select,
            0xC0: self._get_response,
            0x84: self._get_challenge,
            0xB0: self._read_binary,
            0xEE: self._echo,
        }

    def power_on(self) -> None:
        self.powered = True
        self._pending = b""

    def power_off(self) -> None:
        self.powered = False
        self._pending = b""

    def reset(self) -> None:
        self._pending = b""

    def process(self, apdu: bytes) -> bytes:
        """Execute one short command APDU; returns data || SW1 SW2."""
        n = len(apdu)
        if n < 4:
            return b"\x67\x00"
        if apdu[0] != 0x00 and apdu[0] != 0x80:
            return b"\x6e\x00"
        handler = self._handlers.get(apdu[1])
        if handler is None:
            return b"\x6d\x00"
        # Parse the body: case 1 (none), 2 (Le), 3 (Lc data), 4 (Lc data Le).
        if n == 4:
            data, le = None, None
        elif n == 5:
            data, le = None, apdu[4] or 256
        else:
            lc = apdu[4]
            if lc == 0 or n not in (5 + lc, 6 + lc):  # extended lengths unsupported
                return b"\x67\x00"
            data = apdu[5 : 5 + lc]
            le = None if n == 5 + lc else (apdu[-1] or 256)
        if apdu[1] != 0xC0:
            self._pending = b""
        return handler(apdu, data, le)

    # -- commands: (apdu, command data or None, Ne or None) -> response ----------
    def _select(self, apdu: bytes, data: bytes | None, le: int | None) -> bytes:
        p1p2 = apdu[2:4]
        if p1p2 == b"\x04\x00":
            found = data == DEMO_AID
        elif p1p2 == b"\x00\x00":
            found = data == _MF
        else:
            return b"\x6a\x86"
        if not found:
            return b"\x6a\x82"
        self._pending = DEMO_FCI
        return bytes([0x61, len(DEMO_FCI)])

    def _get_response(self, apdu: bytes, data: bytes | None, le: int | None) -> bytes:
        if data is not None or le is None:
            return b"\x67\x00"
        if apdu[2:4] != b"\x00\x00":
            return b"\x6a\x86"
        pending = self._pending
        if not pending:
            return b"\x69\x85"
        out, self._pending = pending[:le], pending[le:]
        if self._pending:
            return out + bytes([0x61, len(self._pending) & 0xFF])
        return out + SW_OK

    def _get_challenge(self, apdu: bytes, data: bytes | None, le: int | None) -> bytes:
        if apdu[2:4] != b"\x00\x00":
            return b"\x6a\x86"
        if data is not None or le not in (4, 8):
            return b"\x67\x00"
        return os.urandom(le) + SW_OK

    def _read_binary(self, apdu: bytes, data: bytes | None, le: int | None) -> bytes:
        if data is not None:
            return b"\x67\x00"
        if apdu[2:4] != b"\x00\x00":
            return b"\x6b\x00"
        if le != len(DEMO_BINARY):
            return bytes([0x6C, len(DEMO_BINARY)])
        return DEMO_BINARY + SW_OK

    def _echo(self, apdu: bytes, data: bytes | None, le: int | None) -> bytes:
        return data + SW_OK if data else SW_OK
