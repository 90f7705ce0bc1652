"""The simulated card against real-card facts (SPEC §6: R-numbers and source tags).

Expected answers come from the published traces (BLOG16: a whole FM1208 issuance with every
card answer) or are computed here with ``citycard.crypto`` (pinned by published vectors),
never read back from the card OS.
"""

from __future__ import annotations

import pytest

from citycard import crypto
from citycard.apdu import CommandApdu
from citycard.crypto import pboc
from citycard.sim import CardModel, new_card
from tests.simhost import (AID, DAMK, DPK, DTK, MK, PIN, PUK, TERMINAL, Host, Rng, app, h)

H = bytes.fromhex
DATE, TIME = H("20261124"), H("120000")


class Recorded:
    """A card rng replaying recorded challenges and randoms, in order."""

    def __init__(self, *values: str) -> None:
        self.values = [H(v) for v in values]

    def __call__(self, n: int) -> bytes:
        v = self.values.pop(0)
        assert len(v) == n, (v.hex(), n)
        return v


# ====================================================================== BLOG16, byte for byte
BLOG16 = [
    # (command, expected answer) as published, the challenges fed through the rng
    ("0084000008", "53fd1f262ec4e6e29000"),
    ("0082000008A0DBBFC1192FF24A", "9000"),                     # DES(FF×8): R1
    ("800E000000", "9000"),
    ("80E03F000D38FFFFF0F001FFFFFFFFFFFFFF", "9000"),          # CREATE MF after ERASE: R3
    ("80E00000073F005001F0FFFF", "9000"),
    ("80D401000D36F0F0FF33FFFFFFFFFFFFFFFF", "9000"),
    ("80D401001539F0F0AA33" + "FF" * 16, "9000"),
    ("80E00001072A0213F000FFFF", "9000"),
    ("80E0000507A80030F0F0FFFF", "9000"),
    ("00E200081361114F09A00000000386980701500450424F43", "9000"),   # APPEND to a fixed file
    ("80E03F011138036FF0F095FFFFA00000000386980701", "9000"),
    ("00A4040009A00000000386980701", "6f0b8409a000000003869807019000"),
    ("80E00000073F018F95F0FFFF", "9000"),
    ("80D401001534F002000134343434343434343434343434343434", "9000"),
    ("80D401001536F002FF3336363636363636363636363636363636", "9000"),
    ("80D401001537F002FF3337373737373737373737373737373737", "9000"),
    ("80D401001538F002FF3338383838383838383838383838383838", "9000"),
    ("80D401001539F002443339393939393939393939393939393939", "9000"),
    ("80D40101153EF00200013E013E013E013E013E013E013E013E01", "9000"),
    ("80D40102153EF00200013E023E023E023E023E023E023E023E02", "9000"),
    ("80D40101153FF00200013F013F013F013F013F013F013F013F01", "9000"),
    ("80D40102153FF00200013F023F023F023F023F023F023F023F02", "9000"),
    ("80D40101153DF00201003D013D013D013D013D013D013D013D01", "9000"),
    ("80D40102153DF00201003D023D023D023D023D023D023D023D02", "9000"),
    ("80D40101153CF00201003C013C013C013C013C013C013C013C01", "9000"),
    ("80D40102153CF00201003C023C023C023C023C023C023C023C02", "9000"),
    ("80D401000D3AF0EF013312345FFFFFFFFFFF", "9000"),
    ("80E0001507A8001EF0F0FFFF", "9000"),
    ("80E0001607A80027F0F0FFFF", "9000"),
    ("80E00017072805DCF0F0FFFF", "9000"),                       # 1500 bytes in a DF of 036F: R9
    ("80E00018072E0A17F0EFFFFF", "9000"),
    ("80E00001072F0208F100FF18", "9000"),
    ("80E00002072F0208F000FF18", "9000"),
    ("00A40000023F00", "6f15840e315041592e5359532e4444463031a5038801019000"),
    ("0084000004", "88bbe4e39000"),
    ("04D6850034000122000001FFFF22000000000000060001201610280000000000010001000000000000000000000000000020501231"
     "AE8D8774", "9000"),
    ("00A4040009A00000000386980701",
     "6f328409a00000000386980701a5259f0801029f0c1e" + "00" * 30 + "9000"),   # 9F08 01 02: R10
    ("0084000004", "a3bbcfc89000"),
    ("04D6950022000122000001FFFF01010000220000000000000620160101205012310000" "96E32EF1", "9000"),
]


