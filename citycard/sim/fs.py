"""The simulated card's file system: DFs, EFs, key files and keys (SPEC.md §1.2, §1.4).

Plain objects with slots; every persistent change goes through :class:`~citycard.sim.nvm.Nvm`
(see ``card.py``).  Contents are immutable ``bytes`` / tuples so that each change is
one write step that can be undone.

Physical sizes (this simulator's space accounting; SPEC.md gives the record formula,
the rest is our decision, documented in docs/sim.md):

* binary EF: size + 8; fixed and cyclic record EF: n·(len+1) + 8 (SPEC §1.2);
  variable-record EF: space + 8; ED/EP file: 24; KEY file: its declared space + 8;
  DF: its declared space.  A key record uses key length + 8 bytes of the KEY file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..keytypes import KeyType

if TYPE_CHECKING:
    from .models import CardModel

# File type bytes (SPEC §1.2); b8 = MAC required, b7 = encryption required (D1).
FT_DF = 0x38
FT_BINARY = 0x28
FT_FIXED = 0x2A
FT_VARIABLE = 0x2C
FT_CYCLIC = 0x2E
FT_PURSE = 0x2F
FT_KEY = 0x3F
PROTECTION_BITS = 0xC0

KIND_NAMES = {
    FT_DF: "DF", FT_BINARY: "binary", FT_FIXED: "fixed-record", FT_VARIABLE: "variable-record",
    FT_CYCLIC: "cyclic", FT_PURSE: "purse", FT_KEY: "key file",
}

# Key types (SPEC §1.4); the two top bits are the change-protection flags (D1).
KT_DES_ENC, KT_DES_DEC, KT_DES_MAC = 0x30, 0x31, 0x32
KT_INTERNAL = 0x34          # DTK / TAC key
KT_LINE = 0x36              # file line-protection key, DAMK
KT_PIN_UNBLOCK = 0x37
KT_PIN_RELOAD = 0x38
KT_EXT_AUTH = 0x39
KT_PIN = 0x3A
KT_OVERDRAW = 0x3C
KT_UNLOAD = 0x3D
KT_PURCHASE = 0x3E
KT_LOAD = 0x3F
# The names and counter-carrying types come from the one key-type table (citycard.keytypes).
KEY_TYPE_NAMES = {int(t): t.label for t in KeyType}
# Types whose 4th record byte is an error counter (others: version, algorithm).
COUNTER_TYPES = frozenset(int(t) for t in KeyType if t.has_error_counter)
VALID_KEY_TYPES = frozenset(KEY_TYPE_NAMES)


class KeyRecord:
    """One key slot.  ``b3``/``b4`` are the record's 3rd and 4th bytes: follow-up state
    and error counter for counter types, version and algorithm for the others."""

    __slots__ = ("ktype", "kid", "usage_ac", "change_ac", "b3", "b4", "value")

    def __init__(self, ktype: int, kid: int, usage_ac: int, change_ac: int, b3: int, b4: int,
                 value: bytes) -> None:
        self.ktype, self.kid = ktype, kid
        self.usage_ac, self.change_ac, self.b3, self.b4 = usage_ac, change_ac, b3, b4
        self.value = value

    @property
    def base(self) -> int:
        return self.ktype & 0x3F | 0x30

    @property
    def tries_left(self) -> int:
        return self.b4 & 0x0F

    @property
    def max_tries(self) -> int:
        return self.b4 >> 4

    @property
    def locked(self) -> bool:
        return self.base in COUNTER_TYPES and self.b4 & 0x0F == 0

    @property
    def size(self) -> int:
        return len(self.value) + 8

    def record(self) -> bytes:
        return bytes((self.ktype, self.usage_ac, self.change_ac, self.b3, self.b4)) + self.value


class Node:
    __slots__ = ("fid", "ftype", "parent")

    fid: int
    ftype: int
    parent: "DF | None"

    @property
    def kind(self) -> int:
        return self.ftype & 0x3F

    @property
    def size(self) -> int:  # physical size in the parent's space
        raise NotImplementedError


class DF(Node):
    __slots__ = ("name", "space", "create_ac", "erase_ac", "sfi_byte", "children", "keyfile",
                 "auth_code", "block", "unblock_fails")

    def __init__(self, fid: int, name: bytes, space: int, create_ac: int, erase_ac: int,
                 sfi_byte: int, parent: DF | None = None) -> None:
        self.fid, self.ftype, self.parent = fid, FT_DF, parent
        self.name, self.space = name, space
        self.create_ac, self.erase_ac, self.sfi_byte = create_ac, erase_ac, sfi_byte
        self.children: dict[int, Node] = {}
        self.keyfile: KeyFile | None = None
        self.auth_code: bytes | None = None   # MOHURD 9-byte code (D7); None = option off
        self.block = 0                         # 0 none, 1 temporary, 2 permanent
        self.unblock_fails = 0

    @property
    def size(self) -> int:
        return self.space

    @property
    def depth(self) -> int:
        d, node = 0, self.parent
        while node is not None:
            d, node = d + 1, node.parent
        return d

    def used(self) -> int:
        total = sum(c.size for c in self.children.values())
        return total + (self.keyfile.size if self.keyfile is not None else 0)

    def free(self) -> int:
        return self.space - self.used()

    @property
    def empty(self) -> bool:
        return not self.children and self.keyfile is None

    def find_sfi(self, sfi: int) -> EF | None:
        for child in self.children.values():
            if isinstance(child, EF) and child.sfi == sfi:
                return child
        return None


class KeyFile(Node):
    __slots__ = ("space", "df_sfi", "add_ac", "keys")

    def __init__(self, fid: int, space: int, df_sfi: int, add_ac: int, parent: DF) -> None:
        self.fid, self.ftype, self.parent = fid, FT_KEY, parent
        self.space, self.df_sfi, self.add_ac = space, df_sfi, add_ac
        self.keys: dict[tuple[int, int], KeyRecord] = {}

    @property
    def size(self) -> int:
        return self.space + 8

    def free(self) -> int:
        return self.space - sum(k.size for k in self.keys.values())

    def get(self, base: int, kid: int) -> KeyRecord | None:
        return self.keys.get((base, kid))


class EF(Node):
    """A data EF.  ``b7`` is byte 7 of CREATE FILE: read/write line-protection keys."""

    __slots__ = ("read_ac", "write_ac", "b7")

    def __init__(self, fid: int, ftype: int, read_ac: int, write_ac: int, b7: int, parent: DF) -> None:
        self.fid, self.ftype, self.parent = fid, ftype, parent
        self.read_ac, self.write_ac, self.b7 = read_ac, write_ac, b7

    @property
    def sfi(self) -> int:
        return self.fid & 0x1F

    @property
    def write_mac(self) -> bool:
        return bool(self.ftype & 0x80)

    @property
    def write_enc(self) -> bool:
        return bool(self.ftype & 0x40)

    @property
    def read_protected(self) -> bool:
        return not self.b7 & 0x80

    @property
    def read_key_id(self) -> int:
        return 3 - ((self.b7 >> 2) & 0x03)

    @property
    def write_key_id(self) -> int:
        return 3 - (self.b7 & 0x03)


class BinaryEF(EF):
    """``written`` is False until the first UPDATE BINARY: a read answers ``6281`` before
    (SPEC §6 R13, UM 7.5)."""

    __slots__ = ("data", "written")

    def __init__(self, fid: int, ftype: int, size: int, read_ac: int, write_ac: int, b7: int,
                 parent: DF) -> None:
        super().__init__(fid, ftype, read_ac, write_ac, b7, parent)
        self.data = bytes(size)
        self.written = False

    @property
    def size(self) -> int:
        return len(self.data) + 8


class RecordEF(EF):
    """Fixed, cyclic or variable (TLV) records.  Cyclic: ``records[0]`` is the newest.

    A fixed-record file has all its records from creation, filled with ``00`` (SPEC §6 R21);
    ``appended`` counts the records APPEND RECORD has written (the next one it writes)."""

    __slots__ = ("nrec", "reclen", "space", "records", "appended")

    def __init__(self, fid: int, ftype: int, nrec: int, reclen: int, read_ac: int, write_ac: int,
                 b7: int, parent: DF) -> None:
        super().__init__(fid, ftype, read_ac, write_ac, b7, parent)
        self.nrec, self.reclen = nrec, reclen
        self.space = (nrec << 8) | reclen  # the two space bytes as one number (variable files)
        self.records: tuple[bytes, ...] = ()
        self.appended = 0
        if self.kind == FT_FIXED:
            self.records = (bytes(reclen),) * nrec

    @property
    def size(self) -> int:
        if self.kind == FT_VARIABLE:
            return self.space + 8
        return self.nrec * (self.reclen + 1) + 8

    def used(self) -> int:
        return sum(len(r) for r in self.records)


class PurseEF(EF):
    """ED (FID 0001) or EP (FID 0002).  ``last`` is the prove of the last completed
    transaction: (type, counter used, MAC or MAC2 or MAC3, TAC)."""

    __slots__ = ("usage_ac", "tac_kid", "detail_sfi", "balance", "online", "offline",
                 "overdraw", "last")

    def __init__(self, fid: int, usage_ac: int, tac_kid: int, detail_sfi: int, parent: DF) -> None:
        super().__init__(fid, FT_PURSE, usage_ac, 0xEF, 0xFF, parent)
        self.usage_ac, self.tac_kid, self.detail_sfi = usage_ac, tac_kid, detail_sfi
        self.balance = 0
        self.online = 0
        self.offline = 0
        self.overdraw = 0
        self.last: tuple[int, int, bytes, bytes] | None = None

    @property
    def size(self) -> int:
        return 24

    @property
    def is_ed(self) -> bool:
        return self.fid == 0x0001


MF_NAME = b"1PAY.SYS.DDF01"


def factory_mf(model: CardModel) -> DF:
    """The MF of a factory card of ``model``: MF ``3F00`` with a KEY file holding the transport
    (external-auth) key (SPEC §1.1, §6 R1, R8)."""
    mf = DF(0x3F00, MF_NAME, model.mf_space, model.mf_create_ac, model.mf_erase_ac, model.mf_sfi_byte)
    kf = KeyFile(0x0000, model.keyfile_space, 0x01, 0xF1, mf)
    kid = model.transport_key_id
    kf.keys[(KT_EXT_AUTH, kid)] = KeyRecord(KT_EXT_AUTH, kid, 0xF0, 0xF1, model.transport_follow_up,
                                            model.transport_counter, model.transport_key)
    mf.keyfile = kf
    return mf
