"""Simulated card: binary and record files, line protection (SPEC §1.2, §1.5, §1.6) and GET RESPONSE."""

import pytest

from citycard import crypto
from citycard.crypto import pboc
from citycard.sim import SimCard
from tests.simhost import (AID, DAMK, DAMK1, DLK, DTK, EF15, MK, TERMINAL, TRANSPORT, Host, Rng, app,
                           h)

H = bytes.fromhex
EF16 = bytes(range(0x40, 0x40 + 39))


@pytest.fixture
def host() -> Host:
    host = app()
    host.tx(b"\x00\xD6\x96\x00\x27" + EF16)      # EF0016: 39 bytes, free read and write
    return host


def records_card(model: str = "fm1208") -> Host:
    """A DF "RECS" with a fixed (SFI 1), a cyclic (2), a variable (3) and a binary file (4); ACs apply."""
    host = Host(SimCard(rng=Rng(4), model=model))
    host.select_mf()
    host.ext_auth(TRANSPORT)
    host.create(0x3F02, H("380400F0F001FFFF") + b"RECS")
    host.select_name(b"RECS")
    host.create(0x0000, H("3F0020F0F0FFFF"))
    host.create(0x0001, H("2A0305F0F0FFFF"))
    host.create(0x0002, H("2E0304F0F0FFFF"))
    host.create(0x0003, H("2C0020F0F0FFFF"))
    host.create(0x0004, H("28012CF0F0FFFF"))      # 300 bytes
    host.select_mf()
    host.select_name(b"RECS")
    return host


# ====================================================================== READ / UPDATE BINARY
def test_read_binary_offsets_and_sfi(host):
    assert host.tx("00B0960000") == EF16                  # Le 00: to the end
    assert host.tx("00B0960A05") == EF16[10:15]
    assert host.tx("00B09620") == EF16[0x20:]              # no Le: to the end
    assert host.tx("00B0000207") == EF16[2:9]              # SFI made 0016 current; 15-bit offset
    host.select_fid(0x0015)
    assert host.tx("00B0001A04") == EF15[0x1A:]
    assert host.tx("00B0950000") == EF15


def test_read_binary_errors(host):
    host.tx("00B0962701", 0x6B00)                          # offset = size
    host.tx("00B0962008", 0x6C07)                          # 7 bytes there
    host.tx("00B0960028", 0x6C27)
    host.tx("00B0A00001", 0x6A86)                          # P1 101xxxxx
    host.tx("00B0870001", 0x6A82)                          # no SFI 7
    host.tx("00B0980001", 0x6981)                          # SFI 18: a record file
    host.select_fid(0x0002)
    host.tx("00B0000001", 0x6981)                          # the purse


def test_read_binary_large_file_15_bit_offset():
    host = records_card("fm1208-16ff")      # Le 00 reads 256: the legacy model's short-APDU limit (fm1208: 239, R7)
    host.select_fid(0x0004)
    host.tx(b"\x00\xD6\x01\x00\x2C" + bytes(range(0x2C)))     # offset 0x0100 needs SFI-less P1
    assert host.tx("00B0840000") == bytes(256)                 # SFI 4, Le 00: 256 of 300 bytes
    assert host.tx("00B001002C") == bytes(range(0x2C))
    assert host.tx("00B0010A00") == bytes(range(0x0A, 0x2C))   # Le 00 to the end
    host.tx("00B0012C01", 0x6B00)
    host.tx("00B0000101", 0x9000)
    host.tx("00B07FFF01", 0x6B00)


def test_update_binary(host):
    host.tx("00D6960302AABB")
    assert host.tx("00B0960000") == EF16[:3] + H("AABB") + EF16[5:]
    host.select_fid(0x0016)
    host.tx("00D6002501CC")
    assert host.tx("00B0002502") == H("CC") + EF16[38:]
    host.tx("00D6962602AABB", 0x6700)                      # past the end
    host.tx("00D6962701AA", 0x6B00)
    host.tx("00D69600", 0x6700)                            # no data
    host.tx("00D6980001AA", 0x6981)


# ====================================================================== records
def test_fixed_records():
    host = records_card()
    assert host.tx("00B2010C00") == bytes(5)               # all records exist from creation (SPEC §6 R21)
    for i in range(1, 4):
        host.tx(b"\x00\xE2\x00\x08\x05" + bytes((i,)) * 5)
    host.tx(b"\x00\xE2\x00\x08\x05" + b"\x04" * 5, 0x6A84)   # full
    assert host.tx("00B2020C05") == b"\x02" * 5
    assert host.tx("00B2030C00") == b"\x03" * 5
    host.tx("00B2020C04", 0x6C05)
    host.tx("00B2040C00", 0x6A83)
    host.tx("00B2000C00", 0x6A83)
    host.tx(b"\x00\xDC\x02\x0C\x05" + b"\xAA" * 5)
    assert host.tx("00B2020C05") == b"\xAA" * 5
    host.tx(b"\x00\xDC\x02\x0C\x04" + b"\xAA" * 4, 0x6700)
    host.tx(b"\x00\xDC\x04\x0C\x05" + b"\xAA" * 5, 0x6A83)
    host.tx(b"\x00\xE2\x00\x08\x06" + b"\x04" * 6, 0x6700)
    host.tx("00B2010800", 0x6A86)                          # by tag: variable files only
    host.tx(b"\x00\xE2\x01\x08\x05" + b"\x04" * 5, 0x6A86)   # APPEND: P1 00
    # current EF addressing (SFI 0): the last SFI used made 0001 current
    assert host.tx("00B2010400") == b"\x01" * 5