def test_blog16_issuance_replayed_byte_for_byte():
    card = new_card("fm1208", rng=Recorded("53fd1f262ec4e6e2", "88bbe4e3", "a3bbcfc8"))
    card.power_on()
    for i, (cmd, expected) in enumerate(BLOG16):
        assert card.process(H(cmd)).hex() == expected.lower(), f"step {i + 1}: {cmd}"


# ====================================================================== factory state and bootstrap
def test_r5_a_df_is_free_until_it_holds_a_key_file():
    """FMPY creates a second DF in a keyless MF; files in a keyless DF ignore their ACs."""
    card = new_card(rng=Rng(1))
    host = Host(card)
    host.select_mf()
    host.ext_auth(b"\xFF" * 8)
    host.tx("800E000000")
    host.create(0x3FFF, H("380500EFEF94FFFF") + b"blockTest")     # create/erase AC EF: never
    host.select_name(b"blockTest")
    host.create(0x0002, H("280050EFEFFFFF"))                     # AC EF, but the DF is free
    host.card.reset()
    host.select_name(b"blockTest")                               # re-entered: still no KEY file
    host.create(0x0003, H("280010EFEFFFFF"))
    host.tx("00D6820003 010203".replace(" ", ""))
    host.select_mf()                                             # the MF has no KEY file either
    host.create(0x3F01, H("381500F0F095FFFF") + b"fileTest")
    host.select_name(b"fileTest")
    host.create(0x0001, H("3F0200F0F0FFFF"))
    host.add_key(0x39, 0x00, 0xF0, 0xF0, 0xAA, 0xFF, MK)
    host.create(0x0005, H("280010AAAAFFFF"))
    host.select_name(b"fileTest")                                # now the ACs apply
    host.tx("00D6850001AA", 0x6982)
    host.ext_auth(MK)
    host.tx("00D6850001AA")


def test_r3_create_mf_only_in_an_erased_mf():
    host = Host(new_card(rng=Rng(2)))
    host.select_mf()
    host.ext_auth(b"\xFF" * 8)
    host.tx("80E03F000D38FFFFF0F001FFFFFFFFFFFFFF", 0x6A86)    # the MF still holds its KEY file
    host.tx("800E000000")
    host.tx("80E03F000D38200011E001FFFF" + b"MY.MF".hex())      # new header and a name
    mf = host.card.mf
    assert (mf.space, mf.create_ac, mf.erase_ac, mf.sfi_byte, mf.name) == (0x2000, 0x11, 0xE0, 0x01, b"MY.MF")


def test_r9_df_space_is_not_a_limit_but_the_eeprom_is():
    host = Host(new_card(rng=Rng(3)))
    host.select_mf()
    host.ext_auth(b"\xFF" * 8)
    host.create(0x3F02, H("380010F0F095FFFF") + b"SMALL")      # 16 bytes declared
    host.select_name(b"SMALL")
    host.create(0x0017, H("2805DCF0F0FFFF"))                   # 1500 bytes: accepted (BLOG16)
    used = host.card._card_used()
    room = host.card.model.eeprom_bytes - used - 8
    host.create(0x0018, H("28") + (room + 1).to_bytes(2, "big") + H("F0F0FFFF"), 0x6A84)
    host.create(0x0018, H("28") + room.to_bytes(2, "big") + H("F0F0FFFF"))
    # the legacy model enforces the DF's declared space
    legacy = Host(new_card("fm1208-16ff", rng=Rng(3)))
    legacy.select_mf()
    legacy.ext_auth(b"\xFF" * 16)
    legacy.create(0x3F02, H("380010F0F095FFFF") + b"SMALL")
    legacy.select_name(b"SMALL")
    legacy.create(0x0017, H("2805DCF0F0FFFF"), 0x6A84)


