"""The journal at city scale (issue 19 items 1-2): the claim of the next card is an index
search at any progress (query plans checked with EXPLAIN on a large synthetic journal),
`batch report`/`status` stream in constant memory, a resume does not read the data file
again, each card is planned once."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from citycard.perso.journal import Journal
from citycard.testing.journals import claim_plan, synthetic_batch

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles/citycard.toml")
KEYS = str(ROOT / "profiles/demo-keys.toml")
ROWS = 200_000


def test_sqlite_claim_is_an_index_search_at_half_progress(tmp_path):
    j = Journal(str(tmp_path / "big.db"))
    try:
        synthetic_batch(j, "big", ROWS, ROWS // 2)
        plan = claim_plan(j, "big")
        assert "SEARCH cards USING" in plan and ("cards_pending" in plan or "cards_status" in plan), plan
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan      # no walk over done rows, no sort
        got = j.claim("big", "desk/r1", "P", lambda n: f"P{n:09d}")
        assert got is not None and got.row == ROWS // 2 + 1 and got.data_offset == (ROWS // 2 + 1) * 100
    finally:
        j.close()


@pytest.mark.postgres
def test_postgresql_claim_uses_the_partial_index(postgres):
    j = Journal(postgres.fresh_database("scale"))
    try:
        synthetic_batch(j, "big", ROWS, ROWS // 2)
        plan = claim_plan(j, "big")
        assert "cards_pending" in plan and "Seq Scan" not in plan and "Sort" not in plan, plan
        got = j.claim("big", "desk/r1", "P", lambda n: f"P{n:09d}")
        assert got is not None and got.row == ROWS // 2 + 1
        # the whole statement the claim sends: the reader's own row and the lowest pending row
        # are searches of the partial indexes, in the plan a prepared statement uses too
        for run in (None, 7):
            for generic in (False, True):
                plan = claim_plan(j, "big", "desk/r1", run=run, generic=generic)
                assert "Index Scan using cards_in_progress" in plan, plan
                assert "Index Scan using cards_pending" in plan, plan
                assert "Seq Scan" not in plan and "Sort" not in plan and "Bitmap" not in plan, plan
                assert ("$1" in plan) == generic, plan
        for _ in range(6):          # psycopg prepares the statement from its fifth run: the same rows
            j.finish("big", got.row, got.card_serial, "desk/r1", "verified", None, "")
            nxt = j.claim("big", "desk/r1", "P", lambda n: f"P{n:09d}")
            assert (nxt.row, nxt.card_number) == (got.row + 1, got.card_number + 1)
            got = nxt
    finally:
        j.close()


def test_report_streams_in_constant_memory(tmp_path):
    peaks = []
    for n in (5_000, 100_000):
        j = Journal(str(tmp_path / f"r{n}.db"))
        synthetic_batch(j, "b", n, n // 2)
        tracemalloc.start()
        count = sum(1 for _ in j.iter_report())
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        j.close()
        assert count == n
    assert peaks[1] < peaks[0] * 1.5 + 256 * 1024, peaks         # 20x the rows, the same memory


@pytest.mark.parametrize("fmt", ["", "--json", "--csv"])
def test_report_cli_streams_in_every_format(tmp_path, fmt):
    """The CLI's peak memory does not grow with the journal (output to a file)."""
    script = ("import resource, sys\nfrom citycard.cli.main import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    rss = []
    for n in (2_000, 150_000):
        path = tmp_path / f"{n}.db"
        j = Journal(str(path))
        synthetic_batch(j, "b", n, n // 2)
        j.close()
        with open(tmp_path / f"out{n}", "w") as out:
            r = subprocess.run([sys.executable, "-c", script, "batch", "report", str(path), *([fmt] if fmt else [])],
                               stdout=out, stderr=subprocess.PIPE, text=True, timeout=300)
        rss.append(int(r.stderr.strip().splitlines()[-1]))
        lines = (tmp_path / f"out{n}").read_text().count("\n")
        assert lines >= n
    assert rss[1] < rss[0] + 16 * 1024, rss            # KiB: a list of 150k rows would add far more


def test_resume_does_not_read_the_data_file_again(run_cli, tmp_path, monkeypatch):
    """The journal records that the file was validated: a second run goes straight to the
    cards (the validator is not called), and each card is planned exactly once."""
    from tests.test_batch import batch_args, make_csv

    data = make_csv(tmp_path / "d.csv", 12)
    journal = tmp_path / "j.db"
    first = run_cli(*batch_args(data, journal, "--sims", "1", "--limit", "3", "--json"))
    assert first.exit_code == 0, first.stderr
    assert first.json()["processed"] == 3

    import citycard.perso.batch as batch_mod
    from citycard.perso.plan import Planner

    calls = {"validate": 0, "plan": 0}
    real_plan = Planner.plan

    def no_validate(*a, **k):
        calls["validate"] += 1
        raise AssertionError("validated again")

    def counting_plan(self, card):
        calls["plan"] += 1
        return real_plan(self, card)

    monkeypatch.setattr(batch_mod, "validate", no_validate)
    monkeypatch.setattr(Planner, "plan", counting_plan)
    again = run_cli(*batch_args(data, journal, "--sims", "1", "--json"))
    assert again.exit_code == 0, again.stderr
    assert again.json()["processed"] == 9 and calls == {"validate": 0, "plan": 9}
