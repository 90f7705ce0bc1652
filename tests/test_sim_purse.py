"""Simulated card: the PBOC ED/EP (SPEC §2, D3, D4, D7, D8), checked with citycard.crypto.pboc."""

import pytest

from citycard.crypto import pboc
from tests.simhost import (DLK, DPK, DPK2, DTK, DUK, MK, TERMINAL, Host, app, h)

H = bytes.fromhex
SERIAL = H("00000007")


def detail_record(counter: int, amount: int, ttype: int, date: bytes = H("20261124"),
                  time: bytes = H("120000"), terminal: bytes = TERMINAL) -> bytes:
    """The 23-byte EF0018 record of SPEC §2.2 for the transaction whose MACs used ``counter``:
    the record stores the counter after the increment (SPEC §6 R11: ROBUR, CSLOG)."""
    rec = (counter + 1).to_bytes(2, "big") + bytes(3) + amount.to_bytes(4, "big") + bytes((ttype,)) + terminal + date + time
    assert len(rec) == 23
    return rec


def unload(host: Host, amount: int, *, mac2: bytes | None = None, sw: int = 0x9000) -> dict:
    r = host.tx(b"\x80\x50\x05\x01\x0B\x00" + amount.to_bytes(4, "big") + TERMINAL + b"\x10")
    bal, ctr, rnd = int.from_bytes(r[0:4], "big"), int.from_bytes(r[4:6], "big"), r[8:12]
    ses = pboc.load_session_key(DUK, rnd, ctr)
    assert r[6:8] == H("0100")
    assert r[12:16] == pboc.load_mac1(ses, bal, amount, 0x03, TERMINAL)
    good = pboc.load_mac2(ses, amount, 0x03, TERMINAL, H("20261124"), H("120000"))
    out = host.tx(b"\x80\x54\x03\x00\x0B" + H("20261124120000") + (mac2 or good) + b"\x04", sw)
    mac3 = pboc.unload_mac3(ses, bal - amount, ctr, amount, 0x03, TERMINAL, H("20261124"), H("120000"))
    if sw == 0x9000:
        assert out == mac3
    return dict(balance=bal, counter=ctr, mac3=mac3)


# ====================================================================== published vectors through the card
def test_robur_load_vector_through_the_card():
    host = app()
    host.card.rng = lambda n: H("4E066548")[:n]
    r = host.tx("805000020B" + "00" + "00000010" + "666666666666" + "10")
    assert r == H("00000000 0000 01 00 4E066548 0D39ADBB".replace(" ", ""))
    assert host.tx("805200000B20240411212121097E98FE04") == H("A802863E")
    assert host.balance() == 0x10
    assert host.prove(0x02, 0) == H("097E98FE A802863E".replace(" ", ""))


def test_deng_purchase_vector_through_the_card():
    host = app()
    host.ext_auth(MK)
    host.tx("80D4340015 34F0AA0100".replace(" ", "") + DPK.hex())    # DENG: DTK = DPK
    host.select_name(h("A00000000386980701"))
    host.load(5, dtk=DPK)
    host.card.rng = lambda n: H("584633C9")[:n]
    r = host.tx("805001020B0000000001001122334455" + "0F")
    assert r == H("00000005 0000 000000 01 00 584633C9".replace(" ", ""))
    out = host.tx("805401000F00000000 20161216 134600 D45737C5 08".replace(" ", ""))
    assert out == H("8AF270DC 66B54A6B".replace(" ", ""))
    assert host.balance() == 4
    assert host.prove(0x06, 0) == H("66B54A6B 8AF270DC".replace(" ", ""))


