"""PSAM command builders (citycard.commands.psam), pinned by the bytes PSAM-SM4.md gives.

Published: the INIT SAM FOR PURCHASE input of MZT's log (§2.4), the reads ``00 B0 96 00 06``,
``00 B0 97 00 19``, ``00 B0 99 00 04`` (§2.1), CIPHER DATA ``80 FA 05 00 10`` over
R ‖ 00000000 ‖ 841E000004800000 with CSB's challenge (§3.2), INIT FOR DESCRYPT ``80 1A 08 01``
(FNT, §3.4) and ``80 1A 25 01`` ‖ serial (MZT, §3.2).  No published bytes exist for
CREDIT SAM FOR PURCHASE, AUTHENTICATION MESSAGE or the EF0015 read: those are pinned by the
layout PSAM-SM4.md §2.1 states (header ‖ Lc ‖ data), written out here byte by byte.
"""

from __future__ import annotations

import pytest

from citycard.commands import psam
from citycard.errors import InputError
from citycard.keytypes import PsamKeyUsage

H = bytes.fromhex


def test_init_sam_for_purchase_mzt_input():
    # MZT: 4ACF30AF 0005 00000001 06 20110402154422 01 00 0000000090002030
    cmd = psam.init_sam_for_purchase(H("4ACF30AF"), 5, 1, 0x06, H("20110402"), H("154422"), 1, 0,
                                     [H("0000000090002030")])
    assert cmd.encode() == H("807000001C" "4ACF30AF" "0005" "00000001" "06" "20110402" "154422" "01" "00"
                             "0000000090002030" "08")


def test_init_sam_for_purchase_two_and_three_factors():
    # MOHURD: serial 8 ‖ city 2 ‖ FF0000000000 (§2.2): Lc = 14 + 8n
    cmd = psam.init_sam_for_purchase(bytes(4), 0, 0, 0x09, bytes(4), bytes(3), 1, 0,
                                     [H("3301000000000001"), H("4420FF0000000000")])
    assert cmd.encode()[:5] == H("8070000024") and cmd.encode()[-17:-1] == H("33010000000000014420FF0000000000")
    assert psam.init_sam_for_purchase(bytes(4), 0, 0, 6, bytes(4), bytes(3), 1, 0, [bytes(8)] * 3).encode()[4] == 0x2C


@pytest.mark.parametrize("kw, msg", [
    ({"factors": []}, "1..3"),
    ({"factors": [bytes(8)] * 4}, "1..3"),
    ({"factors": [bytes(7)]}, "factor 1: 7 bytes"),
    ({"random": bytes(3)}, "card random"),
    ({"counter": 0x10000}, "counter"),
    ({"amount": -1}, "amount"),
    ({"key_version": 256}, "key version"),
])
def test_init_sam_for_purchase_refuses_bad_input(kw, msg):
    args = dict(random=bytes(4), counter=0, amount=1, transaction_type=6, date=bytes(4), time=bytes(3),
                key_version=1, algorithm=0, factors=[bytes(8)])
    args.update(kw)
    with pytest.raises(InputError, match=msg):
        psam.init_sam_for_purchase(**args)


def test_credit_sam_and_authentication_message():
    assert psam.credit_sam_for_purchase(H("11223344")).encode() == H("807200000411223344")
    code = H("85" "0102030405060708")
    assert psam.authentication_message(code).encode() == H("80CA000009") + code   # no Le (JSB)
    with pytest.raises(InputError):
        psam.credit_sam_for_purchase(bytes(3))


def test_init_for_descrypt():
    assert psam.init_for_descrypt(0x08, 0x01).encode() == H("801A0801")                          # FNT
    assert psam.init_for_descrypt(0x25, 0x01, [H("3301000000000001")]).encode() == \
        H("801A250108" "3301000000000001")                                                          # MZT
    assert psam.init_for_descrypt(0x45, 0x02, [bytes(8), H("4420FF0000000000")]).encode()[4] == 0x10
    with pytest.raises(InputError):
        psam.init_for_descrypt(0x25, 1, [bytes(8)] * 4)


