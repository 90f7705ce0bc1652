"""The issuance journal: every card's life in a database (SQLite, or PostgreSQL for a bureau
with several stations).

Tables::

    batches  (batch PK, profile, data_file, data_sha256, rows, created)
    cards    (batch, row PK; cardholder_id, card_serial UNIQUE, card_number, status,
              attempts, reader, started, finished, error, data_offset, run, reissue_of)
    attempts (id PK, batch, row, card_serial, reader, status, error, started, finished,
              run, station, atr, uid, reissue_of)
    serials  (prefix PK, next)          -- card numbers are never handed out twice

Statuses: ``pending`` → ``in_progress`` → ``verified`` (or ``personalized`` without
verification), or ``failed``; a card that was given up after it was written is recorded
in ``attempts`` as ``spoiled``.  An attempt is recorded before the first write to a card,
and a card removed mid-personalization becomes a ``void`` attempt
(:mod:`citycard.perso.journal_attempts`).

``data_offset`` is the byte offset of the row in the data file, so that a worker reads only
its row (the file is never held in memory).  A batch is registered only once its data file
passed the validator (:mod:`citycard.perso.validate`), in the same transaction: a batch
found in the journal with the same data hash is a validated file, and a resume starts at
once.

Claiming is one transaction: SQLite takes the write lock first (``BEGIN IMMEDIATE``);
PostgreSQL uses ``SELECT ... FOR UPDATE SKIP LOCKED`` so that stations sharing the
journal never get the same row (its statements: :mod:`citycard.perso.journal_claim`).
Every state change is committed durably (SQLite: WAL, ``synchronous=FULL``) before the
card moves on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from . import journal_claim
from .journal_attempts import RESUMED, VOID, Attempt, AttemptLog, created_by, upgrade_schema
from .journal_tx import BatchWriter, JournalError, _Tx, can_pipeline, now, pg_pipelined

__all__ = ["RESUMED", "STATUSES", "VOID", "Attempt", "BatchWriter", "Claim", "Journal", "JournalError", "now"]

STATUSES = ("pending", "in_progress", "personalized", "verified", "failed", "spoiled")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS batches (
        batch TEXT PRIMARY KEY, profile TEXT NOT NULL, data_file TEXT NOT NULL,
        data_sha256 TEXT NOT NULL, rows INTEGER NOT NULL, created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cards (
        batch TEXT NOT NULL, row INTEGER NOT NULL, cardholder_id TEXT NOT NULL,
        card_serial TEXT UNIQUE, card_number BIGINT, status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, reader TEXT, started TEXT, finished TEXT, error TEXT,
        data_offset BIGINT, run BIGINT, PRIMARY KEY (batch, row))""",
    """CREATE TABLE IF NOT EXISTS attempts (
        id {serial} PRIMARY KEY, batch TEXT NOT NULL, row INTEGER NOT NULL, card_serial TEXT,
        reader TEXT, status TEXT NOT NULL, error TEXT, started TEXT, finished TEXT)""",
    """CREATE TABLE IF NOT EXISTS serials (prefix TEXT PRIMARY KEY, next BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run {serial} PRIMARY KEY, uid TEXT NOT NULL UNIQUE, batch TEXT NOT NULL, station TEXT, host TEXT,
        pid INTEGER, started TEXT NOT NULL, ended TEXT)""",
    """CREATE INDEX IF NOT EXISTS cards_status ON cards (batch, status, row)""",
    # the claim of the next card costs the same at the first and the millionth row: partial
    # indexes hold only the rows still to do (issue 19)
    """CREATE INDEX IF NOT EXISTS cards_pending ON cards (batch, row) WHERE status = 'pending'""",
    """CREATE INDEX IF NOT EXISTS cards_in_progress ON cards (batch, reader, row) WHERE status = 'in_progress'""",
    # a cardholder already issued in another batch of the journal (issue 17)
    """CREATE INDEX IF NOT EXISTS cards_holder ON cards (cardholder_id)""",
]


FORMAT = "citycard-journal"
VERSION = 3            # 2: data offsets, runs, the meta stamp; 3: attempts before the first write, re-issues


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


