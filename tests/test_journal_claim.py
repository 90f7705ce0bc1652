"""The claim of the next card (issue 19 item 2, :mod:`citycard.perso.journal_claim`): the
reader's own row in progress first (only its run's with a run), then the lowest pending row;
a row keeps its serial and number, a new number only for a row without one, never a number
given twice; nothing taken when the serial rule fails; on PostgreSQL a row another station
holds is skipped, not waited for, and no pending row is locked when the reader resumes its
own; stations claiming at once never share a row or a number; a station opening the
journal does not stop the others (no schema statement for what exists)."""

from __future__ import annotations

import threading

import pytest

from citycard.perso.journal import Journal


def serial(n: int) -> str:
    return f"P{n:06d}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal(request, tmp_path):
    url = (str(tmp_path / "j.db") if request.param == "sqlite"
           else request.getfixturevalue("postgres").fresh_database("claims"))
    j = Journal(url)
    with j.register_batch("b", "p.toml", "d.csv", "sha") as w:
        for n in range(1, 7):
            w.add(n, f"CH{n}", n * 10)
    yield j
    j.close()


def _row(j: Journal, row: int) -> tuple:
    return j._rows("SELECT status, reader, card_serial, card_number, attempts, run FROM cards WHERE batch = ? "
                   "AND row = ?", ("b", row))[0]


def _done(j: Journal, row: int, reader: str) -> None:
    j.finish("b", row, _row(j, row)[2], reader, "verified", None, "")


def test_the_readers_own_row_comes_before_a_lower_pending_row(journal):
    j = journal
    first = j.claim("b", "r1", "P", serial)
    second = j.claim("b", "r2", "P", serial)
    assert (first.row, first.card_number, second.row, second.card_number) == (1, 1, 2, 2)
    j.release("b", 1)                                   # row 1 pending again, below r2's row
    again = j.claim("b", "r2", "P", serial)
    assert (again.row, again.resumed, again.card_serial, again.card_number, again.attempts) == \
        (2, True, "P000002", 2, 2)
    assert _row(j, 1)[0] == "pending"
    back = j.claim("b", "r3", "P", serial)              # the released row keeps its serial and number
    assert (back.row, back.resumed, back.card_serial, back.card_number, back.attempts) == (1, False, "P000001", 1, 2)
    fresh = j.claim("b", "r4", "P", serial)             # no number was spent on the released row
    assert (fresh.row, fresh.card_number, fresh.card_serial, fresh.data_offset) == (3, 3, "P000003", 30)
    assert _row(j, 3) == ("in_progress", "r4", "P000003", 3, 1, None)


def test_with_a_run_only_that_runs_rows_are_resumed(journal):
    j = journal
    mine = j.claim("b", "desk/r1", "P", serial, run=7)
    other = j.claim("b", "desk/r1", "P", serial, run=8)      # same label, another run: a new row
    assert (mine.row, other.row, other.resumed) == (1, 2, False)
    assert _row(j, 1)[5] == 7 and _row(j, 2)[5] == 8
    again = j.claim("b", "desk/r1", "P", serial, run=7)
    assert (again.row, again.resumed, again.card_number) == (1, True, 1)
    assert j.claim("b", "desk/r1", "P", serial, run=8).row == 2


def test_resume_reader_only_takes_no_pending_row_and_no_number(journal):
    j = journal
    assert j.claim("b", "r1", "P", serial, resume_reader_only=True) is None
    assert {_row(j, r)[0] for r in range(1, 7)} == {"pending"}
    got = j.claim("b", "r1", "P", serial)
    assert (got.row, got.card_number) == (1, 1)                   # the refused claim spent no number
    again = j.claim("b", "r1", "P", serial, resume_reader_only=True)
    assert (again.row, again.resumed, again.card_number) == (1, True, 1)
    _done(j, 1, "r1")
    assert j.claim("b", "r1", "P", serial, resume_reader_only=True) is None


