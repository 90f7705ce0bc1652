"""An honest journal (issue 18, "journal identity and honesty"): every run has its own id;
rows in progress are taken over only from runs proven dead (the live process holds a lock),
never by station label; a format stamp is checked on open; a journal removed or replaced
during a run stops it; storage errors are one line and write nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citycard.perso.journal import Journal, JournalError

def new_batch(path: Path | str, rows: int = 5) -> Journal:
    j = Journal(str(path))
    with j.register_batch("b", "p.toml", "d.csv", "sha") as w:
        for n in range(1, rows + 1):
            w.add(n, f"CH{n}", n * 10)
    return j


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "j.db")
    return request.getfixturevalue("postgres").fresh_database("identity")


def test_a_live_run_keeps_its_rows_whatever_the_label(journal_url):
    a = new_batch(journal_url)
    run_a = a.start_run("b", "desk")
    got = a.claim("b", "desk/sim-1", "P", lambda n: f"P{n:09d}", run=run_a)
    assert got is not None and got.row == 1
    b = a.connect()
    run_b = b.start_run("b", "desk")                       # the same station label, another run
    assert run_b != run_a
    assert b.reclaim("b", run_b, {"desk/sim-1"}) == [(1, "desk/sim-1", "live")]
    mine = b.claim("b", "desk/sim-1", "P", lambda n: f"P{n:09d}", run=run_b)
    assert mine is not None and mine.row == 2 and not mine.resumed   # not run A's row 1
    # run A dies (its process would release the lock): now its row is taken up
    if a.pg:
        a._run_lock.close()                                 # the server ends its session: lock gone
    else:
        os.close(a._run_lock)
    a._run_lock = None
    for _ in range(1000):          # PostgreSQL ends the closed session (and its lock) on its own: wait for that
        if not b.run_alive(run_a):
            break
        time.sleep(0.01)
    assert b.reclaim("b", run_b, {"desk/sim-1"}) == [(1, "desk/sim-1", "resumed")]
    again = b.claim("b", "desk/sim-1", "P", lambda n: f"P{n:09d}", run=run_b)
    assert again is not None and again.row == 1 and again.resumed and again.card_serial == got.card_serial
    b.end_run(run_b)
    a.close()
    b.close()


def test_a_killed_process_is_proven_dead(tmp_path):
    path = tmp_path / "j.db"
    new_batch(path).close()
    code = ("import sys, time\nfrom citycard.perso.journal import Journal\n"
            "j = Journal(sys.argv[1]); r = j.start_run('b', 'desk')\n"
            "j.claim('b', 'desk/sim-1', 'P', lambda n: f'P{n:09d}', run=r)\nprint(r, flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        run = int(p.stdout.readline())
        j = Journal(str(path))
        assert j.run_alive(run)
        p.kill()
        p.wait(10)
        assert not j.run_alive(run)
        mine = j.start_run("b", "other-station")
        assert j.reclaim("b", mine, {"other-station/sim-1"}) == [(1, "desk/sim-1", "released")]
        j.end_run(mine)
        j.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_two_runs_under_one_label_issue_no_card_twice(tmp_path):
    from tests.test_batch import CLI, batch_args, check_journal, make_csv

    data = make_csv(tmp_path / "d.csv", 120)
    journal = tmp_path / "j.db"
    first = subprocess.run(CLI + batch_args(data, journal, "--sims", "1", "--limit", "1", "--station", "desk"),
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr                     # the batch is registered once
    procs = [subprocess.Popen(CLI + batch_args(data, journal, "--sims", "2", "--station", "desk", "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    check_journal(str(journal), 120)


def test_removed_or_replaced_journal_stops_the_run(tmp_path):
    path = tmp_path / "j.db"
    j = new_batch(path)
    os.remove(path)
    with pytest.raises(JournalError, match="removed during the run"):
        j.claim("b", "r", "P", lambda n: f"P{n:09d}")
    with pytest.raises(JournalError, match="removed during the run"):
        j.connect()
    j.close()
    j = new_batch(path)
    other = tmp_path / "other.db"
    new_batch(other).close()
    os.replace(other, path)
    with pytest.raises(JournalError, match="replaced during the run"):
        j.claim("b", "r", "P", lambda n: f"P{n:09d}")
    j.close()


def test_format_stamp_is_checked_on_open(tmp_path):
    path = tmp_path / "j.db"
    new_batch(path).close()
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT key, value FROM meta"))["format"] == "citycard-journal"
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="version 99 is newer"):
        Journal(str(path))
    foreign = tmp_path / "app.db"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE customers (id INTEGER)")
    c.commit()
    c.close()
    with pytest.raises(JournalError, match="not a citycard journal"):
        Journal(str(foreign))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(str(junk))


def test_storage_full_is_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "j.db"
    j = Journal(str(path))
    pages = j._conn.execute("PRAGMA page_count").fetchone()[0]
    j._conn.execute(f"PRAGMA max_page_count = {pages + 1}")     # the disk is full
    with pytest.raises(JournalError) as err:
        with j.register_batch("b", "p.toml", "d.csv", "sha") as w:
            for n in range(1, 5001):
                w.add(n, f"CH{n:040d}", n)
    assert "could not be written" in str(err.value) and "full" in str(err.value)
    assert "\n" not in str(err.value)
    assert j.batches() == [] and sqlite3.connect(path).execute("SELECT COUNT(*) FROM cards").fetchone()[0] == 0
    j.close()


def test_missing_journal_or_batch_is_an_error_and_journals_are_private(run_cli, tmp_path):
    typo = tmp_path / "typo.db"
    for args in (["batch", "status", str(typo)], ["batch", "report", str(typo)]):
        r = run_cli(*args)
        assert r.exit_code != 0 and "no such journal" in r.stderr
    assert not typo.exists()
    path = tmp_path / "j.db"
    new_batch(path).close()
    assert (path.stat().st_mode & 0o777) == 0o600
    r = run_cli("batch", "report", str(path), "--batch", "nosuch")
    assert r.exit_code != 0 and "no batch 'nosuch'" in r.stderr and "(batches: b)" in r.stderr
    assert run_cli("batch", "report", str(path), "--batch", "b", "--json").json()[0]["cardholder_id"] == "CH1"


def test_a_damaged_journal_is_not_read_as_done(run_cli, tmp_path):
    path = tmp_path / "j.db"
    new_batch(path, rows=10).close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM cards WHERE row > 4")          # rows lost (a damaged/truncated journal)
    conn.commit()
    conn.close()
    r = run_cli("batch", "status", str(path))
    assert r.exit_code != 0 and "registered with 10 rows but the journal holds 4" in r.stderr


def test_kill_on_progress_and_resume(tmp_path):
    """kill -9 while cards are being made (on journal progress, not on wall time), four
    times; the rerun takes up the dead runs' rows: every cardholder exactly one card."""
    import signal
    import time

    from tests.test_batch import CLI, batch_args, check_journal, make_csv

    data = make_csv(tmp_path / "d.csv", 400)
    journal = tmp_path / "j.db"

    def done() -> int:
        if not journal.exists():
            return 0
        c = sqlite3.connect(journal, timeout=30)
        try:
            return c.execute("SELECT COUNT(*) FROM cards WHERE status = 'verified'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            c.close()

    kills = 0
    for _ in range(4):
        before = done()
        p = subprocess.Popen(CLI + batch_args(data, journal, "--sims", "2"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while p.poll() is None and done() < before + 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(30)
    assert kills == 4 and done() < 400
    final = subprocess.run(CLI + batch_args(data, journal, "--sims", "2", "--json"), capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    check_journal(str(journal), 400)
