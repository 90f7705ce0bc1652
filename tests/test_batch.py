"""Bureau batches: data checked in full, journal, several readers, kill and resume,
two stations sharing a PostgreSQL journal."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citycard.perso.journal import Journal

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles/citycard.toml")
KEYS = str(ROOT / "profiles/demo-keys.toml")
SAMPLE = ROOT / "profiles/citycard-sample.csv"
CLI = [sys.executable, "-m", "citycard"]


def make_csv(path: Path, n: int, mutate=None) -> Path:
    """``n`` cardholders built from the sample (ids made unique; resident IDs too when ``n``
    is larger than the sample)."""
    with open(SAMPLE, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    out = []
    for i in range(n):
        r = dict(rows[i % len(rows)])
        r["cardholder_id"] = f"CH{i + 1:06d}"
        if n > len(rows):                   # a cardholder of its own: a new valid resident ID (GB 11643)
            r["id_number"] = unique_resident_id(r["id_number"], i // len(rows))
        if mutate:
            mutate(i + 1, r)
        out.append(r)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(out)
    return path


def unique_resident_id(base: str, k: int) -> str:
    """``base`` with sequence digits 15-16 replaced by ``k`` (the sex digit kept) and the
    check digit recomputed (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2, MOD 11-2)."""
    first17 = base[:14] + f"{k % 100:02d}" + base[16]
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def batch_args(data, journal, *extra):
    return ["batch", "run", "--profile", PROFILE, "--keys", KEYS, "--data", str(data), "--journal", str(journal),
            "--issue-date", "20261124", *extra]


def check_journal(journal: str, rows: int) -> list[dict]:
    j = Journal(journal)
    try:
        report = j.report()
        attempts = {b: j.attempts(b) for b in j.batches()}
    finally:
        j.close()
    assert len(report) == rows
    assert all(r["status"] == "verified" for r in report), [r for r in report if r["status"] != "verified"][:3]
    serials = [r["card_serial"] for r in report]
    assert len(set(serials)) == rows                                # no serial twice
    for b, atts in attempts.items():
        done = [a for a in atts if a["status"] == "verified"]
        assert len(done) == len({a["row"] for a in done}) == rows   # no row issued twice, none lost
        assert len({a["card_serial"] for a in done}) == rows
    return report


def test_bad_rows_are_all_reported_and_nothing_is_journaled(run_cli, tmp_path):
    def spoil(n, r):
        if n == 3:
            r["name"] = "张" * 16                      # 32 bytes in GBK: too long for EF06 (30)
        if n == 7:
            r["id_number"] = ""
    data = make_csv(tmp_path / "bad.csv", 12, spoil)
    journal = tmp_path / "j.db"
    r = run_cli(*batch_args(data, journal, "--sims", "2"))
    assert r.exit_code == 2
    assert "2 bad row(s)" in r.stderr
    assert "bad.csv row 3, column 'name'" in r.stderr
    assert "bad.csv row 7: column 'id_number' is empty" in r.stderr
    conn = sqlite3.connect(journal) if journal.exists() else None
    if conn is not None:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'cards'").fetchone() is None or \
            conn.execute("SELECT COUNT(*) FROM cards").fetchone()[0] == 0


def test_release_validates_once_and_the_stations_start_without_reading_the_file(run_cli, tmp_path, monkeypatch):
    """`batch release` (issue 19): the data file validated and its rows in the journal, no
    card; `batch run` then starts at once (the file is not validated again); a bad file
    releases nothing; a batch is released once."""
    journal = tmp_path / "j.db"
    bad = make_csv(tmp_path / "bad.csv", 5, lambda n, r: r.update(id_number="") if n == 4 else None)
    release = ["batch", "release", "--profile", PROFILE, "--keys", KEYS, "--journal", str(journal)]
    r = run_cli(*release, "--data", str(bad))
    assert r.exit_code == 2 and "bad.csv row 4: column 'id_number' is empty" in r.stderr
    assert not journal.exists() or run_cli("batch", "status", str(journal), "--json").json() == {}
    data = make_csv(tmp_path / "d.csv", 6)
    r = run_cli(*release, "--data", str(data), "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["rows"] == 6 and out["status"]["pending"] == 6
    again = run_cli(*release, "--data", str(data))
    assert again.exit_code == 2 and "already in" in again.stderr

    import citycard.perso.batch as batch_module

    def no_second_validation(*a, **k):
        raise AssertionError("the released file was validated again")
    monkeypatch.setattr(batch_module, "validate", no_second_validation)
    r = run_cli(*batch_args(data, journal, "--sims", "2", "--json"))
    assert r.exit_code == 0, r.stderr
    assert r.json()["verified"] == 6 and r.json()["batch"] == out["batch"]


def test_batch_report_and_status(run_cli, tmp_path):
    data = make_csv(tmp_path / "d.csv", 30)
    journal = tmp_path / "j.db"
    keep = tmp_path / "cards"
    r = run_cli(*batch_args(data, journal, "--sims", "3", "--keep-cards", str(keep), "--json"))
    assert r.exit_code == 0, r.stderr
    s = r.json()
    assert s["processed"] == 30 and s["verified"] == 30 and s["failed"] == 0 and s["status"]["verified"] == 30
    report = check_journal(str(journal), 30)
    assert {r["reader"].split("/")[-1] for r in report} <= {"sim-1", "sim-2", "sim-3"}
    assert sorted(p.stem for p in keep.glob("*.json")) == sorted(r["card_serial"] for r in report)
    rep = run_cli("batch", "report", str(journal), "--json").json()
    assert {"row", "cardholder_id", "card_serial", "status", "reader", "started", "finished"} <= set(rep[0])
    assert rep[0]["cardholder_id"] == "CH000001"
    csv_out = run_cli("batch", "report", str(journal), "--csv").stdout.splitlines()
    assert csv_out[0].startswith("batch,row,cardholder_id,card_serial,status") and len(csv_out) == 31
    st = run_cli("batch", "status", str(journal), "--json").json()
    assert list(st.values())[0]["verified"] == 30
    again = run_cli(*batch_args(data, journal, "--sims", "2", "--json"))
    assert again.json()["processed"] == 0                           # nothing issued twice
    # the data file changed under the same batch name: refused
    make_csv(data, 30, lambda n, r: r.update(name="王芳") if n == 1 else None)
    changed = run_cli(*batch_args(data, journal, "--sims", "1", "--batch", s["batch"]))
    assert changed.exit_code == 2 and "another version of its data file" in changed.stderr


def _cards_done(journal: Path) -> int:
    """Rows the journal has recorded as done (0 while it is not there yet)."""
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        return conn.execute("SELECT COUNT(*) FROM cards WHERE status IN ('verified', 'personalized')").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def test_kill_and_resume(tmp_path):
    """SIGKILL a running batch six times, each time once the journal shows more cards done
    (progress, not wall-clock time: a fast machine must not finish before the kills), then
    run it to the end: every row once, with its card."""
    data = make_csv(tmp_path / "d.csv", 1000)
    journal = tmp_path / "j.db"
    rnd = random.Random(20261124)
    kills = 0
    for i in range(6):
        target = 120 * (i + 1) + rnd.randrange(0, 40)               # kill after this many cards in all
        p = subprocess.Popen(CLI + batch_args(data, journal, "--sims", "2"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        while p.poll() is None and _cards_done(journal) < target:
            time.sleep(0.01)                                         # waiting for progress
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(30)
    final = subprocess.run(CLI + batch_args(data, journal, "--sims", "2", "--json"), capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert kills >= 3
    check_journal(str(journal), 1000)


def test_thousand_cards_over_four_readers_two_behind_pcscd(pcscd, tmp_path, run_cli):
    pytest.importorskip("smartcard")
    data = make_csv(tmp_path / "d.csv", 1000)
    journal = tmp_path / "j.db"
    env = dict(os.environ, **pcscd.env)
    servers = []
    for slot in (0, 1):
        img = tmp_path / f"reader{slot}.json"
        assert run_cli("sim", "new", str(img)).exit_code == 0
        servers.append(subprocess.Popen(CLI + ["sim", "serve", str(img), "--vpcd", f"127.0.0.1:{pcscd.port + slot}",
                                               "--dispenser", str(tmp_path / f"out{slot}")], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from citycard.testing.pcscd import wait_for_card
    try:
        for name in pcscd.reader_names:
            wait_for_card(name, timeout=10)
        r = run_cli(*batch_args(data, journal, "--sims", "2", "--reader", pcscd.reader_names[0],
                                "--reader", pcscd.reader_names[1], "--json"))
        assert r.exit_code == 0, r.stderr
        assert r.json()["verified"] == 1000
        report = check_journal(str(journal), 1000)
        readers = {x["reader"].split("/", 1)[1] for x in report}
        assert readers == {"sim-1", "sim-2", *pcscd.reader_names}
        through_pcscd = sum(1 for x in report if x["reader"].split("/", 1)[1] in pcscd.reader_names)
        filed = len(list((tmp_path / "out0").glob("*.json"))) + len(list((tmp_path / "out1").glob("*.json")))
        assert filed == through_pcscd > 0
    finally:
        for s in servers:
            s.terminate()
            s.wait(15)
        for name in pcscd.reader_names:
            wait_for_card(name, present=False, timeout=10)


@pytest.mark.postgres
def test_two_stations_share_a_postgresql_journal(postgres, tmp_path):
    url = postgres.fresh_database("stations")
    data = make_csv(tmp_path / "d.csv", 600)
    procs = [subprocess.Popen(CLI + batch_args(data, url, "--sims", "2", "--batch", "shared", "--station", st,
                                               "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for st in ("A", "B")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    processed = [json.loads(o)["processed"] for o, _e in outs]
    assert sum(processed) == 600 and all(n > 0 for n in processed)   # both stations worked
    check_journal(url, 600)


def test_gb18030_data_file_and_bad_encoding(run_cli, tmp_path):
    utf8 = make_csv(tmp_path / "u.csv", 5)
    gb = tmp_path / "gb.csv"
    gb.write_bytes(utf8.read_text(encoding="utf-8").encode("gb18030"))
    journal = tmp_path / "j.db"
    wrong = run_cli(*batch_args(gb, journal, "--sims", "1"))
    assert wrong.exit_code == 2 and "not valid utf-8 (try --encoding gb18030)" in wrong.stderr
    r = run_cli(*batch_args(gb, journal, "--sims", "1", "--encoding", "gb18030", "--json"))
    assert r.exit_code == 0, r.stderr
    assert r.json()["verified"] == 5
    from citycard.perso.data import read_csv
    assert read_csv(gb, "gb18030").rows == read_csv(utf8).rows
