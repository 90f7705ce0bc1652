"""Duplicate cardholders at city scale (issue 19): a chunk of rows is inserted into the
validator's table first and looked up only when some value was met before; a duplicate in
the same chunk or an earlier one still names its first row, and distinct rows pass."""

from __future__ import annotations

import pytest

from citycard.perso import validate as validate_mod
from citycard.perso.data import read_csv
from citycard.perso.validate import validate
from citycard.profile import load_profile
from citycard.testing.journals import write_cardholders
from tests.test_validate import PROFILE, SAMPLE


def _duplicates(tmp_path, rows: int, copies: list[tuple[int, int]]) -> list[str]:
    path = write_cardholders(str(tmp_path / "d.csv"), rows, str(SAMPLE))
    lines = open(path, encoding="utf-8").read().splitlines()
    for first, again in copies:          # row `again` becomes the same cardholder as row `first`
        lines[again] = lines[first]
    open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    spec = load_profile(PROFILE)
    return [str(p) for p in validate(spec, read_csv(path)) if "again" in str(p)]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(validate_mod, "_CHUNK", 10)        # several chunks from a small file


def test_distinct_rows_are_not_duplicates(tmp_path):
    assert _duplicates(tmp_path, 45, []) == []


@pytest.mark.parametrize("first, again", [(3, 40), (21, 24)], ids=["earlier-chunk", "same-chunk"])
def test_a_duplicate_names_its_first_row(tmp_path, first, again):
    found = _duplicates(tmp_path, 45, [(first, again)])
    assert len(found) == 2            # the cardholder number and the resident ID both repeat
    assert all(f"row {again}" in p and f"the same cardholder as row {first}" in p for p in found)
    assert {p.split("column ")[1].split(":")[0] for p in found} == {"'cardholder_id'", "'id_number'"}