# ====================================================================== keys
def test_r4_enciphered_add_of_an_unflagged_type_is_not_taken_on_fm1208():
    def keys_df(model: str) -> Host:
        host = Host(new_card(model, rng=Rng(4)))
        host.select_mf()
        host.ext_auth(host.card.model.transport_key)
        host.create(0x3F05, H("380400F0F001FFFF") + b"KEYS")
        host.select_name(b"KEYS")
        host.create(0x0000, H("3F0100F0F0FFFF"))
        host.add_key(0x39, 0x00, 0xF0, 0xF0, 0xAA, 0x33, MK)
        return host

    rec = h("3E F0 F0 00 01") + DPK                             # unflagged purchase key
    for model, sw in (("fm1208", 0x6A80), ("fm1208-16ff", 0x9000)):
        host = keys_df(model)
        chal = host.challenge()
        cmd = crypto.protect(CommandApdu(0x80, 0xD4, 0x01, 0x00, rec), MK, chal, encrypt=True)
        host.tx(cmd.encode(), sw)
        assert (host.card.df.keyfile.get(0x3E, 0) is not None) == (sw == 0x9000), model
    # a flagged type (C0 set) may be added enciphered (CIPHK)
    host = keys_df("fm1208")
    chal = host.challenge()
    cmd = crypto.protect(CommandApdu(0x80, 0xD4, 0x01, 0x02, h("F9 F0 F0 AA 33") + DAMK), MK, chal,
                         encrypt=True)
    host.tx(cmd.encode())
    assert host.card.df.keyfile.get(0x39, 2).ktype == 0xF9


def test_r17_update_of_a_flagged_key_with_the_unflagged_type_in_p1():
    host = Host(new_card(rng=Rng(5)))
    host.select_mf()
    host.ext_auth(b"\xFF" * 8)
    host.create(0x3F05, H("380400F0F001FFFF") + b"KEYS")
    host.select_name(b"KEYS")
    host.create(0x0000, H("3F0100F0F0FFFF"))
    host.add_key(0x39, 0x00, 0xF0, 0xF0, 0xAA, 0x33, MK)
    host.add_key(0xF9, 0x01, 0xF0, 0xF0, 0xAA, 0x33, DAMK)
    new = h("F9 F0 F0 AA 33") + PUK
    for p1 in (0x39, 0xF9):
        chal = host.challenge()
        cmd = crypto.protect(CommandApdu(0x84, 0xD4, p1, 0x01, new), MK, chal, encrypt=True)
        host.tx(cmd.encode())
    assert host.card.df.keyfile.get(0x39, 1).value == PUK
    chal = host.challenge()
    cmd = crypto.protect(CommandApdu(0x84, 0xD4, 0x3A, 0x01, new), MK, chal, encrypt=True)
    host.tx(cmd.encode(), 0x6A88)                                # another type: no such key


def test_r16_pin_unblock_ignores_the_pin_id_and_unblocks_pin_00():
    host = app()
    for _ in range(3):
        host.send("0020000003000000")
    host.verify(sw=0x6983)
    chal = host.challenge()
    ct = crypto.encipher(PUK, PIN)
    hdr = H("842400010C")                                        # P2 01, as in the UM example
    host.tx(hdr + ct + crypto.mac_alg3(PUK, hdr + ct, iv=chal + bytes(4))[:4])
    host.verify()                                                # PIN 00 works again


def test_verify_under_line_protection():
    """SPEC §6.4 / UM 7.10.3: 04 20 00 kid, E(LD ‖ PIN ‖ pad) ‖ MAC under the 36 key."""
    host = app()
    host.protected(0x00, 0x20, 0x00, 0x00, PIN, DAMK, encrypt=True)
    assert host.card.df_sr == 1                                  # the PIN's follow-up state
    host.protected(0x00, 0x20, 0x00, 0x00, H("999999"), DAMK, encrypt=True, sw=0x63C2)
    host.protected(0x00, 0x20, 0x00, 0x00, PIN, bytes(16), encrypt=True, sw=0x9302)