class Journal(AttemptLog):
    """One connection per thread (``connect()`` again in each worker)."""

    def __init__(self, url: str, *, expect_id: str | None = None,
                 expect_file: tuple[int, int] | None = None, create: bool = True) -> None:
        self.url = url
        self.create = create
        self.pg = url.startswith(("postgresql://", "postgres://"))
        self.ph = "%s" if self.pg else "?"
        self._conn: Any = None
        self.expect_id = expect_id            # a worker's connection: the journal of its run, no other
        self.expect_file = expect_file
        self.journal_id = ""
        self.file_identity: tuple[int, int] | None = None
        self._group = False
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
                cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
                tables = {r[0] for r in cur.fetchall()}
                self._check_stamp(cur, tables)
                # only what is missing: CREATE INDEX IF NOT EXISTS locks its table (SHARE) even when the
                # index is there, until this transaction ends: a station opening the journal would stop
                # the others' writes, and deadlock with a group that wrote attempts before cards
                cur.execute("SELECT relname FROM pg_class WHERE relnamespace = "   # the name as a value: "Bureau-1" too
                            "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())")
                existing = {r[0] for r in cur.fetchall()}
                for stmt in _SCHEMA:
                    if created_by(stmt) not in existing:
                        cur.execute(stmt.format(serial="BIGSERIAL"))
                cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'cards' "
                            "AND table_schema = current_schema()")
                have = {r[0] for r in cur.fetchall()}
                for col in ("data_offset", "run"):   # a journal of an earlier version (ALTER locks: only then)
                    if col not in have:
                        cur.execute(f"ALTER TABLE cards ADD COLUMN {col} BIGINT")
                upgrade_schema(cur, True, existing)
                self._stamp(cur)
            self._conn.commit()
            return
        if self.expect_file is not None:
            self._check_file()
        if not os.path.exists(self.url):
            if not self.create:
                raise JournalError(f"{self.url}: no such journal")
            try:      # cardholder data and serials: readable by the owner only (issue 18)
                os.close(os.open(self.url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise JournalError(f"{self.url}: cannot create the journal ({exc.strerror})") from None
        try:
            conn = sqlite3.connect(self.url, timeout=60.0, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.cursor()
            tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            self._check_stamp(cur, tables)
            for stmt in _SCHEMA:
                cur.execute(stmt.format(serial="INTEGER"))
            have = {r[1] for r in cur.execute("PRAGMA table_info(cards)")}
            for col in ("data_offset", "run"):
                if col not in have:
                    cur.execute(f"ALTER TABLE cards ADD COLUMN {col} BIGINT")
            upgrade_schema(cur, False)
            self._stamp(cur)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.url}: cannot open the journal: {exc}") from None
        except JournalError:
            conn.close()
            raise
        self._conn = conn
        st = os.stat(self.url)
        self.file_identity = (st.st_dev, st.st_ino)
        if self.expect_file is None:
            self.expect_file = self.file_identity

    # ------------------------------------------------------------------ identity
    def _check_stamp(self, cur: Any, tables: set[str]) -> None:
        """Refuse a database that is not a citycard journal, or one of a newer format."""
        if not tables:
            return
        if "meta" not in tables:
            if not {"batches", "cards"} <= tables:
                raise JournalError(f"{self._name()}: not a citycard journal (it has other tables)")
            return                          # a journal of format 1 (before the stamp): stamped now
        cur.execute("SELECT key, value FROM meta")
        meta = dict(cur.fetchall())
        if meta.get("format") != FORMAT:
            raise JournalError(f"{self._name()}: not a citycard journal (format {meta.get('format')!r})")
        if int(meta.get("version", "0")) > VERSION:
            raise JournalError(f"{self._name()}: journal format version {meta['version']} is newer than this "
                               f"citycard reads ({VERSION}); upgrade citycard")
        if self.expect_id is not None and meta.get("journal_id") != self.expect_id:
            raise JournalError(f"{self._name()}: the journal was replaced during the run (another journal id); "
                               "stopped")

    def _stamp(self, cur: Any) -> None:
        cur.execute(self._q("SELECT value FROM meta WHERE key = 'journal_id'"))
        got = cur.fetchone()
        if got is None:
            for k, v in (("format", FORMAT), ("version", str(VERSION)), ("journal_id", uuid.uuid4().hex)):
                cur.execute(self._q("INSERT INTO meta (key, value) VALUES (?, ?)"), (k, v))
            cur.execute(self._q("SELECT value FROM meta WHERE key = 'journal_id'"))
            got = cur.fetchone()
        else:
            cur.execute(self._q("UPDATE meta SET value = ? WHERE key = 'version'"), (str(VERSION),))
        self.journal_id = got[0]
        if self.expect_id is None:
            self.expect_id = self.journal_id

    def _name(self) -> str:
        return self.url.split("?")[0] if self.pg else self.url

    def _check_file(self) -> None:
        """SQLite: the journal file is still the one this run opened (not removed, not
        replaced): an open connection would otherwise go on writing to a deleted file."""
        try:
            st = os.stat(self.url)
        except FileNotFoundError:
            raise JournalError(f"{self.url}: the journal was removed during the run; stopped") from None
        if (st.st_dev, st.st_ino) != self.expect_file:
            raise JournalError(f"{self.url}: the journal was replaced during the run; stopped")

    def connect(self) -> "Journal":
        """Another connection to the same journal (for a worker thread or process): refused
        if the journal was removed or replaced since this one was opened."""
        return Journal(self.url, expect_id=self.journal_id, expect_file=self.expect_file)

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

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Run several state changes as one transaction, committed (one fsync) when the block
        ends: each change inside is a savepoint, undone alone when it raises; if the commit
        fails, nothing of the group is recorded.  The batch's worker pool sends every
        worker's claims and outcomes through one connection this way
        (:mod:`citycard.perso.pool`), answering each worker only after the commit."""
        if self._group:
            raise JournalError("journal groups do not nest")
        with self._tx():
            self._group = True
            try:
                yield
            finally:
                self._group = False

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

    def register_batch(self, batch: str, profile: str, data_file: str, sha256: str) -> BatchWriter:
        """Start registering a batch whose rows come as a stream (use as a context manager;
        :meth:`BatchWriter.add` each row; an exception inside rolls everything back).  Its
        ``exists`` is true when the batch is there with the same data (it was validated then);
        entering it is an error when the batch exists with another data file."""
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

    # ------------------------------------------------------------------ runs
    def start_run(self, batch: str, station: str | None) -> int:
        """Register a run of ``batch`` (a unique id, whatever the station label) and hold the
        proof that it is alive for as long as this process lives: a lock on a file beside a
        SQLite journal, a session advisory lock on PostgreSQL (both released by the system
        when the process dies, kill -9 included)."""
        uid = uuid.uuid4().hex
        with self._tx() as cur:
            cur.execute(self._q("INSERT INTO runs (uid, batch, station, host, pid, started) VALUES (?, ?, ?, ?, ?, ?)"),
                        (uid, batch, station, socket.gethostname(), os.getpid(), now()))
            cur.execute(self._q("SELECT run FROM runs WHERE uid = ?"), (uid,))
            run = int(cur.fetchone()[0])
        if self.pg:
            import psycopg

            self._run_lock = psycopg.connect(self.url, autocommit=True)
            self._run_lock.execute("SELECT pg_advisory_lock(736870, %s)", (run % 2**31,))
        else:
            folder = self.url + ".runs"
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(folder, f"{run}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._run_lock = fd
        return run

    def end_run(self, run: int) -> None:
        with self._tx() as cur:
            cur.execute(self._q("UPDATE runs SET ended = ? WHERE run = ?"), (now(), run))
        lock, self._run_lock = getattr(self, "_run_lock", None), None
        if lock is None:
            return
        if self.pg:
            lock.close()
        else:
            try:
                os.unlink(os.path.join(self.url + ".runs", f"{run}.lock"))
            except OSError:
                pass
            os.close(lock)

    def run_alive(self, run: int | None) -> bool:
        """True only when the process of ``run`` provably still holds its lock."""
        if run is None:
            return False                 # a row of a journal before runs: its run is long gone
        got = self._rows("SELECT ended FROM runs WHERE run = ?", (run,))
        if not got or got[0][0] is not None:
            return False
        if self.pg:
            with self._tx() as cur:
                cur.execute("SELECT pg_try_advisory_lock(736870, %s)", (run % 2**31,))
                free = bool(cur.fetchone()[0])
                if free:
                    cur.execute("SELECT pg_advisory_unlock(736870, %s)", (run % 2**31,))
            return not free
        path = os.path.join(self.url + ".runs", f"{run}.lock")
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        return False

    def reclaim(self, batch: str, run: int, readers: set[str]) -> list[tuple[int, str, str]]:
        """Rows in progress of runs proven dead: a row of one of ``readers`` (its card may be
        in that reader, half done) moves to ``run``; any other goes back to pending (keeping
        its serial).  Rows of live runs are never touched, whatever their station label.
        Returns (row, reader, "resumed" | "released" | "live")."""
        out: list[tuple[int, str, str]] = []
        alive: dict[int | None, bool] = {}
        for row, reader, owner in self._rows("SELECT row, reader, run FROM cards WHERE batch = ? AND "
                                             "status = 'in_progress' ORDER BY row", (batch,)):
            if owner == run:
                continue
            if owner not in alive:
                alive[owner] = self.run_alive(owner)
            if alive[owner]:
                out.append((row, reader, "live"))
                continue
            # only if the row is still the dead run's: another run starting at the same time may
            # have taken it over since it was read (then it is that run's, and left to it)
            same_owner = "run IS NOT DISTINCT FROM ?" if self.pg else "run IS ?"
            with self._tx() as cur:
                if reader in readers:
                    cur.execute(self._q("UPDATE cards SET run = ? WHERE batch = ? AND row = ? AND "
                                        f"status = 'in_progress' AND {same_owner}"), (run, batch, row, owner))
                    what = "resumed"
                else:
                    cur.execute(self._q("UPDATE cards SET status = 'pending', reader = NULL, run = NULL "
                                        f"WHERE batch = ? AND row = ? AND status = 'in_progress' AND {same_owner}"),
                                (batch, row, owner))
                    what = "released"
                if cur.rowcount == 1:
                    out.append((row, reader, what))
        return out

    def claim(self, batch: str, reader: str, prefix: str, serial_of: Callable[[int], str], *,
              resume_reader_only: bool = False, run: int | None = None) -> Claim | None:
        """Take the next row for ``reader``: first a row this reader left in progress (its card
        may still be in the reader, half done; with ``run``, only that run's rows), then, unless
        ``resume_reader_only``, the lowest pending row.  A row without a serial gets the next
        card number of ``prefix`` in the same transaction and the serial ``serial_of`` makes of
        it (:mod:`citycard.perso.journal_claim`)."""
        pipelined = self.pg and not self._group and can_pipeline(self._conn)
        with pg_pipelined(self._conn) if pipelined else self._tx() as cur:
            got = (self._pick_pg if self.pg else self._pick_sqlite)(cur, batch, reader, prefix, resume_reader_only,
                                                                    run)
            if got is None:
                return None
            row, cid, serial, number, attempts, offset, resumed = got
            if serial is None:
                serial = serial_of(number)
            cur.execute(self._q(journal_claim.TAKE), (reader, now(), number, serial, run, batch, row))
            return Claim(batch, row, cid, serial, int(number), attempts + 1, bool(resumed), offset)

    def _pick_pg(self, cur: Any, batch: str, reader: str, prefix: str, resume_reader_only: bool,
                 run: int | None) -> tuple | None:
        """One statement: the row (FOR UPDATE SKIP LOCKED) and, if it has no serial, its number."""
        cur.execute(journal_claim.pg_pick(run is not None, not resume_reader_only),
                    {"batch": batch, "reader": reader, "prefix": prefix, "run": run})
        return cur.fetchone()

    def _pick_sqlite(self, cur: Any, batch: str, reader: str, prefix: str, resume_reader_only: bool,
                     run: int | None) -> tuple | None:
        """The same as :meth:`_pick_pg`, one query at a time (the write lock is held)."""
        if run is None:
            cur.execute(journal_claim.IN_PROGRESS, (batch, reader))
        else:   # only this run's own rows (another live run under the same label keeps its rows)
            cur.execute(journal_claim.IN_PROGRESS.replace("ORDER BY", journal_claim.OWN_RUN + "ORDER BY"),
                        (batch, reader, run))
        got = cur.fetchone()
        resumed = got is not None
        if got is None and not resume_reader_only:
            cur.execute(journal_claim.PENDING, (batch,))
            got = cur.fetchone()
        if got is None:
            return None
        row, cid, serial, number, attempts, offset = got
        if serial is None:
            number = self._next_number(cur, prefix)
        return row, cid, serial, number, attempts, offset, resumed

    def orphans(self, batch: str) -> list[tuple[int, str]]:
        """Rows left in progress by readers that are not part of this run: (row, reader)."""
        return [(r, rd) for r, rd in self._rows("SELECT row, reader FROM cards WHERE batch = ? AND "
                                                  "status = 'in_progress' ORDER BY row", (batch,))]

    def release(self, batch: str, row: int) -> None:
        """Put an in-progress row back to pending (its reader is gone); it keeps its serial."""
        with self._tx() as cur:
            cur.execute(self._q("UPDATE cards SET status = 'pending', reader = NULL WHERE batch = ? AND row = ? "
                                "AND status = 'in_progress'"), (batch, row))

    def allocate_number(self, prefix: str) -> int:
        """The next card number of ``prefix`` from the journal's counter, for a card issued
        outside a batch (a replacement, docs/lifecycle.md): never one a batch gives out."""
        with self._tx() as cur:
            return self._next_number(cur, prefix)

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
               started: str, *, attempt: int | None = None, previous: str | None = None,
               card: tuple[bytes | None, bytes | None] | None = None) -> None:
        """Record the outcome of an attempt (durably) in the row and the attempts log:
        ``attempt`` is the id :meth:`begin_attempt` gave (None: the card was refused before
        one was opened, the attempt is recorded now with ``card`` = (ATR, UID)); the row's
        other open attempts become ``previous`` (``resumed`` or ``void``, journal_attempts)."""
        t = now()
        with self._tx() as cur:
            row_status = status if status != "spoiled" else "failed"
            cur.execute(self._q("UPDATE cards SET status = ?, finished = ?, error = ? WHERE batch = ? AND row = ?"),
                        (row_status, t, error, batch, row))
            self._close_attempts(cur, batch, row, serial, reader, status, error, started, t, attempt, previous,
                                 card)

    def retry_failed(self, batch: str) -> int:
        """Failed rows go back to pending with a new serial (the failed card stays spoiled)."""
        with self._tx() as cur:
            cur.execute(self._q("UPDATE cards SET status = 'pending', card_serial = NULL, card_number = NULL, "
                                "reader = NULL WHERE batch = ? AND status = 'failed'"), (batch,))
            return cur.rowcount

    # ------------------------------------------------------------------ reporting
    def check_batch(self, batch: str) -> dict[str, int]:
        """The batch's counts, after checking that the journal holds every row it registered
        (a damaged or truncated journal must not read as "all done")."""
        got = self._rows("SELECT rows FROM batches WHERE batch = ?", (batch,))
        counts = self.counts(batch)
        if got and sum(counts.values()) != int(got[0][0]):
            raise JournalError(f"{self._name()}: batch {batch!r} was registered with {got[0][0]} rows but the "
                               f"journal holds {sum(counts.values())}: the journal is damaged; stopped")
        return counts

    def require_batch(self, batch: str) -> None:
        """An error naming the batches there are when ``batch`` is not in the journal."""
        if self.find_batch(batch) is None:
            have = self.batches()
            raise JournalError(f"{self._name()}: no batch {batch!r} in this journal"
                               + (f" (batches: {', '.join(have[:10])})" if have else " (it has no batch)"))

    def batches(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT batch FROM batches ORDER BY created")]

    def counts(self, batch: str) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for status, n in self._rows("SELECT status, COUNT(*) FROM cards WHERE batch = ? GROUP BY status", (batch,)):
            out[status] = int(n)
        return out

    REPORT_KEYS = ("batch", "row", "cardholder_id", "card_serial", "status", "attempts", "reader", "started",
                   "finished", "error", "reissue_of")

    def report(self, batch: str | None = None) -> list[dict[str, Any]]:
        return list(self.iter_report(batch))

    def iter_report(self, batch: str | None = None) -> Iterator[dict[str, Any]]:
        """Every card of the journal (or of one batch), as a stream: constant memory whatever
        the journal's size (a server-side cursor on PostgreSQL)."""
        sql = self._q("SELECT batch, row, cardholder_id, card_serial, status, attempts, reader, started, finished, "
                      "error, reissue_of FROM cards" + (" WHERE batch = ?" if batch else "") + " ORDER BY batch, row")
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
        keys = ("row", "card_serial", "reader", "status", "error", "started", "finished", "run", "station", "atr",
                "uid", "reissue_of")
        return [dict(zip(keys, r)) for r in self._rows(
            "SELECT row, card_serial, reader, status, error, started, finished, run, station, atr, uid, reissue_of "
            "FROM attempts WHERE batch = ? ORDER BY id", (batch,))]
