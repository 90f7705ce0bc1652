"""Every card that ever received a write is in the journal (issue 18, "no unrecorded cards").

An *attempt* is recorded, durably, after the card in the reader was identified (reads only)
and before the first command that authenticates or writes: the batch and row, the serial the
card will receive, the run, station and reader, the card's ATR and, where the reader gives
one, its UID (PC/SC GET DATA ``FF CA 00 00 00`` on a contactless reader; SPEC §6 R19; a
contact FM1208 has none: NULL), and the time.  Until the row's outcome is recorded the
attempt stays ``writing`` (open).

A run killed while a card was being written leaves its attempt open.  The rerun of that row
looks at the card now in the reader (:func:`citycard.perso.batch`, ``Batch._settle``):

- the same card (it carries the row's serial, read freely, or the same stable UID): the
  row keeps its serial; the open attempt becomes ``resumed`` when the new one ends;
- another card, or one that cannot be told apart from a factory card: the open attempt
  becomes ``void`` (the card was removed mid-personalization and may hold keys derived
  from that serial: the bureau must find and destroy it, ``batch status`` lists it) and the
  row gets a NEW serial from the journal's counter, so that no two physical cards ever
  carry one serial's keys (:meth:`AttemptLog.void_and_renumber`).

A re-issue (``batch run --reissue``) is recorded in the card's row (``reissue_of``: the
earlier batch, row and card) and in its attempts.

Attempt statuses: ``writing`` (open), ``verified``, ``personalized``, ``failed`` (refused
before any write), ``spoiled`` (given up after writing), ``resumed`` (its card was taken up by
a later attempt of the row), ``void`` (its card is gone, see above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection

from .journal_tx import now

if TYPE_CHECKING:
    from .journal_tx import _Tx

OPEN = "writing"
VOID = "void"
RESUMED = "resumed"

#: columns added to a journal of format 2 (ALTER TABLE ... ADD COLUMN: only when missing)
ATTEMPT_COLUMNS = (("run", "BIGINT"), ("station", "TEXT"), ("atr", "TEXT"), ("uid", "TEXT"),
                   ("reissue_of", "TEXT"))
CARD_COLUMNS = (("reissue_of", "TEXT"),)
ATTEMPT_INDEXES = (
    # the open attempts of a row (a rerun after a crash looks them up)
    "CREATE INDEX IF NOT EXISTS attempts_open ON attempts (batch, row) WHERE status = 'writing'",
    "CREATE INDEX IF NOT EXISTS attempts_void ON attempts (batch) WHERE status = 'void'",
)


def created_by(stmt: str) -> str:
    """The table or index a ``CREATE TABLE|INDEX IF NOT EXISTS name ...`` statement makes."""
    return stmt.split()[5]


def upgrade_schema(cur: Any, pg: bool, existing: Collection[str] = ()) -> None:
    """Add the attempt and re-issue columns and indexes to a journal that lacks them (inside
    the opening transaction of :class:`~citycard.perso.journal.Journal`; ``existing``: the
    tables and indexes it has, whose creation is skipped)."""
    for table, columns in (("attempts", ATTEMPT_COLUMNS), ("cards", CARD_COLUMNS)):
        if pg:
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                        "AND table_schema = current_schema()", (table,))
            have = {r[0] for r in cur.fetchall()}
        else:
            have = {r[1] for r in cur.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                cur.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    for stmt in ATTEMPT_INDEXES:
        if created_by(stmt) not in existing:
            cur.execute(stmt)


@dataclass(frozen=True)
class Attempt:
    """An attempt of a row, as recorded (``atr``/``uid`` as bytes, or None)."""

    id: int
    row: int
    card_serial: str
    reader: str | None
    atr: bytes | None
    uid: bytes | None
    status: str
    started: str | None


def _hex(b: bytes | None) -> str | None:
    return b.hex().upper() if b is not None else None


def _unhex(s: str | None) -> bytes | None:
    return bytes.fromhex(s) if s else None


class AttemptLog:
    """The attempt records of a :class:`~citycard.perso.journal.Journal` (mixed into it)."""

    pg: bool
    ph: str

    if TYPE_CHECKING:                             # provided by Journal
        def _q(self, sql: str) -> str: ...
        def _tx(self) -> _Tx: ...
        def _rows(self, sql: str, args: Any = ()) -> list[tuple]: ...
        def _next_number(self, cur: Any, prefix: str) -> int: ...

    def begin_attempt(self, batch: str, row: int, serial: str, *, reader: str, station: str | None,
                      run: int | None, atr: bytes, uid: bytes | None) -> int:
        """Record (durably) that the card in ``reader`` is about to be written for ``row`` with
        ``serial`` (a re-issue row's ``reissue_of`` copied); returns the attempt's id (to
        close it with :meth:`Journal.finish`)."""
        sql = ("INSERT INTO attempts (batch, row, card_serial, reader, status, started, run, station, atr, uid, "
               "reissue_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
               "(SELECT reissue_of FROM cards WHERE batch = ? AND row = ?))")
        args = (batch, row, serial, reader, OPEN, now(), run, station, _hex(atr), _hex(uid), batch, row)
        with self._tx() as cur:
            if self.pg:
                cur.execute(self._q(sql + " RETURNING id"), args)
                return int(cur.fetchone()[0])
            cur.execute(self._q(sql), args)
            return int(cur.lastrowid)

    def open_attempts(self, batch: str, row: int) -> list[Attempt]:
        """The row's attempts left open by runs that stopped while writing a card."""
        got = self._rows("SELECT id, row, card_serial, reader, atr, uid, status, started FROM attempts "
                         "WHERE batch = ? AND row = ? AND status = 'writing' ORDER BY id", (batch, row))
        return [Attempt(int(i), int(r), s, rd, _unhex(a), _unhex(u), st, t) for i, r, s, rd, a, u, st, t in got]

    def void_and_renumber(self, batch: str, row: int, prefix: str, serial_of: Callable[[int], str],
                          reason: str) -> tuple[str, int]:
        """In one transaction: every open attempt of ``row`` becomes ``void`` (``reason``
        says why) and the row gets a new card number from the serial counter; returns
        (serial, number).  The void card may hold keys of the old serial: it is never reused."""
        with self._tx() as cur:
            cur.execute(self._q("UPDATE attempts SET status = 'void', finished = ?, error = ? WHERE batch = ? "
                                "AND row = ? AND status = 'writing'"), (now(), reason, batch, row))
            number = self._next_number(cur, prefix)
            serial = serial_of(number)
            cur.execute(self._q("UPDATE cards SET card_number = ?, card_serial = ? WHERE batch = ? AND row = ?"),
                        (number, serial, batch, row))
            return serial, number

    def _close_attempts(self, cur: Any, batch: str, row: int, serial: str, reader: str, status: str,
                        error: str | None, started: str, t: str, attempt: int | None,
                        previous: str | None, card: tuple[bytes | None, bytes | None] | None) -> None:
        """Inside :meth:`Journal.finish`: close this attempt (or record it, when the card was
        refused before one was opened) and settle the row's other open attempts as
        ``previous`` (``resumed``: this card was theirs; ``void``: it was not)."""
        atr, uid = card if card is not None else (None, None)
        if attempt is not None:
            cur.execute(self._q("UPDATE attempts SET status = ?, error = ?, finished = ? WHERE id = ?"),
                        (status, error, t, attempt))
        else:
            cur.execute(self._q("INSERT INTO attempts (batch, row, card_serial, reader, status, error, started, "
                                "finished, atr, uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                        (batch, row, serial, reader, status, error, started, t, _hex(atr), _hex(uid)))
        if previous is not None:
            why = None if previous == RESUMED else "its card was not the one in the reader when the row was redone"
            cur.execute(self._q("UPDATE attempts SET status = ?, finished = ?, error = COALESCE(?, error) "
                                "WHERE batch = ? AND row = ? AND status = 'writing'"
                                + (" AND id <> ?" if attempt is not None else "")),
                        (previous, t, why, batch, row) + ((attempt,) if attempt is not None else ()))

    def void_attempts(self, batch: str | None = None) -> list[dict[str, Any]]:
        """The attempts whose card is gone and may hold keys (``void``): what the bureau must
        find and destroy, oldest first."""
        keys = ("batch", "row", "card_serial", "reader", "atr", "uid", "started", "finished", "error")
        sql = ("SELECT batch, row, card_serial, reader, atr, uid, started, finished, error FROM attempts "
               "WHERE status = 'void'" + (" AND batch = ?" if batch else "") + " ORDER BY id")
        return [dict(zip(keys, r)) for r in self._rows(sql, (batch,) if batch else ())]

