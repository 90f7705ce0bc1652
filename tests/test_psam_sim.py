"""The simulated PSAM (model ``psam``, citycard/sim/psam.py), personalized by the perso engine
from profiles/psam.toml.  Every expected MAC is computed in tests/psamhost.py from the
formulas (PSAM-SM4.md §2.3, SPEC §2.2/§2.4) with ``cryptography``, not by citycard's crypto;
the one published PSAM MAC (CSB's APPLICATION BLOCK, PSAM-SM4.md §3.2) pins CIPHER DATA."""

from __future__ import annotations

import copy

import pytest

from citycard.commands import iso, psam, walk
from citycard.sim import PowerLoss, SimCard, image
from citycard.sim.psam import SimPsam
from tests.psamhost import (DPK_MASTER, PSAM_TERMINAL, H, cbc, des3, div, keys, pad80, psam_card, purse_mac,
                            retail_mac, session)

FACTOR = H("3301000000000001")
R, CTR, AMOUNT, DATE, TIME = H("11223344"), 7, 250, H("20261203"), H("101500")


def send(card: SimCard, apdu: bytes) -> tuple[bytes, int]:
    r = card.process(apdu)
    return r[:-2], int.from_bytes(r[-2:], "big")


def in_adf(card: SimCard) -> SimCard:
    card.power_on()
    assert send(card, iso.select_fid(0x1001).encode())[1] == 0x9000
    return card


def init(card: SimCard, *, factors=(FACTOR,), version=1, algorithm=0, amount=AMOUNT) -> tuple[bytes, int]:
    cmd = psam.init_sam_for_purchase(R, CTR, amount, 0x06, DATE, TIME, version, algorithm, list(factors))
    return send(card, cmd.encode())


def expected(ttsn: int, factor: bytes = FACTOR, amount: int = AMOUNT) -> tuple[bytes, bytes]:
    """SESPK = 3DES(DPK, R ‖ counter ‖ TTSN[2..3]); MAC1 over amount ‖ type ‖ EF0016 ‖ date ‖ time."""
    ses = des3(div(DPK_MASTER, factor), R + CTR.to_bytes(2, "big") + ttsn.to_bytes(4, "big")[2:])
    return ses, purse_mac(ses, amount.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME)


def add_keys(card: SimCard, *records: tuple[int, bytes]) -> None:
    """Add PSAM keys to the ADF after EXTERNAL AUTHENTICATE with its master (demo psam/app-master)."""
    s = session(card)
    s.send(iso.select_fid(0x1001), expect=0x9000)
    master = keys().derive("psam", "app-master", walk.diversification_factor("01000000000000000001"))
    assert walk.external_authenticate(s, 0, master).sw == 0x9000
    from citycard.commands import fmcos
    for kid, record in records:
        s.send(fmcos.write_key(kid, record), expect=0x9000)


def test_psam_model_is_personalized_by_the_engine():
    card = psam_card()
    assert isinstance(card, SimPsam) and card.model.name == "psam"
    card.power_on()
    assert send(card, psam.read_terminal_number().encode()) == (PSAM_TERMINAL, 0x9000)
    assert send(card, psam.read_serial().encode())[0] == H("01000000000000000001" "01" "01" "0000")
    in_adf(card)
    assert send(card, psam.read_ttsn().encode()) == (H("00000001"), 0x9000)
    info = psam.IssuerInfo.parse(send(card, psam.read_issuer_info().encode())[0])
    assert info.key_index == 0 and info.issuer_id == H("3301000000000000")
    adf = card.mf.children[0x1001]
    usages = sorted(k.ktype for k in adf.keyfile.keys.values())
    assert usages == [0x22, 0x25, 0x39]       # purchase master 1 level, maintenance 1 level, ADF master
    purchase = next(k for k in adf.keyfile.keys.values() if k.ktype == 0x22)
    assert purchase.value == DPK_MASTER and purchase.kid == 1    # the master itself, index = card key version


def test_init_sam_for_purchase_mac1_ttsn_and_credit():
    card = in_adf(psam_card())
    data, sw = init(card)
    ses, mac1 = expected(1)
    assert sw == 0x9000 and data == H("00000001") + mac1
    mac2 = purse_mac(ses, AMOUNT.to_bytes(4, "big"))
    assert send(card, psam.credit_sam_for_purchase(bytes(4)).encode())[1] == 0x9302   # wrong MAC2
    assert send(card, psam.credit_sam_for_purchase(mac2).encode())[1] == 0x6901       # one check per INIT
    data, sw = init(card)
    ses, mac1 = expected(2)
    assert data == H("00000002") + mac1                       # a fresh TTSN each time
    assert send(card, psam.credit_sam_for_purchase(purse_mac(ses, AMOUNT.to_bytes(4, "big"))).encode()) == \
        (b"", 0x9000)
    assert send(card, psam.read_ttsn().encode())[0] == H("00000003")   # EF0019: the next TTSN


