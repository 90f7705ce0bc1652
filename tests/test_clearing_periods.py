"""Settlement periods (leftovers item 5; docs/clearing.md "Settlement periods"): `clearing
settle --from --to` closes a period of transaction dates; its report then keeps the figures it
had, whatever is imported later, and the records dated inside it that were filed after it was
closed are totalled apart as late.  Every TAC is computed by tests/test_clearing.py's own
implementation; the expected figures are written by hand."""

from __future__ import annotations

import json

import pytest

from citycard.clearing import Ledger, LedgerError
from citycard.errors import InputError
from tests.test_clearing import CARD, DEMO_KEYS, PROFILE, load, purchase, verifier, write_log  # noqa: F401

OTHER = "3301000000000043"
PERIOD = ("20261201", "20261203")
OLD_KEYS = ["unit", "purchases", "purchase_fen", "suspicious", "suspicious_fen", "load_fen", "rejected",
            "duplicates", "grey"]


def _first_log(tmp_path):
    return write_log(tmp_path / "t1.log", [
        load(0, 0, 10000, day="20261201"),
        purchase(0, 10000, 250, 1, day="20261201"),
        purchase(2, 9450, 300, 3, day="20261202"),     # counter 1 missing: suspicious until it comes
        purchase(3, 9150, 100, 4, day="20261205"),     # after the period
    ])


def _late_log(tmp_path):
    return write_log(tmp_path / "t2.log", [
        purchase(1, 9750, 300, 2, day="20261202"),     # inside the closed period: late (and closes the gap)
        purchase(0, 500, 50, 9, day="20261204", card=OTHER, terminal="000000000009"),   # outside it
    ])


def test_a_closed_period_keeps_its_figures_and_shows_late_records_apart(tmp_path, verifier):
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(_first_log(tmp_path))], verifier)
        before = list(book.report(by="unit", date_from=PERIOD[0], date_to=PERIOD[1]))
        assert before == [{"unit": "transit", "purchases": 2, "purchase_fen": 550, "suspicious": 1,
                           "suspicious_fen": 300, "load_fen": 10000, "rejected": 0, "duplicates": 0, "grey": 0}]
        done = book.settle(*PERIOD)
        assert (done.date_from, done.date_to, done.records) == ("20261201", "20261203", 3)
        closed = {"unit": "transit", "purchases": 2, "purchase_fen": 550, "suspicious": 1, "suspicious_fen": 300,
                  "load_fen": 10000, "rejected": 0, "duplicates": 0, "grey": 0,
                  "late_purchases": 0, "late_purchase_fen": 0, "late_load_fen": 0}
        assert list(book.report(by="unit", date_from=PERIOD[0], date_to=PERIOD[1])) == [closed]

        book.import_logs([str(_late_log(tmp_path))], verifier)
        # the ledger now knows better: the gap closed, counter 2 is accepted ...
        assert [(h["counter"], h["verdict"]) for h in book.card(CARD)["history"]] == [
            (0, "accepted"), (0, "accepted"), (1, "accepted"), (2, "accepted"), (3, "accepted")]
        # ... but the closed period's figures are those it was closed with, the late sale apart
        after = list(book.report(by="unit", date_from=PERIOD[0], date_to=PERIOD[1]))
        assert after == [{**closed, "late_purchases": 1, "late_purchase_fen": 300}]
        assert {k: after[0][k] for k in OLD_KEYS} == {k: before[0][k] for k in OLD_KEYS}

        days = {r["day"]: (r["purchase_fen"], r["suspicious_fen"], r["late_purchase_fen"])
                for r in book.report(by="day")}
        assert days == {"20261201": (250, 0, 0), "20261202": (300, 300, 300), "20261204": (50, 0, 0),
                        "20261205": (100, 0, 0)}
        # a range that touches no closed period: the report as before (no late keys), current verdicts
        outside = list(book.report(by="unit", date_from="20261204", date_to="20261231"))
        assert outside == [{"unit": "transit", "purchases": 2, "purchase_fen": 150, "suspicious": 0,
                            "suspicious_fen": 0, "load_fen": 0, "rejected": 0, "duplicates": 0, "grey": 0}]
        # importing the late log again adds nothing
        book.import_logs([str(_late_log(tmp_path))], verifier)
        assert list(book.report(by="unit", date_from=PERIOD[0], date_to=PERIOD[1])) == after


