"""Small helpers that walk a card over a :class:`~citycard.transport.CardSession`:
select a DF of the profile, read a file to its end, read the serial the card's keys are
diversified with and turn it into the factor (SPEC §2.4), EXTERNAL AUTHENTICATE.

They return what the card answered (status words included) and leave the wording of
failures to their callers, except :func:`read_serial`, which raises
:class:`SerialNotReadable` when no readable file carries the serial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..apdu import CommandApdu, ResponseApdu, describe_sw
from ..errors import CitycardError
from ..keys.handles import Key
from . import iso

if TYPE_CHECKING:
    from ..crypto.cipher import Alg
    from ..spec import CardSpec, DFSpec, FileSpec
    from ..transport import CardSession

MAX_NE = 256


class SerialNotReadable(CitycardError):
    """No readable file of the profile carries the serial a DF's keys are diversified with."""


# ---------------------------------------------------------------------- selecting
def select_df_command(df: DFSpec) -> CommandApdu:
    """SELECT of a profile DF: the MF by FID ``3F00``, an application by its AID."""
    return iso.select_mf() if df.fid == iso.MF_FID else iso.select_name(df.aid)


def select_unfetched(session: CardSession, cmd: CommandApdu) -> int:
    """The status of a SELECT whose FCI the caller does not use, sent without GET RESPONSE:
    under T=0 the card's ``61xx`` (done, FCI available: ISO/IEC 7816-4 5.1.3; an FMCOS contact
    card answers SELECT so, tests/data/traces/codetd_fmsh_erase.trace) reads as ``9000``; a
    reader that fetches by itself gives FCI ‖ ``9000``."""
    sw = session.send(cmd, fetch=False).sw
    return 0x9000 if sw >> 8 == 0x61 else sw


def select_df(session: CardSession, df: DFSpec) -> ResponseApdu:
    """SELECT ``df`` (see :func:`select_df_command`); the card's answer (FCI and SW)."""
    return session.send(select_df_command(df))


# ---------------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class BinaryRead:
    """A binary file read to its end: the bytes read, and the SW that stopped the reading
    (``9000`` when the whole file was read; ``offset`` is where a failure happened)."""

    data: bytes
    sw: int
    offset: int

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000


@dataclass(frozen=True, slots=True)
class RecordsRead:
    """The records of a record file in order; ``sw`` is ``9000`` when the reading ended at
    ``6A83`` (no more records) or at ``limit``, else the SW that stopped it."""

    records: tuple[bytes, ...]
    sw: int

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000


def read_binary_to_end(session: CardSession, size: int, *, sfi: int | None = None, start: int = 0) -> BinaryRead:
    """Read EF ``sfi`` (the first chunk by SFI, which makes it current, then by offset) or the
    current EF from ``start`` up to ``size`` bytes, in chunks of at most 256 bytes."""
    out = b""
    while start + len(out) < size:
        off = start + len(out)
        want = min(size - off, MAX_NE)
        cmd = iso.read_binary(0, want, sfi=sfi) if off == 0 and sfi is not None else iso.read_binary(off, want)
        r = session.send(cmd)
        if r.sw != 0x9000:
            return BinaryRead(out, r.sw, off)
        if not r.data:
            break
        out += r.data
    return BinaryRead(out, 0x9000, start + len(out))


def read_file(session: CardSession, f: FileSpec) -> BinaryRead:
    """A binary EF of the profile read to its end by its SFI."""
    return read_binary_to_end(session, f.size, sfi=f.sfi)


def read_records_to_end(session: CardSession, *, sfi: int | None = None, limit: int = 254) -> RecordsRead:
    """READ RECORD 1, 2, ... of EF ``sfi`` (or the current EF) until ``6A83`` or ``limit``."""
    recs: list[bytes] = []
    for i in range(1, limit + 1):
        r = session.send(iso.read_record(i, sfi=sfi))
        if r.sw == 0x6A83:
            break
        if r.sw != 0x9000:
            return RecordsRead(tuple(recs), r.sw)
        recs.append(r.data)
    return RecordsRead(tuple(recs), 0x9000)