def test_cipher_data_block_mac_csb():
    # MZT/CSB: 80 FA 05 00 10 ‖ R ‖ 00000000 ‖ 841E000004800000 (R = CSB's challenge 1EA2B2E6)
    cmd = psam.cipher_data(psam.CipherMode.MAC_ONLY, H("1EA2B2E6" "00000000" "841E000004800000"))
    assert cmd.encode() == H("80FA050010" "1EA2B2E600000000841E000004800000" "04")
    # FNT replacement: 80 FA 00 00 18 (encrypt, 24 bytes) → 24 bytes of ciphertext
    assert psam.cipher_data(0x00, bytes(0x18)).encode() == H("80FA000018") + bytes(0x18) + H("18")
    assert psam.cipher_data(0x00, bytes(5)).ne == 8                  # the PSAM pads the last block
    assert psam.cipher_data(0x07, bytes(16)).ne is None              # a chain's first part: no answer data
    with pytest.raises(InputError, match="IV"):
        psam.cipher_data(0x05, bytes(4))
    with pytest.raises(ValueError):
        psam.cipher_data(0x04, bytes(8))


def test_reads():
    assert psam.read_terminal_number().encode() == H("00B0960006")    # FNT, MZT, KSY, KSD
    assert psam.read_issuer_info().encode() == H("00B0970019")        # MZT
    assert psam.read_ttsn().encode() == H("00B0990004")               # §2.1
    assert psam.read_serial().encode() == H("00B095000E")             # EF0015, 14 bytes (§1.1)


def test_answers_and_usage_bytes():
    a = psam.SamPurchaseInit.parse(H("00000102" "A1B2C3D4"))
    assert (a.ttsn, a.ttsn_number, a.mac1) == (H("00000102"), 0x102, H("A1B2C3D4"))
    with pytest.raises(InputError):
        psam.SamPurchaseInit.parse(bytes(7))
    info = psam.IssuerInfo.parse(H("01" "0000000000000001" "0000000000000001" "20111222" "20161220"))  # MZT
    assert info.key_index == 1 and info.expiry_date == H("20161220")
    # PSAMB: 22/42/62 purchase with 1/2/3 levels; MZT: 25/45 maintenance; KSY/CSA: 26, 27, 28
    assert [psam.usage_byte(PsamKeyUsage.PURCHASE, n) for n in (1, 2, 3)] == [0x22, 0x42, 0x62]
    assert [PsamKeyUsage.MAINTENANCE.usage_byte(n) for n in (1, 2)] == [0x25, 0x45]
    assert [psam.usage_byte(u, 1) for u in (PsamKeyUsage.MAC, PsamKeyUsage.ENCRYPT, PsamKeyUsage.MAC_ENCRYPT)] == \
        [0x26, 0x27, 0x28]
    assert psam.split_usage(0x45) == (0x05, 2)


def test_line_mac_input_and_protected_block_csb():
    """CSB (PSAM-SM4.md §3.2): challenge 1EA2B2E6, APPLICATION BLOCK → the PSAM's data
    1EA2B2E6 00000000 841E000004 800000, and the card command 841E000004 A86CC6A8."""
    from citycard.commands import fmcos
    block = fmcos.app_block()
    assert psam.line_mac_input(block, H("1EA2B2E6")) == H("1EA2B2E600000000841E000004800000")
    assert psam.with_line_mac(block, H("A86CC6A8")).encode() == H("841E000004A86CC6A8")
    assert psam.line_mac_input(fmcos.app_block(True), H("1EA2B2E6")) == H("1EA2B2E600000000841E000104800000")
    with pytest.raises(InputError):
        psam.line_mac_input(block, bytes(3))