# ====================================================================== load
@pytest.mark.parametrize("p2, ttype", [(2, 0x02), (1, 0x01)])
def test_load_layout_tac_record_prove(p2, ttype):
    host = app()
    if p2 == 1:
        host.tx("805000010B0000000064000000000001" + "10", 0x6982)
        host.verify()
    x = host.load(1000, p2=p2)
    assert (x["balance"], x["counter"], x["version"], x["alg"]) == (0, 0, 0x01, 0x00)
    y = host.load(234, p2=p2, date=H("20261125"), time=H("235959"))
    assert (y["balance"], y["counter"]) == (1000, 1)
    assert host.balance(p2) == 1234
    assert host.detail(1) == detail_record(1, 234, ttype, H("20261125"), H("235959"))
    assert host.detail(2) == detail_record(0, 1000, ttype)
    host.detail(3, 0x6A83)
    assert host.prove(ttype, 1) == y["mac2"] + y["tac"]
    host.prove(ttype, 0, 0x9406)                        # only the last transaction
    host.prove(ttype ^ 0x03, 1, 0x9406)
    assert host.init_load(1, p2=p2)["counter"] == 2


def test_load_bad_mac2_changes_nothing():
    host = app()
    host.load(50)
    i = host.init_load(10)
    cg = pboc.load_cryptogram(DLK, DTK, random=i["random"], counter=1, balance=50, amount=10,
                              terminal=TERMINAL, date=H("20261124"), time=H("120000"))
    bad = bytes(b ^ 1 for b in cg.mac2)
    host.tx(b"\x80\x52\x00\x00\x0B" + H("20261124120000") + bad + b"\x04", 0x9302)
    host.tx(b"\x80\x52\x00\x00\x0B" + H("20261124120000") + cg.mac2 + b"\x04", 0x6901)  # session gone
    assert host.balance() == 50
    assert host.init_load(10)["counter"] == 1
    host.detail(2, 0x6A83)


# ====================================================================== purchase
@pytest.mark.parametrize("p2, ttype", [(2, 0x06), (1, 0x05)])
def test_purchase_layout_tac_mac2_record_prove(p2, ttype):
    host = app()
    host.verify()
    host.load(500, p2=p2)
    i = host.init_purchase(120, p2=p2)
    assert (i["balance"], i["counter"], i["overdraw"], i["version"], i["alg"]) == (500, 0, 0, 0x01, 0x00)
    cg = host.purchase_cg(i, 120, ttype=ttype)
    assert host.debit(cg) == cg.tac + cg.mac2
    assert host.balance(p2) == 380
    assert host.detail(1) == detail_record(0, 120, ttype)
    assert host.prove(ttype, 0) == cg.mac2 + cg.tac
    x = host.purchase(80, p2=p2)
    assert (x["balance"], x["counter"]) == (380, 1)
    assert host.detail(1) == detail_record(1, 80, ttype)
    assert host.balance(p2) == 300


def test_purchase_with_key_index_1_and_8_byte_serial_bytes():
    host = app()
    host.load(100)
    i = host.init_purchase(7, kid=1)
    assert (i["version"], i["alg"]) == (0x02, 0x01)            # D8: as stored
    cg = host.purchase_cg(i, 7, key=DPK2, serial=H("12345678"))
    assert host.debit(cg, serial=H("12345678")) == cg.tac + cg.mac2
    host.init_purchase(7, kid=5, sw=0x9403)
    host.tx("805000020B05000000010000000000011" + "0", 0x9403)
    host.tx("805005010B05000000010000000000011" + "0", 0x6982)   # ED, no PIN
    host.verify()
    host.tx("805005010B05000000010000000000011" + "0", 0x9403)


def test_purchase_insufficient_balance_and_bad_mac1():
    host = app()
    host.load(100)
    host.init_purchase(101, sw=0x9401)
    i = host.init_purchase(100)
    cg = host.purchase_cg(i, 100)
    host.debit(cg, mac1=bytes(4), sw=0x9302)
    assert host.balance() == 100
    host.debit(cg, sw=0x6901)                               # the session ended with the 9302
    host.detail(2, 0x6A83)
    host.prove(0x06, 0, 0x9406)
    assert host.init_purchase(100)["counter"] == 0


def test_session_valid_for_the_next_command_only():
    host = app()
    host.load(100)
    i = host.init_purchase(10)
    host.balance()
    host.debit(host.purchase_cg(i, 10), sw=0x6901)
    i = host.init_load(10)
    host.tx(b"\x80\x54\x01\x00\x0F" + bytes(15) + b"\x08", 0x6901)   # a DEBIT after a load INIT
    host.tx("805200000B" + "00" * 11 + "04", 0x6901)
    host.tx("805200000B" + "00" * 11 + "04", 0x6901)
    host.card.reset()
    host.select_name(h("A00000000386980701"))
    assert host.balance() == 100


