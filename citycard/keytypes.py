"""FMCOS key types (UM p.74, SPEC §1.4): the one name table of citycard, shared by the host
(commands, planner, verification, shell) and the simulated card (its ``sim show`` labels and the
types it accepts).  A table of facts, not behaviour: it imports nothing of citycard."""

from __future__ import annotations

from enum import IntEnum


class KeyType(IntEnum):
    """FMCOS key types (UM p.74, SPEC §1.4): the one name table of citycard.

    The stored type byte may carry the change-protection flags of D1 (``0x80`` MAC,
    ``0xC0`` cipher+MAC): :meth:`of` strips them.
    """

    DES_ENCRYPT = 0x30
    DES_DECRYPT = 0x31
    DES_MAC = 0x32
    TAC = 0x34                 # internal key; the DTK of the purse (SPEC §2.2)
    TYPE_35 = 0x35
    LINE_PROTECTION = 0x36     # DAMK
    PIN_UNBLOCK = 0x37
    PIN_RELOAD = 0x38
    EXTERNAL_AUTH = 0x39       # id 00: the DF's master key
    PIN = 0x3A
    OVERDRAW = 0x3C
    UNLOAD = 0x3D
    PURCHASE = 0x3E            # DPK
    LOAD = 0x3F                # DLK

    @property
    def label(self) -> str:
        """The name users read ("external-auth", "line-protection (DAMK)", ...)."""
        return _KEY_LABELS[self]

    @property
    def has_error_counter(self) -> bool:
        """Whether byte 4 of the record is an error counter (else: the algorithm id)."""
        return self in _COUNTER_TYPES

    @classmethod
    def of(cls, type_byte: int) -> KeyType:
        """The key type of a stored type byte, flags (D1) removed; ValueError if unknown."""
        return cls(type_byte & 0x3F)

    @classmethod
    def label_of(cls, type_byte: int | None, default: str = "") -> str:
        """The label of ``type_byte``, or ``default`` (its hex when empty) if it is no key type."""
        try:
            return cls.of(type_byte).label if type_byte is not None else default
        except ValueError:
            return default or hex(type_byte or 0)


_KEY_LABELS = {
    KeyType.DES_ENCRYPT: "DES-encrypt", KeyType.DES_DECRYPT: "DES-decrypt", KeyType.DES_MAC: "DES-MAC",
    KeyType.TAC: "TAC", KeyType.TYPE_35: "type-35", KeyType.LINE_PROTECTION: "line-protection (DAMK)",
    KeyType.PIN_UNBLOCK: "PIN-unblock", KeyType.PIN_RELOAD: "PIN-reload", KeyType.EXTERNAL_AUTH: "external-auth",
    KeyType.PIN: "PIN", KeyType.OVERDRAW: "overdraw", KeyType.UNLOAD: "unload", KeyType.PURCHASE: "purchase",
    KeyType.LOAD: "load",
}
_COUNTER_TYPES = frozenset({KeyType.LINE_PROTECTION, KeyType.PIN_UNBLOCK, KeyType.PIN_RELOAD,
                            KeyType.EXTERNAL_AUTH, KeyType.PIN})
#: the keys whose cipher is the card's line protection: master / external auth 39, DAMK 36, PIN
#: unblock 37, PIN reload 38 (docs/sm4.md "SM4 line protection"): 16-byte SM4 keys exactly on a
#: card whose line protection is SM4 (the profile's ``[card] line_protection``, the card model's)
LINE_CIPHER_TYPES = frozenset({KeyType.EXTERNAL_AUTH, KeyType.LINE_PROTECTION, KeyType.PIN_UNBLOCK,
                               KeyType.PIN_RELOAD})


class PsamKeyUsage(IntEnum):
    """Type bits (b5–b1) of a PSAM key usage byte, the KSY list (PSAM-SM4.md §1.2); b8–b6 hold
    the levels of diversification (0–3): ``22``/``42``/``62`` = purchase master with 1/2/3
    levels (PSAMB), ``25``/``45`` maintenance (MZT).  Not FMCOS types: a PSAM stores them in
    the first byte of its key record (docs/psam.md)."""

    MASTER = 0x00
    PURCHASE = 0x02
    MAINTENANCE = 0x05
    MAC = 0x06
    ENCRYPT = 0x07
    MAC_ENCRYPT = 0x08
    LOAD = 0x09
    TAC = 0x0C
    PIN = 0x0D
    EXTERNAL_AUTH = 0x0E
    INTERNAL_AUTH = 0x0F

    def usage_byte(self, levels: int) -> int:
        """The key usage byte: ``levels`` (0–3) in b8–b6, this type in b5–b1."""
        if not 0 <= levels <= 3:
            raise ValueError(f"diversification levels {levels}: 0..3")
        return levels << 5 | int(self)


#: the profile's names of the PSAM key usages (``type = "psam-purchase"``)
PSAM_KEY_NAMES: dict[str, PsamKeyUsage] = {
    "psam-purchase": PsamKeyUsage.PURCHASE, "psam-maintenance": PsamKeyUsage.MAINTENANCE,
    "psam-mac": PsamKeyUsage.MAC, "psam-encrypt": PsamKeyUsage.ENCRYPT,
    "psam-mac-encrypt": PsamKeyUsage.MAC_ENCRYPT, "psam-load": PsamKeyUsage.LOAD, "psam-tac": PsamKeyUsage.TAC,
}


def is_psam_usage(type_byte: int) -> bool:
    """A PSAM key usage byte rather than an FMCOS key type (``3x`` with D1's flag bits)."""
    return type_byte & 0x30 != 0x30


def psam_label(type_byte: int) -> str:
    """``"psam-purchase, 1 level"`` for a PSAM key usage byte (its hex if the type is unnamed)."""
    names = {int(v): k for k, v in PSAM_KEY_NAMES.items()}
    levels = type_byte >> 5
    name = names.get(type_byte & 0x1F, f"psam-type-{type_byte & 0x1F:02X}")
    return f"{name}, {levels} level{'' if levels == 1 else 's'}"
