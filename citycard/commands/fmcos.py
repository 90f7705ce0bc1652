"""FMCOS administration commands (SPEC.md §1.2–§1.5, UM §7): builders only.

CREATE FILE for each file type, ERASE DF, WRITE KEY and its record, PIN management and
blocking.  The commands that must travel under line protection (CARD/APPLICATION BLOCK,
APPLICATION UNBLOCK, PIN UNBLOCK, flagged key changes) are built here in their plain form
(CLA ``80``); the transport stack's :class:`~citycard.transport.protection.LineProtection`
sets CLA ``84``, enciphers where asked and appends the MAC (SPEC §1.6).
"""

from __future__ import annotations

from enum import IntEnum

from ..apdu import CommandApdu
from ..errors import InputError
from ..keytypes import KeyType  # noqa: F401  (re-exported: the commands speak of key types)


class FileType(IntEnum):
    """Byte 1 of CREATE FILE (SPEC §1.2)."""

    DF = 0x38
    BINARY = 0x28
    FIXED = 0x2A
    VARIABLE = 0x2C
    CYCLIC = 0x2E
    PURSE = 0x2F               # PBOC ED/EP
    KEY = 0x3F


class Protection(IntEnum):
    """Line-protection flags OR-ed into a file or key type byte (D1)."""

    PLAIN = 0x00
    MAC = 0x80
    CIPHER = 0xC0


ED_FID = 0x0001                # UM p.90: fixed FIDs of the purses
EP_FID = 0x0002


def _fid(fid: int) -> tuple[int, int]:
    if not 0 <= fid <= 0xFFFF:
        raise InputError(f"FID 0x{fid:X} is not 2 bytes")
    return fid >> 8, fid & 0xFF


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise InputError(f"{what} {value} outside 0..65535")
    return value.to_bytes(2, "big")


def _b(*values: int) -> bytes:
    for v in values:
        if not 0 <= v <= 0xFF:
            raise InputError(f"0x{v:X} is not a byte")
    return bytes(values)


def _create(fid: int, body: bytes) -> CommandApdu:
    return CommandApdu(0x80, 0xE0, *_fid(fid), body)


# ---------------------------------------------------------------------- CREATE FILE
def create_df(fid: int, name: bytes, *, space: int, create_ac: int, erase_ac: int,
              app_sfi: int = 0x95) -> CommandApdu:
    """MF/DF: ``38 space(2) createAC eraseAC appSFI FF FF name`` (SPEC §1.2; R6: real
    scripts use ``95``, the SFI whose content SELECT returns in FCI ``9F0C``)."""
    if not 1 <= len(name) <= 16:
        raise InputError(f"DF name of {len(name)} bytes, expected 1..16")
    return _create(fid, _b(FileType.DF) + _u16(space, "DF space") + _b(create_ac, erase_ac, app_sfi, 0xFF, 0xFF)
                   + bytes(name))


def create_key_file(fid: int, *, space: int, df_sfi: int, add_ac: int) -> CommandApdu:
    """KEY file: ``3F space(2) DF-SFI addAC FF FF`` (SPEC §1.2; ``01`` in the MF, ``95`` in an ADF)."""
    return _create(fid, _b(FileType.KEY) + _u16(space, "key file space") + _b(df_sfi, add_ac, 0xFF, 0xFF))


def _data_ef(ftype: FileType, protection: int, fid: int, shape: bytes, read_ac: int, write_ac: int,
             key_byte: int) -> CommandApdu:
    if protection & ~0xC0:
        raise InputError(f"protection flags 0x{protection:02X}: only 80 (MAC) and 40 (cipher)")
    return _create(fid, _b(ftype | protection) + shape + _b(read_ac, write_ac, 0xFF, key_byte))


def create_binary(fid: int, size: int, *, read_ac: int, write_ac: int, key_byte: int = 0xFF,
                  protection: int = Protection.PLAIN) -> CommandApdu:
    """Binary EF: ``28|flags size(2) readAC writeAC FF keybyte``; ``key_byte`` is byte 7
    (read protection and line-protection key ids, SPEC §1.2)."""
    return _data_ef(FileType.BINARY, protection, fid, _u16(size, "file size"), read_ac, write_ac, key_byte)


def create_fixed(fid: int, records: int, record_length: int, *, read_ac: int, write_ac: int,
                 key_byte: int = 0xFF, protection: int = Protection.PLAIN) -> CommandApdu:
    """Fixed-record EF: ``2A|flags n len readAC writeAC FF keybyte``."""
    return _data_ef(FileType.FIXED, protection, fid, _b(records, record_length), read_ac, write_ac, key_byte)


def create_variable(fid: int, space: int, *, read_ac: int, write_ac: int, key_byte: int = 0xFF,
                    protection: int = Protection.PLAIN) -> CommandApdu:
    """Variable-record (TLV) EF: ``2C|flags space(2) readAC writeAC FF keybyte``."""
    return _data_ef(FileType.VARIABLE, protection, fid, _u16(space, "file space"), read_ac, write_ac, key_byte)


