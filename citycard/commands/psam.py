"""PSAM commands (PSAM-SM4.md §1–§2): the terminal-side secure module that holds the purse
masters and computes MAC1 / checks MAC2 for a terminal that holds no keys.

Builders and frozen parsers only; the PSAM does the cryptography.  Sources: FNT (PBOC 2.0
fuel-card issuer), MZT (MOHURD bus validator), KSY/KSD (Kingstar), CSA (Changsha metro
reader), PSAMB (klks/fmcos-python analysis), JSB (MOHURD PSAM command list).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

from ..apdu import CommandApdu
from ..errors import InputError
from ..keytypes import PsamKeyUsage
from . import iso

# PSAM files (PSAM-SM4.md §1.1): SFIs of the binary EFs, read with 00 B0 (80|SFI) 00 Le
SFI_SERIAL = 0x15          # EF0015, 14 B: serial 10 ‖ version 1 ‖ key-card type 1 ‖ 2 B
SFI_TERMINAL = 0x16        # EF0016, 6 B: terminal number, BCD (MZT: 364001000748)
SFI_ISSUER = 0x17          # EF0017, 25 B: key index ‖ issuer id ‖ receiver id ‖ start ‖ expiry
SFI_TTSN = 0x19            # EF0019, 4 B: terminal transaction serial number (TTSN)
SERIAL_SIZE, TERMINAL_SIZE, ISSUER_SIZE, TTSN_SIZE = 14, 6, 25, 4

MAX_FACTORS = 3            # b8–b6 of the key usage byte: 0..3 levels (PSAMB, KSY)


KeyUsage = PsamKeyUsage   # the one table: citycard.keytypes (PSAM-SM4.md §1.2)


def usage_byte(usage: PsamKeyUsage | int, levels: int) -> int:
    """The key usage byte: levels of diversification in b8–b6, the type in b5–b1 (PSAMB:
    ``22``/``42``/``62`` = purchase master with 1/2/3 levels)."""
    if not 0 <= levels <= MAX_FACTORS:
        raise InputError(f"diversification levels {levels}: 0..{MAX_FACTORS}")
    if not 0 <= int(usage) <= 0x1F:
        raise InputError(f"key usage type 0x{int(usage):X} is not 5 bits")
    return levels << 5 | int(usage)


def split_usage(byte: int) -> tuple[int, int]:
    """(type, levels) of a key usage byte."""
    return byte & 0x1F, byte >> 5


class CipherMode(IntEnum):
    """P1 of CIPHER DATA ``80 FA`` (KSY): encryption or the MAC's place in a chain."""

    ENCRYPT_LAST = 0x00     # encrypt, the only or last block of data
    ENCRYPT_MORE = 0x02     # encrypt, more to follow
    MAC_LAST = 0x01         # MAC, last part of a chain
    MAC_NEXT = 0x03         # MAC, a middle part
    MAC_ONLY = 0x05         # MAC of one command (IV ‖ data)
    MAC_FIRST = 0x07        # MAC, first part (IV ‖ data)

    @property
    def is_mac(self) -> bool:
        return self in (CipherMode.MAC_LAST, CipherMode.MAC_NEXT, CipherMode.MAC_ONLY, CipherMode.MAC_FIRST)

    @property
    def final(self) -> bool:
        return self in (CipherMode.ENCRYPT_LAST, CipherMode.MAC_LAST, CipherMode.MAC_ONLY)

    @property
    def opens(self) -> bool:
        """Whether this part starts a MAC chain (its data begins with the 8-byte IV)."""
        return self in (CipherMode.MAC_ONLY, CipherMode.MAC_FIRST)


