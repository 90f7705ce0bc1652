"""The simulated PSAM's MOHURD code (AUTHENTICATION MESSAGE ``80 CA``, SPEC D7) is volatile
state of one purchase (leftovers item 3; docs/psam.md "MOHURD code"): it joins the MAC1 of
the very next command if that is INIT SAM FOR PURCHASE, and any other command, a refused
INIT, a reset or a power-off discards it, so an abandoned purchase's code never joins a later
MAC1.  Expected MAC1s are computed in tests/psamhost.py with ``cryptography``."""

from __future__ import annotations

import pytest

from citycard.commands import iso, psam
from tests.psamhost import DPK_MASTER, PSAM_TERMINAL, H, des3, div, psam_card, purse_mac
from tests.test_psam_sim import AMOUNT, CTR, DATE, FACTOR, TIME, R, in_adf, init, send

CODE = H("85" "0102030405060708")


def mac1(ttsn: int, code: bytes = b"") -> bytes:
    """MAC1 = MAC(SESPK, amount ‖ type ‖ EF0016 ‖ date ‖ time [‖ code]), SESPK = 3DES(DPK, R ‖
    counter ‖ TTSN[2..3]) (PSAM-SM4.md §2.3, SPEC D7)."""
    ses = des3(div(DPK_MASTER, FACTOR), R + CTR.to_bytes(2, "big") + ttsn.to_bytes(4, "big")[2:])
    return purse_mac(ses, AMOUNT.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME + code)


def code_sent(card) -> None:
    assert send(card, psam.authentication_message(CODE).encode())[1] == 0x9000


def test_the_code_joins_the_init_right_after_it_and_only_that_one():
    card = in_adf(psam_card())
    code_sent(card)
    assert init(card)[0] == H("00000001") + mac1(1, CODE)
    assert init(card)[0] == H("00000002") + mac1(2)
    assert mac1(1, CODE) != mac1(1)


@pytest.mark.parametrize("between", [
    "read EF0019", "select the ADF", "init for descrypt", "credit sam", "a refused 80 CA", "unknown command",
])
def test_any_other_command_discards_the_code(between):
    card = in_adf(psam_card())
    code_sent(card)
    apdu = {"read EF0019": psam.read_ttsn().encode(), "select the ADF": iso.select_fid(0x1001).encode(),
            "init for descrypt": psam.init_for_descrypt(0x25, 0x01, [FACTOR]).encode(),
            "credit sam": psam.credit_sam_for_purchase(bytes(4)).encode(),
            "a refused 80 CA": psam.authentication_message(H("84") + CODE[1:]).encode(),
            "unknown command": H("80EE000000")}[between]
    send(card, apdu)                                   # succeeds or is refused: the code is gone either way
    assert init(card)[0] == H("00000001") + mac1(1)


@pytest.mark.parametrize("how", ["power off", "reset"])
def test_power_off_and_reset_discard_the_code(how):
    """(After a reset the PSAM is in its MF: the SELECT of the ADF would discard a code anyway,
    so the volatile state is looked at directly.)"""
    card = in_adf(psam_card())
    code_sent(card)
    assert card.sam_code == CODE
    card.power_off() if how == "power off" else card.reset()
    assert card.sam_code is None and card.sam_code_in_hand is None


def test_a_refused_init_uses_up_the_code():
    card = in_adf(psam_card())
    code_sent(card)
    assert init(card, version=2)[1] == 0x9403          # no purchase key of that version: refused
    assert init(card)[0] == H("00000001") + mac1(1)    # the abandoned purchase's code is not used


def test_abandoned_mohurd_purchase_leaves_no_code_for_the_next_card(tmp_path):
    """A MOHURD card whose INITIALIZE is refused (not enough money), then a card without a code on
    the same PSAM session: its purchase goes through (MAC1 without the first card's code)."""
    import copy

    from citycard.errors import CardError
    from citycard.profile import load_profile
    from citycard.sim import SimCard
    from citycard.terminal.psam_purchase import PsamPurchaseTerminal
    from citycard.terminal.purse import PurseTerminal
    from tests.psamhost import CARD_PROFILE, ROOT, WHEN, _perso, card_spec, keys, loaded, session

    profile = tmp_path / "mohurd.toml"
    profile.write_text(CARD_PROFILE.read_text(encoding="utf-8").replace(
        "[apps.transit.keys]", "auth_code = true\n\n[apps.transit.keys]"), encoding="utf-8")
    mohurd = _perso(SimCard(rng=lambda n: b"\x5A" * n), profile, ROOT / "profiles/citycard-sample.csv")
    sam = psam_card()
    sam_session = session(sam)
    seen: list[str] = []
    orig = sam.process

    def process(raw: bytes) -> bytes:
        seen.append(raw.hex().upper()[:4])
        return orig(raw)
    sam.process = process
    with pytest.raises(CardError) as exc:              # empty purse: 9401 at INITIALIZE
        PsamPurchaseTerminal(session(mohurd), sam_session, load_profile(profile)).purchase(250, when=WHEN)
    assert exc.value.sw == 0x9401
    plain = loaded()
    before = copy.deepcopy(plain)
    tx = PsamPurchaseTerminal(session(plain), sam_session, card_spec()).purchase(250, when=WHEN)
    assert tx.balance_after_fen == 750 and tx.ttsn == 1
    assert "80CA" not in seen                          # never sent for the refused card (step 5, docs/psam.md)
    # the same purchase on a host-key terminal: the same TAC (no stray code in the MAC1)
    res = PurseTerminal(session(before), card_spec(), keys(), terminal_id=PSAM_TERMINAL).purchase(
        250, terminal_serial=tx.ttsn, when=WHEN)
    assert tx.tac == res.tac.hex().upper()
