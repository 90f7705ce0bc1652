"""The clearing ledger (issue 22): every terminal transaction record verified and filed, the
balance and counters of each card as the back office knows them, and what each service unit
is owed.

Tables (SQLite by default, PostgreSQL shared by several clearing stations):

- ``tx``: each distinct record once (``rec_hash``, SHA-256 of its canonical JSON, is unique, so
  a log imported twice, or the same record in two logs, adds nothing), with its **verdict**:

  ============  ==============================================================================
  accepted      its TAC verifies under the issuer's keys and it follows the card's chain
  suspicious    its TAC verifies, but a counter before it is missing (a gap: a log not yet
                imported, or lost) or its balance does not follow from the record before it
  rejected      its TAC does not verify (reason named); never money
  duplicate     its TAC verifies but the same card and counter, or the same terminal and
                terminal serial (TTSN), is already filed under another record; never money
  grey          the card's answer was lost and not proven (no TAC yet); ``settled`` once a
                record of the same card and counter with a TAC arrives
  settled       a grey record whose proof arrived
  event         a terminal blocked the card (kind ``block``: hotlisted); no money, no TAC
  ============  ==============================================================================

  Money (settlement, balances) is what is ``accepted`` or ``suspicious``: both carry a TAC that
  only the card could compute; a suspicious one is counted and shown apart.

- ``imports``: one row per imported log file (its SHA-256, name, time, counts).
- ``settlements``: the closed periods (first and last transaction date, when it was closed, the
  last import then); ``settled``: each record of a closed period as it stood when the period
  was closed (its verdict then).  Periods never overlap: a record is settled once.  A report
  counts a settled record with its verdict then, and a record dated inside a closed period but
  filed after it was closed apart, as **late** (docs/clearing.md "Settlement periods").

An import is one transaction: a file with a bad line changes nothing, and a crash leaves the
ledger as it was.  Verdicts that depend on the order of a card's records (gaps, balance
continuity, which of two records came first) are recomputed over the whole chain of each card
an import touched, ordered by date and time (ties: by log file and line, a terminal's log being in
the order it happened), so they come out the same whatever order logs are imported in.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

from ..errors import CitycardError, InputError
from ..fsutil import file_sha256
from ..terminal.txlog import TxRecord, read_records

MONEY = ("accepted", "suspicious")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS tx (
        id {serial} PRIMARY KEY, rec_hash TEXT NOT NULL UNIQUE, card TEXT NOT NULL, app TEXT NOT NULL,
        kind TEXT NOT NULL, online INTEGER NOT NULL, counter INTEGER NOT NULL, balance_before BIGINT NOT NULL,
        amount BIGINT NOT NULL, balance_after BIGINT NOT NULL, ttype INTEGER NOT NULL, terminal TEXT NOT NULL,
        ttsn TEXT, tx_date TEXT NOT NULL, tx_time TEXT NOT NULL, tac TEXT, status TEXT NOT NULL,
        source TEXT NOT NULL, verdict TEXT NOT NULL, reason TEXT, import_id BIGINT NOT NULL,
        file TEXT NOT NULL, line INTEGER NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS tx_card ON tx (card, app, tx_date, tx_time, file, line, id)""",
    """CREATE INDEX IF NOT EXISTS tx_counter ON tx (card, app, online, counter)""",
    """CREATE INDEX IF NOT EXISTS tx_ttsn ON tx (terminal, ttsn)""",
    """CREATE INDEX IF NOT EXISTS tx_import ON tx (import_id)""",
    """CREATE TABLE IF NOT EXISTS imports (
        id {serial} PRIMARY KEY, file_sha256 TEXT NOT NULL UNIQUE, name TEXT NOT NULL, at TEXT NOT NULL,
        records INTEGER NOT NULL, new INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS settlements (
        id {serial} PRIMARY KEY, date_from TEXT NOT NULL, date_to TEXT NOT NULL, at TEXT NOT NULL,
        last_import BIGINT NOT NULL, records BIGINT NOT NULL, UNIQUE (date_from, date_to))""",
    """CREATE TABLE IF NOT EXISTS settled (
        tx_id BIGINT PRIMARY KEY, settlement_id BIGINT NOT NULL, verdict TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS tx_date ON tx (tx_date)""",
]

