"""A card with SM4 line protection (profiles/citycard-sm4-lp.toml on the simulated model
``fmcos-sm4``) issued, verified, loaded and spent through a real pcscd onto `citycard sim serve`,
from the CLI (docs/sm4.md "SM4 line protection"); the ATR the reader builds tells the host the
card's cipher, and the SM4 keys on the card and the purchase's TAC are recomputed with the
independent SM4 of tests/sm4_gbt.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from citycard.commands import walk
from citycard.sim import image as sim_image
from citycard.sim import new_card
from citycard.testing.pcscd import PrivatePcscd
from tests import sm4_gbt as ref
from tests.pcsc_fixtures import ServedSim, serve_image

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--profile", str(ROOT / "profiles/citycard-sm4-lp.toml"), "--keys", str(ROOT / "profiles/demo-keys.toml"),
          "--keys", str(ROOT / "profiles/demo-keys-sm4.toml")]
DATA = ["--data", str(ROOT / "profiles/citycard-sample.csv")]
H = bytes.fromhex
# profiles/demo-keys-sm4.toml: TEST KEYS
TRANSIT_DAMK = H("DFAE2FBDD16BBFF87DCA5E9D019B9B09")
TRANSIT_MASTER = H("A92BAB549F3158AF425FD596E184B930")
DTK_SM4 = H("FFC9C066F62E8CB61EBDFDF12D06107B")


def per_card(master: bytes, serial: str) -> bytes:
    f = walk.diversification_factor(serial)[-8:]
    return ref.encrypt_block(master, f + bytes(b ^ 0xFF for b in f))


@pytest.fixture
def served_sm4_sim(pcscd: PrivatePcscd, tmp_path) -> Iterator[ServedSim]:
    """A factory ``fmcos-sm4`` card served by the real `citycard sim serve` (as ``served_sim``
    serves an FM1208)."""
    image = tmp_path / "card.json"
    sim_image.save(new_card("fmcos-sm4"), image)
    yield from serve_image(pcscd, image, tmp_path)


def test_sm4_lp_card_issued_verified_loaded_and_spent_through_pcscd(served_sm4_sim, run_cli):
    card = ["--reader", served_sm4_sim.reader]
    # the 3DES demo profile is refused by the card's ATR before any key (no try spent)
    wrong = run_cli("perso", "--profile", str(ROOT / "profiles/citycard.toml"), "--keys",
                    str(ROOT / "profiles/demo-keys.toml"), *DATA, "--row", "3", *card)
    assert wrong.exit_code == 1, wrong.stderr      # refused at step 2, before any key
    assert "fmcos-sm4" in wrong.stderr and "line protection is 3DES" in wrong.stderr
    r = run_cli("perso", *COMMON, *DATA, "--row", "3", *card, "--issue-date", "20261124", "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["verified"] is True and out["card_serial"] == "3301000000000003"
    load = run_cli("purse", "load", *COMMON, *card, "--amount", "20.00", "--json")
    assert load.exit_code == 0, load.stderr
    buy = run_cli("purse", "purchase", *COMMON, *card, "--amount", "3.50", "--json")
    assert buy.exit_code == 0, buy.stderr
    assert buy.json()["balance_fen"] == 1650
    serial = "3301000000000003"
    h = next(h for h in run_cli("purse", "history", *COMMON, *card, "--json").json() if h["amount_fen"] == 350)
    want = ref.cbc_mac4(per_card(DTK_SM4, serial),
                        (350).to_bytes(4, "big") + b"\x06" + bytes.fromhex(h["terminal"]) + (1).to_bytes(4, "big")
                        + bytes.fromhex(h["date"].replace("-", "")) + bytes.fromhex(h["time"].replace(":", "")))
    assert buy.json()["tac"] == want.hex().upper()
    assert served_sm4_sim.stop() == 0
    saved = sim_image.load(served_sm4_sim.image)
    assert saved.model.name == "fmcos-sm4"
    transit = saved.mf.children[0x3F01]
    assert transit.children[0x0002].balance == 1650
    assert transit.keyfile.keys[(0x36, 0)].value == per_card(TRANSIT_DAMK, serial)
    assert transit.keyfile.keys[(0x39, 0)].value == per_card(TRANSIT_MASTER, serial)
    assert transit.keyfile.keys[(0x39, 0)].b4 == 0x55 and saved.mf.keyfile.keys[(0x39, 0)].b4 == 0xFF
