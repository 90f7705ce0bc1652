"""The SM4 demo profile (profiles/citycard-sm4.toml) personalized through a real pcscd onto
`citycard sim serve`, verified, loaded and spent with its SM4 set and its 3DES set, from the
CLI (docs/sm4.md); the SM4 TAC checked against the independent SM4 of tests/sm4_gbt.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from citycard.commands import walk
from citycard.sim import image as sim_image
from tests import sm4_gbt as ref

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--profile", str(ROOT / "profiles/citycard-sm4.toml"), "--keys", str(ROOT / "profiles/demo-keys.toml"),
          "--keys", str(ROOT / "profiles/demo-keys-sm4.toml")]
DATA = ["--data", str(ROOT / "profiles/citycard-sample.csv")]
DTK_SM4 = bytes.fromhex("FFC9C066F62E8CB61EBDFDF12D06107B")      # profiles/demo-keys-sm4.toml: TEST KEY


def test_sm4_card_issued_loaded_and_spent_through_pcscd(served_sim, run_cli):
    card = ["--reader", served_sim.reader]
    r = run_cli("perso", *COMMON, *DATA, "--row", "5", *card, "--issue-date", "20261124", "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["verified"] is True and out["card_serial"] == "3301000000000005"
    load = run_cli("purse", "load", *COMMON, *card, "--amount", "30.00", "--json")     # the SM4 set (first)
    assert load.exit_code == 0, load.stderr
    buy = run_cli("purse", "purchase", *COMMON, *card, "--amount", "2.50", "--json")
    assert buy.exit_code == 0, buy.stderr
    old = run_cli("purse", "purchase", *COMMON, *card, "--amount", "1.00", "--key-id", "01", "--json")   # 3DES
    assert old.exit_code == 0, old.stderr
    assert old.json()["balance_fen"] == 2650
    hist = run_cli("purse", "history", *COMMON, *card, "--json").json()
    assert [h["type"] for h in hist] == [6, 6, 2]
    # the SM4 purchase's TAC, recomputed independently: the per-card DTK = SM4(MK, F ‖ ¬F)
    serial = "3301000000000005"
    h = next(h for h in hist if h["amount_fen"] == 250)
    f = walk.diversification_factor(serial)[-8:]
    dtk = ref.encrypt_block(DTK_SM4, f + bytes(b ^ 0xFF for b in f))
    terminal = bytes.fromhex(h["terminal"])
    want = ref.cbc_mac4(dtk, (250).to_bytes(4, "big") + b"\x06" + terminal + (1).to_bytes(4, "big")
                        + bytes.fromhex(h["date"].replace("-", "")) + bytes.fromhex(h["time"].replace(":", "")))
    assert buy.json()["tac"] == want.hex().upper()
    bad = run_cli("purse", "load", *COMMON, *card, "--amount", "1.00", "--key-id", "07")
    assert bad.exit_code != 0 and "no key of type 3F and id 07" in bad.stderr
    assert served_sim.stop() == 0
    saved = sim_image.load(served_sim.image)
    transit = saved.mf.children[0x3F01]
    assert transit.children[0x0002].balance == 2650
    assert transit.keyfile.keys[(0x3E, 0x41)].b4 == 0x04 and transit.keyfile.keys[(0x3E, 0x01)].b4 == 0x00