#: the extra keys of a report that touches a closed period (records filed after it was closed)
LATE_KEYS = ("late_purchases", "late_purchase_fen", "late_load_fen")

_TX_COLS = ("card, app, kind, online, counter, balance_before, amount, balance_after, ttype, terminal, ttsn, "
            "tx_date, tx_time, tac, status, source, verdict, reason")


class LedgerError(CitycardError):
    """The ledger cannot be opened or an import cannot be done (nothing was changed)."""


#: (record) -> None when its TAC verifies, else the reason it does not
TacCheck = Callable[[TxRecord], "str | None"]


@dataclass(frozen=True)
class ImportSummary:
    files: int
    skipped_files: int          # already imported (same content)
    records: int                # lines read
    new: int                    # distinct records filed
    repeated: int               # records already in the ledger (same content): nothing added
    verdicts: dict[str, int]    # verdicts of the records this import touched, after recomputation

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "skipped_files": self.skipped_files, "records": self.records,
                "new": self.new, "repeated": self.repeated, "verdicts": dict(self.verdicts)}


@dataclass(frozen=True)
class Settlement:
    """A closed period of transaction dates (``YYYYMMDD``, both included)."""

    date_from: str
    date_to: str
    at: str                     # when it was closed (UTC)
    last_import: int            # the last import filed before it was closed
    records: int                # the records it holds

    def as_dict(self) -> dict[str, Any]:
        return {"from": _iso(self.date_from), "to": _iso(self.date_to), "closed_at": self.at,
                "last_import": self.last_import, "records": self.records}


def _iso(day: str) -> str:
    """``YYYYMMDD`` as ``YYYY-MM-DD`` (messages)."""
    return f"{day[:4]}-{day[4:6]}-{day[6:]}" if len(day) == 8 else day


def record_hash(rec: TxRecord) -> str:
    return hashlib.sha256(rec.to_json().encode("ascii")).hexdigest()


