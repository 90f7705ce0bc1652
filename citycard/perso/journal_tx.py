"""The journal's transactions: one SQLite ``BEGIN IMMEDIATE`` or PostgreSQL transaction per
state change, storage errors as one line with nothing written, and the streamed
registration of a batch (:class:`BatchWriter`).  See :mod:`citycard.perso.journal`."""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import sqlite3
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ..errors import CitycardError

if TYPE_CHECKING:
    from .journal import Journal


class JournalError(CitycardError):
    pass


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class BatchWriter:
    """Registers a batch and its rows in one transaction (see :meth:`Journal.register_batch`)."""

    def __init__(self, journal: Journal, batch: str, profile: str, data_file: str, sha256: str) -> None:
        self.j, self.batch = journal, batch
        self.info = (profile, data_file, sha256)
        self.pending: list[tuple[str, int, str, int]] = []
        self.rows = 0
        self.exists = False
        self.reissue: frozenset[int] | str | None = None     # see mark_reissues

    def mark_reissues(self, rows: Iterable[int] | str | None) -> None:
        """Rows (or ``"all"``) named as re-issues: once registered, each whose cardholder was
        issued in another batch of the journal records which issue it replaces
        (``cards.reissue_of``, :func:`reissue_update`)."""
        self.reissue = rows if rows == "all" or rows is None else frozenset(rows)  # type: ignore[arg-type]

    def _mark(self) -> None:
        if not self.reissue:
            return
        sql, by_row = reissue_update(self.j.ph, self.reissue)
        if self.reissue == "all":
            self.cur.execute(sql, (self.batch,))
        else:
            self.cur.executemany(sql + by_row, [(self.batch, r) for r in sorted(self.reissue)])

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
                self._mark()
            except BaseException as e:
                self.tx.__exit__(type(e), e, None)
                raise
        self.tx.__exit__(exc_type, exc, tb)


class _Tx:
    """A transaction: SQLite ``BEGIN IMMEDIATE`` (writer lock first), PostgreSQL default; inside
    :meth:`Journal.group` a savepoint of the group's transaction (undone alone on an error)."""

    def __init__(self, j: Journal) -> None:
        self.j = j

    def __enter__(self) -> Any:
        c = self.j._conn
        if self.j._group:       # inside a group (:meth:`Journal.group`): a savepoint of its transaction
            self.cur = c.cursor()
            try:
                self.cur.execute("SAVEPOINT citycard_step")
            except Exception as exc:
                self.cur.close()
                raise _storage_error(self.j, exc) from None
            return self.cur
        if self.j.pg:
            self.cur = c.cursor()
        else:
            self.j._check_file()
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _storage_error(self.j, exc) from None
            self.cur = c.cursor()
        return self.cur

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        c = self.j._conn
        if self.j._group:
            try:
                if exc_type is not None:
                    self.cur.execute("ROLLBACK TO SAVEPOINT citycard_step")
                self.cur.execute("RELEASE SAVEPOINT citycard_step")
            except Exception as e:        # the group's transaction is unusable: its commit will fail too
                raise _storage_error(self.j, e) from None
            finally:
                self.cur.close()
            if isinstance(exc, sqlite3.Error):
                raise _storage_error(self.j, exc) from None
            return
        try:
            if exc_type is None:
                try:
                    c.commit() if self.j.pg else c.execute("COMMIT")
                except sqlite3.Error as e:
                    c.execute("ROLLBACK") if c.in_transaction else None
                    raise _storage_error(self.j, e) from None
            else:
                if self.j.pg:
                    c.rollback()
                elif c.in_transaction:          # SQLite ends the transaction itself on some errors (full)
                    c.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):        # nothing half-written: one clear line
                    raise _storage_error(self.j, exc) from None
        finally:
            self.cur.close()


@contextlib.contextmanager
def pg_pipelined(conn: Any) -> Iterator[Any]:
    """A PostgreSQL transaction in psycopg's pipeline mode, for a step that must wait for one
    answer only (the claim, :mod:`citycard.perso.journal_claim`): BEGIN goes with the first
    statement, COMMIT with the last, so the step takes two round trips instead of one per
    statement.  The connection is in autocommit meanwhile (else psycopg sends its own BEGIN
    alone and waits for it).  An error inside, or from the server, rolls everything back;
    a connection that cannot be brought back to the normal mode is closed (its later
    statements must not be committed one by one).  Use :func:`can_pipeline` first."""
    from psycopg.pq import TransactionStatus

    try:
        conn.autocommit = True          # inside: an interrupt right after it still reaches the finally
        with conn.pipeline(), conn.cursor() as cur:
            cur.execute("BEGIN")
            yield cur
            cur.execute("COMMIT")
    except BaseException:
        if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            with contextlib.suppress(Exception):
                conn.rollback()
        raise
    finally:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            conn.autocommit = False
        else:
            conn.close()


def can_pipeline(conn: Any) -> bool:
    """True when :func:`pg_pipelined` may run on ``conn``: libpq has pipeline mode (14 and
    later) and no transaction is open."""
    from psycopg.pq import TransactionStatus

    return _pipeline_supported() and conn.info.transaction_status == TransactionStatus.IDLE


@functools.lru_cache(maxsize=1)
def _pipeline_supported() -> bool:
    from psycopg import Pipeline

    return bool(Pipeline.is_supported())


def _storage_error(j: Journal, exc: BaseException) -> JournalError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return JournalError(f"{j._name()}: the journal could not be written ({first}); nothing of this step was "
                        "recorded")


def reissue_update(ph: str, rows: frozenset[int] | str) -> tuple[str, str]:
    """The SQL marking the rows of a batch being registered that re-issue a cardholder
    issued in another batch: ``reissue_of`` = "batch B row N, card S" of the latest earlier
    issue.  Returns (statement, the row filter to append for a set of rows)."""
    sql = (f"UPDATE cards SET reissue_of = (SELECT 'batch ' || c2.batch || ' row ' || c2.row || ', card ' || "
           f"COALESCE(c2.card_serial, '-') FROM cards c2 WHERE c2.cardholder_id = cards.cardholder_id "
           f"AND c2.batch <> cards.batch AND c2.status IN ('verified', 'personalized', 'in_progress') "
           f"ORDER BY c2.finished IS NULL, c2.finished DESC, c2.batch, c2.row LIMIT 1) WHERE batch = {ph}")
    return sql, "" if rows == "all" else f" AND row = {ph}"
