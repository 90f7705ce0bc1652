"""Card models and the public API of citycard.sim (docs/sim.md; SPEC §6 R1, R8, R19)."""

from __future__ import annotations

import json

import pytest

from citycard import crypto
from citycard.errors import InputError
from citycard.sim import MODELS, CardModel, SimCard, image, new_card

from .simhost import Rng, h, sw_of


def _ext_auth(card: SimCard, key: bytes) -> int:
    chal = card.process(h("0084000008"))[:-2]
    return sw_of(card.process(h("0082000008") + crypto.ecb_encrypt(key, chal)))


def test_public_api_names():
    import citycard.sim as sim
    for name in ("SimCard", "new_card", "CardModel", "MODELS"):
        assert name in sim.__all__
    assert set(MODELS) >= {"fm1208", "fm1208-16ff"}


def test_default_model_is_8ff_transport_key_with_3_tries():
    # R1 (BLOG16: "The default transfer key is an 8-byte 0xFF"), R8 (3 tries)
    card = new_card()
    assert card.model.name == "fm1208"
    assert card.mf.keyfile.get(0x39, 0).value == b"\xFF" * 8 and card.mf.keyfile.get(0x39, 0).b4 == 0x33
    assert _ext_auth(card, bytes.fromhex("0102030405060708")) == 0x63C2
    assert _ext_auth(card, b"\xFF" * 8) == 0x9000


def test_blog16_transport_authentication_replayed():
    # BLOG16: challenge 53fd1f262ec4e6e2, DES(FF×8) -> A0DBBFC1192FF24A, answer 9000
    recorded = [bytes.fromhex("53fd1f262ec4e6e2")]
    card = new_card(rng=lambda n: recorded.pop(0)[:n])
    assert card.power_on() == card.atr
    assert card.process(h("0084000008")) == h("53fd1f262ec4e6e29000")
    assert card.process(h("0082000008A0DBBFC1192FF24A")) == h("9000")


def test_legacy_model_keeps_16ff_and_15_tries():
    card = new_card("fm1208-16ff")
    key = card.mf.keyfile.get(0x39, 0)
    assert key.value == b"\xFF" * 16 and key.b4 == 0xFF
    assert SimCard().model.name == "fm1208"        # the constructor default: the real-card model


def test_atr_of_fm1208_is_the_contactless_form():
    # R19: historical bytes 20 90 00 00 00 00 00 + UID (LAB ATS 10788090022090000000000066799D24)
    atr = new_card().atr
    assert atr[:4] == h("3B8B8001") and atr[4:15] == h("2090000000000066799D24")
    tck = 0
    for b in atr[1:-1]:
        tck ^= b
    assert atr[-1] == tck


def test_rng_supplies_challenges():
    card = new_card(rng=Rng(7))
    expect = Rng(7)
    assert card.process(h("0084000004"))[:-2] == expect(4)
    assert card.process(h("0084000008"))[:-2] == expect(8)


def test_reset_returns_atr_and_forgets_state():
    card = new_card()
    card.power_on()
    assert _ext_auth(card, b"\xFF" * 8) == 0x9000
    assert card.reset() == card.atr
    assert card.mf_sr == 0


def test_unknown_model_is_one_clear_line():
    with pytest.raises(InputError, match="unknown card model 'nope'"):
        new_card("nope")
    with pytest.raises(InputError):
        CardModel(name="x", description="", transport_key=b"\xFF" * 5)


def test_custom_model():
    m = CardModel(name="fm1208-5", description="", transport_tries=5, transport_key=b"\x11" * 8)
    card = new_card(m)
    assert card.mf.keyfile.get(0x39, 0).b4 == 0x55 and card.model is m


def test_image_stores_model_and_old_images_load_as_legacy(tmp_path):
    p = tmp_path / "c.json"
    image.save(new_card(), p)
    data = json.loads(p.read_text())
    assert data["model"] == "fm1208"
    assert image.load(p).model.name == "fm1208"
    del data["model"]
    p.write_text(json.dumps(data))
    assert image.load(p).model.name == "fm1208-16ff"
    data["model"] = "zz"
    p.write_text(json.dumps(data))
    with pytest.raises(image.ImageError, match="model: unknown card model 'zz'"):
        image.load(p)


def test_cli_sim_new_model(run_cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli("sim", "new", str(a)).exit_code == 0
    assert run_cli("sim", "new", str(b), "--model", "fm1208-16ff").exit_code == 0
    assert image.load(a).model.name == "fm1208" and image.load(b).model.name == "fm1208-16ff"
    assert run_cli("sim", "show", str(a)).stdout.startswith("card model fm1208, ATR 3B8B8001209000")
    bad = run_cli("sim", "new", str(tmp_path / "c.json"), "--model", "nope")
    assert bad.exit_code != 0 and "unknown card model" in bad.stderr


def test_dispenser_inserts_the_same_model(tmp_path):
    from citycard.sim.dispenser import Dispenser
    d = Dispenser(new_card(), tmp_path)
    d.power_on()
    assert _ext_auth(d.card, b"\xFF" * 8) == 0x9000
    d.process(h("800E000000"))
    d.power_off()
    assert d.swaps == 1 and d.card.model.name == "fm1208"
