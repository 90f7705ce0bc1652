"""Simulated card: WRITE KEY (SPEC §1.4), INTERNAL AUTH (§1.5, §4 vector 2) and PINs (§1.5, D2)."""

import pytest

from citycard import crypto
from citycard.apdu import CommandApdu
from citycard.sim import SimCard
from tests.simhost import (AID, IAK, MK, PIN, PRK, PUK, TERMINAL, TRANSPORT, Host, Rng, app,
                           h)

H = bytes.fromhex
K16 = H("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8")
K16B = H("0102030405060708090A0B0C0D0E0F10")
K8 = H("1111222233334444")


def keys_df(host: Host | None = None, *, kf_space: int = 0x0100) -> Host:
    """A fresh DF "KEYS" (free: never re-entered) with an empty KEY file."""
    host = host or Host(SimCard(rng=Rng(2)))
    host.select_mf()
    host.ext_auth(TRANSPORT)
    host.create(0x3F05, H("380400F0F001FFFF") + b"KEYS")
    host.select_name(b"KEYS")
    host.create(0x0000, H("3F") + kf_space.to_bytes(2, "big") + H("01F0FFFF"))
    return host


def stored(host: Host, base: int, kid: int) -> bytes | None:
    key = host.card.df.keyfile.get(base, kid)
    return None if key is None else key.record()


def enter(host: Host) -> None:
    host.select_mf()
    host.select_name(b"KEYS")


# ====================================================================== WRITE KEY: SPEC examples
def test_spec_example_master_key():
    host = keys_df()
    host.tx("80 D4 01 00 15 39 F0 FA AA 88".replace(" ", "") + K16.hex())
    assert stored(host, 0x39, 0) == h("39 F0 FA AA 88") + K16
    host.create(0x0005, H("280004AAAAFFFF"))          # read/write need SR = A
    enter(host)
    host.tx("00B0850004", 0x6982)
    host.challenge()
    host.tx("0082000008" + "00" * 8, 0x63C7)          # counter 88: 8 tries, 7 left
    host.ext_auth(K16)                                # follow-up AA -> SR A
    assert host.tx("00B0850004", 0x6281) == bytes(4)  # never written (SPEC §6 R13)


def test_spec_example_8_byte_line_key():
    host = keys_df()
    host.tx("80 D4 01 00 0D 36 F0 FA FF 33".replace(" ", "") + K8.hex())
    assert stored(host, 0x36, 0) == h("36 F0 FA FF 33") + K8
    host.create(0x0005, H("A80004F0F0FFFF"))
    enter(host)
    host.tx("00D6850004CAFEBABE", 0x6900)
    host.protected(0x00, 0xD6, 0x85, 0x00, H("CAFEBABE"), K8)   # DES MAC (alg 1) with the 8-byte key
    assert host.tx("00B0850004") == H("CAFEBABE")
    # the MAC by hand: DES-CBC, IV = challenge || 00000000, pad 80..
    chal = host.challenge()
    mac = crypto.mac_alg1(K8, H("04D6850008") + H("01020304"), iv=chal + bytes(4))[:4]
    host.tx(H("04D6850008 01020304".replace(" ", "")) + mac)
    assert host.tx("00B0850004") == H("01020304")


def test_spec_example_purchase_key_java():
    host = app()
    host.ext_auth(MK)
    # 3E/01 exists on the standard card: a real FM1208 replaces it (DENG p.2), the legacy model refuses
    host.tx("80D40101153EF0020001" + K16.hex(), 0x9000 if host.card.model.add_replaces_existing else 0x6A86)
    host.tx("80D401021523F0020001" + "00" * 16, 0x6A80)   # 23: not a key type
    host.tx("80D40102153EF0020001" + K16.hex())
    assert stored(host, 0x3E, 2) == h("3E F0 02 00 01") + K16
    host.tx("0020000003" + PIN.hex())
    r = host.tx("805001020B02" + "00000000" + TERMINAL.hex() + "0F", 0x9000)
    assert r[9:11] == H("0001")                               # version 00, algorithm 01 (D8)
    # change AC 02 = MF SR >= 2: not met (MF SR is 0) ...
    host.tx("80D43E02153EF0020001" + K16B.hex(), 0x6982)
    # ... met after an MF key with follow-up state 02, whatever the DF SR
    host.select_mf()
    host.ext_auth(TRANSPORT)
    host.add_key(0x39, 0x01, 0xF0, 0xF0, 0x02, 0x33, K8)
    host.ext_auth(K8, kid=1)
    host.select_name(AID)
    host.tx("80D43E02153EF0020001" + K16B.hex())
    assert stored(host, 0x3E, 2) == h("3E F0 02 00 01") + K16B