def test_a_failing_serial_rule_takes_nothing(journal):
    j = journal

    def broken(n: int) -> str:
        raise ValueError(f"number {n} does not fit")

    with pytest.raises(ValueError):
        j.claim("b", "r1", "P", broken)
    assert _row(j, 1) == ("pending", None, None, None, 0, None)
    got = j.claim("b", "r1", "P", serial)
    assert (got.row, got.card_number, got.attempts) == (1, 1, 1)   # the failed claim's number was undone


def test_a_refused_write_takes_nothing_and_the_journal_goes_on(journal):
    """The database refuses the row's write (the serial is another row's): nothing taken, no
    number spent, and the connection's transactions are whole again afterwards (a group that
    raises records nothing: the claim's own transaction mode did not stay on)."""
    j = journal
    first = j.claim("b", "r1", "P", serial)
    with pytest.raises(Exception) as refused:
        j.claim("b", "r2", "P", lambda n: first.card_serial)          # UNIQUE card_serial
    assert "unique" in str(refused.value).lower() or "could not be written" in str(refused.value)
    assert _row(j, 2) == ("pending", None, None, None, 0, None)
    with pytest.raises(KeyError):
        with j.group():
            j.claim("b", "r2", "P", serial)
            raise KeyError("stop")
    assert _row(j, 2) == ("pending", None, None, None, 0, None)
    got = j.claim("b", "r2", "P", serial)
    assert (got.row, got.card_number) == (2, 2)


def test_a_failing_serial_rule_in_a_group_is_undone_alone(journal):
    j = journal
    with j.group():
        first = j.claim("b", "r1", "P", serial)
        with pytest.raises(ValueError):
            j.claim("b", "r2", "P", lambda n: (_ for _ in ()).throw(ValueError("boom")))
        second = j.claim("b", "r3", "P", serial)
    assert (first.row, first.card_number, second.row, second.card_number) == (1, 1, 2, 2)
    assert [_row(j, r)[:2] for r in (1, 2, 3)] == [("in_progress", "r1"), ("in_progress", "r3"), ("pending", None)]


def test_numbers_are_never_given_twice(journal):
    j = journal
    numbers, by_row = [], {}
    for i in range(1, 7):
        got = j.claim("b", f"r{i}", "P", serial)
        by_row[got.row] = got.card_number
        numbers += [got.card_number, j.allocate_number("P")]     # a replacement card between two claims
    assert sorted(numbers) == list(range(1, 13))
    j.release("b", 2)
    j.release("b", 5)                                             # back to pending, each with its number
    assert [(c.row, c.card_number) for c in (j.claim("b", "r8", "P", serial), j.claim("b", "r9", "P", serial))] \
        == [(2, by_row[2]), (5, by_row[5])]
    assert j.allocate_number("P") == 13                           # the claims of numbered rows spent none
    assert j.allocate_number("Q") == 1                            # one counter per prefix


@pytest.mark.postgres
def test_a_row_another_station_holds_is_skipped_not_waited_for(postgres):
    """Station A's claim is in an open transaction (a group not yet committed): station B
    takes the next row at once (a plain FOR UPDATE would wait: lock_timeout makes that fail)."""
    a = Journal(postgres.fresh_database("skip"))
    with a.register_batch("b", "p.toml", "d.csv", "sha") as w:
        for n in range(1, 5):
            w.add(n, f"CH{n}", n * 10)
    b = a.connect()
    try:
        b._conn.execute("SET lock_timeout = '10s'")
        b._conn.commit()
        first = a.claim("b", "desk/r0", "P", serial)
        a.release("b", first.row)                         # row 1: pending with its serial (takes no number)
        with a.group():
            held = a.claim("b", "desk/r1", "P", serial)
            taken = b.claim("b", "other/r1", "P", serial)  # while A holds row 1
            assert (held.row, taken.row) == (1, 2)
            assert (held.card_number, taken.card_number) == (1, 2)
        assert [_row(b, r)[:2] for r in (1, 2)] == [("in_progress", "desk/r1"), ("in_progress", "other/r1")]
    finally:
        b.close()
        a.close()


