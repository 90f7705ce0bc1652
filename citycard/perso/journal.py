"""The issuance journal: every card's life in a database (SQLite, or PostgreSQL for a bureau
with several stations).

Tables::

    batches  (batch PK, profile, data_file, data_sha256, rows, created)
    cards    (batch, row PK; cardholder_id, card_serial UNIQUE, card_number, status,
              attempts, reader, started, finished, error, data_offset)
    attempts (id PK, batch, row, card_serial, reader, status, error, started, finished)
    serials  (prefix PK, next)          -- card numbers are never handed out twice

Statuses: ``pending`` → ``in_progress`` → ``verified`` (or ``personalized`` without
verification), or ``failed``; a card that was given up after it was written is recorded
in ``attempts`` as ``spoiled``.

``data_offset`` is the byte offset of the row in the data file, so that a worker reads only
its row (the file is never held in memory).  A batch is registered only once its data file
passed the validator (:mod:`citycard.perso.validate`), in the same transaction: a batch
found in the journal with the same data hash is a validated file, and a resume starts at
once.

Claiming is one transaction: SQLite takes the write lock first (``BEGIN IMMEDIATE``);
PostgreSQL uses ``SELECT ... FOR UPDATE SKIP LOCKED`` so that stations sharing the
journal never get the same row.  Every state change is committed durably (SQLite: WAL,
``synchronous=FULL``) before the card moves on.
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ..errors import CitycardError

STATUSES = ("pending", "in_progress", "personalized", "verified", "failed", "spoiled")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS batches (
        batch TEXT PRIMARY KEY, profile TEXT NOT NULL, data_file TEXT NOT NULL,
        data_sha256 TEXT NOT NULL, rows INTEGER NOT NULL, created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cards (
        batch TEXT NOT NULL, row INTEGER NOT NULL, cardholder_id TEXT NOT NULL,
        card_serial TEXT UNIQUE, card_number BIGINT, status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, reader TEXT, started TEXT, finished TEXT, error TEXT,
        data_offset BIGINT, PRIMARY KEY (batch, row))""",
    """CREATE TABLE IF NOT EXISTS attempts (
        id {serial} PRIMARY KEY, batch TEXT NOT NULL, row INTEGER NOT NULL, card_serial TEXT,
        reader TEXT, status TEXT NOT NULL, error TEXT, started TEXT, finished TEXT)""",
    """CREATE TABLE IF NOT EXISTS serials (prefix TEXT PRIMARY KEY, next BIGINT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS cards_status ON cards (batch, status, row)""",
    # the claim of the next card costs the same at the first and the millionth row: partial
    # indexes hold only the rows still to do (issue 19)
    """CREATE INDEX IF NOT EXISTS cards_pending ON cards (batch, row) WHERE status = 'pending'""",
    """CREATE INDEX IF NOT EXISTS cards_in_progress ON cards (batch, reader, row) WHERE status = 'in_progress'""",
    # a cardholder already issued in another batch of the journal (issue 17)
    """CREATE INDEX IF NOT EXISTS cards_holder ON cards (cardholder_id)""",
]


class JournalError(CitycardError):
    pass


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Claim:
    batch: str
    row: int
    cardholder_id: str
    card_serial: str
    card_number: int
    attempts: int
    resumed: bool            # the row was in progress when the batch stopped
    data_offset: int | None = None   # the row's byte offset in the data file


