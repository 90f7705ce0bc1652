"""The claim of the next card (:meth:`citycard.perso.journal.Journal.claim`): its statements.

Which row: the reader's own row left in progress first (its card may still be in the reader,
half done; with a run, only that run's rows), then the lowest pending row.  A row without a
serial gets the next card number of its prefix from ``serials`` in the same transaction; a
row that has one (resumed, or put back to pending) keeps it and its number.  Both searches
are served by the partial indexes ``cards_in_progress`` and ``cards_pending``, so a claim
costs the same at the first and the millionth row (issue 19).

PostgreSQL: one statement picks the row (``FOR UPDATE SKIP LOCKED``: stations sharing the
journal never get the same row, and none waits for a row another station holds) and
allocates the number when the row has no serial (the counter's row is taken by one
transaction at a time, as before); a second statement writes the row with
the serial the profile's rule made of that number (a Python function).  BEGIN goes with
the first and COMMIT with the second in psycopg's pipeline mode
(:func:`citycard.perso.journal_tx.pg_pipelined`): two round trips where the claim took six
(BEGIN, two searches, the number, the write, COMMIT); inside a journal group (the worker
pool's hub) the two statements run in a savepoint, four round trips.  Measured and left
out (issue 19 item 2): writing the row inside the pick statement needs a second write for
the serial (two row versions, slower than one).

SQLite: the same steps one query at a time, under the write lock ``BEGIN IMMEDIATE`` took.
"""

from __future__ import annotations

import functools

#: SQLite: the reader's own row in progress (``?``: batch, reader; :data:`OWN_RUN` appended
#: before ``ORDER BY`` with a run), and the lowest pending row (``?``: batch)
IN_PROGRESS = ("SELECT row, cardholder_id, card_serial, card_number, attempts, data_offset FROM cards "
               "WHERE batch = ? AND status = 'in_progress' AND reader = ? ORDER BY row LIMIT 1")
PENDING = ("SELECT row, cardholder_id, card_serial, card_number, attempts, data_offset FROM cards "
           "WHERE batch = ? AND status = 'pending' ORDER BY row LIMIT 1")
OWN_RUN = "AND run = ? "

#: both: the picked row taken by the reader (``?``: reader, started, number, serial, run, batch, row)
TAKE = ("UPDATE cards SET status = 'in_progress', reader = ?, attempts = attempts + 1, started = ?, "
        "card_number = ?, card_serial = ?, error = NULL, run = ? WHERE batch = ? AND row = ?")


@functools.lru_cache(maxsize=None)
def pg_pick(own_run: bool, take_pending: bool) -> str:
    """PostgreSQL: the statement that picks the row and allocates its number when it has no
    serial (parameters ``batch``, ``reader``, ``prefix``, and ``run`` when ``own_run``).
    Returns at most one row: (row, cardholder_id, card_serial, card_number, attempts,
    data_offset, resumed); card_number is the new number when card_serial is NULL.  The
    pending row is searched only when the reader has no row of its own (a one-time filter:
    no pending row is locked for nothing); without ``take_pending`` it is not searched."""
    cols = "row, cardholder_id, card_serial, card_number, attempts, data_offset"
    run = "AND run = %(run)s " if own_run else ""
    pending = (f""",
    next_pending AS (
        SELECT {cols}, FALSE AS resumed FROM cards
        WHERE batch = %(batch)s AND status = 'pending' AND NOT EXISTS (SELECT FROM mine)
        ORDER BY row LIMIT 1 FOR UPDATE SKIP LOCKED)""" if take_pending else "")
    return f"""WITH mine AS (
        SELECT {cols}, TRUE AS resumed FROM cards
        WHERE batch = %(batch)s AND status = 'in_progress' AND reader = %(reader)s {run}
        ORDER BY row LIMIT 1 FOR UPDATE SKIP LOCKED){pending},
    picked AS (SELECT * FROM mine{" UNION ALL SELECT * FROM next_pending" if take_pending else ""}),
    number AS (
        INSERT INTO serials (prefix, next) SELECT %(prefix)s, 2 FROM picked WHERE card_serial IS NULL
        ON CONFLICT (prefix) DO UPDATE SET next = serials.next + 1 RETURNING next - 1 AS n)
    SELECT row, cardholder_id, card_serial, COALESCE((SELECT n FROM number), card_number), attempts,
        data_offset, resumed FROM picked"""