@pytest.mark.postgres
def test_resuming_its_own_row_locks_no_pending_row(postgres):
    """A reader that resumes its own row does not lock the lowest pending row on the way:
    another station claiming meanwhile gets that row, not the one after it."""
    a = Journal(postgres.fresh_database("nolock"))
    with a.register_batch("b", "p.toml", "d.csv", "sha") as w:
        for n in range(1, 5):
            w.add(n, f"CH{n}", n * 10)
    b = a.connect()
    try:
        assert a.claim("b", "desk/r1", "P", serial).row == 1
        with a.group():
            again = a.claim("b", "desk/r1", "P", serial)
            other = b.claim("b", "other/r1", "P", serial, resume_reader_only=False)
            assert (again.row, again.resumed) == (1, True)
            assert other.row == 2
    finally:
        b.close()
        a.close()


@pytest.mark.postgres
def test_stations_claiming_at_once_never_share_a_row_or_a_number(postgres):
    rows = 120
    j = Journal(postgres.fresh_database("race"))
    with j.register_batch("b", "p.toml", "d.csv", "sha") as w:
        for n in range(1, rows + 1):
            w.add(n, f"CH{n}", n * 10)
    taken: dict[str, list[tuple[int, int, str]]] = {}
    spare: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def station(name: str) -> None:
        mine: list[tuple[int, int, str]] = []
        taken[name] = mine
        conn = j.connect()
        try:
            start.wait()
            while (got := conn.claim("b", f"{name}/r1", "P", serial)) is not None:
                mine.append((got.row, got.card_number, got.card_serial))
                conn.finish("b", got.row, got.card_serial, f"{name}/r1", "verified", None, "")
                if name == "s4" and len(mine) % 5 == 0:
                    spare.append(conn.allocate_number("P"))       # replacements issued meanwhile
        except BaseException as exc:                              # pragma: no cover - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=station, args=(f"s{i}",)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close()
    assert not errors, errors
    claims = [c for mine in taken.values() for c in mine]
    assert sorted(r for r, _n, _s in claims) == list(range(1, rows + 1))        # every row once
    numbers = [n for _r, n, _s in claims] + spare
    assert sorted(numbers) == list(range(1, len(numbers) + 1))                 # no number twice, none lost
    assert all(s == serial(n) for _r, n, s in claims)


@pytest.mark.postgres
def test_a_station_opening_the_journal_does_not_stop_the_others(postgres):
    """A station opening the journal while another's group holds written rows (attempts and
    cards, not committed): the opening creates nothing that exists (CREATE INDEX IF NOT
    EXISTS locks the table even then, and waited here for the group: lock_timeout fails it),
    and the group goes on claiming."""
    url = postgres.fresh_database("joining")
    a = Journal(url)
    with a.register_batch("b", "p.toml", "d.csv", "sha") as w:
        for n in range(1, 5):
            w.add(n, f"CH{n}", n * 10)
    joining = None
    try:
        with a.group():
            got = a.claim("b", "desk/r1", "P", serial)
            a.begin_attempt("b", got.row, got.card_serial, reader="desk/r1", station="desk", run=None,
                            atr=bytes.fromhex("3B00"), uid=None)
            joining = Journal(url + "&options=-c%20lock_timeout%3D5000")
            assert a.claim("b", "desk/r2", "P", serial).row == 2
        assert joining.claim("b", "other/r1", "P", serial).row == 3
    finally:
        if joining is not None:
            joining.close()
        a.close()


@pytest.mark.postgres
def test_a_journal_in_a_schema_whose_name_needs_quotes_opens_and_reopens(postgres):
    """The journal's tables in a schema named ``Bureau-1`` (search_path): opening it finds
    what exists there (the schema's name is a value, never parsed as an identifier)."""
    import urllib.parse

    import psycopg

    url = postgres.fresh_database("quoted")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Bureau-1"')
    url += "&options=" + urllib.parse.quote('-c search_path="Bureau-1"')
    j = Journal(url)
    try:
        with j.register_batch("b", "p.toml", "d.csv", "sha") as w:
            w.add(1, "CH1", 10)
    finally:
        j.close()
    again = Journal(url)
    try:
        assert again._rows("SELECT current_schema()") == [("Bureau-1",)]
        assert again.claim("b", "r1", "P", serial).row == 1
    finally:
        again.close()