def test_init_sam_refusals():
    card = in_adf(psam_card())
    assert init(card, version=2)[1] == 0x9403                 # no purchase key of that version (PSAMB)
    assert init(card, factors=(FACTOR, FACTOR))[1] == 0x6700   # usage 22: one factor
    assert init(card, algorithm=0x04)[1] == 0x6A80            # 00 3DES, 01 DES only
    assert send(card, H("807000000A") + bytes(10))[1] == 0x6700
    assert send(card, psam.read_ttsn().encode())[0] == H("00000001")   # no refusal spent a TTSN
    card.power_on()                                            # in the MF: no purchase key
    assert init(card)[1] == 0x9403
    # the card's purse commands are not a PSAM's
    assert send(card, H("805C000204"))[1] == 0x6D00


def test_mohurd_code_joins_mac1():
    card = in_adf(psam_card())
    code = H("85" "0102030405060708")
    assert send(card, psam.authentication_message(H("84") + code[1:]).encode())[1] == 0x6300
    assert send(card, psam.authentication_message(code).encode())[1] == 0x9000   # right before the INIT
    data, _ = init(card)
    ses = des3(div(DPK_MASTER, FACTOR), R + CTR.to_bytes(2, "big") + H("0001"))
    assert data[4:] == purse_mac(ses, AMOUNT.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME + code)
    assert init(card)[0][4:] == expected(2)[1]                 # the code joins the next MAC1 only


def test_two_level_purchase_master_applies_the_last_factor_first():
    card = psam_card()
    master2 = H("0123456789ABCDEFFEDCBA9876543210")
    add_keys(card, (2, bytes((0x42, 0xF0, 0xEF, 0x02, 0x00)) + master2))
    in_adf(card)
    city = H("4420FF0000000000")
    data, sw = init(card, factors=(FACTOR, city), version=2)
    dpk = div(div(master2, city), FACTOR)                     # decision 2: DIV(DIV(MK, f2), f1)
    ses = des3(dpk, R + CTR.to_bytes(2, "big") + H("0001"))
    assert sw == 0x9000 and data[4:] == purse_mac(ses, AMOUNT.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME)


def test_cipher_data_mac_of_application_block_csb_vector():
    """CSB (PSAM-SM4.md §3.2): DABK 6474..., challenge 1EA2B2E6: MAC of 841E000004 = A86CC6A8."""
    card = psam_card()
    dabk = H("6474215EF549707831BB8DB9895FD48A")
    add_keys(card, (2, bytes((0x05, 0xF0, 0xEF, 0x01, 0x00)) + dabk))   # maintenance, 0 levels
    in_adf(card)
    assert send(card, psam.init_for_descrypt(0x05, 0x02).encode()) == (b"", 0x9000)
    iv = H("1EA2B2E6") + bytes(4)
    assert send(card, psam.cipher_data(0x05, iv + H("841E000004800000")).encode()) == (H("A86CC6A8"), 0x9000)
    # decision 1: an incomplete last block is padded by the PSAM (CSA sends unpadded data)
    assert send(card, psam.cipher_data(0x05, iv + H("841E000004")).encode()) == (H("A86CC6A8"), 0x9000)


def test_cipher_data_diversified_maintenance_key_chain_and_encryption():
    card = psam_card()
    enc_master = H("27" * 16)
    add_keys(card, (1, bytes((0x27, 0xF0, 0xEF, 0x01, 0x00)) + enc_master))
    in_adf(card)
    # the profile's maintenance master (usage 25, the cards' DAMK master), 1 level: the card's DAMK
    from tests.psamhost import DAMK_MASTER
    damk = div(DAMK_MASTER, FACTOR)
    iv, data = H("0102030405060708"), bytes(range(20))
    assert send(card, psam.init_for_descrypt(0x25, 0x01, [FACTOR]).encode())[1] == 0x9000
    one = send(card, psam.cipher_data(0x05, iv + data).encode())
    assert one == (retail_mac(damk, pad80(data), iv), 0x9000)
    # the same MAC in a chain: first (IV ‖ 8), next (8), last (4, padded by the PSAM)
    assert send(card, psam.cipher_data(0x07, iv + data[:8]).encode()) == (b"", 0x9000)
    assert send(card, psam.cipher_data(0x03, data[8:16]).encode()) == (b"", 0x9000)
    assert send(card, psam.cipher_data(0x01, data[16:]).encode()) == one
    assert send(card, psam.cipher_data(0x01, data[16:]).encode())[1] == 0x6985   # the chain is closed
    assert send(card, psam.cipher_data(0x00, data).encode())[1] == 0x6985        # a MAC key does not encrypt
    # an encryption key (usage 27, 1 level): 3DES-ECB under DIV(K, F), last block padded
    assert send(card, psam.init_for_descrypt(0x27, 0x01, [FACTOR]).encode())[1] == 0x9000
    assert send(card, psam.cipher_data(0x00, data).encode()) == (des3(div(enc_master, FACTOR), pad80(data)), 0x9000)
    assert send(card, psam.cipher_data(0x05, iv + data).encode())[1] == 0x6985
    assert send(card, psam.init_for_descrypt(0x22, 0x01, [FACTOR]).encode())[1] == 0x6985  # no MAC with DPK
    assert send(card, psam.init_for_descrypt(0x26, 0x01, [FACTOR]).encode())[1] == 0x6A88  # no such key
    assert send(card, psam.init_for_descrypt(0x25, 0x01).encode())[1] == 0x6700           # 1 level: 1 factor