# ====================================================================== add, update
def test_update_with_current_type_byte_keeps_counter():
    host = keys_df()
    host.add_key(0x39, 0x00, 0xF0, 0xF0, 0x01, 0x33, K16)
    host.challenge()
    host.tx("0082000008" + "00" * 8, 0x63C2)
    host.tx("80D43A0015 39F0F00133".replace(" ", "") + K16B.hex(), 0x6A88)   # wrong P1
    host.tx("80D4B90015 39F0F00133".replace(" ", "") + K16B.hex(), 0x6A88)   # P1 must equal the type
    host.tx("80D4390115 39F0F00133".replace(" ", "") + K16B.hex(), 0x6A88)   # no key 39/01
    host.tx("80D4390015 39F0F00133".replace(" ", "") + K16B.hex())
    assert stored(host, 0x39, 0) == h("39 F0 F0 01 32") + K16B              # counter kept: 32
    host.challenge()
    host.tx("0082000008" + "00" * 8, 0x63C1)
    host.ext_auth(K16B)


def test_wrong_lengths_6700():
    host = keys_df()
    host.add_key(0x39, 0x00, 0xF0, 0xF0, 0x01, 0x33, K16)
    host.tx("80D439000D 39F0F00133".replace(" ", "") + K8.hex(), 0x6700)   # 8-byte key for a 16-byte one
    host.tx("80D4010105 39F0F00133", 0x6700)                                # no key at all
    host.tx("80D401010F 39F0F00133".replace(" ", "") + "00" * 10, 0x6700)   # a 10-byte key
    host.tx("80D4010104 39F0F001", 0x6700)
    host.tx("80D4010108 3AF0EF0133 12".replace(" ", ""), 0x6700)           # a 1-byte PIN
    host.tx("80D401010F 3AF0EF0133".replace(" ", "") + "12" * 9, 0x6700)   # a 9-byte PIN
    host.tx("80D40101 15 33F0F00000".replace(" ", "") + K16.hex(), 0x6A80)  # 33: not a key type
    host.tx("80D401FF15 39F0F00133".replace(" ", "") + K16.hex(), 0x6A86)   # id FF
    assert list(host.card.df.keyfile.keys) == [(0x39, 0)]


def test_add_existing_and_key_file_space():
    host = keys_df(kf_space=0x0028)               # 40 bytes: a 16-byte key (24) + an 8-byte key (16)
    host.add_key(0x39, 0x00, 0xF0, 0xF0, 0x01, 0x33, K16)
    replaces = host.card.model.add_replaces_existing
    host.add_key(0x39, 0x00, 0xF0, 0xF0, 0x01, 0x33, K16B, sw=0x9000 if replaces else 0x6A86)
    if replaces:
        host.add_key(0x39, 0x00, 0xF0, 0xF0, 0x01, 0x33, K16)  # back to the first value
    host.add_key(0x30, 0x00, 0xF0, 0xF0, 0x00, 0x00, K16, sw=0x6A84)
    host.add_key(0x30, 0x00, 0xF0, 0xF0, 0x00, 0x00, K8)
    host.add_key(0x3A, 0x00, 0xF0, 0xEF, 0x01, 0x33, H("1234"), sw=0x6A84)


