"""Simulated card: CARD BLOCK, APPLICATION BLOCK / UNBLOCK (SPEC §1.5, D5)."""

from citycard import crypto
from citycard.sim import SimCard
from tests.simhost import AID, DAMK, EF15, MF_FCI, PIN, TRANSPORT, Host, Rng, app, h

MF_DAMK = bytes.fromhex("36" * 8 + "0123456789ABCDEF")   # the MF's line-protection key (the card issuer's)


def with_mf_damk(host: Host) -> Host:
    """Give the MF a line-protection key 36/00 (CARD BLOCK needs it: UM 8.1)."""
    host.select_mf()
    host.ext_auth(TRANSPORT)
    host.add_key(0x36, 0x00, 0xF0, 0xF1, 0xFF, 0x33, MF_DAMK)
    return host

H = bytes.fromhex
FCI = h("6F32 8409 A00000000386980701 A525 9F080102 9F0C1E") + EF15   # 9F08 01 02: SPEC §6 R10 (BLOG16)


def block_cmd(host: Host, ins: int, p2: int = 0, key: bytes = DAMK, sw: int = 0x9000) -> None:
    """``84 ins 00 p2 04 MAC``: the MAC over the header alone (Lc = 04), IV = challenge (SPEC §1.6)."""
    chal = host.challenge()
    hdr = bytes((0x84, ins, 0x00, p2, 0x04))
    host.tx(hdr + crypto.mac_alg3(key, hdr, iv=chal + bytes(4))[:4], sw)


# ====================================================================== CARD BLOCK
def test_card_block_every_command_answers_6a81():
    host = app()
    host.load(10)
    with_mf_damk(host)
    block_cmd(host, 0x16, key=bytes(16), sw=0x6988)          # wrong MAC: 6988 (SPEC §6 R15), not blocked
    assert host.select_mf() == MF_FCI
    host.select_name(AID)
    block_cmd(host, 0x16, sw=0x6988)                         # the application's DAMK cannot block the card
    block_cmd(host, 0x16, key=MF_DAMK)                       # the MF's key can, from any DF (UM 8.1)
    for apdu in ("00A40000023F00", "00A4040009A00000000386980701", "0084000004", "805C000204",
                 "00B0950000", "00C0000010", "0020000003123456", "FFFFFFFF", "00", "00B0",
                 "80E00000073F018F95F0FFFF", "841800000401020304"):
        assert host.send(apdu) == (b"", 0x6A81), apdu
    host.card.reset()
    assert host.send("00A40000023F00") == (b"", 0x6A81)
    assert host.card.card_blocked


def test_card_block_needs_the_mf_line_key():
    host = app()
    block_cmd(host, 0x16, sw=0x6A88)                         # no 36 key in the MF: nobody can block
    assert not host.card.card_blocked


def test_card_block_needs_cla_84():
    host = app()
    host.tx("8016000004" + "00" * 4, 0x6982)
    host.tx("0016000004" + "00" * 4, 0x6E00)
    host.tx("8416000004" + "00" * 4, 0x6984)                  # no challenge
    assert host.select_name(AID) == FCI


# ====================================================================== APPLICATION BLOCK (temporary)
def test_app_block_temporary_and_unblock():
    host = app()
    host.load(100)
    block_cmd(host, 0x1E, 0x00, key=bytes(16), sw=0x6988)   # SPEC §6 R15
    assert host.balance() == 100
    block_cmd(host, 0x1E, 0x00)
    for apdu in ("00B0950000", "805C000204", "805A0002020000", "00B2011C00",
                 "805000020B0000000001000000000001" + "10", "0020000003123456",
                 "80E00019072800100F0FFFFF", "00A40000020015"):
        assert host.send(apdu) == (b"", 0x6A81), apdu
    # D5: SELECT makes the DF current but answers 6A81 without FCI
    assert host.select_mf() == MF_FCI
    assert host.send(h("00A4040009") + AID) == (b"", 0x6A81)
    assert host.send("00A40000023F01") == (b"", 0x6A81)
    host.tx("805C000204", 0x6A81)                            # the current DF is the blocked one
    host.card.reset()                                        # persistent
    assert host.send(h("00A4040009") + AID) == (b"", 0x6A81)
    block_cmd(host, 0x18, key=bytes(16), sw=0x6988)         # SPEC §6 R15
    block_cmd(host, 0x18)
    assert host.select_name(AID) == FCI
    assert host.balance() == 100
    host.verify(PIN)


def test_app_block_permanent():
    host = app()
    block_cmd(host, 0x1E, 0x01)
    host.tx("805C000204", 0x9303)
    host.tx("00B0950000", 0x9303)
    assert host.send(h("00A4040009") + AID) == (b"", 0x9303)
    block_cmd(host, 0x18, sw=0x9303)                         # no way back
    host.card.reset()
    assert host.send(h("00A4040009") + AID) == (b"", 0x9303)
    assert host.select_mf() == MF_FCI                        # the rest of the card works


def test_app_block_parameters():
    host = app()
    host.tx("841E020004" + "00" * 4, 0x6A86)
    host.tx("841E010004" + "00" * 4, 0x6A86)
    host.tx("801E000004" + "00" * 4, 0x6982)


def test_three_bad_unblock_macs_lock_permanently():
    host = app()
    block_cmd(host, 0x1E, 0x00)
    for _ in range(2):
        block_cmd(host, 0x18, key=bytes(16), sw=0x6988)     # SPEC §6 R15
    block_cmd(host, 0x18, key=bytes(16), sw=0x9303)
    block_cmd(host, 0x18, sw=0x9303)
    assert host.send(h("00A4040009") + AID) == (b"", 0x9303)


def test_three_bad_unblock_macs_with_a_5_try_key():
    """The unblock failures are counted by the application even when the 36 key allows more."""
    host = Host(SimCard(rng=Rng(8)))
    host.select_mf()
    host.ext_auth(TRANSPORT)
    host.create(0x3F02, H("380400F0F001FFFF") + b"BLK")
    host.select_name(b"BLK")
    host.create(0x0000, H("3F0040F0F0FFFF"))
    host.add_key(0x36, 0x00, 0xF0, 0xF0, 0xFF, 0x55, DAMK)
    host.create(0x0005, H("280004F0F0FFFF"))
    host.select_name(b"BLK")
    block_cmd(host, 0x1E, 0x00)
    for _ in range(2):
        block_cmd(host, 0x18, key=bytes(16), sw=0x6988)     # SPEC §6 R15
    block_cmd(host, 0x18, key=bytes(16), sw=0x9303)
    block_cmd(host, 0x18, sw=0x9303)
    assert host.send("00A40000023F02") == (b"", 0x9303)


def test_unblock_of_an_unblocked_app_is_harmless():
    host = app()
    block_cmd(host, 0x18)
    assert host.select_name(AID) == FCI
