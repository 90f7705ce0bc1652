"""One small database layer for the stores that live beside the batch journal (the card
register, the clearing ledger): a SQLite file (WAL, synchronous=FULL, created ``0600``) or a
PostgreSQL URL, the same SQL written with ``?`` placeholders, transactions, and streamed reads
(constant memory whatever the table's size)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any, Iterable, Iterator

from .errors import CitycardError


class Database:
    """A connection to ``url`` whose ``schema`` (statements with ``{serial}`` for an
    auto-increment key) is created if missing, under an advisory lock on PostgreSQL."""

    def __init__(self, url: str, schema: Iterable[str], *, what: str, lock_id: int,
                 error: type[CitycardError] = CitycardError, create: bool = True) -> None:
        self.url = url
        self.what = what
        self.error = error
        self.pg = url.startswith(("postgresql://", "postgres://"))
        if self.pg:
            try:
                import psycopg
            except ImportError:
                raise error(f"a PostgreSQL {what} needs psycopg (pip install 'citycard[postgres]')") from None
            try:
                self.conn: Any = psycopg.connect(url, autocommit=False)
                with self.conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
                    for stmt in schema:
                        cur.execute(stmt.format(serial="BIGSERIAL"))
                self.conn.commit()
            except psycopg.Error as exc:
                raise error(f"cannot open the {what}: {str(exc).splitlines()[0]}") from None
            return
        if not os.path.exists(url):
            if not create:
                raise error(f"{url}: no such {what}")
            try:
                os.close(os.open(url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise error(f"{url}: cannot create the {what} ({exc.strerror})") from None
        try:
            self.conn = sqlite3.connect(url, timeout=60.0, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("BEGIN IMMEDIATE")
            for stmt in schema:
                self.conn.execute(stmt.format(serial="INTEGER"))
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise error(f"{url}: cannot open the {what}: {exc}") from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction (committed on success, rolled back on any exception)."""
        if self.pg:
            cur = self.conn.cursor()
        else:
            self.conn.execute("BEGIN IMMEDIATE")
            cur = self.conn.cursor()
        try:
            yield _Cursor(self, cur)
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.rollback() if self.pg else self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.commit() if self.pg else self.conn.execute("COMMIT")
            except Exception as exc:
                raise self.error(f"{self.what}: cannot commit: {str(exc).splitlines()[0]}") from None

    def one(self, sql: str, args: Iterable[Any] = ()) -> tuple | None:
        cur = self.conn.cursor()
        cur.execute(self.q(sql), tuple(args))
        row = cur.fetchone()
        if self.pg:
            self.conn.commit()
        return row

    def all(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        cur = self.conn.cursor()
        cur.execute(self.q(sql), tuple(args))
        rows = cur.fetchall()
        if self.pg:
            self.conn.commit()
        return rows

    def stream(self, sql: str, args: Iterable[Any] = ()) -> Iterator[tuple]:
        """Rows read on a connection of their own (SQLite) or a server-side cursor: constant
        memory, and usable while this connection writes."""
        if self.pg:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=False)
            try:
                with conn.cursor(name="citycard_stream") as cur:
                    cur.itersize = 2000
                    cur.execute(self.q(sql), tuple(args))
                    yield from cur
            finally:
                conn.close()
            return
        reader = sqlite3.connect(self.url, timeout=60.0, isolation_level=None)
        try:
            yield from reader.execute(sql, tuple(args))
        finally:
            reader.close()


class _Cursor:
    """A cursor taking ``?`` placeholders on both engines."""

    def __init__(self, db: Database, cur: Any) -> None:
        self._db, self._cur = db, cur

    def execute(self, sql: str, args: Iterable[Any] = ()) -> "_Cursor":
        self._cur.execute(self._db.q(sql), tuple(args))
        return self

    def fetchone(self) -> tuple | None:
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)
