"""The batch's worker pool (issue 19, 64 timed readers): journal groups (one commit for many
workers' changes, each change undone alone), the worker's journal client through a pipe, and
timed cards that answer ahead of their modelled time but sleep all of it."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest

from citycard.errors import CitycardError
from citycard.perso.journal import Journal, JournalError
from citycard.perso.pool import JournalClient, JournalHub
from citycard.sim import SimCard
from citycard.sim.batch_readers import SimSource, simulated_readers
from citycard.sim.timing import TimedCard, activation_time, apdu_timing
from citycard.testing.journals import synthetic_batch


def _statuses(path: str) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT row, status FROM cards ORDER BY row").fetchall())
    finally:
        conn.close()


def test_group_commits_every_change_once_and_undoes_a_failing_one_alone(tmp_path):
    path = str(tmp_path / "j.db")
    j = Journal(path)
    try:
        synthetic_batch(j, "b", 5, 0)
        with j.group():
            first = j.claim("b", "r1", "P", lambda n: f"P{n:04d}")
            with pytest.raises(JournalError, match="groups do not nest"):
                with j.group():
                    pass
            with pytest.raises(RuntimeError):
                j.claim("b", "r2", "P", lambda n: (_ for _ in ()).throw(RuntimeError("boom")))
            second = j.claim("b", "r3", "P", lambda n: f"P{n:04d}")
            assert _statuses(path)[1] == "pending"          # another connection: nothing committed yet
        assert (first.row, second.row) == (1, 2)                # the failed claim took nothing
        assert [_statuses(path)[r] for r in (1, 2, 3)] == ["in_progress", "in_progress", "pending"]
        assert second.card_number == 2                          # the failed claim's number was undone too
    finally:
        j.close()


def test_a_group_that_raises_records_nothing(tmp_path):
    path = str(tmp_path / "j.db")
    j = Journal(path)
    try:
        synthetic_batch(j, "b", 3, 0)
        with pytest.raises(KeyError):
            with j.group():
                j.claim("b", "r1", "P", lambda n: f"P{n:04d}")
                raise KeyError("stop")
        assert set(_statuses(path).values()) == {"pending"}
        assert j.claim("b", "r1", "P", lambda n: f"P{n:04d}").row == 1     # usable afterwards
    finally:
        j.close()


class _Home:
    """Stands for the batch: its bound methods may cross to the hub by name."""

    def serial_of(self, n: int) -> str:
        return f"H{n:05d}"


def _worker(conn, journal, home, out) -> None:
    j = JournalClient(conn, journal, home=home)
    got = j.claim("b", "w1", "H", home.serial_of)
    out.append(got)
    try:
        j.finish("nope", 99, "X", "w1", "no-such-status-check", None, "")
        out.append("no error")
    except CitycardError as exc:
        out.append(f"error: {exc}")
    try:
        j.claim("b", "w1", "H", lambda n: "x")
    except CitycardError as exc:
        out.append(f"refused: {exc}")
    conn.send(("done", {"n": 1}))


def test_a_worker_claims_through_the_hub_and_gets_its_errors(tmp_path):
    path = str(tmp_path / "j.db")
    j = Journal(path)
    try:
        synthetic_batch(j, "b", 3, 0)
        home = _Home()
        mine, theirs = multiprocessing.Pipe()
        out: list[object] = []
        messages: list[tuple[str, object]] = []
        t = threading.Thread(target=_worker, args=(theirs, j, home, out))   # the pipe works the same in a thread
        t.start()
        hub = JournalHub(j, lambda kind, value: messages.append((kind, value)), home=home)
        j.finish = lambda *a: (_ for _ in ()).throw(JournalError("journal: no such row"))  # type: ignore[method-assign]
        hub.serve({mine: "w1"})
        t.join(10)
        claim = out[0]
        assert claim.row == 1 and claim.card_serial == "H00001"     # the serial rule ran in the hub
        assert out[1] == "error: journal: no such row"
        assert str(out[2]).startswith("refused: a worker's journal call cannot pass")
        assert messages == [("done", {"n": 1})]
        assert _statuses(path)[1] == "in_progress"                  # committed before the answer
    finally:
        del j.finish
        j.close()


def test_timed_card_with_a_lag_sleeps_all_its_modelled_time_in_fewer_pieces():
    slept: list[float] = []
    card = TimedCard(SimCard(), "contact-115200", sleep=slept.append, max_lag=0.01)
    card.power_on()
    times = [activation_time("contact-115200", card.atr)]
    for _ in range(40):
        r = card.process(bytes.fromhex("0084000008"))
        times.append(apdu_timing("contact-115200", bytes.fromhex("0084000008"), r, wrote=False).total_s)
    assert card.owed < 0.01                      # answered ahead, at most the lag
    card.power_off()                                 # taken out: everything owed is slept
    assert card.owed == 0
    assert sum(slept) == pytest.approx(sum(times)) == pytest.approx(card.clock.seconds)
    assert len(slept) < len(times) / 2
    assert all(s >= 0.01 for s in slept[:-1])
    with pytest.raises(CitycardError, match="lag"):
        TimedCard(SimCard(), "contact-115200", max_lag=-1)


def test_simulated_readers_answer_ahead_by_a_bounded_lag_and_settle_when_done(tmp_path):
    assert {r.max_lag for r in simulated_readers(2, timing="contact-9600")} == {0.2}
    slept: list[float] = []
    source = SimSource("sim-1", None, timing="contact-9600", sleep=slept.append, max_lag=0.05)
    session = source.next_card(threading.Event())
    for _ in range(5):
        session.send(bytes.fromhex("0084000008"))
    timed = session.transport.card
    source.done(session, None)
    assert sum(slept) == pytest.approx(timed.clock.seconds)


def test_readers_are_spread_round_robin_over_at_most_the_worker_processes():
    from citycard.perso.pool import default_worker_processes, worker_groups

    assert worker_groups(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert worker_groups(2, 4) == [[0], [1]]           # never more processes than readers
    assert worker_groups(0, 4) == []
    every = [i for g in worker_groups(64, 4) for i in g]
    assert sorted(every) == list(range(64)) and len(worker_groups(64, 4)) == 4
    assert default_worker_processes() >= 2


def test_threads_of_one_worker_share_its_pipe_and_each_gets_its_own_answer(tmp_path):
    """Several readers' threads in one worker process call the journal down one pipe: each call
    gets the answer to that call (claims never mixed up), and every row is taken once."""
    path = str(tmp_path / "j.db")
    j = Journal(path)
    try:
        synthetic_batch(j, "b", 40, 0)
        home = _Home()
        mine, theirs = multiprocessing.Pipe()
        client = JournalClient(theirs, j, home=home)
        got: dict[str, list[int]] = {}

        def reader(name: str) -> None:
            rows = got.setdefault(name, [])
            for _ in range(10):
                claim = client.claim("b", name, "H", home.serial_of)
                rows.append(claim.row)
                client.finish("b", claim.row, claim.card_serial, name, "verified", None, "")

        def workers() -> None:
            threads = [threading.Thread(target=reader, args=(f"r{i}",)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            theirs.send(("done", {}))

        t = threading.Thread(target=workers)
        t.start()
        JournalHub(j, lambda kind, value: None, home=home).serve({mine: "w"})
        t.join(30)
        rows = sorted(r for v in got.values() for r in v)
        assert rows == list(range(1, 41))                     # 40 claims, 40 different rows
        conn = sqlite3.connect(path)
        by_reader = dict(conn.execute("SELECT row, reader FROM cards").fetchall())
        conn.close()
        for name, mine_rows in got.items():                   # each row is recorded as its own reader's
            assert {by_reader[r] for r in mine_rows} == {name}
        assert set(_statuses(path).values()) == {"verified"}
    finally:
        j.close()


def test_a_batch_with_more_readers_than_worker_processes_personalizes_every_row(tmp_path):
    import datetime
    from pathlib import Path

    from citycard.keys import KeyRing
    from citycard.keys.demo import DemoKeyFile
    from citycard.perso.batch import Batch
    from citycard.perso.job import prepare

    root = Path(__file__).resolve().parent.parent
    lines = (root / "profiles/citycard-sample.csv").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "rows.csv"
    data.write_text("\n".join(lines[:13]) + "\n", encoding="utf-8")
    job = prepare(root / "profiles/citycard.toml", data, KeyRing([DemoKeyFile(root / "profiles/demo-keys.toml")]))
    journal = str(tmp_path / "j.db")
    b = Batch(job.spec, job.keys, job.data, journal, issue_date=datetime.date(2026, 11, 24))
    b.worker_processes = 2                                    # 5 readers in 2 processes: threads inside
    result = b.run(simulated_readers(5))
    assert (result.processed, result.verified, result.failed) == (12, 12, 0)
    conn = sqlite3.connect(journal)
    rows = conn.execute("SELECT status, reader, card_serial FROM cards").fetchall()
    conn.close()
    assert {s for s, _r, _c in rows} == {"verified"}
    # every reader worked, the threads of one process too (each reader's first row is claimed
    # by the batch process before the forks)
    assert {r for _s, r, _c in rows} == {f"sim-{i}" for i in range(1, 6)}
    assert len({c for _s, _r, c in rows}) == 12               # one serial per card


@pytest.mark.parametrize("processes", [True, False], ids=["worker-processes", "threads"])
def test_a_readers_row_left_by_a_dead_run_is_resumed_whichever_reader_asks_first(tmp_path, processes):
    """The last row of a batch was in progress on sim-3 when its run died: the next run (the
    row is its only work: a budget of one card) resumes it on sim-3, though sim-1 and sim-2
    ask first and find nothing (a reader that found no row kept the budget's one card, and
    sim-3 never asked: the row stayed in progress run after run)."""
    import datetime
    from pathlib import Path

    from citycard.keys import KeyRing
    from citycard.keys.demo import DemoKeyFile
    from citycard.perso.batch import Batch
    from citycard.perso.job import prepare

    root = Path(__file__).resolve().parent.parent
    lines = (root / "profiles/citycard-sample.csv").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "rows.csv"
    data.write_text("\n".join(lines[:5]) + "\n", encoding="utf-8")
    job = prepare(root / "profiles/citycard.toml", data, KeyRing([DemoKeyFile(root / "profiles/demo-keys.toml")]))
    journal = str(tmp_path / "j.db")

    def batch() -> Batch:
        b = Batch(job.spec, job.keys, job.data, journal, issue_date=datetime.date(2026, 11, 24))
        b.worker_processes = 1                  # the three readers as threads of one process
        return b

    first = batch()
    j = first.prepare()
    try:                                        # the run that died: three rows done, the fourth on sim-3
        dead = j.start_run(first.batch, None)
        for reader in ("sim-1", "sim-1", "sim-1", "sim-3"):
            claim = j.claim(first.batch, reader, job.spec.serial_prefix, first.serial_of, run=dead)
            if reader == "sim-1":
                j.finish(first.batch, claim.row, claim.card_serial, reader, "verified", None, "")
        assert claim.row == 4
        j.end_run(dead)
    finally:
        j.close()
    result = batch().run(simulated_readers(3), processes=processes)   # threads: as PC/SC readers run
    assert (result.processed, result.verified) == (1, 1)
    conn = sqlite3.connect(journal)
    row = conn.execute("SELECT status, reader, card_serial, attempts FROM cards WHERE row = 4").fetchone()
    conn.close()
    assert row == ("verified", "sim-3", claim.card_serial, 2)


def test_a_worker_interrupted_while_its_readers_threads_run_reports_it(tmp_path, monkeypatch):
    """A worker process driving several readers' threads and interrupted (its main thread
    waiting for them) sends an error before its 'done', so the batch does not take the
    worker's end for a normal one."""
    import datetime
    from pathlib import Path

    from citycard.keys import KeyRing
    from citycard.keys.demo import DemoKeyFile
    from citycard.perso import batch as batch_module
    from citycard.perso.job import prepare

    root = Path(__file__).resolve().parent.parent
    job = prepare(root / "profiles/citycard.toml", root / "profiles/citycard-sample.csv",
                  KeyRing([DemoKeyFile(root / "profiles/demo-keys.toml")]))
    journal = Journal(str(tmp_path / "j.db"))
    b = batch_module.Batch(job.spec, job.keys, job.data, str(tmp_path / "j.db"), issue_date=datetime.date(2026, 11, 24))
    mine, theirs = multiprocessing.Pipe()
    monkeypatch.setattr(batch_module, "worker_end", lambda pipes, index: pipes[index][1])

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_module, "run_threads", interrupted)
    sources = simulated_readers(2)
    b._child(sources, [None, None], lambda: False, journal, [(mine, theirs)], 0)
    messages = [mine.recv(), mine.recv()]
    assert messages[0][0] == "error" and "sim-1, sim-2: stopped: KeyboardInterrupt()" in messages[0][1]
    assert messages[1][0] == "done"
    journal.close()


def test_the_budget_keeps_a_reader_waiting_while_a_card_may_come_back():
    """One card left and another reader's reservation open: a reader does not stop (the card
    may come back: that reader found no row) and gets it when it comes back; once the card is
    used, the next reader stops (nothing left, nothing open)."""
    from citycard.perso.pool import Budget

    budget = Budget(multiprocessing.get_context("fork"), 1)
    assert budget.reserve()                       # reader A, about to claim
    got: list[bool] = []
    b = threading.Thread(target=lambda: got.append(budget.reserve()))
    b.start()
    b.join(0.05)
    assert got == []                              # B waits: A's card may come back
    budget.settle(False)                          # A found no row: the card goes back
    b.join(10)
    assert got == [True] and budget.left == 0     # B has it
    budget.settle(True)                           # B claimed a row: the card is used
    assert budget.reserve() is False              # nothing left, nothing open: stop
    stop = threading.Event()
    stop.set()
    assert Budget(multiprocessing.get_context("fork"), 3).reserve(stop) is False
