"""CardSpec: the validated, immutable model of one card type (DESIGN.md).

Built from a profile by :mod:`citycard.profile`; the planner reads only this.
Access conditions are AC bytes (SPEC.md §1.1), file and key types the bytes of
SPEC.md §1.2 and §1.4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .commands.fmcos import KeyType

# --------------------------------------------------------------------------- access conditions
AC_FREE = 0xF0
AC_NEVER = 0xEF


def ac_allows(ac: int, sr: int, mf_sr: int) -> bool:
    """Whether AC byte ``ac`` is met with DF SR ``sr`` and MF SR ``mf_sr`` (SPEC §1.1)."""
    x, y = ac >> 4, ac & 0x0F
    if x == 0:
        return mf_sr >= y
    if x < y:
        return False
    return y <= sr <= x


def ac_text(ac: int) -> str:
    """The compact string of an AC byte (inverse of :func:`parse_ac`)."""
    x, y = ac >> 4, ac & 0x0F
    if ac == AC_FREE or (x == 0 and y == 0):
        return "free"
    if x == 0:
        return f"mf>={y}"
    if x < y:
        return "never"
    if x == y:
        return f"sr={x}"
    if x == 0xF:
        return f"sr>={y}"
    if y == 0:
        return f"sr<={x}"
    return f"sr={y}..{x}"


def parse_ac(text: Any) -> int:
    """A compact access-condition string → AC byte.

    ``free`` (F0), ``never`` (EF), ``sr>=N`` (FN), ``sr=N`` (NN), ``sr<=N`` (N0),
    ``sr=A..B`` (BA), ``mf>=N`` (0N), or the raw byte as two hex digits (``"F1"``).
    Raises ValueError with a short reason.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string such as \"free\", \"never\", \"sr>=1\", got {text!r}")
    t = text.strip().lower().replace(" ", "")
    if t == "free":
        return AC_FREE
    if t == "never":
        return AC_NEVER

    def level(s: str) -> int:
        if not s.isdigit() and not (len(s) == 1 and s in "abcdef"):
            raise ValueError(f"{text!r}: security level {s!r} is not 0..15")
        n = int(s, 16) if not s.isdigit() else int(s)
        if not 0 <= n <= 15:
            raise ValueError(f"{text!r}: security level {n} is not 0..15")
        return n

    if t.startswith("sr>="):
        return 0xF0 | level(t[4:])
    if t.startswith("sr<="):
        return level(t[4:]) << 4
    if t.startswith("mf>="):
        return level(t[4:])
    if t.startswith("sr="):
        rest = t[3:]
        if ".." in rest:
            lo, hi = (level(p) for p in rest.split("..", 1))
            if lo > hi:
                raise ValueError(f"{text!r}: empty range")
            return (hi << 4) | lo
        n = level(rest)
        return (n << 4) | n
    if len(t) == 2 and all(c in "0123456789abcdef" for c in t):
        return int(t, 16)
    raise ValueError(f"{text!r} is not an access condition (free, never, sr>=N, sr=N, sr<=N, sr=A..B, mf>=N,"
                     " or two hex digits)")


# --------------------------------------------------------------------------- command data
MAX_LC = 239     # longest command data field an FM1208 takes (SPEC §6 R7, UM 7)


