"""Replacing a card (issue 23 item 4): a new card for the same cardholder, the old one replaced
and hotlisted, its cleared balance loaded onto the new card (a recorded load), child cards
relinked; refused while a waiting period runs or the old card's transactions are not cleared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_batch import batch_args, make_csv

from citycard.lifecycle import Register
from citycard.terminal.txlog import TxRecord, append_record

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = str(ROOT / "profiles/demo-keys.toml")


@pytest.fixture
def bureau(run_cli, tmp_path):
    """Two cards issued by a batch and registered; the first loaded with 30.00 yuan and used for a
    2.50 purchase at a counter whose log is cleared."""
    data = make_csv(tmp_path / "d.csv", 2)
    journal, keep = tmp_path / "j.db", tmp_path / "cards"
    r = run_cli(*batch_args(data, journal, "--sims", "1", "--keep-cards", str(keep)))
    assert r.exit_code == 0, r.stderr
    register, ledger, log = str(tmp_path / "reg.db"), str(tmp_path / "ledger.db"), tmp_path / "counter.log"
    assert run_cli("cards", "import", "--register", register, "--journal", str(journal)).exit_code == 0
    serials = sorted(p.stem for p in keep.glob("*.json"))
    img = keep / f"{serials[0]}.json"
    common = ["--profile", str(PROFILE), "--keys", KEYS, "--sim", str(img), "--log", str(log)]
    assert run_cli("purse", "load", *common, "--amount", "30.00").exit_code == 0
    assert run_cli("purse", "purchase", *common, "--amount", "2.50").exit_code == 0
    r = run_cli("clearing", "import", str(log), "--ledger", ledger, "--profile", str(PROFILE), "--keys", KEYS)
    assert r.exit_code == 0, r.stderr
    return {"data": data, "journal": journal, "register": register, "ledger": ledger, "log": log,
            "serials": serials, "tmp": tmp_path}


def _replace(run_cli, b, serial, card, *extra, profile=PROFILE):
    return run_cli("cards", "replace", "--register", b["register"], serial, "--journal", str(b["journal"]),
                   "--profile", str(profile), "--data", str(b["data"]), "--keys", KEYS, "--ledger", b["ledger"],
                   "--reason", "lost on the bus", "--sim", str(card), "--log", str(b["log"]), "--json", *extra)


def test_replacement_carries_the_cleared_balance(run_cli, bureau):
    b = bureau
    old, child = b["serials"]
    assert run_cli("cards", "link", "--register", b["register"], child, "--parent", old, "--reason",
                   "family card").exit_code == 0
    assert run_cli("cards", "lost", "--register", b["register"], old, "--reason", "phone call").exit_code == 0
    new_img = b["tmp"] / "new.json"
    assert run_cli("sim", "new", str(new_img)).exit_code == 0
    r = _replace(run_cli, b, old, new_img)
    assert r.exit_code == 0, r.stdout + r.stderr
    out = r.json()
    new = out["new_serial"]
    assert new not in b["serials"] and out["balances_fen"] == {"transit": 2750} and out["children"] == [child]
    bal = run_cli("purse", "balance", "--profile", str(PROFILE), "--sim", str(new_img), "--json").json()
    assert bal["balance_fen"] == 2750
    with Register(b["register"]) as reg:
        o, n, c = reg.card(old), reg.card(new), reg.card(child)
        assert (o.state, o.replaced_by, o.hotlisted) == ("replaced", new, True)
        assert (n.state, n.replaces, n.cardholder_id, n.batch, n.row) == ("issued", old, o.cardholder_id, o.batch, o.row)
        assert c.parent == new and reg.events(child)[-1]["action"] == "relink"
        assert old in list(reg.hotlist_snapshot()[1])
    # the restoring load is a record the clearing accepts: the ledger follows the new card
    r = run_cli("clearing", "import", str(b["log"]), "--ledger", b["ledger"], "--profile", str(PROFILE), "--keys", KEYS,
                "--json")
    assert r.exit_code == 0 and r.json()["verdicts"] == {"accepted": 1}, r.stdout
    assert run_cli("clearing", "card", new, "--ledger", b["ledger"], "--json").json()["apps"]["transit"]["balance_fen"] == 2750
    # a second replacement of the old card is refused; the new card's identity is unchanged
    again = b["tmp"] / "again.json"
    assert run_cli("sim", "new", str(again)).exit_code == 0
    r = _replace(run_cli, b, old, again)
    assert r.exit_code == 2 and f"card {old} is replaced" in r.stderr


def test_waiting_period_and_uncleared_transactions_refuse(run_cli, bureau):
    b = bureau
    old = b["serials"][0]
    card = b["tmp"] / "new.json"
    assert run_cli("sim", "new", str(card)).exit_code == 0
    before = card.read_bytes()
    waiting = b["tmp"] / "waiting.toml"
    text = PROFILE.read_text().replace("[card]\n", "[card]\nreplacement_wait_days = 3\n", 1)
    assert "replacement_wait_days" in text
    waiting.write_text(text)
    r = _replace(run_cli, b, old, card, profile=waiting)
    assert r.exit_code == 2 and "was never reported lost" in r.stderr
    assert run_cli("cards", "lost", "--register", b["register"], old, "--reason", "x").exit_code == 0
    r = _replace(run_cli, b, old, card, profile=waiting)
    assert r.exit_code == 2 and "the profile waits 3 days" in r.stderr and "replace it from" in r.stderr
    # a grey record of the old card (its answer lost, not proven): refused whatever the profile waits
    grey = b["tmp"] / "grey.log"
    append_record(grey, TxRecord("purchase", "transit", old, 1, 2750, 100, 6, "000000000009", "00000001", "20261203",
                                 "120000", None, "grey"))
    assert run_cli("clearing", "import", str(grey), "--ledger", b["ledger"], "--profile", str(PROFILE),
                   "--keys", KEYS).exit_code == 0
    r = _replace(run_cli, b, old, card)
    assert r.exit_code == 2 and "not settled (clearing grey)" in r.stderr
    # a data file changed since the batch
    b["data"].write_text(b["data"].read_text() + "\n")
    r = _replace(run_cli, b, old, card)
    assert r.exit_code == 2 and "not the data file of batch" in r.stderr
    assert card.read_bytes() == before                         # nothing was written to the new card
    with Register(b["register"]) as reg:
        assert reg.card(old).state == "lost"