class Journal:
    """One connection per thread (``connect()`` again in each worker)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = url.startswith(("postgresql://", "postgres://"))
        self.ph = "%s" if self.pg else "?"
        self._conn: Any = None
        self._open()

    # ------------------------------------------------------------------ connection
    def _open(self) -> None:
        if self.pg:
            try:
                import psycopg
            except ImportError:
                raise JournalError("a PostgreSQL journal needs psycopg (pip install 'citycard[postgres]')") from None
            try:
                self._conn = psycopg.connect(self.url, autocommit=False)
            except psycopg.Error as exc:
                raise JournalError(f"cannot open the journal database: {str(exc).splitlines()[0]}") from None
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(736863)")   # stations create the schema one at a time
                for stmt in _SCHEMA:
                    cur.execute(stmt.format(serial="BIGSERIAL"))
                cur.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'cards' "
                            "AND column_name = 'data_offset' AND table_schema = current_schema()")
                if cur.fetchone() is None:    # a journal of an earlier version (ALTER locks the table: only then)
                    cur.execute("ALTER TABLE cards ADD COLUMN data_offset BIGINT")
            self._conn.commit()
            return
        try:
            conn = sqlite3.connect(self.url, timeout=60.0, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            for stmt in _SCHEMA:
                conn.execute(stmt.format(serial="INTEGER"))
            if "data_offset" not in {r[1] for r in conn.execute("PRAGMA table_info(cards)")}:
                conn.execute("ALTER TABLE cards ADD COLUMN data_offset BIGINT")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.url}: cannot open the journal: {exc}") from None
        self._conn = conn

    def connect(self) -> "Journal":
        """Another connection to the same journal (for a worker thread)."""
        return Journal(self.url)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", self.ph)

    def _tx(self):
        return _Tx(self)

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._tx() as cur:
            cur.execute(self._q(sql), tuple(args))
            return list(cur.fetchall())

    # ------------------------------------------------------------------ batches
    def create_batch(self, batch: str, profile: str, data_file: str, sha256: str,
                     rows: list[tuple[int, str]]) -> bool:
        """Register a batch and its rows (all pending), or check that an existing batch has the
        same data.  Returns True when created."""
        with self._tx() as cur:
            if self.pg:  # two stations starting the same batch: one registers it, the other finds it
                cur.execute("SELECT pg_advisory_xact_lock(736864)")
            cur.execute(self._q("SELECT data_sha256, profile FROM batches WHERE batch = ?"), (batch,))
            got = cur.fetchone()
            if got is not None:
                if got[0] != sha256:
                    raise JournalError(f"batch {batch!r} was started with another version of its data file "
                                       f"({data_file} changed); use a new --batch name")
                return False
            cur.execute(self._q("INSERT INTO batches (batch, profile, data_file, data_sha256, rows, created) "
                                "VALUES (?, ?, ?, ?, ?, ?)"), (batch, profile, data_file, sha256, len(rows), now()))
            sql = self._q("INSERT INTO cards (batch, row, cardholder_id) VALUES (?, ?, ?)")
            cur.executemany(sql, [(batch, r, cid) for r, cid in rows])
            return True

    def find_batch(self, batch: str) -> tuple[str, str] | None:
        """(data_sha256, profile) of a registered batch, or None."""
        got = self._rows("SELECT data_sha256, profile FROM batches WHERE batch = ?", (batch,))
        return (got[0][0], got[0][1]) if got else None

    def register_batch(self, batch: str, profile: str, data_file: str, sha256: str) -> "BatchWriter | None":
        """Start registering a batch whose rows come as a stream (use as a context manager;
        :meth:`BatchWriter.add` each row; an exception inside rolls everything back).  None
        when the batch exists with the same data (it was validated then); an error when it
        exists with another data file."""
        return BatchWriter(self, batch, profile, data_file, sha256)

    def issued(self, ids: list[str] | tuple[str, ...], batch: str) -> dict[str, str]:
        """For identities already issued (or being issued) in another batch: where."""
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = list(ids[i:i + 500])
            marks = ", ".join([self.ph] * len(part))
            sql = (f"SELECT cardholder_id, batch, row, card_serial, status FROM cards WHERE cardholder_id IN ({marks}) "
                   f"AND batch <> {self.ph} AND status IN ('verified', 'personalized', 'in_progress')")
            cur = self._conn.cursor()
            try:
                cur.execute(sql, (*part, batch))
                for cid, b, r, serial, st in cur.fetchall():
                    out.setdefault(cid, f"batch {b} row {r}, card {serial or '-'}, {st}")
            finally:
                cur.close()
        return out

    #: the claim's queries (the partial indexes cards_in_progress and cards_pending serve them)
    CLAIM_IN_PROGRESS = ("SELECT row, cardholder_id, card_serial, card_number, attempts, data_offset FROM cards "
                         "WHERE batch = ? AND status = 'in_progress' AND reader = ? ORDER BY row LIMIT 1")
    CLAIM_PENDING = ("SELECT row, cardholder_id, card_serial, card_number, attempts, data_offset FROM cards "
                     "WHERE batch = ? AND status = 'pending' ORDER BY row LIMIT 1")

    def claim(self, batch: str, reader: str, prefix: str, serial_of: Callable[[int], str], *,
              resume_reader_only: bool = False) -> Claim | None:
        """Take the next row for ``reader``: first a row this reader left in progress (its card
        may still be in the reader, half done), then the lowest pending row.  The card number
        comes from the serial counter in the same transaction."""
        with self._tx() as cur:
            lock = " FOR UPDATE SKIP LOCKED" if self.pg else ""
            cur.execute(self._q(self.CLAIM_IN_PROGRESS + lock), (batch, reader))
            got = cur.fetchone()
            resumed = got is not None
            if got is None and not resume_reader_only:
                cur.execute(self._q(self.CLAIM_PENDING + lock), (batch,))
                got = cur.fetchone()
            if got is None:
                return None
            row, cid, serial, number, attempts, offset = got
            if serial is None:
                number = self._next_number(cur, prefix)
                serial = serial_of(number)
            cur.execute(self._q("UPDATE cards SET status = 'in_progress', reader = ?, attempts = attempts + 1, "
                                "started = ?, card_number = ?, card_serial = ?, error = NULL "
                                "WHERE batch = ? AND row = ?"),
                        (reader, now(), number, serial, batch, row))
            return Claim(batch, row, cid, serial, int(number), attempts + 1, resumed, offset)

    def orphans(self, batch: str) -> list[tuple[int, str]]:
        """Rows left in progress by readers that are not part of this run: (row, reader)."""
        return [(r, rd) for r, rd in self._rows("SELECT row, reader FROM cards WHERE batch = ? AND "
                                                  "status = 'in_progress' ORDER BY row", (batch,))]

    def release(self, batch: str, row: int) -> None:
        """Put an in-progress row back to pending (its reader is gone); it keeps its serial."""
        with self._tx() as cur:
            cur.execute(self._q("UPDATE cards SET status = 'pending', reader = NULL WHERE batch = ? AND row = ? "
                                "AND status = 'in_progress'"), (batch, row))

    def _next_number(self, cur: Any, prefix: str) -> int:
        if self.pg:
            cur.execute("INSERT INTO serials (prefix, next) VALUES (%s, 2) ON CONFLICT (prefix) "
                        "DO UPDATE SET next = serials.next + 1 RETURNING next - 1", (prefix,))
            return int(cur.fetchone()[0])
        cur.execute("INSERT INTO serials (prefix, next) VALUES (?, 1) ON CONFLICT (prefix) DO NOTHING", (prefix,))
        cur.execute("SELECT next FROM serials WHERE prefix = ?", (prefix,))
        n = int(cur.fetchone()[0])
        cur.execute("UPDATE serials SET next = ? WHERE prefix = ?", (n + 1, prefix))
        return n

    def finish(self, batch: str, row: int, serial: str, reader: str, status: str, error: str | None,
               started: str) -> None:
        """Record the outcome of an attempt (durably) in the row and the attempts log."""
        t = now()
        with self._tx() as cur:
            row_status = status if status != "spoiled" else "failed"
            cur.execute(self._q("UPDATE cards SET status = ?, finished = ?, error = ? WHERE batch = ? AND row = ?"),
                        (row_status, t, error, batch, row))
            cur.execute(self._q("INSERT INTO attempts (batch, row, card_serial, reader, status, error, started, "
                                "finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                        (batch, row, serial, reader, status, error, started, t))

    def retry_failed(self, batch: str) -> int:
        """Failed rows go back to pending with a new serial (the failed card stays spoiled)."""
        with self._tx() as cur:
            cur.execute(self._q("UPDATE cards SET status = 'pending', card_serial = NULL, card_number = NULL, "
                                "reader = NULL WHERE batch = ? AND status = 'failed'"), (batch,))
            return cur.rowcount

    # ------------------------------------------------------------------ reporting
    def batches(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT batch FROM batches ORDER BY created")]

    def counts(self, batch: str) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for status, n in self._rows("SELECT status, COUNT(*) FROM cards WHERE batch = ? GROUP BY status", (batch,)):
            out[status] = int(n)
        return out

    REPORT_KEYS = ("batch", "row", "cardholder_id", "card_serial", "status", "attempts", "reader", "started",
                   "finished", "error")

    def report(self, batch: str | None = None) -> list[dict[str, Any]]:
        return list(self.iter_report(batch))

    def iter_report(self, batch: str | None = None) -> Iterator[dict[str, Any]]:
        """Every card of the journal (or of one batch), as a stream: constant memory whatever
        the journal's size (a server-side cursor on PostgreSQL)."""
        sql = self._q("SELECT batch, row, cardholder_id, card_serial, status, attempts, reader, started, finished, "
                      "error FROM cards" + (" WHERE batch = ?" if batch else "") + " ORDER BY batch, row")
        args = (batch,) if batch else ()
        keys = self.REPORT_KEYS
        if self.pg:
            with self._conn.cursor(name="citycard_report") as cur:
                cur.itersize = 2000
                cur.execute(sql, args)
                for r in cur:
                    yield dict(zip(keys, r))
            self._conn.commit()
            return
        conn = sqlite3.connect(self.url, timeout=60.0, isolation_level=None)   # a reader of its own
        try:
            for r in conn.execute(sql, args):
                yield dict(zip(keys, r))
        finally:
            conn.close()

    def attempts(self, batch: str) -> list[dict[str, Any]]:
        keys = ("row", "card_serial", "reader", "status", "error", "started", "finished")
        return [dict(zip(keys, r)) for r in self._rows(
            "SELECT row, card_serial, reader, status, error, started, finished FROM attempts WHERE batch = ? "
            "ORDER BY id", (batch,))]