# ====================================================================== files and records
def test_r14_protected_reads_le_counts_the_data():
    host = app()
    host.ext_auth(MK)
    host.create(0x001B, H("280008F0F0FF7F"))                     # protected reads with 36/00
    host.create(0x001C, H("680010F0F0FF7F"))                     # enciphered, protected reads
    host.select_name(AID)
    host.tx("00B09B0000", 0x6900)                                # plain read refused
    chal = host.challenge()
    hdr = H("04B09B0004")
    cmd = hdr + crypto.mac_alg3(DAMK, hdr, iv=chal + bytes(4))[:4] + b"\x08"   # Le 08: the data
    r = host.card.process(cmd)
    assert r[-2:] == H("6281")                                   # data, MAC, never written (R13)
    assert r[:-2] == bytes(8) + crypto.mac_alg3(DAMK, bytes(8), iv=chal + bytes(4))[:4]
    # enciphered file: write enciphered, read back E(LD ‖ data ‖ pad) ‖ MAC(ciphertext)
    host.protected(0x00, 0xD6, 0x9C, 0x00, H("66778899AA"), DAMK, encrypt=True)
    chal = host.challenge()
    hdr = H("04B09C0004")
    r = host.tx(hdr + crypto.mac_alg3(DAMK, hdr, iv=chal + bytes(4))[:4])
    ct, mac = r[:-4], r[-4:]
    assert mac == crypto.mac_alg3(DAMK, ct, iv=chal + bytes(4))[:4]
    assert crypto.decipher(DAMK, ct) == H("66778899AA") + bytes(11)


def _records_df() -> Host:
    host = Host(new_card(rng=Rng(6)))
    host.select_mf()
    host.ext_auth(b"\xFF" * 8)
    host.create(0x3F02, H("380400F0F001FFFF") + b"RECS")
    host.select_name(b"RECS")
    host.create(0x0001, H("2A0305F0F0FFFF"))                     # fixed 3 × 5
    host.create(0x0002, H("2E0304F0F0FFFF"))                     # cyclic 3 × 4
    host.create(0x0003, H("2C0020F0F0FFFF"))                     # variable, 32 bytes
    return host


def test_r20_append_record_with_p2_mode_100():
    host = _records_df()
    host.tx(b"\x00\xE2\x00\x14\x04" + b"AAAA")                   # SFI 2 | 100
    host.tx(b"\x00\xE2\x00\x10\x04" + b"BBBB")                   # SFI 2 | 000
    assert host.tx("00B2011404") == b"BBBB" and host.tx("00B2021404") == b"AAAA"
    host.tx(b"\x00\xE2\x00\x11\x04" + b"CCCC", 0x6A86)           # other modes: no


def test_r21_fixed_records_exist_from_creation():
    host = _records_df()
    assert host.tx("00B2010C05") == bytes(5)                     # FMPY: record 1 of a fresh file
    host.tx(b"\x00\xDC\x03\x0C\x05" + b"33333")                  # UPDATE record 3 first
    host.tx(b"\x00\xE2\x00\x08\x05" + b"11111")                  # APPEND fills record 1
    assert [host.tx(bytes((0, 0xB2, n, 0x0C, 5))) for n in (1, 2, 3)] == [b"11111", bytes(5), b"33333"]


def test_r22_update_record_creates_records_in_variable_and_cyclic_files():
    host = _records_df()
    host.tx(b"\x00\xDC\x01\x1C\x04" + H("F702AABB"))             # record 1 of an empty file (FMPY)
    assert host.tx("00B2011C00") == H("F702AABB")
    host.tx(b"\x00\xDC\x03\x1C\x04" + H("F702CCDD"), 0x6A83)     # not the next record
    host.tx(b"\x00\xDC\x01\x1A\x03" + H("0101EE"))               # mode 010: a new record
    assert host.tx("00B2021C00") == H("0101EE")
    host.tx(b"\x00\xDC\x00\x12\x04" + b"XXXX")                   # mode 010 on a cyclic file: append
    host.tx(b"\x00\xDC\x00\x12\x04" + b"YYYY")
    assert host.tx("00B2011404") == b"YYYY" and host.tx("00B2021404") == b"XXXX"


# ====================================================================== purse
def test_r18_unload_on_the_ep_is_refused():
    host = app()
    host.load(100)
    host.tx("805005020B0000000001" + TERMINAL.hex() + "10", 0x6A86)


def test_cash_withdraw_on_the_ed():
    """SPEC §6.4: 80 50 02 01 (purchase key, FMPY) + 80 54 01 00, type 04."""
    host = app()
    host.verify()
    host.load(500, p2=1)
    host.tx("805002020B0000000001" + TERMINAL.hex() + "0F", 0x6A86)    # EP: no
    i = host.init_purchase(200, p1=0x02, p2=0x01)
    assert (i["balance"], i["counter"]) == (500, 0)
    cg = host.purchase_cg(i, 200, ttype=pboc.TT_WITHDRAW)
    assert host.debit(cg) == cg.tac + cg.mac2
    assert host.balance(1) == 300
    assert host.detail(1)[:10] == H("0001 000000 000000C8 04".replace(" ", ""))   # counter after +1 (R11)