class Ledger:
    def __init__(self, url: str, *, create: bool = True) -> None:
        from ..db import Database

        self.url = url
        self.db = Database(url, _SCHEMA, what="ledger", lock_id=736866, error=LedgerError, create=create)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ import
    def import_logs(self, paths: Iterable[str], check_tac: TacCheck) -> ImportSummary:
        """File every record of the logs ``paths`` in one transaction (all or nothing)."""
        at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        files = skipped = records = new = repeated = 0
        with self.db.transaction() as cur:
            if self.db.pg:
                cur.execute("SELECT pg_advisory_xact_lock(736867)")     # one import at a time: one chain view
            touched_imports: list[int] = []
            for path in paths:
                files += 1
                try:
                    digest = file_sha256(path)
                except FileNotFoundError:
                    raise InputError(f"{path}: no such terminal log") from None
                if cur.execute("SELECT id FROM imports WHERE file_sha256 = ?", (digest,)).fetchone():
                    skipped += 1
                    continue
                cur.execute("INSERT INTO imports (file_sha256, name, at, records, new) VALUES (?, ?, ?, 0, 0)",
                            (digest, os.path.basename(path), at))
                import_id = int(cur.execute("SELECT id FROM imports WHERE file_sha256 = ?", (digest,)).fetchone()[0])
                touched_imports.append(import_id)
                n_file = new_file = 0
                for line, rec in read_records(path):
                    n_file += 1
                    h = record_hash(rec)
                    if cur.execute("SELECT 1 FROM tx WHERE rec_hash = ?", (h,)).fetchone():
                        repeated += 1
                        continue
                    if rec.kind == "block":       # an event: no money, no TAC (a terminal blocked the card)
                        why, verdict = None, "event"
                    else:
                        why = None if rec.status == "grey" else check_tac(rec)
                        verdict = "grey" if rec.status == "grey" else ("rejected" if why else "accepted")
                    cur.execute(f"INSERT INTO tx (rec_hash, {_TX_COLS}, import_id, file, line) VALUES "
                                f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (h, rec.card, rec.app, rec.kind, int(rec.online), rec.counter, rec.balance_before,
                                 rec.amount, rec.balance_after, rec.ttype, rec.terminal, rec.ttsn, rec.date, rec.time,
                                 rec.tac, rec.status, rec.source, verdict,
                                 f"wrong TAC: {why}" if why else None, import_id, os.path.basename(path), line))
                    new_file += 1
                records += n_file
                new += new_file
                cur.execute("UPDATE imports SET records = ?, new = ? WHERE id = ?", (n_file, new_file, import_id))
            verdicts: dict[str, int] = {}
            if touched_imports:
                marks = ", ".join("?" for _ in touched_imports)
                cards = cur.execute(f"SELECT DISTINCT card, app FROM tx WHERE import_id IN ({marks}) "
                                    f"ORDER BY card, app", touched_imports).fetchall()
                for card, app in cards:
                    for v in self._rechain(cur, card, app):
                        verdicts[v] = verdicts.get(v, 0) + 1
        return ImportSummary(files, skipped, records, new, repeated, verdicts)

    def _rechain(self, cur: Any, card: str, app: str) -> list[str]:
        """Recompute the order-dependent verdicts of one card's records; their verdicts."""
        rows = cur.execute("SELECT id, kind, online, counter, balance_before, balance_after, terminal, ttsn, status, "
                           "verdict, reason FROM tx WHERE card = ? AND app = ? "
                           "ORDER BY tx_date, tx_time, file, line, id", (card, app)).fetchall()
        seen_counter: set[tuple[int, int]] = set()
        seen_ttsn: set[tuple[str, str]] = set()
        proven: set[tuple[int, int]] = set()
        for r in rows:
            if r[8] != "grey" and r[9] != "rejected":
                proven.add((r[2], r[3]))
        last_counter: dict[int, int] = {}
        last_balance: int | None = None
        out = []
        for (rid, kind, online, counter, before, after, terminal, ttsn, status, verdict, reason) in rows:
            if verdict in ("rejected", "event"):
                out.append(verdict)
                continue
            if status == "grey":
                new, why = ("settled", "proof arrived") if (online, counter) in proven else ("grey", None)
            elif (ttsn is not None and (terminal, ttsn) in seen_ttsn) or (online and (online, counter) in seen_counter):
                # what the TAC covers: a purchase's terminal and TTSN, a load's online counter
                new, why = "duplicate", ("same terminal and terminal serial already filed" if ttsn is not None
                                         else "same card and online counter already filed")
            else:
                problems = []
                if (online, counter) in seen_counter:     # a purchase counter (not under the TAC) claimed twice
                    problems.append(f"offline counter {counter} also claimed by an earlier record")
                seen_counter.add((online, counter))
                if ttsn is not None:
                    seen_ttsn.add((terminal, ttsn))
                prev = last_counter.get(online)
                if prev is not None and counter != prev + 1:
                    problems.append(f"{'online' if online else 'offline'} counter {counter} follows {prev}")
                if last_balance is not None and before != last_balance:
                    problems.append(f"balance before {before} does not follow {last_balance}")
                last_counter[online] = counter
                last_balance = after
                new, why = ("suspicious", "; ".join(problems)) if problems else ("accepted", None)
            if new != verdict or why != reason:
                cur.execute("UPDATE tx SET verdict = ?, reason = ? WHERE id = ?", (new, why, rid))
            out.append(new)
        return out

    # ------------------------------------------------------------------ reading
    def card(self, card: str, app: str | None = None) -> dict[str, Any]:
        """The card's cleared state per application and its history (oldest first)."""
        args: tuple = (card,) if app is None else (card, app)
        rows = self.db.all(f"SELECT {_TX_COLS}, file, line FROM tx WHERE card = ?" + (" AND app = ?" if app else "")
                           + " ORDER BY app, tx_date, tx_time, file, line, id", args)
        if not rows:
            raise LedgerError(f"card {card}: no record in the ledger {self.url}")
        keys = [k.strip() for k in _TX_COLS.split(",")] + ["file", "line"]
        history = [dict(zip(keys, r)) for r in rows]
        apps: dict[str, dict[str, Any]] = {}
        for h in history:
            h["online"] = bool(h["online"])
            a = apps.setdefault(h["app"], {"balance": None, "online_counter": None, "offline_counter": None,
                                           "last": None, "records": 0})
            a["records"] += 1
            if h["verdict"] in MONEY:
                a["balance"] = h["balance_after"]
                a["online_counter" if h["online"] else "offline_counter"] = h["counter"]
                a["last"] = f"{h['tx_date']} {h['tx_time']}"
        return {"card": card, "apps": apps, "history": history}

    def carried_balance(self, card: str, app: str) -> tuple[int | None, int]:
        """The balance the back office can prove, and how many suspicious records the card's
        chain has: the last load's new balance (its TAC covers it) minus every purchase amount
        after it (their TACs cover the amounts); ``None`` with no money record at all.  The
        purchase records' balance fields are not under their TAC and are not used here."""
        fen: int | None = None
        suspicious = 0
        for kind, after, amount, verdict in self.db.stream(
                "SELECT kind, balance_after, amount, verdict FROM tx WHERE card = ? AND app = ? AND verdict IN (?, ?) "
                "ORDER BY tx_date, tx_time, file, line, id", (card, app, *MONEY)):
            suspicious += verdict == "suspicious"
            fen = int(after) if kind == "load" else (fen or 0) - int(amount)
        return fen, suspicious

    def balance(self, card: str, app: str) -> int | None:
        """The last cleared balance of a card's purse (None: no money record of it)."""
        row = self.db.one("SELECT balance_after FROM tx WHERE card = ? AND app = ? AND verdict IN (?, ?) "
                          "ORDER BY tx_date DESC, tx_time DESC, file DESC, line DESC, id DESC LIMIT 1",
                          (card, app, *MONEY))
        return int(row[0]) if row else None

    # ------------------------------------------------------------------ settlement periods
    def settle(self, date_from: str, date_to: str) -> "Settlement":
        """Close the period of transaction dates ``date_from``..``date_to`` (``YYYYMMDD``, both
        included): each record dated inside it keeps, for reports, the verdict it has now; a
        record dated inside it that is filed later is late.  Taken under the import lock, so no
        import is half seen; refused when it overlaps a closed period (nothing changed)."""
        if date_from > date_to:
            raise InputError(f"--from {_iso(date_from)} is after --to {_iso(date_to)}")
        at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self.db.transaction() as cur:
            if self.db.pg:
                cur.execute("SELECT pg_advisory_xact_lock(736867)")     # the imports' lock: one chain view
            clash = cur.execute("SELECT date_from, date_to FROM settlements WHERE date_from <= ? AND date_to >= ? "
                                "ORDER BY date_from", (date_to, date_from)).fetchone()
            if clash:
                raise LedgerError(f"the period {_iso(date_from)}..{_iso(date_to)} overlaps the closed period "
                                  f"{_iso(clash[0])}..{_iso(clash[1])}: a record is settled once (nothing changed)")
            last_import = int(cur.execute("SELECT COALESCE(MAX(id), 0) FROM imports").fetchone()[0])
            count = int(cur.execute("SELECT COUNT(*) FROM tx WHERE tx_date >= ? AND tx_date <= ?",
                                    (date_from, date_to)).fetchone()[0])
            cur.execute("INSERT INTO settlements (date_from, date_to, at, last_import, records) VALUES (?, ?, ?, ?, ?)",
                        (date_from, date_to, at, last_import, count))
            sid = int(cur.execute("SELECT id FROM settlements WHERE date_from = ? AND date_to = ?",
                                  (date_from, date_to)).fetchone()[0])
            cur.execute("INSERT INTO settled (tx_id, settlement_id, verdict) SELECT id, ?, verdict FROM tx "
                        "WHERE tx_date >= ? AND tx_date <= ?", (sid, date_from, date_to))
        return Settlement(date_from, date_to, at, last_import, count)

    def settlements(self, date_from: str | None = None, date_to: str | None = None) -> list["Settlement"]:
        """The closed periods that overlap ``date_from``..``date_to`` (all when not given)."""
        rows = self.db.all("SELECT date_from, date_to, at, last_import, records FROM settlements "
                           "WHERE date_to >= ? AND date_from <= ? ORDER BY date_from",
                           (date_from or "00000000", date_to or "99999999"))
        return [Settlement(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]

    def report(self, *, by: str = "unit", date_from: str | None = None, date_to: str | None = None
               ) -> Iterator[dict[str, Any]]:
        """Settlement totals (streamed), grouped ``by`` unit, terminal or day: purchases owed
        (count and fen, suspicious apart), loads, and counts of rejected, duplicate and grey records.
        A record of a closed period counts with its verdict when the period was closed; when the
        range touches a closed period, the records filed after it was closed are totalled apart
        (:data:`LATE_KEYS`), so the report of a closed period does not change."""
        group = {"unit": "app", "terminal": "terminal", "day": "tx_date"}.get(by)
        if group is None:
            raise InputError(f"--by {by}: unit, terminal or day")
        where, args = [], []
        if date_from:
            where.append("tx.tx_date >= ?")
            args.append(date_from)
        if date_to:
            where.append("tx.tx_date <= ?")
            args.append(date_to)
        late_shown = bool(self.settlements(date_from, date_to))
        verdict = "COALESCE(s.verdict, tx.verdict)"            # a settled record: its verdict then
        on_time = "(s.tx_id IS NOT NULL OR p.id IS NULL)"      # not dated inside a period closed before it came
        late = "(s.tx_id IS NULL AND p.id IS NOT NULL)"
        buy = "tx.kind <> 'load' AND tx.kind <> 'unload'"

        def total(cond: str, what: str = "1") -> str:
            return f"SUM(CASE WHEN {cond} THEN {what} ELSE 0 END)"

        cols = [total(f"{on_time} AND {buy} AND {verdict} IN ('accepted', 'suspicious')"),
                total(f"{on_time} AND {buy} AND {verdict} IN ('accepted', 'suspicious')", "tx.amount"),
                total(f"{on_time} AND {buy} AND {verdict} = 'suspicious'"),
                total(f"{on_time} AND {buy} AND {verdict} = 'suspicious'", "tx.amount"),
                total(f"{on_time} AND tx.kind = 'load' AND {verdict} IN ('accepted', 'suspicious')", "tx.amount"),
                total(f"{on_time} AND {verdict} = 'rejected'"),
                total(f"{on_time} AND {verdict} = 'duplicate'"),
                total(f"{on_time} AND {verdict} = 'grey'"),
                total(f"{late} AND {buy} AND tx.verdict IN ('accepted', 'suspicious')"),
                total(f"{late} AND {buy} AND tx.verdict IN ('accepted', 'suspicious')", "tx.amount"),
                total(f"{late} AND tx.kind = 'load' AND tx.verdict IN ('accepted', 'suspicious')", "tx.amount")]
        sql = (f"SELECT tx.{group}, {', '.join(cols)} FROM tx LEFT JOIN settled s ON s.tx_id = tx.id "
               "LEFT JOIN settlements p ON tx.tx_date >= p.date_from AND tx.tx_date <= p.date_to "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} GROUP BY tx.{group} ORDER BY tx.{group}")
        keys = (by, "purchases", "purchase_fen", "suspicious", "suspicious_fen", "load_fen", "rejected",
                "duplicates", "grey") + LATE_KEYS
        for row in self.db.stream(sql, args):
            out = {k: (int(v) if isinstance(v, (int, float)) or (v is not None and k != by) else v)
                   for k, v in zip(keys, row)}
            if not late_shown:
                for k in LATE_KEYS:
                    del out[k]
            yield out

    def grey(self, older_than: str | None = None) -> Iterator[dict[str, Any]]:
        """Grey records not yet settled (older than a date YYYYMMDD when given), streamed."""
        sql = ("SELECT card, app, kind, counter, amount, terminal, ttsn, tx_date, tx_time, file, line FROM tx "
               "WHERE verdict = 'grey'" + (" AND tx_date < ?" if older_than else "") + " ORDER BY tx_date, tx_time")
        keys = ("card", "app", "kind", "counter", "amount", "terminal", "ttsn", "date", "time", "file", "line")
        for row in self.db.stream(sql, (older_than,) if older_than else ()):
            yield dict(zip(keys, row))

    def blocks(self) -> Iterator[dict[str, Any]]:
        """The block events terminals reported (hotlisted cards blocked on the spot), streamed."""
        keys = ("card", "app", "terminal", "date", "time", "file", "line")
        for row in self.db.stream("SELECT card, app, terminal, tx_date, tx_time, file, line FROM tx "
                                  "WHERE kind = 'block' ORDER BY tx_date, tx_time, id"):
            yield dict(zip(keys, row))
