"""Simulated card: a saved and reloaded card image answers every APDU exactly as before."""

from __future__ import annotations

from citycard.crypto import pboc
from citycard.sim import SimCard, image
from tests.simhost import AID, DAMK, DLK, MK, PIN, TERMINAL, TRANSPORT, Host, Rng, app, h

H = bytes.fromhex
CODE = H("8588D32B7688D32B76")


class Recorder:
    """Wraps a card: records every (command, answer)."""

    def __init__(self, card: SimCard) -> None:
        self.card = card
        self.log: list[tuple[bytes, bytes]] = []

    def process(self, apdu: bytes) -> bytes:
        resp = self.card.process(apdu)
        self.log.append((apdu, resp))
        return resp


def history() -> SimCard:
    """A personalized card with some life behind it."""
    host = app()
    host.ext_auth(MK)
    host.tx(b"\x00\x22\x00\x00\x09" + CODE)                # MOHURD code on
    host.create(0x001E, H("2E0304F0F0FFFF"))
    host.tx("00E200F00401020304")
    host.challenge()
    host.tx(H("04D6950008CAFEBABE") + bytes(4), 0x9302)    # DAMK counter 32
    host.verify()
    host.load(1000)
    host.load(300, p2=1)
    i = host.init_purchase(25)
    host.debit(host.purchase_cg(i, 25, auth_code=CODE))
    i = host.init_purchase(5, p1=3)
    host.tx("80DC02B8050203414243")
    host.debit(host.purchase_cg(i, 5, ttype=0x09, auth_code=CODE))
    host.verify(H("000000"), sw=0x63C2)                    # PIN counter 32
    # a second application, temporarily blocked
    host.select_mf()
    host.ext_auth(TRANSPORT)
    host.create(0x3F02, H("380200F0F001FFFF") + b"SECOND")
    host.select_name(b"SECOND")
    host.create(0x0000, H("3F0040F0F0FFFF"))
    host.add_key(0x36, 0x00, 0xF0, 0xF0, 0xFF, 0x33, DAMK)
    host.protected(0x80, 0x1E, 0x00, 0x00, b"", DAMK)
    return host.card


def script(card) -> None:
    """A fixed dialogue; MACs are computed from the card's own answers."""
    host = Host(card)  # type: ignore[arg-type]
    host.select_mf()
    host.select_name(AID)
    for apdu in ("00B0950000", "00B0960000", "00B201C400", "00B202C400", "00B203C400", "00B201BC00",
                 "00B201F400", "805C000204", "80CA000009", "805A0009020001", "805A0006020000",
                 "00880000080102030405060708", "00880200080102030405060708"):
        host.send(apdu)
    host.send("0020000003000000")                          # 63C1: the counter survived
    host.verify()
    host.send("805C000104")
    i = host.init_load(7)
    ses = pboc.load_session_key(DLK, i["random"], i["counter"])
    mac2 = pboc.load_mac2(ses, 7, 0x02, TERMINAL, H("20261124"), H("120000"))
    host.send(b"\x80\x52\x00\x00\x0B" + H("20261124120000") + mac2 + b"\x04")
    i = host.init_purchase(3)
    host.debit(host.purchase_cg(i, 3, auth_code=CODE))
    host.send("805A0006020002")
    host.protected(0x00, 0xD6, 0x95, 0x00, H("01020304"), DAMK)
    host.send("00B0950000")
    host.challenge(8)
    host.send(h("00A4040006") + b"SECOND")
    host.send("00B0000001")
    host.select_mf()
    host.send("0084000008")


def test_image_round_trip_preserves_every_answer(tmp_path):
    card = history()
    path = tmp_path / "card.json"
    image.save(card, path)
    loaded = image.load(path)
    assert image.to_dict(loaded) == image.to_dict(card)
    for c in (card, loaded):
        c.rng = Rng(77)
        c.reset()
    a = Recorder(card)
    script(a)
    assert len(a.log) > 30
    b = Recorder(loaded)
    for apdu, _ in a.log:
        b.process(apdu)
    assert b.log == a.log
    assert image.to_dict(loaded) == image.to_dict(card)
    sws = [r[-2:].hex().upper() for _, r in a.log]
    assert "63C1" in sws and "6A81" in sws and sws.count("9406") == 1 and sws.count("9000") > 25


def test_image_round_trip_of_a_blocked_card(tmp_path):
    host = app()
    host.select_mf()                                          # CARD BLOCK: the MF's 36 key (UM 8.1)
    host.ext_auth(TRANSPORT)
    host.add_key(0x36, 0x00, 0xF0, 0xF1, 0xFF, 0x33, DAMK)
    host.protected(0x80, 0x16, 0x00, 0x00, b"", DAMK)
    image.save(host.card, tmp_path / "blocked.json")
    loaded = image.load(tmp_path / "blocked.json")
    assert loaded.process(H("00A40000023F00")) == H("6A81")
    assert loaded.atr == host.card.atr


def test_image_round_trip_of_a_factory_card(tmp_path):
    image.save(SimCard(), tmp_path / "factory.json")
    loaded = image.load(tmp_path / "factory.json")
    loaded.rng = Rng(1)
    host = Host(loaded)
    assert host.select_mf() == h("6F15840E315041592E5359532E4444463031A503880101")
    host.ext_auth(TRANSPORT)
    host.create(0x0005, H("280004F0F0FFFF"))
    host.verify(PIN, sw=0x6A88)


def test_one_writer_per_image(tmp_path):
    """Issue 18 point 5: a second writer of an image gets one clear line, a reader is free."""
    import subprocess
    import sys

    from citycard.sim.transport import ImageTransport

    p = tmp_path / "c.json"
    image.save(SimCard(), p)
    t = ImageTransport(p)
    code = ("import sys\nfrom citycard.sim import image\n"
            "try:\n    image.load(sys.argv[1], lock=True)\nexcept image.ImageError as e:\n"
            "    print(e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "in use by another writer" in r.stdout and r.stdout.count("\n") == 1
    assert image.load(p).model.name == "fm1208"            # reading needs no lock
    t.close()
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_damaged_key_value_is_named_but_never_shown(tmp_path):
    """A mistyped key in an image file: the error names the key's place, never its value; a key
    of an impossible length is refused at load."""
    import json

    import pytest

    path = tmp_path / "card.json"
    image.save(app().card, path)
    doc = json.loads(path.read_text())
    keys = doc["mf"]["children"][0]["keyfile"]["keys"]
    secret = keys[0]["value"]
    keys[0]["value"] = secret[:-1] + "G"                  # one bad character
    path.write_text(json.dumps(doc))
    with pytest.raises(image.ImageError) as info:
        image.load(path)
    assert "keys[0].value" in str(info.value) and secret[:-1] not in str(info.value)
    keys[0]["value"] = secret[:-2]                        # one byte short
    path.write_text(json.dumps(doc))
    with pytest.raises(image.ImageError, match="keys\\[0\\].value: a key of"):
        image.load(path)