def _overdraw_card() -> tuple[Host, bytes]:
    odk = H("3C" * 8 + "0102030405060708")
    host = app()
    host.ext_auth(MK)
    host.add_key(0x3C, 0x00, 0xF0, 0xAA, 0x01, 0x00, odk)
    host.verify()
    return host, odk


def _overdraw(host: Host, odk: bytes, new_limit: int, sw: int = 0x9000) -> tuple[dict, bytes]:
    r = host.tx(b"\x80\x50\x04\x01\x07\x00" + TERMINAL + b"\x13")
    assert len(r) == 19
    bal, ctr, old, rnd, mac1 = r[0:4], r[4:6], r[6:9], r[11:15], r[15:19]
    ses = crypto.ecb_encrypt(odk, rnd + ctr + H("8000"))                # UM 8.12.1.4
    assert mac1 == crypto.mac_alg1(ses, bal + old + b"\x07" + TERMINAL)[:4]
    tail = new_limit.to_bytes(3, "big") + b"\x07" + TERMINAL + DATE + TIME
    mac2 = crypto.mac_alg1(ses, tail)[:4]
    out = host.tx(b"\x80\x58\x00\x00\x0E" + tail[:3] + DATE + TIME + mac2 + b"\x04", sw)
    fields = dict(balance=int.from_bytes(bal, "big"), counter=int.from_bytes(ctr, "big"),
                  old=int.from_bytes(old, "big"), tail=tail)
    return fields, out


def test_update_overdraw_limit():
    """SPEC §6.4, UM 8.12; TAC as FMPY checks it on an FM1208 (TAC key L ⊕ R)."""
    host, odk = _overdraw_card()
    host.load(100, p2=1)
    f, tac = _overdraw(host, odk, 500)
    new_balance = 100 + 500                                      # FMPY: old balance + new limit
    assert tac == crypto.mac_alg1(crypto.xor(DTK[:8], DTK[8:]),
                                  new_balance.to_bytes(4, "big") + f["counter"].to_bytes(2, "big") + f["tail"])[:4]
    assert host.balance(1) == 600
    assert host.init_purchase(1, p2=1)["overdraw"] == 500
    host.purchase(550, p2=1)
    f, _ = _overdraw(host, odk, 0, sw=0x9401)                    # 50 left: the limit cannot drop by 500
    assert f["old"] == 500 and host.balance(1) == 50
    host.tx("805800000E" + "00" * 14, 0x6901)                   # no INITIALIZE FOR UPDATE before


def test_counters_stop_at_ffff():
    """A counter never wraps: at FFFF the card refuses with 9402 (RECHARGE: "Transaction
    Counter Maximized"); 65,535 transactions of each kind."""
    host = app()
    purse = host.card.df.children[0x0002]
    purse.online = 0xFFFE
    x = host.load(10)
    assert x["counter"] == 0xFFFE and purse.online == 0xFFFF
    assert host.detail(1)[:2] == H("FFFF")
    host.tx("805000020B00000000010000000000011" + "0", 0x9402)
    purse.offline = 0xFFFF
    host.init_purchase(1, sw=0x9402)
    assert host.balance() == 10


def test_balance_ceiling_is_a_model_parameter():
    model = CardModel(name="capped", description="", max_balance=1000, transport_key=b"\xFF" * 16,
                      transport_tries=15)
    from tests.simhost import personalized
    host = Host(personalized(model=model))
    host.select_name(AID)
    host.load(1000)
    host.tx("805000020B0000000001" + TERMINAL.hex() + "10", 0x6985)   # UM 8.7.1.5
    assert host.balance() == 1000


def test_zero_fen_purchase_is_accepted():
    """Decision (docs/sim.md): a 0-fen purchase completes (counter +1, record written), as
    transit entry gates use for composite purchases."""
    host = app()
    host.load(100)
    x = host.purchase(0)
    assert x["counter"] == 0 and host.balance() == 100
    assert host.detail(1)[:10] == H("0001 000000 00000000 06".replace(" ", ""))