class BatchWriter:
    """Registers a batch and its rows in one transaction (see :meth:`Journal.register_batch`)."""

    def __init__(self, journal: Journal, batch: str, profile: str, data_file: str, sha256: str) -> None:
        self.j, self.batch = journal, batch
        self.info = (profile, data_file, sha256)
        self.pending: list[tuple[str, int, str, int]] = []
        self.rows = 0
        self.exists = False

    def __enter__(self) -> "BatchWriter":
        self.tx = self.j._tx()
        self.cur = self.tx.__enter__()
        try:
            if self.j.pg:  # two stations starting the same batch: one registers it, the other finds it
                self.cur.execute("SELECT pg_advisory_xact_lock(736864)")
            self.cur.execute(self.j._q("SELECT data_sha256 FROM batches WHERE batch = ?"), (self.batch,))
            got = self.cur.fetchone()
            if got is not None:
                self.exists = True
                if got[0] != self.info[2]:
                    raise JournalError(f"batch {self.batch!r} was started with another version of its data file "
                                       f"({self.info[1]} changed); use a new --batch name")
        except BaseException as exc:
            self.tx.__exit__(type(exc), exc, None)
            raise
        return self

    def add(self, row: int, cardholder_id: str, offset: int) -> None:
        self.pending.append((self.batch, row, cardholder_id, offset))
        self.rows += 1
        if len(self.pending) >= 5000:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.cur.executemany(self.j._q("INSERT INTO cards (batch, row, cardholder_id, data_offset) "
                                           "VALUES (?, ?, ?, ?)"), self.pending)
            self.pending = []

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and not self.exists:
            try:
                self._flush()
                profile, data_file, sha = self.info
                self.cur.execute(self.j._q("INSERT INTO batches (batch, profile, data_file, data_sha256, rows, "
                                           "created) VALUES (?, ?, ?, ?, ?, ?)"),
                                 (self.batch, profile, data_file, sha, self.rows, now()))
            except BaseException as e:
                self.tx.__exit__(type(e), e, None)
                raise
        self.tx.__exit__(exc_type, exc, tb)


class _Tx:
    """A transaction: SQLite ``BEGIN IMMEDIATE`` (writer lock first), PostgreSQL default."""

    def __init__(self, j: Journal) -> None:
        self.j = j

    def __enter__(self) -> Any:
        c = self.j._conn
        if self.j.pg:
            self.cur = c.cursor()
        else:
            c.execute("BEGIN IMMEDIATE")
            self.cur = c.cursor()
        return self.cur

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        c = self.j._conn
        try:
            if exc_type is None:
                c.commit() if self.j.pg else c.execute("COMMIT")
            else:
                c.rollback() if self.j.pg else c.execute("ROLLBACK")
        finally:
            self.cur.close()

