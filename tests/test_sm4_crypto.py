"""SM4 purse cryptography (docs/sm4.md): the block cipher pinned by the published GB/T 32907
vectors; session keys, MAC1/MAC2/MAC3/TAC, line protection, diversification and KCV checked
against an independent SM4 written from the standard (tests/sm4_gbt.py), since no published
SM4 purse-level vector exists (PSAM-SM4 §4.2), plus the self-check values of PSAM-SM4 §5.7."""

from __future__ import annotations

import pytest

from citycard import crypto
from citycard.apdu import CommandApdu
from citycard.crypto import pboc
from citycard.errors import InputError
from tests import sm4_gbt as ref

GBT_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
DLK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
DPK = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
DTK = bytes.fromhex("A1B2C3D4E5F60718293A4B5C6D7E8F90")
RANDOM = bytes.fromhex("1A2B3C4D")
TERMINAL = bytes.fromhex("112233445566")
DATE, TIME = bytes.fromhex("20261203"), bytes.fromhex("095000")
SERIAL = bytes.fromhex("00000102")


# ------------------------------------------------------------------ the block cipher (published)
def test_gbt_32907_vector_single_block():
    """GB/T 32907-2016 appendix A example 1 (PSAM-SM4 §4.3)."""
    ct = bytes.fromhex("681EDF34D206965E86B3E94F536E4246")
    assert crypto.ecb_encrypt(GBT_KEY, GBT_KEY, "sm4") == ct
    assert crypto.ecb_decrypt(GBT_KEY, ct, "sm4") == GBT_KEY
    assert ref.encrypt_block(GBT_KEY, GBT_KEY) == ct          # the independent SM4 too


def test_gbt_32907_vector_million_times():
    """Appendix A example 2: 1,000,000 encryptions (citycard's cipher; the slow reference is
    checked on example 1 and against citycard on many blocks below)."""
    enc = crypto.ecb_encrypt
    block = GBT_KEY
    for _ in range(1_000_000):
        block = enc(GBT_KEY, block, "sm4")
    assert block == bytes.fromhex("595298C7C6FD271F0402F804C33D3F66")


@pytest.mark.parametrize("seed", range(8))
def test_reference_agrees_with_library_on_random_blocks(seed):
    import random
    rng = random.Random(seed)
    key, data = rng.randbytes(16), rng.randbytes(48)
    assert crypto.ecb_encrypt(key, data, "sm4") == ref.ecb(key, data)
    assert crypto.ecb_decrypt(key, data, "sm4") == ref.ecb(key, data, decrypt=True)


# ------------------------------------------------------------------ self-check values (§5.7)
def test_self_check_values_of_the_facts():
    """PSAM-SM4 §5.7: computed by the facts' author, not published."""
    f = bytes.fromhex("1122334455667788")
    assert crypto.diversify(GBT_KEY, f, alg="sm4") == bytes.fromhex("7904DC533E8BCA0C93D3C36DC8328866")
    assert pboc.purse_mac(GBT_KEY, bytes.fromhex("841E000004"), "sm4") == bytes.fromhex("42103F60")
    assert crypto.line_mac(GBT_KEY, bytes(4), bytes.fromhex("841E000004"), "sm4") == bytes.fromhex("42103F60")


# ------------------------------------------------------------------ diversification and KCV
def test_sm4_diversification_against_reference():
    f = bytes.fromhex("0000000020260001")
    nf = bytes(b ^ 0xFF for b in f)
    assert crypto.diversify(DPK, b"\x99" * 4 + f, alg="sm4") == ref.encrypt_block(DPK, f + nf)
    two = crypto.diversify(DPK, bytes.fromhex("3100000000000000") + f, levels=2, alg="sm4")
    first = ref.encrypt_block(DPK, bytes.fromhex("3100000000000000CEFFFFFFFFFFFFFF"))
    assert two == ref.encrypt_block(first, f + nf)
    assert two != crypto.diversify(DPK, bytes.fromhex("3100000000000000") + f, levels=2)   # not the 3DES one


def test_sm4_kcv_against_reference():
    assert crypto.kcv(DTK, "sm4") == ref.encrypt_block(DTK, bytes(16))[:3]
    assert crypto.kcv(DTK, "sm4") != crypto.kcv(DTK)