def test_get_balance_ed_needs_pin_ep_free():
    host = app()
    assert host.tx("805C000204") == bytes(4)
    host.tx("805C000104", 0x6982)
    host.verify()
    assert host.tx("805C000104") == bytes(4)
    host.tx("805C000304", 0x6A86)
    host.tx("805C010204", 0x6A86)
    host.tx("805C000205", 0x6700)


# ====================================================================== CAPP
CAPP_SFI_TAG = (0x17 << 3) | 0     # P2 for "first record with tag P1"
CAPP_SFI_NUM = (0x17 << 3) | 4     # P2 for "record number P1"


def capp(host: Host, amount: int, p1: int, p2: int, record: bytes, *, good: bool = True) -> dict:
    i = host.init_purchase(amount, p1=0x03, p2=0x02)
    host.tx(bytes((0x80, 0xDC, p1, p2, len(record))) + record)
    cg = host.purchase_cg(i, amount, ttype=pboc.TT_CAPP_PURCHASE)
    if good:
        assert host.debit(cg) == cg.tac + cg.mac2
    else:
        host.debit(cg, mac1=bytes(4), sw=0x9302)
    return dict(i, mac2=cg.mac2, tac=cg.tac)


def test_capp_purchase_by_tag_and_by_number():
    host = app()
    host.load(1000)
    rec1 = H("022E") + bytes(range(0x2E))
    x = capp(host, 30, 0x02, CAPP_SFI_TAG, rec1)          # tag 02 absent: the DEBIT appends it
    assert host.tx("00B201BC00") == rec1
    assert host.detail(1) == detail_record(0, 30, 0x09)
    assert host.prove(0x09, 0) == x["mac2"] + x["tac"]
    assert host.balance() == 970
    rec2 = H("022E") + b"\xAB" * 0x2E
    capp(host, 40, 0x01, CAPP_SFI_NUM, rec2)              # record number 1
    assert host.tx("00B201BC00") == rec2
    rec3 = H("022E") + b"\xCD" * 0x2E
    capp(host, 50, 0x02, CAPP_SFI_TAG, rec3)              # by tag, now present: updated in place
    assert host.tx("00B201BC00") == rec3
    host.tx("00B202BC00", 0x6A83)
    assert host.balance() == 880
    assert host.detail(1) == detail_record(2, 50, 0x09)


def test_capp_record_written_only_by_the_debit():
    host = app()
    host.load(1000)
    rec1 = H("0203") + b"abc"
    capp(host, 1, 0x02, CAPP_SFI_TAG, rec1)
    # a failed DEBIT writes nothing
    capp(host, 2, 0x02, CAPP_SFI_TAG, H("0203") + b"xyz", good=False)
    assert host.tx("00B201BC00") == rec1
    # another command between UPDATE CAPP DATA CACHE and DEBIT ends the session, nothing written
    i = host.init_purchase(3, p1=0x03, p2=0x02)
    host.tx(b"\x80\xDC\x02\xB8\x05" + H("0203") + b"xyz")
    assert host.tx("00B201BC00") == rec1
    host.debit(host.purchase_cg(i, 3, ttype=0x09), sw=0x6901)
    assert host.tx("00B201BC00") == rec1
    assert host.balance() == 999


def test_capp_cache_errors():
    host = app()
    host.load(1000)
    host.tx(b"\x80\xDC\x02\xB8\x05" + H("0203") + b"xyz", 0x6901)      # no CAPP session
    host.init_purchase(3)                                                # a plain purchase session
    host.tx(b"\x80\xDC\x02\xB8\x05" + H("0203") + b"xyz", 0x6901)
    host.init_purchase(3, p1=0x03, p2=0x02)
    host.tx(b"\x80\xDC\x05\xBC\x05" + H("0203") + b"xyz", 0x6A83)      # no record 5
    host.init_purchase(3, p1=0x03, p2=0x02)
    host.tx(b"\x80\xDC\x02\xB8\x05" + H("0204") + b"xyz", 0x6A80)      # bad TLV
    host.tx("805003010B0000000001000000000001" + "0F", 0x6A86)         # CAPP is EP only