def data_room(protect: str, line_alg: str = "des") -> int:
    """The most plain data bytes one command can carry so that its Lc stays within
    :data:`MAX_LC` (SPEC §6 R7): plain 239; with a MAC 235 (4 bytes of MAC); enciphered
    230 (``LD ‖ data ‖ 80 00..`` padded to 8 bytes inside 235, then the MAC; SPEC §1.6), or
    222 on a card whose line protection is SM4 (``line_alg="sm4"``: padded to 16 bytes,
    docs/sm4.md decision 13)."""
    if protect == "plain":
        return MAX_LC
    room = MAX_LC - 4
    if protect == "cipher":
        block = 16 if line_alg == "sm4" else 8
        room = (room // block) * block - 2
    return room


# --------------------------------------------------------------------------- keys
# the profile's words for the key types of citycard.commands.fmcos.KeyType (aliases included)
KEY_TYPES: dict[str, int] = {name: int(t) for name, t in {
    "des-encrypt": KeyType.DES_ENCRYPT, "des-decrypt": KeyType.DES_DECRYPT, "des-mac": KeyType.DES_MAC,
    "tac": KeyType.TAC, "internal": KeyType.TAC, "line-protection": KeyType.LINE_PROTECTION,
    "damk": KeyType.LINE_PROTECTION, "pin-unblock": KeyType.PIN_UNBLOCK, "pin-reload": KeyType.PIN_RELOAD,
    "external-auth": KeyType.EXTERNAL_AUTH, "pin": KeyType.PIN, "overdraw": KeyType.OVERDRAW,
    "unload": KeyType.UNLOAD, "purchase": KeyType.PURCHASE, "load": KeyType.LOAD,
}.items()}
Protection = Literal["plain", "mac", "cipher"]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key slot of a DF's KEY file.

    ``master`` is (unit, role) in the key sources; the per-card key is its PBOC
    diversification with ``factor`` (SPEC §2.4).  A PIN has ``pin`` (a binding) instead.
    ``write`` is how WRITE KEY sends it; ``change`` the protection flag stored in its type
    byte (D1): later changes need MAC (0x80) or cipher+MAC (0xC0).  ``export``: the profile
    lets this per-card key out of a hardware security module to be written in clear
    (``write`` plain or mac; docs/keys.md).
    """

    name: str
    ktype: int                 # base type 30..3F, or a PSAM key usage byte (docs/psam.md)
    kid: int
    usage_ac: int
    change_ac: int
    b3: int                    # follow-up state, or version
    b4: int                    # error counter byte, or algorithm id
    length: int = 16
    master: tuple[str, str] | None = None
    factor: str | None = "@app_serial"   # None: the master itself (a PSAM key, docs/psam.md)
    pin: Any = None            # PIN binding (string with $column / constant digits)
    write: Protection = "plain"
    change_flag: int = 0x00
    path: str = ""
    export: bool = False
    alg: Literal["des", "sm4"] = "des"   # the key's cipher family: DES/3DES, or SM4 (docs/sm4.md)
    master_version: bool = False         # version = "master": the record's version byte is the version of
                                         # the master issuing it; terminals and clearing take the card's
                                         # (key inventory rotation, docs/keys.md)

    @property
    def type_byte(self) -> int:
        return self.ktype | self.change_flag

    @property
    def follow_up(self) -> int | None:
        return self.b3 & 0x0F if self.ktype in (0x39, 0x3A) else None


# --------------------------------------------------------------------------- files
FileKind = Literal["binary", "fixed", "variable", "cyclic", "ed", "ep"]
FILE_TYPE_BYTES = {"binary": 0x28, "fixed": 0x2A, "variable": 0x2C, "cyclic": 0x2E, "ed": 0x2F, "ep": 0x2F}


@dataclass(frozen=True, slots=True)
class FileSpec:
    name: str
    fid: int
    kind: FileKind
    read_ac: int = AC_FREE
    write_ac: int = AC_FREE
    size: int = 0                      # binary size, or variable-file space
    nrec: int = 0
    reclen: int = 0
    write_protect: Protection = "plain"
    write_key: int = 0                 # id of the 36 key for writes
    read_protect: bool = False
    read_key: int = 0
    layout: str | None = None
    data: dict[str, Any] = field(default_factory=dict)   # bindings for a binary layout / TLV layout
    records: tuple[Any, ...] = ()      # record files: one binding dict (layout) or hex string per record
    usage_ac: int = AC_FREE            # purse
    tac_key: int = 0
    detail_sfi: int = 0x18
    path: str = ""

    @property
    def sfi(self) -> int:
        return self.fid & 0x1F

    @property
    def type_byte(self) -> int:
        t = FILE_TYPE_BYTES[self.kind]
        if self.kind in ("ed", "ep"):
            return t
        if self.write_protect == "mac":
            t |= 0x80
        elif self.write_protect == "cipher":
            t |= 0xC0
        return t

    @property
    def key_byte(self) -> int:
        """Byte 7 of CREATE FILE (SPEC §1.2)."""
        b = 0x70 | ((3 - self.read_key) << 2) | (3 - self.write_key)
        if not self.read_protect:
            b |= 0x80
        return b

    @property
    def physical_size(self) -> int:
        """Bytes taken from the DF's space (docs/sim.md, SPEC §1.2 for record files)."""
        if self.kind == "binary":
            return self.size + 8
        if self.kind == "variable":
            return self.size + 8
        if self.kind in ("ed", "ep"):
            return 24
        return self.nrec * (self.reclen + 1) + 8


DEFAULT_APP_SFI_BYTE = 0x95    # SPEC §6 R6: BLOG16, LAB, CSDN


@dataclass(frozen=True, slots=True)
class DFSpec:
    name: str
    fid: int
    aid: bytes
    unit: str | None
    space: int
    create_ac: int
    erase_ac: int
    fci_sfi: int | None                 # SFI whose content goes in FCI 9F0C (b8 of the SFI byte)
    dir_sfi: int | None                 # otherwise: the SFI shown in 88
    keyfile_fid: int
    keyfile_space: int
    keyfile_add_ac: int
    keys: tuple[KeySpec, ...]
    files: tuple[FileSpec, ...]
    label: str = ""
    auth_code: Any = None               # MOHURD authentication code binding (D7), None = off
    path: str = ""

    @property
    def sfi_byte(self) -> int:
        """Byte 6 of CREATE DF, the application-file SFI (SPEC §1.2): ``80 | fci_sfi``, or
        ``dir_sfi``, else ``95`` as every real script writes (SPEC §6 R6; ``00`` is unproven)."""
        if self.fci_sfi is not None:
            return 0x80 | self.fci_sfi
        return self.dir_sfi if self.dir_sfi is not None else DEFAULT_APP_SFI_BYTE

    @property
    def keyfile_sfi_byte(self) -> int:
        """Byte 4 of the KEY file: DF SFI with its type bits (SPEC §1.2)."""
        return self.sfi_byte if self.fid != 0x3F00 else 0x01

    def key(self, name: str) -> KeySpec | None:
        for k in self.keys:
            if k.name == name:
                return k
        return None

    def master_key(self) -> KeySpec | None:
        for k in self.keys:
            if k.ktype == 0x39 and k.kid == 0:
                return k
        return None

    def used_space(self) -> int:
        return sum(f.physical_size for f in self.files) + self.keyfile_space + 8


@dataclass(frozen=True, slots=True)
class TransportKey:
    """The factory external-auth key of the MF that issuance authenticates with first
    (SPEC §6 R1, R2): a key-source entry (``source`` = (unit, role), used as it is, its left
    half when ``length`` is 8), or a literal public factory value.  ``length`` is the length
    of the key *on the card* (8: single DES, the default of a blank FM1208; 16: 2-key 3DES),
    ``kid`` its key id (P2 of EXTERNAL AUTHENTICATE)."""

    source: tuple[str, str] | None = None
    value: bytes | None = field(default=b"\xFF" * 8, repr=False)     # a profile's literal key: never shown
    length: int = 8
    kid: int = 0x00
    path: str = "card.transport_key"


FACTORY_TRANSPORT_KEY = TransportKey()
#: the factory transport key of a card whose line protection is SM4 (the simulated ``fmcos-sm4``:
#: 16×FF, an SM4 key; docs/sm4.md, the simulator's choice: no source shows an SM4 FMCOS)
FACTORY_TRANSPORT_KEY_SM4 = TransportKey(value=b"\xFF" * 16, length=16)


@dataclass(frozen=True, slots=True)
class CardSpec:
    name: str
    title: str
    source: str
    transport_key: TransportKey             # the factory key of the MF (default 8×FF, id 00: SPEC §6 R1)
    serial_prefix: str                      # BCD digits before the card number
    serial_digits: int                      # total digits of the card serial
    validity_years: int
    rerun: Literal["erase", "refuse"]
    mf: DFSpec
    apps: tuple[DFSpec, ...]
    columns: tuple[str, ...]                # cardholder columns the bindings use
    units: dict[str, str] = field(default_factory=dict)
    production: bool = False                # [profile] production: TEST KEYS refused (issue 17 item 5)
    replacement_wait_days: int = 0          # [card]: days after a loss before a replacement (docs/lifecycle.md)
    line_alg: Literal["des", "sm4"] = "des"  # [card] line_protection: the COS's secure-messaging cipher (docs/sm4.md)

    @property
    def card_model(self) -> str:
        """The simulated card model such a profile needs (``citycard sim new --model``)."""
        return "fmcos-sm4" if self.line_alg == "sm4" else "fm1208"

    def dfs(self) -> tuple[DFSpec, ...]:
        return (self.mf, *self.apps)

    def app(self, name: str) -> DFSpec | None:
        for a in self.apps:
            if a.name == name:
                return a
        return None

    def masters(self) -> set[tuple[str, str]]:
        out = {k.master for df in self.dfs() for k in df.keys if k.master is not None}
        if self.transport_key.source is not None:
            out.add(self.transport_key.source)
        return out
