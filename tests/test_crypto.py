"""Every published vector of SPEC.md §4, through the library and through `citycard calc`.

Line protection has no published vector, so it is pinned against an independent
computation written here directly on ``cryptography`` (not on citycard.crypto).
"""

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from citycard import crypto
from citycard.apdu import CommandApdu
from citycard.crypto import pboc
from citycard.errors import InputError

H = bytes.fromhex
RC_KEY = H("0123456789ABCDEFFEDCBA9876543210")
NOW_ALL = b"Now is the time for all "
NOW_IT = b"Now is the time for it"


# ------------------------------------------------------------------- independent reference
def ref_des(key8: bytes, block: bytes, decrypt: bool = False) -> bytes:
    c = Cipher(TripleDES(key8 * 3), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(block) + op.finalize()


def ref_retail_mac(key16: bytes, data: bytes, iv: bytes) -> bytes:
    data = data + b"\x80" + bytes(-(len(data) + 1) % 8)
    h = iv
    for i in range(0, len(data), 8):
        h = ref_des(key16[:8], bytes(a ^ b for a, b in zip(h, data[i:i + 8])))
    return ref_des(key16[:8], ref_des(key16[8:], h, decrypt=True))


# ------------------------------------------------------------------- SPEC §4 vectors
def test_v1_external_auth_des():
    assert crypto.ecb_encrypt(H("0102030405060708"), H("BB83BFF300000000")) == H("74B0047DD681D96C")


def test_v2_internal_auth_des_and_mac():
    assert crypto.ecb_encrypt(H("1122334455667788"), H("0102030405060708")) == H("178F59F8578E0D3F")
    assert crypto.iso9797_mac(H("1122334455667788"), H("0102030405060708"), length=4) == H("A82A8CEB")


@pytest.mark.parametrize("key, data, alg, pad, expected", [
    (RC_KEY[:8], NOW_ALL, 1, 1, "70A30640CC76DD8B"),
    (RC_KEY, NOW_ALL, 3, 1, "A1C72E74EA3FA9B6"),
    (RC_KEY, NOW_ALL, 3, 2, "E9086230CA3BE796"),
    (RC_KEY, NOW_IT, 3, 1, "2E2B1428CC78254F"),
])
def test_v3_iso9797(key, data, alg, pad, expected):
    assert crypto.iso9797_mac(key, data, alg=alg, pad_method=pad, length=8) == H(expected)


ROBUR = dict(dlk=H("3F" * 8 + "1122334455667788"), dtk=H("34" * 8 + "1122334455667788"),
             random=H("4E066548"), counter=0, balance=0, amount=0x10, terminal=H("666666666666"),
             date=H("20240411"), time=H("212121"))


def test_v4_load():
    v = dict(ROBUR)
    c = pboc.load_cryptogram(v.pop("dlk"), v.pop("dtk"), **v)
    assert c.session_key == H("3B75C79CFA8C2327")
    assert c.mac1 == H("0D39ADBB")
    assert c.mac2 == H("097E98FE")
    assert c.tac == H("A802863E")
    # the pieces, as the card computes them
    ses = pboc.load_session_key(ROBUR["dlk"], ROBUR["random"], 0)
    assert pboc.load_mac1(ses, 0, 0x10, 0x02, ROBUR["terminal"]) == H("0D39ADBB")
    assert pboc.load_tac(ROBUR["dtk"], 0x10, 0, 0x10, 0x02, ROBUR["terminal"], ROBUR["date"],
                         ROBUR["time"]) == H("A802863E")


DENG = dict(dpk=H("00112233445566778899AABBCCDDEEFF"), dtk=H("00112233445566778899AABBCCDDEEFF"),
            random=H("584633C9"), counter=0, terminal_serial=H("00000000"), amount=1,
            terminal=H("001122334455"), date=H("20161216"), time=H("134600"))


def test_v5_purchase():
    v = dict(DENG)
    c = pboc.purchase_cryptogram(v.pop("dpk"), v.pop("dtk"), **v)
    assert (c.session_key, c.mac1, c.mac2, c.tac) == (
        H("C08346DF9F1D457A"), H("D45737C5"), H("66B54A6B"), H("8AF270DC"))


def test_purchase_auth_code_changes_only_mac1():
    v = dict(DENG)
    plain = pboc.purchase_cryptogram(v.pop("dpk"), v.pop("dtk"), **v)
    v = dict(DENG)
    code = H("8588D32B7688D32B76")
    with_code = pboc.purchase_cryptogram(v.pop("dpk"), v.pop("dtk"), auth_code=code, **v)
    assert with_code.mac1 != plain.mac1
    assert (with_code.mac2, with_code.tac) == (plain.mac2, plain.tac)
    ses = plain.session_key
    expected = crypto.mac_alg1(ses, H("00000001") + b"\x06" + DENG["terminal"] + DENG["date"]
                               + DENG["time"] + code)[:4]
    assert with_code.mac1 == expected


def test_v9_diversify():
    assert crypto.diversify(H("00112233445566778899AABBCCDDEEFF"), H("1122334455667788")) == \
        H("496BD7A3513644533100B54E71196528")
    # rightmost 8 bytes of a longer factor (a 10-byte application serial number)
    assert crypto.diversify(H("00112233445566778899AABBCCDDEEFF"), H("AAAA1122334455667788")) == \
        H("496BD7A3513644533100B54E71196528")


def test_multilevel_diversify_is_iterated():
    mk = H("00112233445566778899AABBCCDDEEFF")
    f1, f2 = H("1122334455667788"), H("0102030405060708")
    two = crypto.diversify(mk, f1 + f2, levels=2)
    assert two == crypto.diversify(H("496BD7A3513644533100B54E71196528"), f2)
    with pytest.raises(InputError, match="2 levels need 16"):
        crypto.diversify(mk, f1, levels=2)


def test_kcv():
    assert crypto.kcv(H("1122334455667788")) == ref_des(H("1122334455667788"), bytes(8))[:3]
    # 16 x FF, the factory transport key
    assert crypto.kcv(H("FF" * 16)) == ref_des(H("FF" * 8), bytes(8))[:3]


def test_sm4_known_answer():
    # GB/T 32907-2016 Appendix A example 1
    key = H("0123456789ABCDEFFEDCBA9876543210")
    assert crypto.ecb_encrypt(key, key, "sm4") == H("681EDF34D206965E86B3E94F536E4246")
    assert crypto.ecb_decrypt(key, H("681EDF34D206965E86B3E94F536E4246"), "sm4") == key
    assert len(crypto.diversify(key, H("1122334455667788"), alg="sm4")) == 16


def test_3key_3des_and_cbc():
    k3 = H("0123456789ABCDEF23456789ABCDEF01456789ABCDEF0123")
    block = H("5468652071756663")
    c = Cipher(TripleDES(k3), modes.ECB()).encryptor()
    assert crypto.ecb_encrypt(k3, block) == c.update(block) + c.finalize()
    iv = H("0001020304050607")
    ct = crypto.cbc_encrypt(RC_KEY, NOW_ALL, iv)
    assert crypto.cbc_decrypt(RC_KEY, ct, iv) == NOW_ALL


# ------------------------------------------------------------------- line protection
def test_line_protection_des_matches_reference():
    key, chal = H("0102030405060708"), H("11223344")
    cmd = CommandApdu(0x00, 0xD6, 0x95, 0x00, H("0102030405"))
    prot = crypto.protect(cmd, key, chal)
    mac_input = H("04D6950009" "0102030405") + b"\x80" + bytes(5)
    # reference CBC-MAC by hand: IV = challenge || 00000000
    h = chal + bytes(4)
    for i in range(0, len(mac_input), 8):
        h = ref_des(key, bytes(a ^ b for a, b in zip(h, mac_input[i:i + 8])))
    assert prot.encode() == H("04D6950009") + H("0102030405") + h[:4]


def test_line_protection_3des_retail_mac_and_no_data():
    key, chal = RC_KEY, H("A1B2C3D4")
    cmd = CommandApdu(0x84, 0x16, 0x00, 0x00)   # CARD BLOCK: MAC only
    prot = crypto.protect(cmd, key, chal)
    assert prot.encode()[:5] == H("8416000004")
    assert prot.data == ref_retail_mac(key, H("8416000004"), chal + bytes(4))[:4]
    assert crypto.check_protected(prot, key, chal) == b""
    with pytest.raises(InputError, match="MAC mismatch"):
        crypto.check_protected(prot, key, H("A1B2C3D5"))


def test_enciphered_write_key_form():
    master = RC_KEY
    record = H("39F0F0AA33") + bytes(range(16))
    cmd = CommandApdu(0x80, 0xD4, 0x01, 0x00, record, sensitive=True)
    chal = H("01020304")
    prot = crypto.protect(cmd, master, chal, encrypt=True)
    # LD || record (22 bytes) + 80 + pad -> 24 bytes ciphertext, + 4 MAC
    assert prot.cla == 0x84 and len(prot.data) == 24 + 4
    plain = bytes((len(record),)) + record + b"\x80" + bytes(1)
    c = Cipher(TripleDES(master + master[:8]), modes.ECB()).encryptor()
    assert prot.data[:24] == c.update(plain) + c.finalize()
    assert prot.data[24:] == ref_retail_mac(master, H("84D401001C") + prot.data[:24], chal + bytes(4))[:4]
    assert crypto.decipher(master, prot.data[:24]) == record
    assert prot.sensitive


def test_encipher_aligned_data_gains_a_block():
    # LD || 7 bytes = 8 bytes: the 80 is still added (SPEC §1.6, method 2)
    assert len(crypto.encipher(H("0102030405060708"), bytes(7))) == 16


def test_bad_inputs():
    with pytest.raises(InputError, match="8, 16 or 24-byte key"):
        crypto.ecb_encrypt(bytes(7), bytes(8))
    with pytest.raises(InputError, match="not a multiple"):
        crypto.ecb_encrypt(bytes(8), bytes(7))
    with pytest.raises(InputError, match="16-byte key"):
        crypto.iso9797_mac(bytes(8), b"x", alg=3)
    with pytest.raises(InputError, match="random: 3 bytes"):
        pboc.load_session_key(bytes(16), bytes(3), 0)
    with pytest.raises(InputError, match="does not fit"):
        pboc.u32(1 << 32)


# ------------------------------------------------------------------- the same through the CLI
def calc_json(run_cli, *args):
    r = run_cli("calc", *args, "--json")
    assert r.exit_code == 0, r.stderr
    return r.json()


def test_cli_vectors(run_cli):
    assert calc_json(run_cli, "des", "--key", "0102030405060708", "--data", "BB83BFF300000000") == \
        {"result": "74B0047DD681D96C"}
    assert calc_json(run_cli, "des", "--key", "0102030405060708", "--data", "74B0047DD681D96C",
                     "--decrypt") == {"result": "BB83BFF300000000"}
    assert calc_json(run_cli, "des", "--key", "1122334455667788", "--data", "0102030405060708") == \
        {"result": "178F59F8578E0D3F"}
    assert calc_json(run_cli, "mac", "--key", "1122334455667788", "--data", "0102030405060708") == \
        {"mac": "A82A8CEB"}
    data = NOW_ALL.hex()
    assert calc_json(run_cli, "mac", "--key", RC_KEY[:8].hex(), "--data", data, "--alg", "1", "--pad", "1",
                     "--length", "8") == {"mac": "70A30640CC76DD8B"}
    assert calc_json(run_cli, "mac", "--key", RC_KEY.hex(), "--data", data, "--alg", "3", "--pad", "1",
                     "--length", "8") == {"mac": "A1C72E74EA3FA9B6"}
    assert calc_json(run_cli, "mac", "--key", RC_KEY.hex(), "--data", data, "--alg", "3", "--pad", "2",
                     "--length", "8") == {"mac": "E9086230CA3BE796"}
    assert calc_json(run_cli, "mac", "--key", RC_KEY.hex(), "--data", NOW_IT.hex(), "--alg", "3", "--pad",
                     "1", "--length", "8") == {"mac": "2E2B1428CC78254F"}
    assert calc_json(run_cli, "load", "--dlk", "3F3F3F3F3F3F3F3F1122334455667788",
                     "--dtk", "34343434343434341122334455667788", "--random", "4E066548", "--counter", "0000",
                     "--balance", "00000000", "--amount", "00000010", "--terminal", "666666666666",
                     "--date", "20240411", "--time", "212121") == \
        {"session_key": "3B75C79CFA8C2327", "mac1": "0D39ADBB", "mac2": "097E98FE", "tac": "A802863E"}
    assert calc_json(run_cli, "purchase", "--dpk", "00112233445566778899AABBCCDDEEFF",
                     "--dtk", "00112233445566778899AABBCCDDEEFF", "--random", "584633C9", "--counter", "0000",
                     "--terminal-serial", "00000000", "--amount", "00000001", "--terminal", "001122334455",
                     "--date", "20161216", "--time", "134600", "--type", "06") == \
        {"session_key": "C08346DF9F1D457A", "mac1": "D45737C5", "mac2": "66B54A6B", "tac": "8AF270DC"}
    assert calc_json(run_cli, "diversify", "--key", "00112233445566778899AABBCCDDEEFF",
                     "--data", "1122334455667788") == {"key": "496BD7A3513644533100B54E71196528"}
    assert calc_json(run_cli, "kcv", "--key", "1122334455667788") == {"kcv": ref_des(H("1122334455667788"), bytes(8))[:3].hex().upper()}


def test_cli_secure_apdu_and_text_output(run_cli):
    out = calc_json(run_cli, "secure-apdu", "--key", RC_KEY.hex(), "--challenge", "A1B2C3D4",
                    "--apdu", "84160000")
    expected = crypto.protect(CommandApdu(0x84, 0x16, 0, 0), RC_KEY, H("A1B2C3D4")).hex()
    assert out == {"apdu": expected}
    enc = calc_json(run_cli, "secure-apdu", "--key", "0102030405060708", "--challenge", "11223344",
                    "--apdu", "00D6950003 010203", "--encrypt")
    assert enc["apdu"].startswith("04D695000C")   # 8 bytes ciphertext + 4 MAC
    r = run_cli("calc", "kcv", "--key", "1122334455667788")
    assert r.exit_code == 0 and r.stdout.split() == ["kcv", ref_des(H("1122334455667788"), bytes(8))[:3].hex().upper()]


@pytest.mark.parametrize("args, message", [
    (["des", "--key", "01020304050607", "--data", "00" * 8], "--key: 7 bytes, expected 8"),
    (["des", "--key", "0102030405060708", "--data", "0011223"], "--data: odd number of hex digits (7)"),
    (["3des", "--key", "0102030405060708", "--data", "00" * 8], "--key: 8 bytes, expected 16 or 24"),
    (["mac", "--key", "zz", "--data", "00"], "--key: 'z' at position 1 is not a hex digit"),
    (["load", "--dlk", "00" * 16, "--dtk", "00" * 16, "--random", "00" * 3, "--counter", "0", "--balance",
      "0", "--amount", "1", "--terminal", "00" * 6, "--date", "20240101", "--time", "000000"],
     "--random: 3 bytes, expected 4"),
    (["secure-apdu", "--key", "00" * 8, "--challenge", "00" * 4, "--apdu", "00D6"],
     "--apdu: 2 bytes, a command APDU needs at least 4"),
])
def test_cli_bad_input_one_line_exit_2(run_cli, args, message):
    r = run_cli("calc", *args)
    assert r.exit_code == 2
    assert r.stderr.strip().count("\n") == 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