# ====================================================================== unload
def test_unload_mac3_record_prove():
    host = app()
    host.verify()
    host.load(500, p2=1)
    x = unload(host, 200)
    assert (x["balance"], x["counter"]) == (500, 1)
    assert host.balance(1) == 300
    assert host.detail(1) == detail_record(1, 200, 0x03)
    assert host.prove(0x03, 1) == x["mac3"] + bytes(4)
    assert host.init_load(1, p2=1)["counter"] == 2


def test_unload_errors():
    host = app()
    host.verify()
    host.load(100, p2=1)
    host.tx("805005010B0000000065000000000001" + "10", 0x9401)
    unload(host, 50, mac2=bytes(4), sw=0x9302)
    assert host.balance(1) == 100
    unload(host, 100)
    assert host.balance(1) == 0


# ====================================================================== MOHURD authentication code (D7)
def test_mohurd_code_in_purchase_mac1():
    host = app()
    host.load(100)
    host.tx("80CA000009", 0x6A88)                       # option off
    code = H("85 88D32B76 88D32B76".replace(" ", ""))
    host.tx(b"\x00\x22\x00\x00\x09" + code, 0x6982)    # needs the DF create AC (AA)
    host.ext_auth(MK)
    host.tx(b"\x00\x22\x00\x00\x09" + H("86") + code[1:], 0x6A80)
    host.tx(b"\x00\x22\x00\x00\x08" + code[:8], 0x6700)
    host.tx(b"\x00\x22\x00\x00\x09" + code)
    assert host.tx("80CA000009") == code
    i = host.init_purchase(10)
    plain = host.purchase_cg(i, 10)
    host.debit(plain, sw=0x9302)                        # a host MAC1 without the code
    i = host.init_purchase(10)
    cg = host.purchase_cg(i, 10, auth_code=code)
    assert host.debit(cg) == cg.tac + cg.mac2
    assert cg.tac == plain.tac                          # the TAC does not include the code
    assert host.balance() == 90
    # loads are not affected
    host.load(5)
    host.card.reset()
    host.select_name(h("A00000000386980701"))
    assert host.tx("80CA000009") == code


def test_load_limits_and_parameters():
    host = app()
    host.tx("805000020B0000000000000000000001" + "10", 0x6A80)     # zero amount
    host.tx("805000030B0000000001000000000001" + "10", 0x6A86)     # P2 03
    host.tx("805002020B0000000001000000000001" + "10", 0x6A86)     # cash withdraw: ED only (UM 8.11)
    host.tx("805000020A00000000010000000000" + "10", 0x6700)
    host.tx("845000020B0000000001000000000001" + "10", 0x6E00)
    host.load(0xFFFFFFF0)
    host.tx("805000020B0000000010000000000001" + "10", 0x6985)     # over the model's max balance (UM 8.7.1.5)
    assert host.balance() == 0xFFFFFFF0


def test_transaction_prove_parameters():
    host = app()
    host.prove(0x02, 0, 0x9406)
    host.tx("805A000201" + "00", 0x6700)
    host.tx("805A010202" + "0000", 0x6A86)


def test_capp_by_tag_does_not_grow_a_cyclic_file():
    host = app()
    host.load(100)
    host.ext_auth(MK)
    host.create(0x001E, H("2E0304F0F0FFFF"))
    host.tx("00E200F00402000000")
    host.init_purchase(3, p1=0x03, p2=0x02)
    host.tx("80DC03F00403AAAAAA", 0x6A83)                 # no record with tag 03: not appended
    capp(host, 3, 0x02, 0xF0, H("02BBBBBB"))             # tag 02 exists: updated in place
    capp(host, 3, 0x01, 0xF4, H("02CCCCCC"))             # by number
    assert host.tx("00B201F400") == H("02CCCCCC")
    host.tx("00B202F400", 0x6A83)