# ------------------------------------------------------------------ session keys
def test_sm4_session_keys_against_reference():
    seslk = pboc.load_session_key(DLK, RANDOM, 0x0102, "sm4")
    assert seslk == ref.encrypt_block(DLK, RANDOM + bytes.fromhex("01028000") + bytes.fromhex("8000000000000000"))
    sespk = pboc.purchase_session_key(DPK, RANDOM, 0x0007, SERIAL, "sm4")
    assert sespk == ref.encrypt_block(DPK, RANDOM + bytes.fromhex("0007") + SERIAL[2:] + bytes.fromhex("8000000000000000"))
    assert len(seslk) == len(sespk) == 16


def test_des_session_key_unchanged_by_the_parameter():
    assert pboc.load_session_key(DLK, RANDOM, 1) == pboc.load_session_key(DLK, RANDOM, 1, "des")
    assert len(pboc.load_session_key(DLK, RANDOM, 1)) == 8


# ------------------------------------------------------------------ MAC1 / MAC2 / TAC
def _u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def test_sm4_load_against_reference():
    c = pboc.load_cryptogram(DLK, DTK, random=RANDOM, counter=3, balance=1000, amount=500, terminal=TERMINAL,
                             date=DATE, time=TIME, alg="sm4")
    ses = ref.encrypt_block(DLK, RANDOM + bytes.fromhex("00038000") + bytes.fromhex("8000000000000000"))
    assert c.session_key == ses
    assert c.mac1 == ref.cbc_mac4(ses, _u32(1000) + _u32(500) + b"\x02" + TERMINAL)
    assert c.mac2 == ref.cbc_mac4(ses, _u32(500) + b"\x02" + TERMINAL + DATE + TIME)
    # the TAC: the whole 16-byte DTK, over new balance ‖ online counter ‖ amount ‖ type ‖ terminal ‖ date ‖ time
    assert c.tac == ref.cbc_mac4(DTK, _u32(1500) + b"\x00\x03" + _u32(500) + b"\x02" + TERMINAL + DATE + TIME)


@pytest.mark.parametrize("ttype,code", [(pboc.TT_EP_PURCHASE, None), (pboc.TT_CAPP_PURCHASE, None),
                                        (pboc.TT_EP_PURCHASE, bytes.fromhex("850102030405060708"))])
def test_sm4_purchase_and_capp_against_reference(ttype, code):
    c = pboc.purchase_cryptogram(DPK, DTK, random=RANDOM, counter=9, terminal_serial=SERIAL, amount=250,
                                 terminal=TERMINAL, date=DATE, time=TIME, ttype=ttype, auth_code=code, alg="sm4")
    ses = ref.encrypt_block(DPK, RANDOM + b"\x00\x09" + SERIAL[2:] + bytes.fromhex("8000000000000000"))
    assert c.session_key == ses
    tail = _u32(250) + bytes((ttype,)) + TERMINAL + DATE + TIME
    assert c.mac1 == ref.cbc_mac4(ses, tail + (code or b""))
    assert c.mac2 == ref.cbc_mac4(ses, _u32(250))
    assert c.tac == ref.cbc_mac4(DTK, _u32(250) + bytes((ttype,)) + TERMINAL + SERIAL + DATE + TIME)


def test_sm4_unload_mac3_against_reference():
    ses = pboc.load_session_key(DLK, RANDOM, 4, "sm4")
    mac3 = pboc.unload_mac3(ses, 700, 4, 300, pboc.TT_UNLOAD, TERMINAL, DATE, TIME, alg="sm4")
    assert mac3 == ref.cbc_mac4(ses, _u32(700) + b"\x00\x04" + _u32(300) + b"\x03" + TERMINAL + DATE + TIME)


def test_sm4_session_key_length_is_checked():
    with pytest.raises(InputError, match="expected 16"):
        pboc.purse_mac(bytes(8), b"x", "sm4")
    with pytest.raises(InputError, match="expected 8"):
        pboc.purse_mac(bytes(16), b"x")
    with pytest.raises(InputError, match="16-byte key"):
        pboc.load_session_key(bytes(8), RANDOM, 0, "sm4")