def test_cyclic_records_newest_first():
    host = records_card()
    for b in b"ABCD":
        host.tx(b"\x00\xE2\x00\x10\x04" + bytes((b,)) * 4)
    assert [host.tx(bytes((0x00, 0xB2, n, 0x14, 0x04))) for n in (1, 2, 3)] == [b"DDDD", b"CCCC", b"BBBB"]
    host.tx("00B2041404", 0x6A83)                          # A was dropped
    host.tx(b"\x00\xDC\x02\x14\x04" + b"xxxx")
    assert host.tx("00B2021404") == b"xxxx"


def test_variable_tlv_records():
    host = records_card()
    for rec in ("0102AAAA", "0203BBBBBB", "0101CC"):
        host.tx("00E2001805" [:8] + f"{len(h(rec)):02X}" + rec)
    assert host.tx("00B2011800") == H("0102AAAA")          # first with tag 01
    assert host.tx("00B2011900") == H("0101CC")            # last with tag 01
    assert host.tx("00B2021C00") == H("0203BBBBBB")        # by number
    assert host.tx("00B2021800") == H("0203BBBBBB")
    host.tx("00B2031800", 0x6A83)                          # no tag 03
    host.tx("00B2011A00", 0x6A86)                          # next: not supported
    host.tx("00DC02180502 03 DDDDDD".replace(" ", ""))     # update by tag, same length
    assert host.tx("00B2021C00") == H("0203DDDDDD")
    host.tx("00DC0218040202DDDD", 0x6700)                  # an update keeps the length
    host.tx("00DC03180502 03 DDDDDD".replace(" ", ""), 0x6A83)
    host.tx("00E20018030105AA", 0x6A80)                    # TLV length byte wrong
    host.tx("00E2001814 0512".replace(" ", "") + "EE" * 18)   # 12 + 20 = 32: full
    host.tx("00E20018030101EE", 0x6A84)
    assert host.tx("00B2041C00") == H("0512") + b"\xEE" * 18


def test_record_commands_on_wrong_kind():
    host = records_card()
    host.tx("00B2012400", 0x6981)                          # SFI 4 is binary
    host.tx("00DC01240101", 0x6981)
    host.tx("00E2002001AA", 0x6981)
    host.tx("00B201F400", 0x6A82)                          # SFI 1E does not exist


# ====================================================================== line protection
def test_write_protected_ef0015(host):
    host.tx("00D6950004CAFEBABE", 0x6900)                  # A8: plain update refused
    host.protected(0x00, 0xD6, 0x95, 0x00, H("CAFEBABE"), DAMK)
    assert host.tx("00B0950000") == H("CAFEBABE") + EF15[4:]
    # the same by hand: MAC over 04 D6 95 00 08 || data, IV = challenge || 00000000, 16-byte key
    chal = host.challenge()
    mac = crypto.mac_alg3(DAMK, H("04D6950408") + H("01020304"), iv=chal + bytes(4))[:4]
    host.tx(H("04D6950408") + H("01020304") + mac)
    assert host.tx("00B0950000") == H("CAFEBABE01020304") + EF15[8:]
    host.tx("04D6950004CAFEBABE", 0x6984)                  # no challenge


def test_bad_macs_lock_the_application(host):
    chal = host.challenge()
    host.tx(H("04D6950008CAFEBABE") + bytes(4), 0x9302)
    assert host.tx("00B0950000") == EF15                   # nothing written
    host.challenge()
    host.tx(H("04D6950008CAFEBABE") + bytes(4), 0x9302)
    host.protected(0x00, 0xD6, 0x95, 0x00, H("CAFEBABE"), DAMK)   # success resets the 36 counter
    for _ in range(2):
        host.challenge()
        host.tx(H("04D6950008CAFEBABE") + bytes(4), 0x9302)
    host.challenge()
    host.tx(H("04D6950008CAFEBABE") + bytes(4), 0x9303)   # third in a row: application locked
    host.tx("00B0950000", 0x9303)
    host.tx("805C000204", 0x9303)
    host.select_mf()
    host.select_name(AID, 0x9303)
    host.card.reset()
    host.select_name(AID, 0x9303)
    del chal