def test_ttsn_never_repeats_over_power_loss():
    """INIT SAM FOR PURCHASE torn after every write step: the PSAM is left exactly before or
    after (whole image), and no TTSN it ever answered comes back."""
    base = in_adf(psam_card())
    ref = copy.deepcopy(base)
    s0 = ref.nvm.steps
    init(ref)
    steps = ref.nvm.steps - s0
    before, after = image.to_dict(base), image.to_dict(ref)
    assert steps >= 2 and before != after
    for n in range(1, steps + 1):
        card = copy.deepcopy(base)
        card.nvm.tear_after = n
        with pytest.raises(PowerLoss):
            init(card)
        card.power_on()
        state = image.to_dict(card)
        assert state == (after if n >= steps else before), f"tear after step {n} of {steps}"
        in_adf(card)
        data, sw = init(card)
        # torn at the commit point: TTSN 1 was spent (answer lost) and the next is 2; else 1 again
        # is fine: it never left the PSAM
        assert sw == 0x9000 and int.from_bytes(data[:4], "big") == (2 if n >= steps else 1)
    # a long run with power cycles between: strictly increasing
    card = copy.deepcopy(base)
    seen = []
    for i in range(6):
        in_adf(card)
        seen.append(int.from_bytes(init(card)[0][:4], "big"))
        card.power_off()
    assert seen == sorted(set(seen)) == list(range(1, 7))


def test_ttsn_end_and_image_roundtrip(tmp_path):
    card = in_adf(psam_card())
    init(card)
    path = tmp_path / "psam.json"
    image.save(card, path)
    again = image.load(path)
    assert isinstance(again, SimPsam) and again.model.name == "psam"
    in_adf(again)
    assert init(again)[0][:4] == H("00000002")          # the TTSN survives the image
    ttsn = again.mf.children[0x1001].children[0x0019]
    ttsn.data = H("FFFFFFFF")
    assert init(again)[1] == 0x9402                      # never wraps


def test_sim_show_names_psam_keys_without_values():
    from citycard.sim.show import lines, tree
    card = psam_card()
    text = "\n".join(lines(card))
    assert "key 22 psam-purchase, 1 level id 01" in text and "key 25 psam-maintenance, 1 level id 01" in text
    assert DPK_MASTER.hex().upper() not in (text + repr(tree(card))).upper()


def test_des_algorithm_uses_the_left_half_of_the_dpk():
    card = in_adf(psam_card())
    data, sw = init(card, algorithm=0x01)
    ses = des3(div(DPK_MASTER, FACTOR)[:8], R + CTR.to_bytes(2, "big") + H("0001"))
    assert sw == 0x9000 and data[4:] == purse_mac(ses, AMOUNT.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME)


def test_psam_keys_written_with_a_mac(tmp_path):
    """``write = "mac"``: 84 D4 under the ADF master's MAC; a wrong MAC adds nothing."""
    from citycard.sim import new_card
    from tests.psamhost import PSAM_PROFILE, ROOT, _perso
    text = PSAM_PROFILE.read_text(encoding="utf-8")
    old = 'master = "transit/dpk", export = true }'
    assert old in text
    profile = tmp_path / "psam.toml"
    profile.write_text(text.replace(old, 'master = "transit/dpk", write = "mac", export = true }'), encoding="utf-8")
    card = _perso(new_card("psam"), profile, ROOT / "profiles/psam-sample.csv")
    key = next(k for k in card.mf.children[0x1001].keyfile.keys.values() if k.ktype == 0x22)
    assert key.value == DPK_MASTER
    in_adf(card)
    chal, sw = send(card, H("0084000004"))
    assert sw == 0x9000
    bad = H("84D4010219") + bytes((0x26, 0xF0, 0xEF, 0x01, 0x00)) + bytes(16) + bytes(4)
    assert send(card, bad)[1] == 0x9302
    assert not any(k.ktype == 0x26 for k in card.mf.children[0x1001].keyfile.keys.values())