def test_a_grey_record_settled_later_stays_grey_in_its_closed_period(tmp_path, verifier):
    from dataclasses import replace

    sale = purchase(0, 1000, 200, 1, day="20261202")
    log = write_log(tmp_path / "g.log", [replace(sale, tac=None, status="grey")])
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(log)], verifier)
        book.settle(*PERIOD)
        proof = write_log(tmp_path / "p.log", [replace(sale, status="proven")])
        book.import_logs([str(proof)], verifier)
        (row,) = book.report(by="unit", date_from=PERIOD[0], date_to=PERIOD[1])
        assert (row["purchases"], row["grey"], row["late_purchases"], row["late_purchase_fen"]) == (0, 1, 1, 200)


def test_periods_never_overlap_and_are_checked(tmp_path, verifier):
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(_first_log(tmp_path))], verifier)
        book.settle(*PERIOD)
        with pytest.raises(LedgerError, match=r"2026-12-03..2026-12-10 overlaps the closed period "
                                              r"2026-12-01..2026-12-03"):
            book.settle("20261203", "20261210")
        with pytest.raises(LedgerError, match="overlaps"):
            book.settle("20261101", "20261231")
        with pytest.raises(InputError, match="--from 2026-12-09 is after --to 2026-12-04"):
            book.settle("20261209", "20261204")
        assert [(p.date_from, p.date_to) for p in book.settlements()] == [PERIOD]
        book.settle("20261204", "20261210")             # the next period
        assert [(p.date_from, p.date_to, p.records) for p in book.settlements()] == [
            (*PERIOD, 3), ("20261204", "20261210", 1)]


def test_cli_settle_and_report(run_cli, tmp_path):
    db = str(tmp_path / "l.db")
    audit = tmp_path / "audit.log"
    imp = ["clearing", "import", "--ledger", db, "--profile", str(PROFILE), "--keys", str(DEMO_KEYS)]
    assert run_cli(*imp, str(_first_log(tmp_path))).exit_code == 0
    r = run_cli("--audit-log", str(audit), "clearing", "settle", "--ledger", db, "--from", "2026-12-01",
                "--to", "2026-12-03", "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert (out["ok"], out["from"], out["to"], out["records"]) == (True, "2026-12-01", "2026-12-03", 3)
    entry = json.loads(audit.read_text().splitlines()[-1])
    assert entry["action"] == "clearing.settled" and entry["details"]["from"] == "2026-12-01"
    assert run_cli(*imp, str(_late_log(tmp_path))).exit_code == 0
    rep = ["clearing", "report", "--ledger", db, "--from", "2026-12-01", "--to", "2026-12-03"]
    r = run_cli(*rep, "--json")
    assert r.exit_code == 0 and "closed period 2026-12-01..2026-12-03" in r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert (row["purchase_fen"], row["suspicious_fen"], row["late_purchase_fen"]) == (550, 300, 300)
    r = run_cli(*rep)
    assert r.exit_code == 0 and "LATE OWED" in r.stdout.splitlines()[0]
    assert r.stdout.splitlines()[1].split()[-2:] == ["1", "3.00"]
    r = run_cli("clearing", "settle", "--ledger", db, "--from", "2026-12-02", "--to", "2026-12-05")
    assert r.exit_code == 2 and "overlaps the closed period 2026-12-01..2026-12-03" in r.stderr
    r = run_cli("clearing", "settle", "--ledger", db, "--from", "2026-12-32", "--to", "2026-12-05")
    assert r.exit_code == 2 and "--from 2026-12-32" in r.stderr
    r = run_cli("clearing", "settle", "--ledger", str(tmp_path / "none.db"), "--from", "2026-12-01",
                "--to", "2026-12-05")
    assert r.exit_code == 2 and "no such ledger" in r.stderr


@pytest.mark.postgres
def test_settlement_periods_on_postgres(postgres, tmp_path, verifier):
    with Ledger(postgres.fresh_database("periods")) as book:
        book.import_logs([str(_first_log(tmp_path))], verifier)
        assert book.settle(*PERIOD).records == 3
        book.import_logs([str(_late_log(tmp_path))], verifier)
        (row,) = book.report(by="unit", date_from=PERIOD[0], date_to=PERIOD[1])
        assert (row["purchase_fen"], row["suspicious_fen"], row["late_purchases"], row["late_purchase_fen"]) == \
            (550, 300, 1, 300)
        with pytest.raises(LedgerError, match="overlaps"):
            book.settle("20261203", "20261210")
