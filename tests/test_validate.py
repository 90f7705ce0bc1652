"""The one validator of cardholder data (issue 17 item 4, issue 19 item 1): the same problems
from `profile check --data`, `batch run` and `perso --row`, every bad row with its column,
read once in constant memory."""

from __future__ import annotations

import csv
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from citycard.errors import InputError
from citycard.perso.data import read_csv
from citycard.perso.validate import parse_rows, resident_id_problem, validate
from citycard.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles/citycard.toml")
KEYS = str(ROOT / "profiles/demo-keys.toml")
SAMPLE = ROOT / "profiles/citycard-sample.csv"
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def gb11643(first17: str) -> str:
    """An ID with its check digit, computed here from the standard's definition:
    sum(a_i * W_i) mod 11 -> 1 0 X 9 8 7 6 5 4 3 2."""
    return first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, WEIGHTS)) % 11]


def sample_rows() -> list[dict[str, str]]:
    with open(SAMPLE, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(sample_rows()[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def generated(path: Path, n: int) -> Path:
    """``n`` distinct valid cardholders, made on the fly (valid check digits)."""
    from citycard.testing.journals import write_cardholders

    return Path(write_cardholders(str(path), n, str(SAMPLE)))


def problems(path: Path) -> list[str]:
    return [str(p) for p in validate(load_profile(PROFILE), read_csv(path))]


def test_resident_id_check_digit_against_published_examples():
    # GB 11643-1999 appendix example 11010519491231002X; and the sample's own IDs
    assert resident_id_problem("11010519491231002X") is None
    assert gb11643("11010519491231002") == "11010519491231002X"
    assert "wrong check digit" in resident_id_problem("110105194912310021")
    assert "not a date" in resident_id_problem(gb11643("11010519490231002"))
    assert "18 expected" in resident_id_problem("12345")
    for r in sample_rows():
        assert resident_id_problem(r["id_number"]) is None, r


def test_every_bad_row_and_column_is_reported(tmp_path):
    rows = sample_rows()[:14]
    rows[0]["id_number"] = "4.40103E+17"                       # Excel scientific notation
    rows[1]["id_number"] = "12345"
    rows[2]["birth_date"] = "1978/11/29"
    rows[3]["sex"] = "M"
    rows[4]["pin"] = "12a4"
    rows[5]["name"] = ""
    rows[6]["phone"] = "99"
    rows[7]["ethnicity"] = "1"                                  # leading zero lost
    rows[8]["id_number"] = rows[8]["id_number"][:-1] + ("0" if rows[8]["id_number"][-1] != "0" else "1")
    rows[9]["name"] = "张" * 16                                  # 32 bytes, the field has 30
    rows[10] = {**rows[11], "cardholder_id": rows[10]["cardholder_id"]}   # the same cardholder twice
    rows[12]["birth_date"] = "19000101"                         # not the birth date in the ID
    out = problems(write(tmp_path / "bad.csv", rows))
    text = "\n".join(out)
    expect = [("row 1, column 'id_number'", "scientific notation"), ("row 2, column 'id_number'", "18 expected"),
              ("row 3, column 'birth_date'", "not a date YYYYMMDD"), ("row 4, column 'sex'", "is not one of"),
              ("row 5, column 'pin'", "4..12 digits"), ("row 6: column 'name' is empty", ""),
              ("row 7, column 'phone'", "not a phone number"), ("row 8, column 'ethnicity'", "leading zeros"),
              ("row 9, column 'id_number'", "wrong check digit"), ("row 10, column 'name'", "longer than 30"),
              ("row 12, column 'id_number'", "same cardholder as row 11"),
              ("row 13, column 'birth_date'", "not the birth date in the resident ID")]
    for where, what in expect:
        assert any(where in line and what in line for line in out), (where, what, text)
    assert "12a4" not in text                                   # a PIN never in a message
    assert not any("row 14" in line for line in out)
    assert len({line.split(",")[0].split(":")[0] for line in out}) == 12


def test_header_only_file_and_empty_required(tmp_path):
    assert problems(write(tmp_path / "h.csv", [])) == [f"{tmp_path / 'h.csv'}: no cardholder rows (only a header)"]


def test_profile_check_reports_what_batch_run_refuses(run_cli, tmp_path):
    rows = sample_rows()[:6]
    rows[1]["birth_date"] = "1978/11/29"
    rows[2]["sex"] = "M"
    rows[3]["pin"] = "12a4"
    rows[4]["name"] = ""
    data = write(tmp_path / "d.csv", rows)
    check = run_cli("profile", "check", PROFILE, "--data", str(data))
    assert check.exit_code == 2 and "4 bad row(s)" in check.stderr
    batch = run_cli("batch", "run", "--profile", PROFILE, "--keys", KEYS, "--data", str(data), "--journal",
                    str(tmp_path / "j.db"), "--sims", "1")
    assert batch.exit_code == 2 and "4 bad row(s)" in batch.stderr
    lines = [x for x in check.stderr.splitlines() if "d.csv row" in x]
    assert len(lines) == 4 and all(x in batch.stderr for x in lines)
    assert "12a4" not in check.stderr + batch.stderr
    ok = run_cli("profile", "check", PROFILE, "--data", str(SAMPLE))
    assert ok.exit_code == 0, ok.stderr


def test_perso_row_uses_the_validator(run_cli, tmp_path):
    rows = sample_rows()[:2]
    rows[1]["id_number"] = "4.40103E+17"
    data = write(tmp_path / "p.csv", rows)
    r = run_cli("perso", "--profile", PROFILE, "--keys", KEYS, "--data", str(data), "--row", "2", "--dry-run")
    assert r.exit_code == 2 and "row 2, column 'id_number'" in r.stderr and "scientific notation" in r.stderr
    assert run_cli("perso", "--profile", PROFILE, "--keys", KEYS, "--data", str(data), "--row", "1",
                   "--dry-run").exit_code == 0


def test_already_issued_cardholders_are_refused_unless_reissued(run_cli, tmp_path):
    rows = sample_rows()[:4]
    first = write(tmp_path / "a.csv", rows)
    journal = tmp_path / "j.db"
    args = ["batch", "run", "--profile", PROFILE, "--keys", KEYS, "--journal", str(journal), "--sims", "1",
            "--issue-date", "20261124", "--json"]
    assert run_cli(*args, "--data", str(first)).exit_code == 0
    rows[2]["name"] = "王芳"                                     # one cell fixed: a new file, a new batch
    fixed = write(tmp_path / "b.csv", rows)
    again = run_cli(*args, "--data", str(fixed))
    assert again.exit_code == 2 and "4 bad row(s)" in again.stderr and "already issued" in again.stderr
    check = run_cli("profile", "check", PROFILE, "--data", str(fixed), "--journal", str(journal))
    assert check.exit_code == 2 and check.stderr.count("already issued") == 4
    one = run_cli(*args, "--data", str(fixed), "--reissue", "1-2,4")
    assert one.exit_code == 2 and "b.csv row 3, column 'cardholder_id'" in one.stderr and "1 bad row(s)" in one.stderr
    ok = run_cli(*args, "--data", str(fixed), "--reissue", "3", "--batch", "fix3")
    assert ok.exit_code == 2                                   # rows 1, 2, 4 are not named
    done = run_cli(*args, "--data", str(fixed), "--reissue", "all")
    assert done.exit_code == 0, done.stderr
    assert done.json()["verified"] == 4
    conn = sqlite3.connect(journal)
    assert conn.execute("SELECT COUNT(*) FROM cards WHERE status = 'verified'").fetchone()[0] == 8
    # the same file and --reissue again: the batch is done; said, not silently nothing
    rerun = run_cli(*args, "--data", str(fixed), "--reissue", "all")
    assert rerun.exit_code == 0 and rerun.json()["processed"] == 0
    assert "nothing to do, every row of b.csv is already in the journal" in rerun.stderr
    assert "citycard perso --reissue-card" in rerun.stderr
    assert conn.execute("SELECT COUNT(*) FROM cards WHERE status = 'verified'").fetchone()[0] == 8
    with pytest.raises(InputError):
        parse_rows("3-1")
    assert parse_rows("1,3-4") == {1, 3, 4} and parse_rows("ALL") == "all"


def test_validation_streams_in_constant_memory(tmp_path):
    spec = load_profile(PROFILE)
    small, big = generated(tmp_path / "s.csv", 2_000), generated(tmp_path / "b.csv", 100_000)
    peaks = []
    for path in (small, big):
        data = read_csv(path)
        tracemalloc.start()
        found = list(validate(spec, data))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert found == [], found[:3]
    # 50x the rows, about the same memory: nothing grows with the file (a list of 100k rows
    # of dicts would take well over 50 MB)
    assert peaks[1] < peaks[0] * 1.5 + 512 * 1024, peaks
    assert peaks[1] < 8 * 1024 * 1024
