"""ISO/IEC 7816-4 commands as FMCOS takes them (SPEC.md §1.5, §6.3): builders only.

Every function returns a :class:`~citycard.apdu.CommandApdu`; none talks to a card.
Line protection (CLA ``04``, a MAC) is added by the transport stack
(:class:`~citycard.transport.protection.LineProtection`), not here.
"""

from __future__ import annotations

from enum import IntEnum

from ..apdu import CommandApdu
from ..errors import InputError

MF_FID = 0x3F00


class AuthMode(IntEnum):
    """P1 of INTERNAL AUTHENTICATE (SPEC §1.5): matches key types 30/31/32."""

    ENCRYPT = 0x00
    DECRYPT = 0x01
    MAC = 0x02


def _sfi(sfi: int) -> int:
    if not 0 <= sfi <= 0x1F:
        raise InputError(f"SFI 0x{sfi:X} is not 5 bits")
    return sfi


# ---------------------------------------------------------------------- SELECT
def select_fid(fid: int) -> CommandApdu:
    """SELECT by file identifier: ``00 A4 00 00 02 FID`` (``3F00`` from anywhere)."""
    if not 0 <= fid <= 0xFFFF:
        raise InputError(f"FID 0x{fid:X} is not 2 bytes")
    return CommandApdu(0x00, 0xA4, 0x00, 0x00, fid.to_bytes(2, "big"))


def select_mf() -> CommandApdu:
    """``00 A4 00 00 02 3F00``."""
    return select_fid(MF_FID)


def select_name(name: bytes) -> CommandApdu:
    """SELECT by DF name (AID): ``00 A4 04 00 Lc name``."""
    if not 1 <= len(name) <= 16:
        raise InputError(f"DF name of {len(name)} bytes, expected 1..16")
    return CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes(name))


# ---------------------------------------------------------------------- binary files
def _binary_p1p2(offset: int, sfi: int | None) -> tuple[int, int]:
    """P1 ``100xxxxx`` = SFI with P2 the offset (0..255); otherwise a 15-bit offset."""
    if sfi is not None:
        if not 0 <= offset <= 0xFF:
            raise InputError(f"offset {offset} with an SFI: at most 255 (P2)")
        return 0x80 | _sfi(sfi), offset
    if not 0 <= offset <= 0x7FFF:
        raise InputError(f"offset {offset} outside 0..32767")
    return offset >> 8, offset & 0xFF


def read_binary(offset: int = 0, ne: int = 256, *, sfi: int | None = None) -> CommandApdu:
    """READ BINARY ``00 B0 P1 P2 Le`` of the current EF, or of EF ``sfi``."""
    p1, p2 = _binary_p1p2(offset, sfi)
    return CommandApdu(0x00, 0xB0, p1, p2, ne=ne)


def update_binary(data: bytes, offset: int = 0, *, sfi: int | None = None) -> CommandApdu:
    """UPDATE BINARY ``00 D6 P1 P2 Lc data``."""
    p1, p2 = _binary_p1p2(offset, sfi)
    return CommandApdu(0x00, 0xD6, p1, p2, bytes(data))


# ---------------------------------------------------------------------- record files
def _record_p2(sfi: int | None, mode: int) -> int:
    if sfi is None:
        return mode
    if not 0 <= sfi <= 0x1F:
        raise InputError(f"SFI 0x{sfi:X} is not 5 bits")
    return sfi << 3 | mode


def read_record(number: int, *, sfi: int | None = None, ne: int | None = None) -> CommandApdu:
    """READ RECORD ``00 B2 rec P2 [Le]``, P2 = SFI<<3 | ``100`` (record number); no SFI:
    the current EF.  Without ``ne`` no Le is sent (the card answers the whole record)."""
    return CommandApdu(0x00, 0xB2, number, _record_p2(sfi, 0x04), ne=ne)     # CommandApdu checks the bytes


def update_record(number: int, data: bytes, *, sfi: int | None = None) -> CommandApdu:
    """UPDATE RECORD ``00 DC rec P2 Lc data`` (record number ``number``)."""
    return CommandApdu(0x00, 0xDC, number, _record_p2(sfi, 0x04), bytes(data))


def append_record(data: bytes, *, sfi: int | None = None) -> CommandApdu:
    """APPEND RECORD ``00 E2 00 P2 Lc data``, P2 = SFI<<3 | ``000`` (SPEC §6 R20 accepts
    ``100`` too).  On a cyclic file the new record becomes record 1."""
    return CommandApdu(0x00, 0xE2, 0x00, _record_p2(sfi, 0x00), bytes(data))


# ---------------------------------------------------------------------- security
def get_challenge(length: int = 4) -> CommandApdu:
    """GET CHALLENGE ``00 84 00 00 Le`` (4 or 8 bytes; valid for the next command only)."""
    if length not in (4, 8):
        raise InputError(f"challenge of {length} bytes, expected 4 or 8")
    return CommandApdu(0x00, 0x84, 0x00, 0x00, ne=length)


def external_authenticate(key_id: int, cryptogram: bytes) -> CommandApdu:
    """EXTERNAL AUTHENTICATE ``00 82 00 kid 08 E_K(challenge ‖ 00000000)`` (SPEC §1.5, §4 #1)."""
    return CommandApdu(0x00, 0x82, 0x00, key_id, bytes(cryptogram))


def internal_authenticate(mode: AuthMode | int, key_id: int, data: bytes) -> CommandApdu:
    """INTERNAL AUTHENTICATE ``00 88 P1 kid Lc data``; ``mode`` is :class:`AuthMode`."""
    return CommandApdu(0x00, 0x88, int(AuthMode(mode)), key_id, bytes(data))


def verify(key_id: int, pin: bytes) -> CommandApdu:
    """VERIFY ``00 20 00 kid Lc PIN`` (PIN in BCD padded with F); marked sensitive."""
    return CommandApdu(0x00, 0x20, 0x00, key_id, bytes(pin), sensitive=True)


def get_response(ne: int, *, cla: int = 0x00) -> CommandApdu:
    """GET RESPONSE ``CLA C0 00 00 Le`` (T=0, after ``61xx``)."""
    return CommandApdu(cla, 0xC0, 0x00, 0x00, ne=ne)