def test_change_ac_and_add_ac_honoured():
    host = app()
    host.tx("80D4010115 30F0F00000".replace(" ", "") + K16.hex(), 0x6982)   # add AC AA not met
    host.tx("80D4300015 30F0F00000".replace(" ", "") + K16.hex(), 0x6982)   # change AC AA not met
    host.verify()                                                          # SR 1: still not A
    host.tx("80D430000D 30F0F00000".replace(" ", "") + K8.hex(), 0x6982)
    host.ext_auth(MK)                                                      # SR A
    host.tx("80D4300015 30F0F00000".replace(" ", "") + K16.hex(), 0x6700)  # 16 bytes for an 8-byte key
    host.tx("80D430000D 30F0F00000".replace(" ", "") + K8.hex())
    assert stored(host, 0x30, 0) == h("30 F0 F0 00 00") + K8
    host.tx("80D4010115 30F0F00000".replace(" ", "") + K16.hex())
    assert stored(host, 0x30, 1) == h("30 F0 F0 00 00") + K16


# ====================================================================== protected WRITE KEY
def mac_write(host: Host, p1: int, kid: int, record: bytes, *, encrypt: bool, key: bytes = MK,
              sw: int = 0x9000) -> None:
    host.protected(0x80, 0xD4, p1, kid, record, key, encrypt=encrypt, sw=sw)


def test_macd_and_ciphered_add_and_update():
    host = app(model="fm1208-16ff")   # an enciphered add of type 39: the legacy model (fm1208 refuses it, R4)
    host.ext_auth(MK)
    # MAC'd plain add, then check the MAC by hand once
    mac_write(host, 0x01, 0x05, h("39 F0 F0 05 33") + K16, encrypt=False)
    assert stored(host, 0x39, 5) == h("39 F0 F0 05 33") + K16
    chal = host.challenge()
    rec = h("39 F0 F0 05 33") + K16B
    mac = crypto.mac_alg3(MK, H("84D4390519") + rec, iv=chal + bytes(4))[:4]   # 16-byte key: alg 3
    host.tx(H("84D4390519") + rec + mac)
    assert stored(host, 0x39, 5) == rec
    # ciphered and MAC'd: E(LD || record || 80 ..) computed by hand
    rec = h("39 F0 F0 06 33") + K16
    plain = bytes((len(rec),)) + rec + b"\x80"
    plain += bytes(-len(plain) % 8)
    ct = crypto.ecb_encrypt(MK, plain)
    assert len(ct) == 24
    chal = host.challenge()
    hdr = H("84D401061C")
    host.tx(hdr + ct + crypto.mac_alg3(MK, hdr + ct, iv=chal + bytes(4))[:4])
    assert stored(host, 0x39, 6) == rec
    # the CIPHK shape: 84 D4 01 02 14, an F9 key with an 8-byte value, 16 bytes of ciphertext
    rec = h("F9 F0 F0 AA 33") + K8
    chal = host.challenge()
    cmd = crypto.protect(CommandApdu(0x80, 0xD4, 0x01, 0x02, rec), MK, chal, encrypt=True)
    assert cmd.encode()[:5] == H("84D4010214")
    host.tx(cmd)
    assert stored(host, 0x39, 2) == rec


def test_macd_write_key_bad_mac_changes_nothing():
    host = app()
    host.ext_auth(MK)
    before = stored(host, 0x30, 0)
    chal = host.challenge()
    rec = h("30 F0 F0 00 00") + K8
    host.tx(H("84D4300011") + rec + bytes(4), 0x9302)
    assert stored(host, 0x30, 0) == before
    assert stored(host, 0x39, 0)[4] == 0x32                 # the master key's counter counted it
    host.tx(H("84D4300011") + rec + bytes(4), 0x6984)       # and no challenge now
    del chal


