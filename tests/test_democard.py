"""The demo card's behaviour, in process."""

from __future__ import annotations

import pytest

from citycard.testing.democard import DEMO_ATR, DEMO_BINARY, DEMO_FCI, DemoCard
from citycard.sim.vpcd import VirtualCard

SELECT_AID = bytes.fromhex("00A404000E315041592E5359532E4444463031")
SELECT_MF = bytes.fromhex("00A40000023F00")
FCI = bytes.fromhex("6F15840E315041592E5359532E4444463031A503880101")


def x(h: str) -> bytes:
    return bytes.fromhex(h)


@pytest.fixture
def card() -> DemoCard:
    c = DemoCard()
    c.power_on()
    return c


def test_atr_structure():
    assert DEMO_ATR[:11] == x("3B8801") + b"CITYCARD"
    assert len(DEMO_ATR) == 12
    tck = 0
    for b in DEMO_ATR[1:]:
        tck ^= b
    assert tck == 0  # XOR of T0..TCK is zero
    assert DEMO_ATR == x("3B880143495459434152449A")
    assert DemoCard().atr == DEMO_ATR


def test_is_a_virtual_card():
    assert isinstance(DemoCard(), VirtualCard)
    assert DEMO_FCI == FCI and DEMO_BINARY == x("0102030405060708090A0B0C0D0E0F10")


@pytest.mark.parametrize("apdu", ["", "00", "00A4", "00A400"])
def test_short_apdu(card, apdu):
    assert card.process(x(apdu)) == x("6700")


@pytest.mark.parametrize("cla", [0x01, 0x84, 0xA0, 0xFF, 0x0C])
def test_bad_cla(card, cla):
    assert card.process(bytes([cla]) + SELECT_MF[1:]) == x("6E00")


@pytest.mark.parametrize("ins", [0x00, 0xA5, 0xB2, 0xD6, 0x20])
def test_unknown_ins(card, ins):
    assert card.process(bytes([0x00, ins, 0, 0])) == x("6D00")


@pytest.mark.parametrize("select", [SELECT_AID, SELECT_MF, SELECT_AID + b"\x00", SELECT_MF + b"\x17"])
def test_select_then_get_response(card, select):
    assert card.process(select) == x("6117")
    assert card.process(x("00C0000017")) == FCI + x("9000")
    assert card.process(x("00C0000017")) == x("6985")  # consumed


def test_select_with_cla_80(card):
    assert card.process(b"\x80" + SELECT_MF[1:]) == x("6117")


def test_get_response_in_pieces(card):
    card.process(SELECT_AID)
    assert card.process(x("00C0000010")) == FCI[:16] + x("6107")
    assert card.process(x("00C0000004")) == FCI[16:20] + x("6103")
    assert card.process(x("00C00000FF")) == FCI[20:] + x("9000")  # Le > available
    assert card.process(x("00C0000001")) == x("6985")


def test_get_response_le_00_means_256(card):
    card.process(SELECT_MF)
    assert card.process(x("00C0000000")) == FCI + x("9000")


def test_get_response_nothing_pending(card):
    assert card.process(x("00C0000017")) == x("6985")


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("00A404000E315041592E5359532E4444463032", "6A82"),  # other AID
        ("00A40000023F01", "6A82"),  # other FID
        ("00A40000023F0000", "6117"),  # MF with Le 00
        ("00A4040002 3F00".replace(" ", ""), "6A82"),  # MF by name
        ("00A4000C023F00", "6A86"),
        ("00A40200023F00", "6A86"),
        ("00A4000003 3F00".replace(" ", ""), "6700"),  # Lc longer than the data
        ("00A40000013F00AA", "6700"),  # Lc shorter than the body
        ("00A40000", "6A82"),  # no data
    ],
)
def test_select_errors(card, apdu, sw):
    assert card.process(x(apdu)) == x(sw)


@pytest.mark.parametrize("trigger", ["off", "reset", "other command", "failed select"])
def test_pending_response_is_lost(card, trigger):
    card.process(SELECT_MF)
    if trigger == "off":
        card.power_off()
        card.power_on()
    elif trigger == "reset":
        card.reset()
    elif trigger == "other command":
        assert card.process(x("80EE00000101")) == x("019000")
    else:
        assert card.process(x("00A40000023F01")) == x("6A82")
    assert card.process(x("00C0000017")) == x("6985")


@pytest.mark.parametrize("le", [4, 8])
def test_get_challenge(card, le):
    a = card.process(x(f"00840000{le:02X}"))
    b = card.process(x(f"00840000{le:02X}"))
    assert len(a) == le + 2 and a.endswith(x("9000"))
    assert a != b  # random (2**-32 chance of a false failure at worst)


@pytest.mark.parametrize("apdu", ["0084000000", "0084000005", "0084000010", "00840000", "00840000010100"])
def test_get_challenge_wrong_length(card, apdu):
    assert card.process(x(apdu)) == x("6700")


def test_read_binary(card):
    assert card.process(x("00B0000010")) == DEMO_BINARY + x("9000")
    assert card.process(x("00B0000008")) == x("6C10")
    assert card.process(x("00B0000000")) == x("6C10")
    assert card.process(x("00B00000")) == x("6C10")
    assert card.process(x("00B0000110")) == x("6B00")
    assert card.process(x("00B0010010")) == x("6B00")


@pytest.mark.parametrize(
    ("apdu", "rsp"),
    [
        ("80EE0000", "9000"),
        ("80EE000000", "9000"),  # case 2, Le 00
        ("80EE000003010203", "0102039000"),
        ("80EE00000301020300", "0102039000"),
        ("00EE0000020A0B", "0A0B9000"),
        ("80EE000002AA", "6700"),
    ],
)
def test_echo(card, apdu, rsp):
    assert card.process(x(apdu)) == x(rsp)


def test_echo_255_bytes(card):
    data = bytes(range(255))
    assert card.process(x("80EE0000FF") + data) == data + x("9000")
    assert card.process(x("80EE0000FF") + data + b"\x00") == data + x("9000")
