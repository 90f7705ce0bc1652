"""Terminal transaction logs: what a terminal (host-key or PSAM) appends for each purse
transaction and what clearing imports (issue 22; docs/clearing.md "Terminal log").

One JSON object per line (UTF-8), appended and fsynced, file ``0600``::

    {"format": "citycard-tx", "version": 1, "kind": "purchase", "app": "transit",
     "card": "3301000000000001", "counter": 7, "balance_before": 5000, "amount": 250,
     "ttype": 6, "terminal": "000000000001", "ttsn": "00000012", "date": "20261203",
     "time": "081500", "tac": "1A2B3C4D", "status": "ok", "source": "psam"}

- ``kind``: ``load``, ``purchase`` or ``capp-purchase``; or ``block``, an event without money or
  TAC: a terminal blocked the card's application because it is hotlisted; ``app``: the profile's
  application that was credited or debited (the service unit, for settlement).
- ``card``: the application serial number (the key diversification factor, SPEC §2.4).
- ``counter``: the purse counter the transaction used (online for a load or unload, offline for
  a purchase), as INITIALIZE returned it (before the card's increment).  (An unload is not
  logged: the card proves it with MAC3 under a session key, not with a TAC.)
- ``ttsn``: the terminal transaction serial (purchases; ``null`` for loads).
- ``key_version``: the key version byte INITIALIZE returned (the master generation of a card
  whose profile keys say ``version = "master"``: key rotation, docs/keys.md).
- ``algorithm``: the algorithm byte INITIALIZE returned (``00``/``01`` DES/3DES, ``04`` SM4:
  which TAC key the card used); ``psam``: the PSAM serial for a PSAM terminal (else null).
- ``status``: ``ok`` (the card answered with its TAC), ``proven`` (the answer was lost and GET
  TRANSACTION PROVE returned the TAC), ``grey`` (the answer was lost and not proven yet: ``tac``
  is ``null``).
- Amounts and balances in fen (integers).  Nothing secret: no key, PIN or MAC input beyond what
  the card shows any terminal.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from ..errors import InputError

FORMAT = "citycard-tx"
KINDS = ("load", "purchase", "capp-purchase", "block")   # an unload has no TAC (MAC3 is under a session key)
STATUSES = ("ok", "proven", "grey")
_HEX = re.compile(r"^[0-9A-Fa-f]*$")


@dataclass(frozen=True)
class TxRecord:
    kind: str
    app: str
    card: str
    counter: int
    balance_before: int
    amount: int
    ttype: int
    terminal: str          # 12 hex digits
    ttsn: str | None       # 8 hex digits (purchases)
    date: str              # YYYYMMDD
    time: str              # HHMMSS
    tac: str | None        # 8 hex digits; None for a grey record
    status: str = "ok"
    source: str = "host"
    algorithm: int = 0     # the algorithm byte of INITIALIZE (00/01 DES/3DES, 04 SM4)
    psam: str | None = None
    key_version: int = 0   # the key version byte of INITIALIZE (which master generation: rotation)

    @property
    def balance_after(self) -> int:
        return self.balance_before + (self.amount if self.kind == "load" else -self.amount)

    @property
    def online(self) -> bool:
        """Whether the counter is the online one (loads)."""
        return self.kind == "load"

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": 1, **asdict(self)}, separators=(",", ":"))


def _field(doc: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = doc.get(name)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"{where}: {name}: an integer expected")
    if kind is str and not isinstance(value, str):
        raise InputError(f"{where}: {name}: a string expected")
    return value


def _hex(value: Any, n: int, name: str, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) != 2 * n or not _HEX.match(value):
        raise InputError(f"{where}: {name}: {2 * n} hex digits expected")
    return value.upper()


def parse_record(line: str, where: str) -> TxRecord:
    """One log line as a record, or an error naming ``where`` (file:line) and the field."""
    try:
        doc = json.loads(line)
    except ValueError:
        raise InputError(f"{where}: not a JSON record") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise InputError(f"{where}: not a citycard transaction record (format/version)")
    kind = _field(doc, "kind", str, where)
    if kind not in KINDS:
        raise InputError(f"{where}: kind: one of {', '.join(KINDS)}")
    status = doc.get("status", "ok")
    if status not in STATUSES:
        raise InputError(f"{where}: status: one of {', '.join(STATUSES)}")
    card = _field(doc, "card", str, where)
    if not card.isdigit() or len(card) > 20:
        raise InputError(f"{where}: card: the application serial, digits")
    for name in ("counter", "balance_before", "amount", "ttype"):
        _field(doc, name, int, where)
    if not 0 <= doc["counter"] <= 0xFFFF or not 0 <= doc["ttype"] <= 0xFF:
        raise InputError(f"{where}: counter or ttype out of range")
    if doc["amount"] < 0 or doc["balance_before"] < 0:
        raise InputError(f"{where}: amount and balance are fen, not negative")
    date, time_ = _field(doc, "date", str, where), _field(doc, "time", str, where)
    if not (len(date) == 8 and date.isdigit() and len(time_) == 6 and time_.isdigit()):
        raise InputError(f"{where}: date/time: YYYYMMDD and HHMMSS")
    ttsn = _hex(doc.get("ttsn"), 4, "ttsn", where, optional=kind in ("load", "block"))
    tac = _hex(doc.get("tac"), 4, "tac", where, optional=status == "grey" or kind == "block")
    algorithm = doc.get("algorithm", 0)
    if isinstance(algorithm, bool) or not isinstance(algorithm, int) or not 0 <= algorithm <= 0xFF:
        raise InputError(f"{where}: algorithm: the algorithm byte (0-255)")
    key_version = doc.get("key_version", 0)
    if isinstance(key_version, bool) or not isinstance(key_version, int) or not 0 <= key_version <= 0xFF:
        raise InputError(f"{where}: key_version: the key version byte (0-255)")
    psam = doc.get("psam")
    if psam is not None and (not isinstance(psam, str) or not _HEX.match(psam) or len(psam) > 32):
        raise InputError(f"{where}: psam: the PSAM serial in hex")
    if status != "grey" and tac is None and kind != "block":
        raise InputError(f"{where}: tac: missing (only a grey record has none)")
    return TxRecord(kind, _field(doc, "app", str, where), card, doc["counter"], doc["balance_before"], doc["amount"],
                    doc["ttype"], _hex(doc.get("terminal"), 6, "terminal", where) or "", ttsn, date, time_, tac,
                    status, str(doc.get("source", "host")), algorithm, psam, key_version)


def append_record(path: str | os.PathLike[str], record: TxRecord) -> None:
    """Append one record (one write, fsynced) to a terminal log created ``0600``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (record.to_json() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, TxRecord]]:
    """``(line, record)`` of a log, streamed; the first bad line raises naming file:line."""
    with open(path, "r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                raise InputError(f"{path}:{n}: incomplete last line (the terminal was cut while writing?)")
            yield n, parse_record(line, f"{path}:{n}")


_BLOCK = 64 * 1024           # bytes read at a time from the end of a log
MAX_RECORD = 64 * 1024       # a record line is a few hundred bytes; a longer line is not one


def _line_number(path: str | os.PathLike[str], offset: int) -> int:
    """The 1-based line number of the line starting at byte ``offset`` (error messages only:
    this one reads the log up to ``offset``)."""
    count = 1
    with open(path, "rb") as f:
        while offset > 0:
            chunk = f.read(min(_BLOCK, offset))
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset -= len(chunk)
    return count


def _segments_backwards(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of the pieces of a log between newlines, last first, read from the
    end in blocks of ``_BLOCK`` bytes (memory: one block plus one line).  The first piece is
    what follows the last newline: empty unless the last line is torn."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        carry = b""            # the start of a line that began in an earlier block
        while pos > 0:
            step = min(_BLOCK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step) + carry
            pieces = block.split(b"\n")
            carry = pieces[0]
            end = pos + len(block)
            for piece in reversed(pieces[1:]):
                start = end - len(piece)
                yield start, piece
                end = start - 1
            if len(carry) > MAX_RECORD:
                raise InputError(f"{path}:{_line_number(path, pos)}: not a citycard transaction record "
                                 f"(a line of over {MAX_RECORD} bytes)")
        yield 0, carry


def last_ttsn(path: str | os.PathLike[str], terminal: str) -> int:
    """The serial of ``terminal``'s last record that has one (0 if none), read from the end of
    the log: a terminal's TTSN only grows, so its last record holds its highest serial, and
    the cost is that of the records after it (other terminals' records may be interleaved),
    not of the whole log.  Only the lines read are checked (``citycard clearing import``
    checks the whole log)."""
    wanted = terminal.upper()
    with closing(_segments_backwards(path)) as pieces:
        for offset, torn in pieces:          # the first piece: what follows the last newline
            if torn.strip():
                raise InputError(f"{path}:{_line_number(path, offset)}: incomplete last line "
                                 f"(the terminal was cut while writing?)")
            break
        for offset, raw in pieces:
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}:{_line_number(path, offset)}: not a JSON record (not UTF-8)") from None
            try:
                rec = parse_record(line, f"{path}:?")
            except InputError:     # name the line: counting lines reads the log up to it (errors only)
                parse_record(line, f"{path}:{_line_number(path, offset)}")
                raise
            if rec.terminal == wanted and rec.ttsn is not None:
                return int(rec.ttsn, 16)
    return 0


def next_ttsn(path: str | os.PathLike[str], terminal: str) -> int:
    """The next terminal transaction serial of ``terminal`` (12 hex digits) after those in the
    log at ``path`` (1 for a new log): a host terminal's log is its TTSN memory, so a serial is
    never used twice by one terminal (clearing files a repeated one as a duplicate).  The log
    is read from its end (:func:`last_ttsn`): a city's log holds millions of lines."""
    if not os.path.exists(path):
        return 1
    last = last_ttsn(path, terminal)
    if last >= 0xFFFFFFFF:
        raise InputError(f"{path}: terminal {terminal} has used every transaction serial")
    return last + 1
