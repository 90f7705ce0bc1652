"""The journal's attempt records, voids and re-issues on SQLite and PostgreSQL (issue 18,
"no unrecorded cards"), and two concurrent runs under one station label on PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from citycard.perso.journal import RESUMED, VOID, Journal

ATR = bytes.fromhex("3B8C80012090000000000066799D24E7")


def serial_of(n: int) -> str:
    return f"P{n:09d}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def journal_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "j.db")
    return request.getfixturevalue("postgres").fresh_database("attempts")


def register(j: Journal, batch: str, ids: list[str], reissue=None) -> None:
    w = j.register_batch(batch, "p.toml", f"{batch}.csv", f"sha-{batch}")
    w.mark_reissues(reissue)
    with w:
        for n, cid in enumerate(ids, 1):
            w.add(n, cid, n * 10)


def test_attempt_void_and_renumber(journal_url):
    j = Journal(journal_url)
    register(j, "b", ["CH1", "CH2"])
    run = j.start_run("b", "desk")
    c = j.claim("b", "desk/r1", "P", serial_of, run=run)
    a = j.begin_attempt("b", c.row, c.card_serial, reader="desk/r1", station="desk", run=run, atr=ATR,
                        uid=bytes.fromhex("66799D24"))
    (opened,) = j.open_attempts("b", c.row)
    assert (opened.id, opened.card_serial, opened.atr, opened.uid) == (a, c.card_serial, ATR,
                                                                        bytes.fromhex("66799D24"))
    serial, number = j.void_and_renumber("b", c.row, "P", serial_of, "gone")
    assert serial != c.card_serial and number == 2 and serial == serial_of(2)   # the next of the counter
    assert j.open_attempts("b", c.row) == []
    (void,) = j.void_attempts("b")
    assert void["card_serial"] == c.card_serial and void["atr"] == ATR.hex().upper() and void["error"] == "gone"
    assert [r["card_serial"] for r in j.report("b") if r["row"] == c.row] == [serial]
    a2 = j.begin_attempt("b", c.row, serial, reader="desk/r1", station="desk", run=run, atr=ATR, uid=None)
    j.finish("b", c.row, serial, "desk/r1", "verified", None, "t", attempt=a2)
    got = [(x["card_serial"], x["status"], x["run"], x["station"]) for x in j.attempts("b")]
    assert got == [(c.card_serial, VOID, run, "desk"), (serial, "verified", run, "desk")]
    j.end_run(run)
    j.close()


def test_finish_settles_the_rows_open_attempts(journal_url):
    j = Journal(journal_url)
    register(j, "b", ["CH1", "CH2", "CH3"])
    for row, previous in ((1, RESUMED), (2, VOID)):
        c = j.claim("b", "r", "P", serial_of)
        first = j.begin_attempt("b", row, c.card_serial, reader="r", station=None, run=None, atr=ATR, uid=None)
        second = j.begin_attempt("b", row, c.card_serial, reader="r", station=None, run=None, atr=ATR, uid=None)
        j.finish("b", row, c.card_serial, "r", "verified", None, "t", attempt=second, previous=previous)
        statuses = {x["status"] for x in j.attempts("b") if x["row"] == row}
        assert statuses == {previous, "verified"} and first < second
    c = j.claim("b", "r", "P", serial_of)        # refused before an attempt was opened: recorded at the end
    j.finish("b", 3, c.card_serial, "r", "failed", "another cardholder's card", "t", card=(ATR, None))
    last = j.attempts("b")[-1]
    assert (last["status"], last["atr"], last["error"]) == ("failed", ATR.hex().upper(), "another cardholder's card")
    j.close()


def test_reissue_rows_record_the_issue_they_replace(journal_url):
    j = Journal(journal_url)
    register(j, "first", ["CH1", "CH2", "CH3"])
    for _ in range(3):
        c = j.claim("first", "r", "P", serial_of)
        j.finish("first", c.row, c.card_serial, "r", "verified", None, "t")
    register(j, "again", ["CH2", "CH9", "CH3"], reissue=frozenset({1, 3}))
    register(j, "all", ["CH1"], reissue="all")
    got = {(r["batch"], r["row"]): r["reissue_of"] for r in j.report() if r["batch"] != "first"}
    assert got == {("again", 1): "batch first row 2, card P000000002",
                   ("again", 2): None,                           # a new cardholder: not a re-issue
                   ("again", 3): "batch first row 3, card P000000003",
                   ("all", 1): "batch first row 1, card P000000001"}
    c = j.claim("again", "r", "P", serial_of)
    j.begin_attempt("again", c.row, c.card_serial, reader="r", station=None, run=None, atr=ATR, uid=None)
    assert j.attempts("again")[0]["reissue_of"] == "batch first row 2, card P000000002"
    j.close()


def test_an_older_journal_gains_the_attempt_columns(tmp_path):
    path = tmp_path / "old.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE batches (batch TEXT PRIMARY KEY, profile TEXT NOT NULL, data_file TEXT NOT NULL, "
              "data_sha256 TEXT NOT NULL, rows INTEGER NOT NULL, created TEXT NOT NULL)")
    c.execute("CREATE TABLE cards (batch TEXT NOT NULL, row INTEGER NOT NULL, cardholder_id TEXT NOT NULL, "
              "card_serial TEXT UNIQUE, card_number BIGINT, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER "
              "NOT NULL DEFAULT 0, reader TEXT, started TEXT, finished TEXT, error TEXT, PRIMARY KEY (batch, row))")
    c.execute("CREATE TABLE attempts (id INTEGER PRIMARY KEY, batch TEXT NOT NULL, row INTEGER NOT NULL, "
              "card_serial TEXT, reader TEXT, status TEXT NOT NULL, error TEXT, started TEXT, finished TEXT)")
    c.execute("INSERT INTO attempts (batch, row, card_serial, reader, status) VALUES ('b', 1, 'S', 'r', 'verified')")
    c.commit()
    c.close()
    j = Journal(str(path))
    assert j.attempts("b")[0]["atr"] is None and j.attempts("b")[0]["status"] == "verified"
    j.close()
    meta = dict(sqlite3.connect(path).execute("SELECT key, value FROM meta"))
    assert meta["version"] == "3"


@pytest.mark.postgres
def test_two_runs_under_one_label_share_a_postgresql_journal(postgres, tmp_path):
    """Issue 18 point 1 on PostgreSQL: two runs of one batch under the same station label
    and the same simulated reader names, at once: each row issued once."""
    from tests.test_batch import CLI, batch_args, check_journal, make_csv

    url = postgres.fresh_database("one_label")
    data = make_csv(tmp_path / "d.csv", 120)
    first = subprocess.run(CLI + batch_args(data, url, "--sims", "1", "--limit", "1", "--station", "desk"),
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    procs = [subprocess.Popen(CLI + batch_args(data, url, "--sims", "2", "--station", "desk", "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert sum(json.loads(o)["processed"] for o, _e in outs) == 119
    report = check_journal(url, 120)
    assert {r["reader"] for r in report} <= {"desk/sim-1", "desk/sim-2"}


def test_batch_reissue_is_shown_in_the_report(run_cli, tmp_path):
    """``batch run --reissue``: the new card's row says which issue it replaces."""
    from tests.test_batch import batch_args, make_csv

    journal = tmp_path / "j.db"
    first = make_csv(tmp_path / "first.csv", 2)
    assert run_cli(*batch_args(first, journal, "--sims", "1")).exit_code == 0
    done = {r["cardholder_id"]: r for r in run_cli("batch", "report", str(journal), "--json").json()}
    again = make_csv(tmp_path / "again.csv", 1)            # CH000001 again
    refused = run_cli(*batch_args(again, journal, "--sims", "1"))
    assert refused.exit_code != 0 and "--reissue" in refused.stderr
    assert run_cli(*batch_args(again, journal, "--sims", "1", "--reissue", "1")).exit_code == 0
    rows = [r for r in run_cli("batch", "report", str(journal), "--json").json() if r["batch"].startswith("again")]
    old = done["CH000001"]
    assert rows[0]["reissue_of"] == f"batch {old['batch']} row 1, card {old['card_serial']}"
    assert rows[0]["status"] == "verified" and rows[0]["card_serial"] != old["card_serial"]
    text = run_cli("batch", "report", str(journal)).stdout
    assert f"re-issue of batch {old['batch']} row 1, card {old['card_serial']}" in text


def test_perso_reissue_card_says_it_was_a_reissue(run_cli, tmp_path):
    """``perso`` alone has no journal: its output is the record, and says a re-issue."""
    from tests.test_batch import KEYS, PROFILE, SAMPLE

    image = tmp_path / "card.json"
    assert run_cli("sim", "new", str(image)).exit_code == 0
    perso = ["perso", "--profile", PROFILE, "--keys", KEYS, "--data", str(SAMPLE), "--row", "2", "--sim", str(image),
             "--issue-date", "20261124"]
    first = run_cli(*perso, "--json")
    assert first.exit_code == 0 and first.json()["reissued"] is False
    again = run_cli(*perso, "--reissue-card")
    assert again.exit_code == 0 and "a re-issue: the issued card was erased and issued again" in again.stdout
    assert run_cli(*perso, "--reissue-card", "--json").json()["reissued"] is True