@pytest.mark.parametrize("flagged, plain_sw", [(0xB9, 0x6982), (0xF9, 0x6982)])
def test_flagged_ext_auth_keys_refuse_plain_updates(flagged, plain_sw):
    host = app()
    host.ext_auth(MK)
    host.add_key(flagged, 0x07, 0xF0, 0xF0, 0x03, 0x33, K16)
    new = bytes((flagged,)) + h("F0 F0 03 33") + K16B
    host.tx(bytes((0x80, 0xD4, flagged, 0x07, len(new))) + new, plain_sw)
    if flagged == 0xF9:
        mac_write(host, flagged, 0x07, new, encrypt=False, sw=0x6A80)   # MAC alone is not enough
        assert stored(host, 0x39, 7)[5:] == K16
        mac_write(host, flagged, 0x07, new, encrypt=True)
    else:
        mac_write(host, flagged, 0x07, new, encrypt=False)
    assert stored(host, 0x39, 7) == new
    host.select_name(AID)
    host.ext_auth(K16B, kid=7)


def test_flagged_pin_fa_update_needs_cipher_and_mac():
    host = app()
    host.ext_auth(MK)
    # change AC F0 here: the manual's fixed EF would forbid any change once ACs apply
    host.add_key(0xFA, 0x01, 0xF0, 0xF0, 0x01, 0x33, H("1111"))
    host.tx("80D4FA0107FAF0F001332222", 0x6982)
    mac_write(host, 0xFA, 0x01, h("FA F0 F0 01 33 2222"), encrypt=False, sw=0x6A80)
    mac_write(host, 0xFA, 0x01, h("FA F0 F0 01 33 2222"), encrypt=True)
    host.verify(H("1111"), kid=1, sw=0x63C2)
    host.verify(H("2222"), kid=1)


# ====================================================================== INTERNAL AUTH
def test_internal_auth_spec_vector_2():
    host = keys_df()
    host.tx("80D401000D30F0F000001122334455667788")
    host.tx("80D401000D32F0F000001122334455667788")
    assert host.tx("00880000080102030405060708") == H("178F59F8578E0D3F")
    assert host.tx("00880200080102030405060708") == H("A82A8CEB")
    host.tx("00880100080102030405060708", 0x6A88)          # no 31 key
    host.tx("00880300080102030405060708", 0x6A86)
    host.tx("00880000070102030405060708"[:-2], 0x6700)


def test_internal_auth_leaves_sr_alone():
    host = app()
    host.tx("805C000104", 0x6982)                           # ED balance needs SR >= 1
    assert host.tx("00880000080102030405060708") == crypto.ecb_encrypt(IAK, H("0102030405060708"))
    host.tx("805C000104", 0x6982)
    host.verify()
    host.tx("00880200080102030405060708")
    assert host.tx("805C000104") == bytes(4)


# ====================================================================== PINs
def test_verify_counts_down_locks_and_resets():
    host = app()
    host.verify(H("123457"), sw=0x63C2)
    host.verify(sw=0x9000)
    host.verify(H("123457"), sw=0x63C2)                     # success reset the counter
    host.verify(H("1234"), sw=0x63C1)                       # a prefix is not the PIN
    host.verify(H("123457"), sw=0x63C0)                     # third failure locks: 63C0 (SPEC §6 R12)
    host.verify(sw=0x6983)                                  # only the next attempt answers 6983
    host.card.reset()
    host.select_name(AID)
    host.verify(sw=0x6983)
    host.tx("0020000000"[:8] + "09" + "12" * 9, 0x6700)
    host.tx("0020010003123456", 0x6A86)


def test_verify_bcd_padding_and_omitted_ff():
    host = keys_df()
    host.tx("80D4010008 3AF0EF0133 12345F".replace(" ", ""))        # PIN 12345
    host.tx("80D4010109 3AF0EF0133 1234FFFF".replace(" ", ""))      # PIN 1234 in a 4-byte field
    host.verify(H("12345F"))
    host.verify(H("123450"), sw=0x63C2)
    host.verify(H("1234"), kid=1)                                   # trailing FF omitted
    host.verify(H("1234FF"), kid=1)
    host.verify(H("1234FFFF"), kid=1)
    host.verify(H("1234FF00"), kid=1, sw=0x63C2)
    host.verify(H("12"), kid=1, sw=0x63C1)