def test_tac_key_sm4_is_the_whole_dtk():
    assert pboc.tac_key(DTK, "sm4") == DTK
    assert pboc.tac_key(DTK) == crypto.xor(DTK[:8], DTK[8:])


def test_algorithm_ids():
    assert pboc.alg_of_id(0x04) == "sm4"
    assert pboc.alg_of_id(0x00) == pboc.alg_of_id(0x01) == "des"
    assert pboc.alg_of_id(0x02) is None


# ------------------------------------------------------------------ line protection
def test_sm4_line_protection_against_reference():
    """MAC over CLA INS P1 P2 Lc+4 ‖ data, IV = challenge4 ‖ 12 zeros (PSAM-SM4 §4.1, TY's
    sm4_cal_mac for 84 D4); data enciphered as LD ‖ data ‖ 80 00.. in SM4-ECB."""
    chal = bytes.fromhex("0A0B0C0D")
    record = bytes.fromhex("3EF0F00004") + DPK          # an SM4 purchase-key record, 21 bytes
    cmd = CommandApdu(0x80, 0xD4, 0x01, 0x01, record)
    prot = crypto.protect(cmd, GBT_KEY, chal, encrypt=True, alg="sm4")
    ct = ref.ecb(GBT_KEY, ref.pad80(bytes((len(record),)) + record))
    assert len(ct) == 32
    assert prot.cla == 0x84 and prot.data[:-4] == ct
    assert prot.data[-4:] == ref.cbc_mac4(GBT_KEY, bytes.fromhex("84D4010124") + ct, chal + bytes(12))
    assert crypto.check_protected(prot, GBT_KEY, chal, "sm4") == ct
    assert crypto.decipher(GBT_KEY, ct, "sm4") == record
    with pytest.raises(InputError, match="MAC mismatch"):
        crypto.check_protected(prot, GBT_KEY, bytes(4), "sm4")


# ------------------------------------------------------------------ citycard calc --alg sm4
def test_calc_load_and_purchase_with_sm4(run_cli):
    import json
    common = ["--dtk", DTK.hex(), "--random", RANDOM.hex(), "--counter", "0003", "--amount", "000001F4",
              "--terminal", TERMINAL.hex(), "--date", DATE.hex(), "--time", TIME.hex(), "--alg", "sm4", "--json"]
    r = run_cli("calc", "load", "--dlk", DLK.hex(), "--balance", "000003E8", *common)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    ses = ref.encrypt_block(DLK, RANDOM + bytes.fromhex("00038000") + bytes.fromhex("8000000000000000"))
    assert out["session_key"] == ses.hex().upper()
    assert out["mac1"] == ref.cbc_mac4(ses, _u32(1000) + _u32(500) + b"\x02" + TERMINAL).hex().upper()
    assert out["tac"] == ref.cbc_mac4(DTK, _u32(1500) + b"\x00\x03" + _u32(500) + b"\x02" + TERMINAL
                                      + DATE + TIME).hex().upper()
    r = run_cli("calc", "purchase", "--dpk", DPK.hex(), "--terminal-serial", SERIAL.hex(), *common)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    ses = ref.encrypt_block(DPK, RANDOM + b"\x00\x03" + SERIAL[2:] + bytes.fromhex("8000000000000000"))
    assert out["mac2"] == ref.cbc_mac4(ses, _u32(500)).hex().upper()
    # a DES-length key with --alg sm4: one line naming the key
    r = run_cli("calc", "load", "--dlk", DLK[:8].hex(), "--balance", "00", *common)
    assert r.exit_code != 0 and "purse key: SM4 needs a 16-byte key" in r.stderr


def test_calc_secure_apdu_with_sm4(run_cli):
    chal = bytes.fromhex("0A0B0C0D")
    r = run_cli("calc", "secure-apdu", "-k", GBT_KEY.hex(), "--challenge", chal.hex(), "--apdu", "801E0000",
                "--alg", "sm4", "--json")
    assert r.exit_code == 0, r.output
    import json
    apdu = bytes.fromhex(json.loads(r.stdout)["apdu"])
    assert apdu == bytes.fromhex("841E000004") + ref.cbc_mac4(GBT_KEY, bytes.fromhex("841E000004"), chal + bytes(12))