def record_limit(f: FileSpec, default: int = 254) -> int:
    """How many records a file of the profile can hold: its count for fixed and cyclic files."""
    return f.nrec if f.kind in ("fixed", "cyclic") and f.nrec else default


# ---------------------------------------------------------------------- serial and factor
def diversification_factor(value: str) -> bytes:
    """The factor of PBOC diversification (SPEC §2.4): digits in BCD, else hex, else the
    text's UTF-8 bytes; the rightmost 8 bytes, zero-padded on the left."""
    if value.isdigit():
        return bytes.fromhex(value.zfill(max(16, len(value) + len(value) % 2)))[-8:]
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = value.encode("utf-8")
    return raw.rjust(8, b"\x00")[-8:]


def serial_field(df: DFSpec, binding: str) -> tuple[FileSpec, str] | None:
    """The binary file of ``df`` with a layout whose field is bound to ``binding``
    (``@app_serial``, ``@card_serial``), and that field's name."""
    for f in df.files:
        if f.kind != "binary" or f.layout is None:
            continue
        fields = [k for k, v in f.data.items() if v == binding]
        if fields:
            return f, fields[0]
    return None


def read_serial(session: CardSession, spec: CardSpec, df: DFSpec) -> str:
    """The serial ``df``'s keys were diversified with: the field bound to ``@app_serial`` in
    ``df``, else ``@card_serial`` in the MF (readable even when ``df`` is blocked)."""
    from .. import records

    refused = ""          # the card's last refusal, for the message (a blocked card answers 6A81)
    for where, binding in ((df, "@app_serial"), (spec.mf, "@card_serial"), (df, "@card_serial")):
        found = serial_field(where, binding)
        if found is None:
            continue
        f, name = found
        selected = select_df(session, where)
        if selected.sw != 0x9000:
            refused = f"SELECT {where.name}: {selected.sw:04X} ({describe_sw(selected.sw)})"
            continue
        lay = records.get(f.layout or "")
        r = session.send(iso.read_binary(0, lay.size, sfi=f.sfi))
        if r.sw != 0x9000:
            refused = f"READ BINARY {where.name}/{f.name}: {r.sw:04X} ({describe_sw(r.sw)})"
            continue
        return str(lay.decode(r.data)[name])
    why = f"the card answered {refused}" if refused else "no readable file carries it"
    raise SerialNotReadable(f"cannot read the serial of {df.name} ({why})")


# ---------------------------------------------------------------------- authentication
def external_auth_cryptogram(key: Key, challenge: bytes, alg: Alg = "des") -> bytes:
    """``E_K(challenge ‖ 00..)`` over one 8-byte block (SPEC §1.5, §4 vector 1); DES or
    3DES by key length.  ``alg="sm4"``: one 16-byte SM4 block, all 16 bytes sent (a card
    whose line protection is SM4: docs/sm4.md)."""
    from ..crypto.secure import auth_cryptogram

    return auth_cryptogram(key, challenge, alg)   # type: ignore[arg-type]   # a DES key may be a token's handle


def external_authenticate(session: CardSession, key_id: int, key: Key, alg: Alg = "des") -> ResponseApdu:
    """GET CHALLENGE (raises :class:`~citycard.errors.CardError` when refused), then
    EXTERNAL AUTHENTICATE with key ``key_id``; the card's answer.  ``alg``: the card's
    line-protection cipher (the profile's ``[card] line_protection``); a card whose ATR shows
    the other one is refused before anything is sent (:mod:`citycard.cos`)."""
    from ..cos import check_line_protection

    check_line_protection(getattr(session, "atr", b""), alg)
    challenge = session.get_challenge(4)
    return session.send(iso.external_authenticate(key_id, external_auth_cryptogram(key, challenge, alg)))
