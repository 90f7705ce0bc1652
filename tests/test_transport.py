"""The processing stack: T=0 fetching, transcript masking, session helpers."""

import io
import logging

import pytest

from citycard.apdu import CommandApdu
from citycard.errors import CardError as ApduError
from citycard.transport import CardSession, Transport
from citycard.transport.local import LocalTransport
from citycard.transport.processors import T0Fetch
from citycard.transport.transcript import Transcript, format_command

H = bytes.fromhex


class ScriptedCard:
    """Answers from a table; records what it was sent."""

    atr = H("3B8801434954594341524400")

    def __init__(self, answers: dict[bytes, bytes]):
        self.answers = answers
        self.sent: list[bytes] = []

    def power_on(self): pass

    def reset(self): pass

    def process(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.answers.get(apdu, H("6D00"))


def session_for(card, *procs):
    t = LocalTransport(card)
    assert isinstance(t, Transport)
    t.connect()
    return CardSession(t, list(procs) if procs else None)


def test_61xx_chain_is_fetched():
    card = ScriptedCard({
        H("00A40000023F00"): H("6105"),
        H("00C0000005"): H("0102030405" "6103"),
        H("00C0000003"): H("060708" "9000"),
    })
    resp = session_for(card).send(H("00A40000023F00"))
    assert resp.data == H("01020304050607 08") and resp.sw == 0x9000
    assert card.sent == [H("00A40000023F00"), H("00C0000005"), H("00C0000003")]


def test_6cxx_resends_with_right_le():
    card = ScriptedCard({H("00B0000000"): H("6C04"), H("00B0000004"): H("AABBCCDD9000")})
    resp = session_for(card).send(CommandApdu(0, 0xB0, 0, 0, ne=256))
    assert resp.data == H("AABBCCDD") and resp.ok
    assert card.sent[-1] == H("00B0000004")


def test_get_response_keeps_logical_channel():
    card = ScriptedCard({H("01A40000023F00"): H("6102"), H("01C0000002"): H("AAAA9000")})
    assert session_for(card).send(H("01A40000023F00")).data == H("AAAA")


def test_no_fetch_without_processor():
    card = ScriptedCard({H("00A40000023F00"): H("6105")})
    resp = session_for(card, Transcript(None)).send(H("00A40000023F00"))
    assert resp.sw == 0x6105


def test_expect_raises_apdu_error():
    card = ScriptedCard({})
    with pytest.raises(ApduError) as info:
        session_for(card).send(H("00A40000023F00"), expect=0x9000, what="SELECT MF")
    assert info.value.sw == 0x6D00
    assert "SELECT MF: card answered 6D00" in str(info.value)


def test_transcript_masks_sensitive_data(caplog):
    secret = H("0123456789ABCDEFFEDCBA9876543210")
    card = ScriptedCard({
        H("80D4010015") + H("39F0AA0033") + secret: H("9000"),
        H("0020000003123456"): H("63C2"),
        H("00A40000023F00"): H("6102"),
        H("00C0000002"): H("AAAA9000"),
    })
    sink = io.StringIO()
    t = Transcript(sink)
    sess = session_for(card, T0Fetch(), t)
    t.header("test reader", card.atr)
    with caplog.at_level(logging.DEBUG, logger="citycard.apdu"):
        sess.send(H("80D4010015") + H("39F0AA0033") + secret)
        sess.send(H("0020000003123456"))
        sess.send(H("00A40000023F00"))
        sess.send(CommandApdu(0x00, 0xD6, 0, 0, H("CAFEBABE"), sensitive=True))
    text = sink.getvalue()
    logged = caplog.text
    for out in (text, logged):
        assert secret.hex().upper() not in out.upper()
        assert "0123456789" not in out.upper()
        assert "123456" not in out.replace("0020000003", "")
        assert "CAFEBABE" not in out.upper()
        assert "80D4010015 <21 bytes masked>" in out
        assert "0020000003 <3 bytes masked>" in out
    # every wire exchange appears, GET RESPONSE included
    assert "> 00C0000002" in text
    assert "< AAAA 9000" in text
    assert text.startswith('# citycard transcript: reader "test reader"')
    assert t.count == 5


def test_format_command_shapes():
    assert format_command(CommandApdu(0, 0xA4, 0, 0, H("3F00"), ne=256)) == "00A4000002 3F00 00"
    assert format_command(CommandApdu(0, 0x84, 0, 0, ne=8)) == "0084000008"
    assert format_command(CommandApdu(0, 0xD6, 0, 0, bytes(300))).startswith("00D6000000012C ")


def test_send_protected_uses_fresh_challenge():
    from citycard import crypto
    from citycard.transport import LineProtection
    key = H("0102030405060708")
    chal = H("11223344")
    expected = crypto.protect(CommandApdu(0x00, 0xD6, 0x95, 0, H("01")), key, chal).encode()
    card = ScriptedCard({H("0084000004"): chal + H("9000"), expected: H("9000")})
    assert session_for(card).send(CommandApdu(0x00, 0xD6, 0x95, 0, H("01")), protect=LineProtection(key)).ok
    assert card.sent == [H("0084000004"), expected]
