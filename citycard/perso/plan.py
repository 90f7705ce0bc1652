"""The planner: (CardSpec, one card's data, keys) → Plan, a list of Steps (DESIGN.md).

Pure: it touches no reader, so a plan can be printed (``perso --dry-run``), counted and
tested on its own.  Order, for a factory card (SPEC §1.1–§1.4):

1. SELECT MF, EXTERNAL AUTHENTICATE with the transport key (SR 1 on a factory card).
2. The transport key replaced by the MF master in one enciphered WRITE KEY (no window
   where the card holds no key), further MF keys, MF files and their data.  (A card
   being redone is erased instead and gets its key file and master back: ``mf_rebuild``.)
3. Every application DF, created while the MF is current (no SELECT back and forth).
4. Per application: SELECT by AID, key file, keys (under line protection where the
   profile says so), files, data (DAMK-protected files with MAC), authentication code.

Minimal: binary data goes in as few UPDATE BINARY commands as a short APDU allows (by
SFI, so no SELECT), all-zero chunks are skipped (a new file reads zero), records are
APPENDed by SFI.

Keys are ``bytes`` from a file key source, or key handles from a hardware security module
(:mod:`citycard.keys.handles`): protections and cryptograms use them alike.  A WRITE KEY
record needs the per-card key's value: from an HSM it is let out only as the profile says
(``export = true`` on a key sent in clear, i.e. written plain or with MAC only: such steps are
marked ``[key exported from the HSM]``; a ciphered WRITE KEY is enciphered by the HSM under
the DF's master and marked ``[key enciphered by the HSM]``).  HSM masters never come out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from ..apdu import CommandApdu
from ..commands import fmcos, iso, purse
from ..commands.fmcos import KeyType
from ..errors import InputError
from ..keys import KeySource
from ..keys.handles import Key, KeyHandleError, key_bytes
from ..profile import binding_columns, pin_to_bytes
from ..spec import CardSpec, DFSpec, FileSpec, KeySpec
from .context import CardData, Resolver

TRANSPORT_DEFAULT = b"\xFF" * 16
EXPORTED = " [key exported from the HSM]"
ENCIPHERED = " [key enciphered by the HSM]"


@dataclass(frozen=True, slots=True)
class Step:
    """One command of a plan.

    ``kind``: ``apdu`` (send as is), ``protected`` (GET CHALLENGE, then the line-protected
    form under ``key``, enciphered when ``encrypt``), ``ext_auth`` (GET CHALLENGE, then
    EXTERNAL AUTHENTICATE with ``key``).  ``key`` never appears in repr or output.
    """

    label: str
    cmd: CommandApdu
    kind: str = "apdu"
    expect: int = 0x9000
    key: Key | None = field(default=None, repr=False)     # bytes, or a key handle (HSM)
    encrypt: bool = False
    sensitive: bool = False
    df: str = ""

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
    mf_rebuild: tuple[Step, ...] = ()    # after ERASE DF of the MF when a card is redone

    @property
    def apdu_count(self) -> int:
        return sum(s.apdu_count for s in self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)


MAX_DATA = 255


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
        transport = (self.keys.derive(*spec.transport_key, None) if spec.transport_key is not None
                     else TRANSPORT_DEFAULT)
        mf = spec.mf
        steps.append(Step("SELECT MF", iso.select_mf(), df="mf"))
        steps.append(Step("EXTERNAL AUTHENTICATE with the transport key", ext_auth_step(0x00),
                          kind="ext_auth", key=transport, df="mf"))
        self._df_body(mf, r, steps, keys, pins, contents, factory_key=transport)
        rebuild = self._mf_rebuild(mf, keys)
        for app in spec.apps:
            steps.append(Step(f"CREATE DF {app.fid:04X} {app.name}", self._create_df(app), df="mf"))
        for app in spec.apps:
            steps.append(Step(f"SELECT {app.name} ({app.aid.hex().upper()})",
                              iso.select_name(app.aid), df=app.name))
            self._df_body(app, r, steps, keys, pins, contents)
        return Plan(r.card_serial, tuple(steps), keys, pins, contents, rebuild)

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _create_df(df: DFSpec) -> CommandApdu:
        return fmcos.create_df(df.fid, df.aid, space=df.space, create_ac=df.create_ac, erase_ac=df.erase_ac,
                               app_sfi=df.sfi_byte)

    @staticmethod
    def _create_keyfile(df: DFSpec) -> Step:
        cmd = fmcos.create_key_file(df.keyfile_fid, space=df.keyfile_space, df_sfi=df.keyfile_sfi_byte,
                                    add_ac=df.keyfile_add_ac)
        return Step(f"CREATE KEY FILE in {df.name}", cmd, df=df.name)

    @staticmethod
    def _key_record(k: KeySpec, value: bytes) -> bytes:
        return fmcos.key_record(k.type_byte, k.usage_ac, k.change_ac, k.b3, k.b4, value)

    def _mf_rebuild(self, mf: DFSpec, keys: dict[str, Key]) -> tuple[Step, ...]:
        """For a card being redone: after ERASE DF of the MF, its key file and master again
        (written plain: none when the master comes from an HSM that may not let it out)."""
        m = mf.master_key()
        assert m is not None
        value = keys[f"mf/{m.name}"]
        if not isinstance(value, (bytes, bytearray)) and not m.export:
            return ()
        raw, mark = self._written(m, value, "plain")
        rec = self._key_record(m, raw)
        return (self._create_keyfile(mf),
                Step(f"WRITE KEY {m.name} (39/00) in mf{mark}",
                     fmcos.write_key(0x00, rec), sensitive=True, df="mf"))

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
                             "write = \"cipher\"" + (" (the master of a DF is always written plain)"
                                                     if k.ktype == 0x39 and k.kid == 0 else ""))
        try:
            raw = key_bytes(value)
        except KeyHandleError as exc:
            raise InputError(f"{where}: {exc}") from None
        return raw, (ENCIPHERED if how == "cipher" else EXPORTED)

    def _derive(self, unit: str, role: str, factor: bytes) -> Key:
        """A per-card key to be written to the card (asked of an HSM with ``export``: the
        WRITE KEY record is built around its value; :meth:`_written` decides if it may)."""
        if getattr(self.keys, "holds_keys_inside", False) or getattr(self.keys, "in_hsm", False):
            return self.keys.derive(unit, role, factor, export=True)
        return self.keys.derive(unit, role, factor)

    def _df_body(self, df: DFSpec, r: Resolver, steps: list[Step], keys: dict[str, Key],
                 pins: dict[str, bytes], contents: dict[tuple[str, int], Any],
                 factory_key: Key | None = None) -> None:
        """Key file, keys, files and data of one DF.  With ``factory_key`` (the MF of a factory
        card), the factory KEY file stays and its transport key is replaced in place by the
        master, enciphered under the transport key: one atomic command, so a card pulled at
        any moment keeps a key that opens it (SPEC §1.4 update with P1 = the stored type)."""
        n = df.name
        if factory_key is None:
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
            how = "cipher" if k is master and factory_key is not None else k.write
            raw, mark = (value, "") if k.ktype == KeyType.PIN else self._written(k, value, how)
            record = self._key_record(k, raw)
            cmd = fmcos.write_key(k.kid, record)
            label = f"WRITE KEY {k.name} ({k.ktype:02X}/{k.kid:02X}) in {n}"
            if k is master and factory_key is not None:
                if len(value) != len(factory_key):
                    raise InputError(f"{k.path}: the MF master must be {len(factory_key)} bytes like the transport key")
                steps.append(Step(f"WRITE KEY {k.name}: replace the transport key (39/00) under cipher{mark}",
                                  fmcos.write_key(0x00, record, stored_type=KeyType.EXTERNAL_AUTH),
                                  kind="protected", key=factory_key, encrypt=True, sensitive=True, df=n))
            elif k.write == "plain":
                steps.append(Step(label + mark, cmd, sensitive=True, df=n))
            else:
                assert master_value is not None
                steps.append(Step(label + f" under {k.write}{mark}", cmd, kind="protected", key=master_value,
                                  encrypt=k.write == "cipher", sensitive=True, df=n))
        line_keys = {k.kid: keys[f"{n}/{k.name}"] for k in df.keys if k.ktype == KeyType.LINE_PROTECTION}
        for f in df.files:
            steps.append(Step(f"CREATE {f.kind.upper()} EF {f.fid:04X} {f.name} in {n}", self._create_ef(f), df=n))
        for f in df.files:
            self._file_data(df, f, r, steps, line_keys, contents)
        if df.auth_code is not None:
            code = self._auth_code(df, r)
            steps.append(Step(f"SET AUTHENTICATION CODE of {n}", purse.put_auth_code(code), df=n))
            contents[(n, -1)] = code

    def _key_value(self, k: KeySpec, df: DFSpec, r: Resolver) -> Key:
        where = f"{self.spec.source} {k.path}"
        if k.ktype == KeyType.PIN:
            digits = str(r.value(k.pin, where, df))
            if not digits.isdigit() or not 4 <= len(digits) <= 12:
                raise InputError(f"{r.data.where}: the PIN for {k.path} must be 4..12 digits")
            return pin_to_bytes(digits)
        assert k.master is not None
        value = self._derive(k.master[0], k.master[1], r.factor(k.factor, where))
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
            # payload room: 255, less the MAC; enciphered: LD + padding to 8 inside 251
            room = MAX_DATA - (4 if protect != "plain" else 0)
            if protect == "cipher":
                room = (room // 8) * 8 - 2
            current = False
            for off, chunk in _chunks(content, room):
                if not any(chunk):
                    continue
                if off <= 0xFF:
                    cmd = iso.update_binary(chunk, off, sfi=f.sfi)     # SFI addressing: no SELECT needed
                    current = True
                else:
                    if not current:
                        steps.append(Step(f"SELECT EF {f.fid:04X} {f.name}", iso.select_fid(f.fid), df=n))
                        current = True
                    cmd = iso.update_binary(chunk, off)                # the current EF
                label = f"UPDATE BINARY {f.fid:04X} {f.name} [{off}:{off + len(chunk)}]"
                steps.append(self._write_step(label, cmd, protect, key, n))
            return
        recs = self._records(df, f, r)
        contents[(n, f.fid)] = recs
        for i, rec in enumerate(recs, 1):
            cmd = iso.append_record(rec, sfi=f.sfi)
            steps.append(self._write_step(f"APPEND RECORD {f.fid:04X} {f.name} #{i}", cmd, protect, key, n))

    @staticmethod
    def _write_step(label: str, cmd: CommandApdu, protect: str, key: Key | None, df: str) -> Step:
        if protect == "plain":
            return Step(label, cmd, df=df)
        return Step(label + f" with {'cipher+MAC' if protect == 'cipher' else 'MAC'}", cmd, kind="protected",
                    key=key, encrypt=protect == "cipher", df=df)

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
