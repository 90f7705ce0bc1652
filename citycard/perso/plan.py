"""The planner: (CardSpec, one card's data, keys) → Plan, a list of Steps (DESIGN.md).

Pure: it touches no reader, so a plan can be printed (``perso --dry-run``), counted and
tested on its own.  It plans what real issuance does (SPEC §6.1; every step carries the rule
it relies on in ``Step.source``):

1. SELECT MF; EXTERNAL AUTHENTICATE with the factory transport key as the profile describes
   it (default 8×FF single DES, key id 00: R1).
2. ERASE DF in the MF, CREATE KEY FILE, WRITE KEY of the MF master in plaintext, back to back
   (R2: no published issuance updates the transport key in place; an update must keep the
   stored key's length).  Those three commands are the one window where a card cut leaves
   the MF without a key (docs/profile.md, "Issuance window"; the runner recognises it).
3. Further keys as the card accepts new keys (R4, UM 7.12): plaintext, plaintext+MAC under the
   DF's master (``write = "mac"``), enciphered+MAC only for key types with both change flags
   set (``protect_change = "cipher"``: CIPHK).  MF files and their data.
4. Every application DF, created while the MF is current (the MF stays free, R5).
5. Per application: SELECT by AID, key file, keys, files, data (DAMK-protected files with MAC),
   authentication code.

Minimal: binary data goes in as few UPDATE BINARY commands as Lc ≤ 239 allows (R7; by SFI,
so no SELECT), all-zero chunks are skipped (a new file reads zero), records are APPENDed by SFI.

Strict host: what a real card would refuse is refused here, with the profile's file, line and
key path: an enciphered add of an unflagged key type (at load), a record too long for one
command (at load for fixed/cyclic files, here for variable ones), a transport key that does
not fit the card's (R1).

Keys are ``bytes`` from a file key source, or key handles from a hardware security module
(:mod:`citycard.keys.handles`): protections and cryptograms use them alike.  A WRITE KEY
record needs the per-card key's value: from an HSM it is let out only as the profile says
(``export = true`` on a key sent in clear, i.e. written plain or with MAC only: such steps are
marked ``[key exported from the HSM]``; an enciphered WRITE KEY is enciphered by the HSM under
the DF's master and marked ``[key enciphered by the HSM]``).  HSM masters never come out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from ..apdu import CommandApdu
from ..commands import fmcos, iso, purse
from ..commands.fmcos import KeyType
from ..errors import InputError
from ..keys import KeySource
from ..keys.handles import Key, KeyHandleError, key_bytes
from ..crypto import ecb_encrypt
from ..profile import ProfileError, binding_columns, locate, pin_to_bytes
from ..spec import MAX_LC, CardSpec, DFSpec, FileSpec, KeySpec, data_room
from .context import CardData, Resolver

if TYPE_CHECKING:   # the cipher library is imported when a key is used (CLI start-up, issue 19)
    from ..crypto.cipher import Alg

EXPORTED = " [key exported from the HSM]"
ENCIPHERED = " [key enciphered by the HSM]"


@dataclass(frozen=True, slots=True)
class Step:
    """One command of a plan.

    ``kind``: ``apdu`` (send as is), ``protected`` (GET CHALLENGE, then the line-protected
    form under ``key``, enciphered when ``encrypt``), ``ext_auth`` (GET CHALLENGE, then
    EXTERNAL AUTHENTICATE with ``key``).  ``key`` never appears in repr or output.
    ``source``: the rule the step relies on, as source tags (``SPEC §6 R2; UM 7.3``).
    ``alg``: the cipher of a ``protected`` or ``ext_auth`` step, the card's line protection
    (``[card] line_protection``: ``sm4`` on a card whose COS does SM4, docs/sm4.md).
    """

    label: str
    cmd: CommandApdu
    kind: str = "apdu"
    expect: int = 0x9000
    key: Key | None = field(default=None, repr=False)     # bytes, or a key handle (HSM)
    encrypt: bool = False
    sensitive: bool = False
    df: str = ""
    source: str = ""
    alg: Alg = "des"

    @property
    def apdu_count(self) -> int:
        return 1 if self.kind == "apdu" else 2


@dataclass(frozen=True)
class Plan:
    card_serial: str
    steps: tuple[Step, ...]
    keys: dict[str, Key] = field(repr=False, default_factory=dict)   # "df/key" → per-card key or handle (verify)
    pins: dict[str, bytes] = field(repr=False, default_factory=dict)
    contents: dict[tuple[str, int], Any] = field(repr=False, default_factory=dict)  # (df, fid) → bytes | records

    # the fixed head of every plan (0-based indexes): the issuance window is ERASE, CREATE KEY
    # FILE, WRITE KEY master (SPEC §6 R2)
    SELECT_MF: ClassVar[int] = 0
    AUTHENTICATE: ClassVar[int] = 1
    ERASE: ClassVar[int] = 2
    CREATE_KEYFILE: ClassVar[int] = 3
    WRITE_MASTER: ClassVar[int] = 4

    @property
    def apdu_count(self) -> int:
        return sum(s.apdu_count for s in self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)


MAX_DATA = MAX_LC     # SPEC §6 R7

# source tags of the rules the steps rely on (SPEC.md "Sources"; shown by perso --dry-run)
SRC_SELECT = "SPEC §1.5"
SRC_TRANSPORT = "SPEC §6 R1"
SRC_ERASE = "SPEC §6 R2; UM 7.3"
SRC_KEYFILE = "SPEC §6 R2; UM 7.13"
SRC_ADD_PLAIN = "SPEC §6 R4; UM 7.12"
SRC_ADD_MAC = "SPEC §6 R4; UM 7.12; SPEC §1.6"
SRC_ADD_CIPHER = "SPEC §6 R4; CIPHK"
SRC_CREATE_DF = "UM 7.13; SPEC §6 R5, R6"
SRC_CREATE_EF = "UM 7.13; SPEC §1.2"
SRC_UPDATE_BINARY = "SPEC §1.5, §6 R7"
SRC_APPEND_RECORD = "SPEC §6 R20, R21"
SRC_PROTECTED = "SPEC §1.6"
SRC_AUTH_CODE = "SPEC D7; CS"


def ext_auth_step(key_id: int) -> CommandApdu:
    """The placeholder command of an ``ext_auth`` step: EXTERNAL AUTHENTICATE with key
    ``key_id`` (P2); the cryptogram is computed when the step is played."""
    return iso.external_authenticate(key_id, b"")


def _encode(layout: Any, bindings: dict[str, Any], r: Resolver, where: str, df: DFSpec,
            key: str | None = "data") -> Any:
    """Encode one file's (or record's) bindings; a bad value names the data row and column."""
    loc = f"{where}.{key}" if key else where
    try:
        return layout.encode(_coerce(layout, r.value(bindings, where, df)), where=loc)
    except InputError as exc:
        msg = str(exc)
        for name, binding in bindings.items():
            cols = sorted(binding_columns(binding))
            if cols and f"{loc}.{name}:" in msg:
                raise InputError(f"{r.data.where}, column {cols[0]!r}: {msg}") from None
        raise InputError(f"{r.data.where}: {msg}") from None


def _coerce(layout: Any, values: dict[str, Any]) -> dict[str, Any]:
    """CSV text → int for integer fields; ints → text for text fields (card numbers)."""
    kinds = {f.name: f.kind for f in layout.fields}
    out = {}
    for k, v in values.items():
        kind = kinds.get(k)
        if kind == "int" and isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        elif kind in ("ascii", "gbk") and isinstance(v, int):
            v = str(v)
        out[k] = v
    return out


def profile_error(spec: CardSpec, path: str, message: str) -> ProfileError:
    """A refusal of the strict host: ``profile:line: key.path: message`` (the line found in the
    profile's text, as the profile loader does)."""
    try:
        text = Path(spec.source).read_text(encoding="utf-8")
    except OSError:
        text = ""
    return ProfileError(message, file=spec.source, line=locate(text, path.split(".")) if text else None, path=path)


def _chunks(data: bytes, size: int) -> Iterator[tuple[int, bytes]]:
    for off in range(0, len(data), size):
        yield off, data[off:off + size]


class Planner:
    def __init__(self, spec: CardSpec, keys: KeySource) -> None:
        self.spec, self.keys = spec, keys

    # ------------------------------------------------------------------ public
    def plan(self, data: CardData) -> Plan:
        spec = self.spec
        r = Resolver(spec, data)
        steps: list[Step] = []
        keys: dict[str, Key] = {}
        pins: dict[str, bytes] = {}
        contents: dict[tuple[str, int], Any] = {}
        transport = self.transport_key()
        mf = spec.mf
        steps.append(Step("SELECT MF", iso.select_mf(), df="mf", source=SRC_SELECT))
        tk = spec.transport_key
        sm4 = " SM4" if spec.line_alg == "sm4" else ""
        steps.append(Step(f"EXTERNAL AUTHENTICATE with the transport key ({len(transport)} bytes{sm4}, id {tk.kid:02X})",
                          ext_auth_step(tk.kid), kind="ext_auth", key=transport, df="mf", source=SRC_TRANSPORT,
                          alg=spec.line_alg))
        steps.append(Step("ERASE DF (MF): the factory KEY file goes", fmcos.erase_df(), df="mf", source=SRC_ERASE))
        self._df_body(mf, r, steps, keys, pins, contents)
        for app in spec.apps:
            steps.append(Step(f"CREATE DF {app.fid:04X} {app.name}", self._create_df(app), df="mf",
                              source=SRC_CREATE_DF))
        for app in spec.apps:
            steps.append(Step(f"SELECT {app.name} ({app.aid.hex().upper()})",
                              iso.select_name(app.aid), df=app.name, source=SRC_SELECT))
            self._df_body(app, r, steps, keys, pins, contents)
        return Plan(r.card_serial, tuple(steps), keys, pins, contents)

    def transport_key(self) -> Key:
        """The key the card's factory transport key is authenticated with (SPEC §6 R1): the
        profile's literal value, or its key-source entry as it is, or the entry's left half
        for a card whose key is 8 bytes (a 16-byte entry K ‖ K is single-DES K).  A key that
        cannot be the card's (strict host) is refused, naming ``[card] transport_key``."""
        tk = self.spec.transport_key
        if tk.source is None:
            assert tk.value is not None
            return tk.value
        key = self.keys.derive(*tk.source, None)
        name = "/".join(tk.source)
        if self.spec.line_alg == "sm4":
            if not isinstance(key, (bytes, bytearray)):    # a token's handle: DES/3DES only
                raise profile_error(self.spec, tk.path, f"key-source entry {name} is held in a token (HSM), which "
                                    "does no SM4: the transport key of a card with SM4 line protection must come "
                                    "from a keystore (docs/sm4.md)")
            if len(key) != 16:
                raise profile_error(self.spec, tk.path, f"an SM4 card's transport key is 16 bytes, key-source "
                                    f"entry {name} {len(key)} (docs/sm4.md)")
            return key
        if len(key) == tk.length:
            return key
        if len(key) < tk.length:
            raise profile_error(self.spec, tk.path, f"the card's transport key is {tk.length} bytes, key-source "
                                f"entry {name} only {len(key)} (SPEC §6 R1)")
        left = key[:8]
        if ecb_encrypt(key, bytes(8)) != ecb_encrypt(left, bytes(8)):
            raise profile_error(self.spec, tk.path, f"key-source entry {name} is a 16-byte key (its halves differ) "
                                f"but the card's transport key is 8 bytes (SPEC §6 R1): it cannot authenticate; "
                                "say length = 16 for a card with a 16-byte transport key")
        return left

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _create_df(df: DFSpec) -> CommandApdu:
        return fmcos.create_df(df.fid, df.aid, space=df.space, create_ac=df.create_ac, erase_ac=df.erase_ac,
                               app_sfi=df.sfi_byte)

    @staticmethod
    def _create_keyfile(df: DFSpec) -> Step:
        cmd = fmcos.create_key_file(df.keyfile_fid, space=df.keyfile_space, df_sfi=df.keyfile_sfi_byte,
                                    add_ac=df.keyfile_add_ac)
        return Step(f"CREATE KEY FILE in {df.name}", cmd, df=df.name, source=SRC_KEYFILE)

    @staticmethod
    def _key_record(k: KeySpec, value: bytes) -> bytes:
        return fmcos.key_record(k.type_byte, k.usage_ac, k.change_ac, k.b3, k.b4, value)

    def _written(self, k: KeySpec, value: Key, how: str) -> tuple[bytes, str]:
        """The clear value for ``k``'s WRITE KEY record sent ``how``, and the step's mark.
        A file source's key is bytes already; an HSM's per-card key comes out only when the
        record is enciphered (by the HSM) or the profile says ``export = true``."""
        if isinstance(value, (bytes, bytearray)):
            return bytes(value), ""
        where = f"{self.spec.source} {k.path}"
        if how != "cipher" and not k.export:
            sent = "plain" if how == "plain" else "with a MAC only"
            raise InputError(f"{where}: the key comes from a hardware security module and WRITE KEY {sent} sends "
                             "it in clear: put export = true on this key to let it out of the HSM, or write it with "
                             "write = \"cipher\" and protect_change = \"cipher\""
                             + (" (the master of a DF is always written plain)"
                                if k.ktype == 0x39 and k.kid == 0 else ""))
        try:
            raw = key_bytes(value)
        except KeyHandleError as exc:
            raise InputError(f"{where}: {exc}") from None
        return raw, (ENCIPHERED if how == "cipher" else EXPORTED)

    def _versioned(self, k: KeySpec) -> KeySpec:
        """``k`` with its record's version byte: the issuing master's version for a key of
        ``version = "master"`` (key inventory rotation, docs/keys.md)."""
        if not k.master_version or k.master is None:
            return k
        return dataclasses.replace(k, b3=self.keys.version_in_force(*k.master))

    def _derive(self, unit: str, role: str, factor: bytes | None, alg: str = "des",
                version: int | None = None) -> Key:
        """A per-card key to be written to the card (asked of an HSM with ``export``: the
        WRITE KEY record is built around its value; :meth:`_written` decides if it may).
        ``alg``: the key's cipher family, asked of the source only for SM4 (docs/sm4.md)."""
        kw: dict[str, Any] = {"alg": alg} if alg != "des" else {}
        if version is not None:
            kw["version"] = version
        if getattr(self.keys, "holds_keys_inside", False) or getattr(self.keys, "in_hsm", False):
            return self.keys.derive(unit, role, factor, export=True, **kw)
        return self.keys.derive(unit, role, factor, **kw)

    def _df_body(self, df: DFSpec, r: Resolver, steps: list[Step], keys: dict[str, Key],
                 pins: dict[str, bytes], contents: dict[tuple[str, int], Any]) -> None:
        """Key file, keys, files and data of one DF (just erased, or just created: free until
        it is entered again, SPEC §6 R5).  The master goes first and in plaintext, right after
        the KEY file (the window of SPEC §6 R2 stays two commands wide after ERASE); every other
        key is added as the card accepts new keys (R4)."""
        n = df.name
        steps.append(self._create_keyfile(df))
        master = df.master_key()
        master_value: Key | None = None
        ordered = sorted(df.keys, key=lambda k: k is not master)   # the master first
        for k in ordered:
            value = self._key_value(k, df, r)
            if k.ktype == KeyType.PIN:
                pins[f"{n}/{k.name}"] = value
            else:
                keys[f"{n}/{k.name}"] = value
            if k is master:
                master_value = value
            how = k.write
            raw, mark = (value, "") if k.ktype == KeyType.PIN else self._written(k, value, how)
            cmd = fmcos.write_key(k.kid, self._key_record(self._versioned(k), raw))
            label = f"WRITE KEY {k.name} ({k.type_byte:02X}/{k.kid:02X}) in {n}"
            if how == "plain":
                what = "the master, plaintext" if k is master else "plaintext"
                steps.append(Step(f"{label}: {what}{mark}", cmd, sensitive=True, df=n, source=SRC_ADD_PLAIN))
                continue
            assert master_value is not None        # profile check: protected adds need the master
            if how == "cipher" and k.type_byte & 0xC0 != 0xC0:
                raise profile_error(self.spec, f"{k.path}.write",
                                    f"a real card takes no enciphered add of key type {k.type_byte:02X} "
                                    "(SPEC §6 R4, UM 7.12)")
            sm4 = " (SM4)" if self.spec.line_alg == "sm4" else ""
            steps.append(Step(f"{label} under {'cipher+MAC' if how == 'cipher' else 'MAC'} of the master{sm4}{mark}",
                              cmd, kind="protected", key=master_value, encrypt=how == "cipher", sensitive=True,
                              df=n, source=SRC_ADD_CIPHER if how == "cipher" else SRC_ADD_MAC,
                              alg=self.spec.line_alg))
        line_keys = {k.kid: keys[f"{n}/{k.name}"] for k in df.keys if k.ktype == KeyType.LINE_PROTECTION}
        for f in df.files:
            steps.append(Step(f"CREATE {f.kind.upper()} EF {f.fid:04X} {f.name} in {n}", self._create_ef(f), df=n,
                              source=SRC_CREATE_EF))
        for f in df.files:
            self._file_data(df, f, r, steps, line_keys, contents)
        if df.auth_code is not None:
            code = self._auth_code(df, r)
            steps.append(Step(f"SET AUTHENTICATION CODE of {n}", purse.put_auth_code(code), df=n,
                              source=SRC_AUTH_CODE))
            contents[(n, -1)] = code

    def _key_value(self, k: KeySpec, df: DFSpec, r: Resolver) -> Key:
        where = f"{self.spec.source} {k.path}"
        if k.ktype == KeyType.PIN:
            digits = str(r.value(k.pin, where, df))
            if not digits.isdigit() or not 4 <= len(digits) <= 12:
                raise InputError(f"{r.data.where}: the PIN for {k.path} must be 4..12 digits")
            return pin_to_bytes(digits)
        assert k.master is not None
        factor = r.factor(k.factor, where) if k.factor is not None else None   # None: a PSAM master (docs/psam.md)
        version = self._versioned(k).b3 if k.master_version else None
        value = self._derive(k.master[0], k.master[1], factor, k.alg, version)
        return value[:8] if k.length == 8 else value

    @staticmethod
    def _create_ef(f: FileSpec) -> CommandApdu:
        if f.kind in ("ed", "ep"):
            return fmcos.create_purse(f.fid, usage_ac=f.usage_ac, tac_key_id=f.tac_key, detail_sfi=f.detail_sfi)
        acs = dict(read_ac=f.read_ac, write_ac=f.write_ac, key_byte=f.key_byte, protection=f.type_byte & 0xC0)
        if f.kind == "binary":
            return fmcos.create_binary(f.fid, f.size, **acs)
        if f.kind == "variable":
            return fmcos.create_variable(f.fid, f.size, **acs)
        if f.kind == "fixed":
            return fmcos.create_fixed(f.fid, f.nrec, f.reclen, **acs)
        return fmcos.create_cyclic(f.fid, f.nrec, f.reclen, **acs)

    def _file_data(self, df: DFSpec, f: FileSpec, r: Resolver, steps: list[Step], line_keys: dict[int, Key],
                   contents: dict[tuple[str, int], Any]) -> None:
        if f.kind in ("ed", "ep"):
            return
        n = df.name
        where = f"{self.spec.source} {f.path}"
        protect = f.write_protect
        key = line_keys.get(f.write_key) if protect != "plain" else None
        if f.kind == "binary":
            if not f.data:
                return
            from .. import records
            lay = records.get(f.layout or "", where=where)
            content = _encode(lay, f.data, r, where, df)
            content = content.ljust(f.size, b"\x00")
            contents[(n, f.fid)] = content
            room = data_room(protect, self.spec.line_alg)      # Lc ≤ 239 with the MAC or the cipher's overhead (R7)
            current = False
            for off, chunk in _chunks(content, room):
                if not any(chunk):
                    continue
                if off <= 0xFF:
                    cmd = iso.update_binary(chunk, off, sfi=f.sfi)     # SFI addressing: no SELECT needed
                    current = True
                else:
                    if not current:
                        steps.append(Step(f"SELECT EF {f.fid:04X} {f.name}", iso.select_fid(f.fid), df=n,
                                          source=SRC_SELECT))
                        current = True
                    cmd = iso.update_binary(chunk, off)                # the current EF
                label = f"UPDATE BINARY {f.fid:04X} {f.name} [{off}:{off + len(chunk)}]"
                steps.append(self._write_step(label, cmd, protect, key, n, SRC_UPDATE_BINARY, self.spec.line_alg))
            return
        recs = self._records(df, f, r)
        contents[(n, f.fid)] = recs
        room = data_room(protect, self.spec.line_alg)
        for i, rec in enumerate(recs, 1):
            if len(rec) > room:
                # strict host: one APPEND RECORD carries one record, it cannot be split (R7)
                raise profile_error(self.spec, f.path, f"{r.data.where}: record {i} is {len(rec)} bytes; an FM1208 "
                                    f"takes at most {room} data bytes in one command (Lc ≤ 239, SPEC §6 R7) and "
                                    "a record cannot be split")
            cmd = iso.append_record(rec, sfi=f.sfi)
            steps.append(self._write_step(f"APPEND RECORD {f.fid:04X} {f.name} #{i}", cmd, protect, key, n,
                                          SRC_APPEND_RECORD, self.spec.line_alg))

    @staticmethod
    def _write_step(label: str, cmd: CommandApdu, protect: str, key: Key | None, df: str, source: str,
                    alg: Alg = "des") -> Step:
        if protect == "plain":
            return Step(label, cmd, df=df, source=source)
        return Step(label + f" with {'cipher+MAC' if protect == 'cipher' else 'MAC'}", cmd, kind="protected",
                    key=key, encrypt=protect == "cipher", df=df, source=f"{source}; {SRC_PROTECTED}", alg=alg)

    def _records(self, df: DFSpec, f: FileSpec, r: Resolver) -> list[bytes]:
        where = f"{self.spec.source} {f.path}"
        if f.data.get("@content") == "dir":
            out = []
            for app in self.spec.apps:
                label = app.label.encode("utf-8")[:16]
                inner = b"\x4F" + bytes((len(app.aid),)) + app.aid + b"\x50" + bytes((len(label),)) + label
                out.append(b"\x61" + bytes((len(inner),)) + inner)
            return out
        from .. import records
        out: list[bytes] = []
        if f.layout is not None:
            lay = records.get(f.layout, where=where)
            if hasattr(lay, "size"):   # fixed-size layout: one record per entry of `records`
                for i, rec in enumerate(f.records):
                    if isinstance(rec, str):
                        out.append(bytes.fromhex(rec))
                    else:
                        out.append(_encode(lay, rec, r, f"{where}.records.{i}", df, key=None))
            else:                      # TLV layout: the file's data gives one record per field
                out.extend(_encode(lay, f.data, r, where, df))
        else:
            out.extend(bytes.fromhex(rec) for rec in f.records if isinstance(rec, str))
        if f.kind == "variable" and sum(len(x) for x in out) > f.size:
            raise InputError(f"{r.data.where}: {where}: {sum(len(x) for x in out)} bytes of records do not fit "
                             f"in {f.size}")
        for rec in out:
            if f.kind in ("fixed", "cyclic") and len(rec) != f.reclen:
                raise InputError(f"{where}: a record of {len(rec)} bytes in a file of {f.reclen}-byte records")
        return out

    def _auth_code(self, df: DFSpec, r: Resolver) -> bytes:
        """D7: ``85`` ‖ 8 bytes; ``true`` derives them from the serial (4 bytes twice, as CS does)."""
        b = df.auth_code
        if b is True:
            tail = bytes.fromhex(r.card_serial.zfill(16))[-4:]
            return b"\x85" + tail + tail
        v = str(r.value(b, f"{df.path}.auth_code", df))
        raw = bytes.fromhex(v)
        if len(raw) != 8:
            raise InputError(f"{df.path}.auth_code: 8 bytes (16 hex digits) expected")
        return b"\x85" + raw