def _fixed(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise InputError(f"{what}: {len(value)} bytes, expected {length}")
    return bytes(value)


def _factors(factors: Sequence[bytes], most: int = MAX_FACTORS, least: int = 0) -> bytes:
    if not least <= len(factors) <= most:
        raise InputError(f"{len(factors)} diversification factors: {least}..{most}")
    for i, f in enumerate(factors):
        _fixed(f, 8, f"diversification factor {i + 1}")
    return b"".join(factors)


# ------------------------------------------------------------------------ purchase
def init_sam_for_purchase(random: bytes, counter: int, amount: int, transaction_type: int, date: bytes,
                          time: bytes, key_version: int, algorithm: int,
                          factors: Sequence[bytes]) -> CommandApdu:
    """INIT SAM FOR PURCHASE ``80 70 00 00 Lc`` card random 4 ‖ card offline counter 2 ‖
    amount 4 ‖ type 1 ‖ date 4 ‖ time 3 ‖ key version 1 ‖ algorithm 1 ‖ n×8 factors, Le ``08``
    (PSAM-SM4.md §2.1; Lc = 14 + 8n, n = 1..3, lowest level first: §2.2); answer
    :class:`SamPurchaseInit`."""
    if not 0 <= counter <= 0xFFFF:
        raise InputError(f"counter {counter} outside 0..65535")
    if not 0 <= amount <= 0xFFFFFFFF:
        raise InputError(f"amount {amount} does not fit in 4 bytes")
    for what, v in (("transaction type", transaction_type), ("key version", key_version), ("algorithm", algorithm)):
        if not 0 <= v <= 0xFF:
            raise InputError(f"{what} 0x{v:X} is not a byte")
    data = (_fixed(random, 4, "card random") + counter.to_bytes(2, "big") + amount.to_bytes(4, "big")
            + bytes((transaction_type,)) + _fixed(date, 4, "date") + _fixed(time, 3, "time")
            + bytes((key_version, algorithm)) + _factors(factors, least=1))
    return CommandApdu(0x80, 0x70, 0x00, 0x00, data, ne=8)


def credit_sam_for_purchase(mac2: bytes) -> CommandApdu:
    """CREDIT SAM FOR PURCHASE ``80 72 00 00 04`` MAC2: ``9000`` when the card's MAC2 is the
    PSAM's MAC(SESPK, amount) (PSAM-SM4.md §2.1)."""
    return CommandApdu(0x80, 0x72, 0x00, 0x00, _fixed(mac2, 4, "MAC2"))


def authentication_message(code: bytes) -> CommandApdu:
    """MOHURD AUTHENTICATION MESSAGE ``80 CA 00 00 09`` ‖ the card's code from its own
    ``80 CA 00 00 09``, no Le (JSB; MZT sends it before ``80 70``): the PSAM appends it to
    the MAC1 input (SPEC D7).  ``6300`` = wrong code."""
    return CommandApdu(0x80, 0xCA, 0x00, 0x00, _fixed(code, 9, "authentication code"))


# ------------------------------------------------------------------ MAC / encryption
def init_for_descrypt(usage: int, key_index: int, factors: Sequence[bytes] = ()) -> CommandApdu:
    """INIT FOR DESCRYPT ``80 1A usage index`` [Lc n×8 factors] (n = 0..3; FNT-L sends none,
    MZT serial ‖ city factor with P1 ``25``/``45``): a temporary key inside the PSAM for the
    CIPHER DATA that follow (PSAM-SM4.md §2.1, §3.2)."""
    for what, v in (("key usage", usage), ("key index", key_index)):
        if not 0 <= v <= 0xFF:
            raise InputError(f"{what} 0x{v:X} is not a byte")
    return CommandApdu(0x80, 0x1A, usage, key_index, _factors(factors))


def cipher_data(mode: CipherMode | int, data: bytes) -> CommandApdu:
    """CIPHER DATA ``80 FA P1 00 Lc`` data (PSAM-SM4.md §2.1, KSY): ciphertext, or the MAC (4
    bytes) after the last part of a MAC chain.  A MAC chain's first part starts with the
    8-byte IV.  The PSAM pads an incomplete last block with ``80 00..`` and adds nothing to
    an aligned one (docs/psam.md, decision 1), so hosts may pre-pad or not."""
    m = CipherMode(mode)
    if not data:
        raise InputError("CIPHER DATA: no data")
    if m.opens and len(data) < 8:
        raise InputError("CIPHER DATA: a MAC chain starts with an 8-byte IV")
    if m.is_mac:
        ne: int | None = 4 if m.final else None
    else:
        ne = -(-len(data) // 8) * 8 if m.final else len(data)
    return CommandApdu(0x80, 0xFA, int(m), 0x00, bytes(data), ne=ne)


def line_mac_input(cmd: CommandApdu, challenge: bytes, alg: str = "des") -> bytes:
    """The CIPHER DATA (P1 ``05``) data for the line-protection MAC of ``cmd`` with a card's
    ``challenge``: IV = challenge ‖ ``00``s to 8 bytes, then ``CLA|04 INS P1 P2 Lc+4`` ‖ data ‖
    ``80 00..`` (MZT, KSD: ``R ‖ 00000000 ‖ 841E000004800000`` for APPLICATION BLOCK, §3.2).
    ``alg="sm4"`` (a card whose line protection is SM4, an SM4 PSAM key: docs/sm4.md): the IV
    and the padding to 16 bytes, the SM4 block."""
    if len(challenge) not in (4, 8):
        raise InputError(f"challenge: {len(challenge)} bytes, expected 4 or 8")
    if len(cmd.data) + 4 > 0xFF:
        raise InputError("a line-protected command carries at most 251 bytes of data")
    bs = 16 if alg == "sm4" else 8
    header = bytes((cmd.cla | 0x04, cmd.ins, cmd.p1, cmd.p2, len(cmd.data) + 4))
    body = header + cmd.data + b"\x80"
    return challenge.ljust(bs, b"\x00") + body + bytes(-len(body) % bs)


def with_line_mac(cmd: CommandApdu, mac: bytes) -> CommandApdu:
    """``cmd`` as the card takes it under line protection: CLA ``|04``, data ‖ MAC 4."""
    return CommandApdu(cmd.cla | 0x04, cmd.ins, cmd.p1, cmd.p2, bytes(cmd.data) + _fixed(mac, 4, "MAC"), ne=cmd.ne)


# ------------------------------------------------------------------------ reads
def read_serial() -> CommandApdu:
    """``00 B0 95 00 0E``: EF0015, the PSAM serial and versions (PSAM-SM4.md §1.1)."""
    return iso.read_binary(0, SERIAL_SIZE, sfi=SFI_SERIAL)


def read_terminal_number() -> CommandApdu:
    """``00 B0 96 00 06``: EF0016, the terminal number (FNT, MZT, KSY, KSD)."""
    return iso.read_binary(0, TERMINAL_SIZE, sfi=SFI_TERMINAL)


def read_issuer_info() -> CommandApdu:
    """``00 B0 97 00 19``: EF0017, key index, issuer, receiver, dates (MZT)."""
    return iso.read_binary(0, ISSUER_SIZE, sfi=SFI_ISSUER)


def read_ttsn() -> CommandApdu:
    """``00 B0 99 00 04``: EF0019, the last terminal transaction serial number."""
    return iso.read_binary(0, TTSN_SIZE, sfi=SFI_TTSN)


# ---------------------------------------------------------------------- answers
@dataclass(frozen=True, slots=True)
class SamPurchaseInit:
    """Answer of INIT SAM FOR PURCHASE: TTSN 4 ‖ MAC1 4 (PSAM-SM4.md §2.1)."""

    ttsn: bytes
    mac1: bytes

    @property
    def ttsn_number(self) -> int:
        return int.from_bytes(self.ttsn, "big")

    @classmethod
    def parse(cls, data: bytes) -> SamPurchaseInit:
        if len(data) != 8:
            raise InputError(f"INIT SAM FOR PURCHASE: the PSAM answered {len(data)} bytes, expected 8")
        return cls(data[0:4], data[4:8])


@dataclass(frozen=True, slots=True)
class IssuerInfo:
    """EF0017 (25 B, MZT): byte 0 is the key index a terminal sends in the card's ``80 50``."""

    key_index: int
    issuer_id: bytes
    receiver_id: bytes
    start_date: bytes
    expiry_date: bytes

    @classmethod
    def parse(cls, data: bytes) -> IssuerInfo:
        if len(data) != ISSUER_SIZE:
            raise InputError(f"EF0017: the PSAM answered {len(data)} bytes, expected {ISSUER_SIZE}")
        return cls(data[0], data[1:9], data[9:17], data[17:21], data[21:25])