def test_write_key_chosen_by_byte_7(host):
    host.ext_auth(MK)
    host.create(0x0019, H("A80004F0F0FFFE"))               # b2b1 = 10: write key 01
    host.create(0x001A, H("E80008F0F0FFFF"))               # MAC + cipher with key 00
    host.create(0x001B, H("280004F0F0FF7F"))               # b8 = 0: protected reads, key 00
    host.create(0x001C, H("A80004F0F0FFFC"))               # b2b1 = 00: key 03 (absent)
    host.select_name(AID)
    host.protected(0x00, 0xD6, 0x99, 0x00, H("11223344"), DAMK, sw=0x9302)
    host.protected(0x00, 0xD6, 0x99, 0x00, H("11223344"), DAMK1)
    assert host.tx("00B0990000") == H("11223344")
    host.protected(0x00, 0xD6, 0x9C, 0x00, H("11223344"), DAMK, sw=0x6A88)
    # E8: enciphered data, E(LD || data || 80 ..) under the 36 key
    host.protected(0x00, 0xD6, 0x9A, 0x00, H("0102030405"), DAMK, encrypt=True)
    assert host.tx("00B09A0000") == H("0102030405000000")
    host.protected(0x00, 0xD6, 0x9A, 0x00, H("0102030405"), DAMK, sw=0x6A80)   # not enciphered
    host.tx("00D69A000401020304", 0x6900)
    # protected read: plain read refused, 04 B0 answers data || MAC(data)
    host.tx("00B09B0000", 0x6900)
    chal = host.challenge()
    mac = crypto.mac_alg3(DAMK, H("04B09B0004"), iv=chal + bytes(4))[:4]
    r = host.tx(H("04B09B0004") + mac, 0x6281)              # never written: 6281 (SPEC §6 R13)
    assert r == bytes(4) + crypto.mac_alg3(DAMK, bytes(4), iv=chal + bytes(4))[:4]


def test_e8_record_file_enciphered_append(host):
    host.ext_auth(MK)
    host.create(0x001D, H("EA0306F0F0FFFF"))               # fixed records, MAC + cipher
    host.select_name(AID)
    host.tx(b"\x00\xE2\x00\xE8\x06" + b"abcdef", 0x6900)
    host.protected(0x00, 0xE2, 0x00, 0xE8, b"abcdef", DAMK, encrypt=True)
    assert host.tx("00B201EC06") == b"abcdef"


# ====================================================================== GET RESPONSE
def test_get_response_after_short_le():
    host = app()
    fci = h("6F32 8409 A00000000386980701 A525 9F080102 9F0C1E") + EF15
    assert len(fci) == 0x34
    r, sw = host.send(h("00A4040009") + AID + b"\x10")
    assert (r, sw) == (fci[:16], 0x6124)
    r, sw = host.send("00C0000010")
    assert (r, sw) == (fci[16:32], 0x6114)
    r, sw = host.send("00C0000010")
    assert (r, sw) == (fci[32:48], 0x6104)
    assert host.tx("00C0000010") == fci[48:]
    host.tx("00C0000010", 0x6985)                           # nothing left


def test_get_response_keeps_the_purse_session():
    host = app()
    r, sw = host.send("805000020B" + "00" + "00000064" + "000000000001" + "08")
    assert sw == 0x6108 and len(r) == 8
    rest = host.tx("00C0000008")
    init = r + rest
    cg = pboc.load_cryptogram(DLK, DTK, random=init[8:12], counter=0, balance=0, amount=100,
                              terminal=TERMINAL, date=H("20260101"), time=H("010203"))
    assert init[12:16] == cg.mac1
    assert host.tx(b"\x80\x52\x00\x00\x0B" + H("20260101") + H("010203") + cg.mac2 + b"\x04") == cg.tac


def test_get_response_errors():
    host = app()
    host.tx("00C0000010", 0x6985)
    host.send(h("00A4040009") + AID + b"\x10")
    host.tx("00B0950001")                                   # another command drops the rest
    host.tx("00C0000010", 0x6985)
    host.send(h("00A4040009") + AID + b"\x10")
    host.tx("00C0010010", 0x6A86)


# ====================================================================== length limits
def test_extended_protected_command_is_6700(host):
    host.challenge()
    host.tx(H("04D69500000104") + bytes(0x104), 0x6700)      # Lc+4 would not fit the MAC header byte
    assert host.tx("00B0950000") == EF15


def test_record_length_is_one_byte():
    host = app(model="fm1208-16ff")         # a 255-byte record: Lc 255, the legacy model (fm1208: Lc ≤ 239, R7)
    host.ext_auth(MK)
    host.create(0x0019, H("2C0110F0F0FFFF"))
    host.tx(H("00E200C8000101") + b"\x01\xFF" + bytes(255), 0x6700)   # 257 bytes (extended APDU)
    rec = b"\x01\xFD" + bytes(range(253))
    host.tx(H("00E200C8FF") + rec)
    host.tx("00B201CC01", 0x6CFF)
    assert host.tx("00B201CC00") == rec
    assert host.tx("00B201C800") == rec