@pytest.mark.parametrize("ins", [0x16, 0x1E, 0x18])
def test_r15_wrong_mac_on_blocking_answers_6988(ins):
    host = app()
    chal = host.challenge()
    hdr = bytes((0x84, ins, 0x00, 0x00, 0x04))
    sw = 0x6A88 if ins == 0x16 else 0x6988                       # CARD BLOCK: no MF line key here
    host.tx(hdr + crypto.mac_alg3(bytes(16), hdr, iv=chal + bytes(4))[:4], sw)


def test_r7_data_fields_up_to_239_bytes():
    host = Host(new_card(rng=Rng(7)))
    host.select_mf()
    host.ext_auth(b"\xFF" * 8)
    host.create(0x0005, H("280190F0F0FFFF"))                     # 400 bytes
    host.select_fid(0x0005)
    host.tx(b"\x00\xD6\x00\x00\xF0" + b"\x11" * 240, 0x6700)     # Lc 240: too long (UM: Lc <= 239)
    host.tx(b"\x00\xD6\x00\x00\xEF" + b"\x11" * 239)
    assert host.tx("00B0000000") == b"\x11" * 239                # Le 00: at most 239 bytes
    legacy = Host(new_card("fm1208-16ff", rng=Rng(7)))
    legacy.select_mf()
    legacy.ext_auth(b"\xFF" * 16)
    legacy.create(0x0005, H("280190F0F0FFFF"))
    legacy.select_fid(0x0005)
    legacy.tx(b"\x00\xD6\x00\x00\xF0" + b"\x11" * 240)


LAB_ISSUANCE = """
800e000000
80e00000073f004001f0ffff
80d401001539f0f0aa33ffffffffffffffffffffffffffffffff
80e00001072c0018f0f0ffff
00dc010c15701361114f09a00000000386980701500450424f43
80e03f01113804f4f0f0957fffa00000000386980701
00a4040009a00000000386980701
80e00000073f0150FFf0ffff
80d401001539f002aa3300000000000000000000000000000000
80d40100153ef002010111111111111111111111111111111111
80d40101153ef002010122222222222222222222222222222222
80d40100153ff002010133333333333333333333333333333333
80d40101153ff002010144444444444444444444444444444444
80d401001534f002010155555555555555555555555555555555
80d401001538f002ffff66666666666666666666666666666666
80d401001537f002ffff77777777777777777777777777777777
80d401001536f002ff3388888888888888888888888888888888
80d40100153df002010199999999999999999999999999999999
80d40101153df0020101aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
80d40100153cf0020101bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
80d40101153cf0020101cccccccccccccccccccccccccccccccc
80d401000b3af0ef0133123456FFFFFF
80e0001507a8001ef0f0ffff
80e0001607a80027f0f0ffff
80e00018072e0A17f1efffff
80e00001072f0208f10f1f18
80e00002072f0208f0f0ff18
""".split()


def test_lab_issuance_script_is_accepted_and_its_ep_transacts():
    """LAB (klks/fmcos-python docs/CPU Key Example.pdf): the teaching kit's issuance script,
    sent after the transport authentication; its record update creates record 1 of an empty
    variable file (R22) and its EP's byte 5 is F0 (no 34 key F0: the DF's TAC key serves)."""
    host = Host(new_card(rng=Rng(8)))
    assert host.tx("00a4000000") == H("6F15840E315041592E5359532E4444463031A503880101")
    host.ext_auth(b"\xFF" * 8, n=8)
    for i, cmd in enumerate(LAB_ISSUANCE):
        data, sw = host.send(cmd)
        assert sw == 0x9000, f"step {i + 1}: {cmd}: {sw:04X}"
    host.card.reset()
    host.select_name(AID)
    host.verify(H("123456"))
    dlk, dpk, dtk = H("33" * 16), H("11" * 16), H("55" * 16)
    i = host.init_load(15)
    cg = pboc.load_cryptogram(dlk, dtk, random=i["random"], counter=0, balance=0, amount=15,
                              terminal=TERMINAL, date=DATE, time=TIME)
    assert i["mac1"] == cg.mac1
    assert host.tx(b"\x80\x52\x00\x00\x0B" + DATE + TIME + cg.mac2 + b"\x04") == cg.tac
    p = host.init_purchase(1)
    pc = pboc.purchase_cryptogram(dpk, dtk, random=p["random"], counter=0, terminal_serial=H("00000001"),
                                  amount=1, terminal=TERMINAL, date=DATE, time=TIME, ttype=0x06)
    assert host.debit(pc, serial=H("00000001")) == pc.tac + pc.mac2
    assert host.balance() == 14