def create_cyclic(fid: int, records: int, record_length: int, *, read_ac: int, write_ac: int,
                  key_byte: int = 0xFF, protection: int = Protection.PLAIN) -> CommandApdu:
    """Cyclic EF: ``2E|flags n len readAC writeAC FF keybyte``."""
    return _data_ef(FileType.CYCLIC, protection, fid, _b(records, record_length), read_ac, write_ac, key_byte)


def create_purse(fid: int, *, usage_ac: int, tac_key_id: int = 0x00, detail_sfi: int = 0x18) -> CommandApdu:
    """PBOC ED (FID 0001) or EP (0002): ``2F 02 08 usageAC tacKeyId FF detailSFI`` (SPEC §1.2;
    byte 5 is the TAC key id, D3)."""
    return _create(fid, _b(FileType.PURSE, 0x02, 0x08, usage_ac, tac_key_id, 0xFF, detail_sfi))


# ---------------------------------------------------------------------- ERASE DF
def erase_df() -> CommandApdu:
    """ERASE DF ``80 0E 00 00`` (SPEC §1.3 writes it ``80 0E 00 00 00``, an empty Lc/Le:
    citycard sends the 4-byte case-1 form, which real scripts accept, R2)."""
    return CommandApdu(0x80, 0x0E, 0x00, 0x00)


# ---------------------------------------------------------------------- WRITE KEY
def key_record(key_type: int, usage_ac: int, change_ac: int, state_or_version: int,
               counter_or_algorithm: int, value: bytes) -> bytes:
    """A WRITE KEY record (SPEC §1.4): type byte (with D1 flags), usage AC, change AC, then
    follow-up state (or ``FF``) and error counter for types 36–3A, key version and
    algorithm id for the others, then the key (or the PIN)."""
    return _b(key_type, usage_ac, change_ac, state_or_version, counter_or_algorithm) + bytes(value)


def write_key(key_id: int, record: bytes, *, stored_type: int | None = None) -> CommandApdu:
    """WRITE KEY ``80 D4 P1 kid Lc record``: add (P1 ``01``) or, with ``stored_type``, update
    the key stored with that type byte (P1 = the type, SPEC §1.4, R17).  Sensitive."""
    if key_id == 0xFF:
        raise InputError("key id FF is reserved (SPEC §1.4)")
    p1 = 0x01 if stored_type is None else stored_type
    return CommandApdu(0x80, 0xD4, *_b(p1, key_id), bytes(record), sensitive=True)


# ---------------------------------------------------------------------- PINs
def change_pin(pin_id: int, old: bytes, new: bytes) -> CommandApdu:
    """CHANGE PIN ``80 5E 01 kid Lc old ‖ FF ‖ new`` (SPEC §1.5).  Sensitive."""
    return CommandApdu(0x80, 0x5E, 0x01, *_b(pin_id), bytes(old) + b"\xFF" + bytes(new), sensitive=True)


def reload_pin(pin_id: int, new: bytes, mac: bytes) -> CommandApdu:
    """RELOAD PIN ``80 5E 00 kid Lc new ‖ MAC4``; the MAC is over the new PIN with the
    reload key's left ⊕ right half, IV 0 (D2).  Sensitive."""
    if len(mac) != 4:
        raise InputError(f"RELOAD PIN MAC of {len(mac)} bytes, expected 4")
    return CommandApdu(0x80, 0x5E, 0x00, *_b(pin_id), bytes(new) + bytes(mac), sensitive=True)


def unblock_pin(pin_id: int, new: bytes) -> CommandApdu:
    """PIN UNBLOCK in plain form ``80 24 00 kid Lc PIN``: it must be sent enciphered and
    MAC'd under the PIN-unblock key (``84 24``, D2, R16).  Sensitive."""
    return CommandApdu(0x80, 0x24, 0x00, *_b(pin_id), bytes(new), sensitive=True)


# ---------------------------------------------------------------------- blocking
def card_block() -> CommandApdu:
    """CARD BLOCK ``80 16 00 00``, to be MAC'd with the 36 key (``84 16 00 00 04 MAC``)."""
    return CommandApdu(0x80, 0x16, 0x00, 0x00)


def app_block(permanent: bool = False) -> CommandApdu:
    """APPLICATION BLOCK ``80 1E 00 P2``, P2 ``00`` temporary, ``01`` permanent; to be MAC'd."""
    return CommandApdu(0x80, 0x1E, 0x00, 0x01 if permanent else 0x00)


def app_unblock() -> CommandApdu:
    """APPLICATION UNBLOCK ``80 18 00 00``; to be MAC'd."""
    return CommandApdu(0x80, 0x18, 0x00, 0x00)
