"""The demo profile personalized through a real pcscd onto `citycard sim serve`, verified,
dumped, loaded and spent, with the same results as in process."""

from __future__ import annotations

from pathlib import Path

import pytest

from citycard.sim import image as sim_image

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--profile", str(ROOT / "profiles/citycard.toml"), "--keys", str(ROOT / "profiles/demo-keys.toml")]
DATA = ["--data", str(ROOT / "profiles/citycard-sample.csv")]


def test_perso_verify_dump_and_purse_through_pcscd(served_sim, run_cli, tmp_path):
    card = ["--reader", served_sim.reader]
    r = run_cli("perso", *COMMON, *DATA, "--row", "3", *card, "--issue-date", "20261124", "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["verified"] is True and out["card_serial"] == "3301000000000003" and out["checks"] >= 60
    # the same row in process gives a card with the same content
    local = tmp_path / "local.json"
    assert run_cli("sim", "new", str(local)).exit_code == 0
    r2 = run_cli("perso", *COMMON, *DATA, "--row", "3", "--sim", str(local), "--issue-date", "20261124")
    assert r2.exit_code == 0, r2.stderr
    remote_dump = run_cli("dump", *card, *COMMON, "--json").json()
    local_dump = run_cli("dump", "--sim", str(local), *COMMON, "--json").json()
    remote_dump.pop("atr"), local_dump.pop("atr")
    assert remote_dump == local_dump
    apps = {a["name"]: a for a in remote_dump["applications"]}
    assert len(apps) == 6 and all(a["sw"] == "9000" for a in apps.values())
    # purse: load 20.00, spend 1.25 through the reader
    assert run_cli("purse", "load", *COMMON, *card, "--amount", "20.00").exit_code == 0
    p = run_cli("purse", "purchase", *COMMON, *card, "--amount", "1.25", "--json")
    assert p.exit_code == 0, p.stderr
    assert p.json()["balance_fen"] == 1875
    assert run_cli("purse", "balance", *COMMON, *card, "--json").json() == {"balance_fen": 1875,
                                                                          "balance_yuan": "18.75"}
    # a second perso of the same card, through the reader: refused (issued, 18.75 kept), then
    # with --reissue-card erased and redone
    refused = run_cli("perso", *COMMON, *DATA, "--row", "3", *card, "--json")
    assert refused.exit_code == 1 and "3301000000000003 is already issued" in refused.stdout + refused.stderr
    assert run_cli("purse", "balance", *COMMON, *card, "--json").json()["balance_fen"] == 1875
    again = run_cli("perso", *COMMON, *DATA, "--row", "3", *card, "--json", "--reissue-card")
    assert again.exit_code == 0, again.stderr
    assert again.json()["rerun"] is True and again.json()["verified"] is True
    assert served_sim.stop() == 0
    saved = sim_image.load(served_sim.image)
    assert saved.mf.children[0x3F01].children[0x0002].balance == 0      # redone: a fresh purse


def test_perso_error_names_step_and_changes_nothing(served_sim, run_cli):
    bad = run_cli("perso", *COMMON, *DATA, "--row", "9999", "--reader", served_sim.reader)
    assert bad.exit_code == 2
    assert "citycard-sample.csv: row 9999 does not exist" in bad.stderr
    assert served_sim.stop() == 0
    card = sim_image.load(served_sim.image)
    assert list(card.mf.children) == []                                 # untouched factory card