def test_change_pin():
    host = app()
    host.tx("805E010006 123456 FF 6543".replace(" ", ""))
    host.verify(sw=0x63C2)
    host.verify(H("6543"))
    host.tx("805E010006 111111 FF 2222".replace(" ", ""), 0x63C2)  # wrong old PIN counts
    host.tx("805E010006 6543 FF 987654".replace(" ", ""))          # success resets, new length
    host.verify(H("987654"))
    host.tx("805E010003 6543FF".replace(" ", ""), 0x6A80)          # no new PIN


def test_reload_pin_d2():
    host = app()
    for _ in range(3):
        host.send("0020000003000000")
    host.verify(sw=0x6983)
    new = H("888888")
    k = crypto.xor(PRK[:8], PRK[8:])
    mac = crypto.mac_alg1(k, new)[:4]                     # IV 0, pad 80.., over the new PIN only
    host.tx(H("805E000007") + new + bytes(4), 0x9302)
    host.verify(sw=0x6983)
    host.tx(H("805E000007") + new + mac)
    host.verify(sw=0x63C2)                                # the old PIN is gone, counter reset
    host.verify(new)
    # a property of the card (docs/sim.md): no challenge in the MAC, so a recorded RELOAD PIN
    # works again later, e.g. after the holder changed the PIN
    host.tx(H("805E010007") + new + b"\xFF" + H("123456"))
    host.verify(new, sw=0x63C2)
    host.tx(H("805E000007") + new + mac)                  # the captured command, replayed
    host.verify(new)


def test_pin_unblock_d2():
    host = app()
    for _ in range(3):
        host.send("0020000003000000")
    host.verify(sw=0x6983)
    chal = host.challenge()
    body = bytes((len(PIN),)) + PIN + b"\x80"                      # LD || PIN || 80 00..
    body += bytes(-len(body) % 8)
    ct = crypto.ecb_encrypt(PUK, body)
    hdr = H("842400000C")
    bad = hdr + ct + bytes(4)
    host.tx(bad, 0x6988)                                         # wrong MAC: 6988 (SPEC §6 R15)
    host.verify(sw=0x6983)
    chal = host.challenge()
    host.tx(hdr + ct + crypto.mac_alg3(PUK, hdr + ct, iv=chal + bytes(4))[:4])
    host.verify()
    host.verify(H("000000"), sw=0x63C2)                          # counter back to 3


def test_pin_unblock_with_new_pin_via_protect():
    host = app()
    chal = host.challenge()
    cmd = crypto.protect(CommandApdu(0x80, 0x24, 0x00, 0x00, H("4321")), PUK, chal, encrypt=True)
    assert cmd.cla == 0x84 and len(cmd.data) == 12
    host.tx(cmd)
    host.verify(H("4321"))
    host.tx("8024000004" + "00" * 4, 0x6982)                    # must be line-protected


def test_pin_unblock_empty_cryptogram_is_6a80():
    host = app()
    host.protected(0x80, 0x24, 0x00, 0x00, b"", PUK, sw=0x6A80)
    host.verify()


@pytest.mark.parametrize("model, replaces", [("fm1208", True), ("fm1208-16ff", False)])
def test_add_of_an_existing_key_replaces_it_on_a_real_card(model, replaces):
    """DENG p.2 (tests/data/traces/deng_purse.trace): a second plaintext add of 3F/02 was in force
    at the next INITIALIZE on a real FM1208; the legacy model refuses it (6A86)."""
    card = SimCard(model=model, rng=Rng(2))
    host = Host(card)
    host.select_mf()
    host.ext_auth(card.model.transport_key)
    host.create(0x3F05, H("380400F0F001FFFF") + b"KEYS")
    host.select_name(b"KEYS")
    host.create(0x0000, H("3F0100") + H("01F0FFFF"))
    host.add_key(0x3F, 0x02, 0xF0, 0xF2, 0x01, 0x02, K16)
    host.add_key(0x3F, 0x02, 0xF0, 0xF2, 0x00, 0x00, K16B, sw=0x9000 if replaces else 0x6A86)
    assert stored(host, 0x3F, 2) == (h("3F F0 F2 00 00") + K16B if replaces else h("3F F0 F2 01 02") + K16)