ROBUR = [
    ("80E03F010D380800F0F095FFFF1122334455", "9000"),
    ("00A40000023F0100", None),                                   # answer not published
    ("80E00000073F018F95F0FFFF", "9000"),
    ("80D401000D39F0F0AAFF1122334455667788", "9000"),
    ("80D40100153EF0F000013E3E3E3E3E3E3E3E1122334455667788", "9000"),
    ("80D40100153FF0F000013F3F3F3F3F3F3F3F1122334455667788", "9000"),
    ("80D401001534F0F0000134343434343434341122334455667788", "9000"),
    ("80D40100073AF0EFAAFF1234", "9000"),
    ("80E00018072E0A17F0EFFFFF", "9000"),
    ("80E00002072F0208F000FF18", "9000"),
    ("805C000204", "000000009000"),
    ("0020000002 1234", "9000"),
    ("805000020B 00 00000010 666666666666 10", "00000000 0000 00 01 4E066548 0D39ADBB 9000"),
    ("805200000B 20240411 212121 097E98FE 04", "A802863E 9000"),
    ("805C000204", "000000109000"),
    ("00B201C400", "0001 000000 00000010 02 666666666666 20240411 212121 9000"),   # R11
]


def test_robur_trace_replayed():
    """ROBUR (klks/fmcos-python docs, a real FMCOS card, 2024): set-up, PIN, load, record."""
    card = new_card(rng=Recorded("0102030405060708", "4E066548"))
    host = Host(card)
    host.select_mf()
    host.ext_auth(b"\xFF" * 8, n=8)
    for i, (cmd, expected) in enumerate(ROBUR):
        resp = card.process(h(cmd))
        if expected is not None:
            assert resp == h(expected), f"step {i + 1}: {cmd}: {resp.hex().upper()}"


def test_change_pin_always_changes_pin_00():
    """UM 8.6: "the PIN id cannot be given in CHANGE PIN: PIN 00 is changed" (SPEC §1.5)."""
    host = app()
    host.tx("805E010706 123456 FF 6543".replace(" ", ""))       # P2 07: still PIN 00
    host.verify(H("6543"))


def test_load_requires_pin_is_a_model_choice():
    """SPEC §6.6: ROBUR's card insisted on the PIN before a load, DENG's did not."""
    import dataclasses

    from citycard.sim.models import FM1208
    strict = dataclasses.replace(FM1208, name="fm1208-robur", load_requires_pin=True)
    for model, sw in ((strict, 0x6982), (FM1208, 0x9000)):
        card = new_card(model, rng=Recorded("0102030405060708", "4E066548", "4E066548"))
        host = Host(card)
        host.select_mf()
        host.ext_auth(b"\xFF" * 8, n=8)
        for cmd, _ in ROBUR[:10]:
            card.process(h(cmd))
        host.select_fid(0x3F01)
        host.tx(h("805000020B 00 00000010 666666666666 10"), sw)
        host.verify(H("1234"))
        host.tx(h("805000020B 00 00000010 666666666666 10"))


def test_mac_check_load_on_the_blog16_card():
    """MAC-CHECK (klks/fmcos-python docs, 2018): a load on a card issued as in BLOG16 (same
    author and keys), at balance 1A and online counter 0017; the card's answers byte for byte."""
    card = new_card("fm1208", rng=Recorded("53fd1f262ec4e6e2", "88bbe4e3", "a3bbcfc8", "06b825d7"))
    card.power_on()
    for cmd, expected in BLOG16:
        assert card.process(H(cmd)).hex() == expected.lower()
    ep = card.df.children[0x0002]
    ep.balance, ep.online = 0x1A, 0x17          # the state of that card at the time of the trace
    assert card.process(H("805000020b0100000001112233445566" + "10")) == H("0000001a0017000106b825d7684c81ce9000")
    assert card.process(H("805200000b201703101107349C8A0625" + "04")) == H("16ead5169000")
