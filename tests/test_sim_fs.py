"""Simulated card: the factory card, CREATE FILE / ERASE DF and SELECT (SPEC §1.1–§1.3, §1.5)."""

import pytest

from citycard import crypto
from citycard.sim import SimCard
from tests.simhost import AID, EF15, MF_FCI, TRANSPORT, Host, Rng, app, h

H = bytes.fromhex


@pytest.fixture
def host() -> Host:
    return Host(SimCard(rng=Rng(5)))


def authed(host: Host) -> Host:
    host.select_mf()
    host.ext_auth(TRANSPORT)
    return host


# ====================================================================== 1. factory card
def test_factory_mf_fci_exact(host):
    assert host.tx("00A40000023F00") == MF_FCI
    assert MF_FCI == h("6F 15 84 0E 315041592E5359532E4444463031 A5 03 88 01 01")
    assert host.tx("00A404000E315041592E5359532E4444463031") == MF_FCI


def test_factory_create_needs_auth(host):
    host.select_mf()
    host.create(0x0005, H("280010F0F0FFFF"), sw=0x6982)
    host.create(0x3F01, H("38 0100 F0F0 95FFFF".replace(" ", "")) + AID, sw=0x6982)
    host.tx("800E000000", 0x6982)


@pytest.mark.parametrize("n", [4, 8])
def test_external_auth_transport_key_sets_sr(host, n):
    host.select_mf()
    chal = host.challenge(n)
    # E(chal || 00..) with 16 x FF computed directly on the DES primitive
    cryptogram = crypto.ecb_encrypt(b"\xFF" * 16, chal + bytes(8 - n))
    host.tx(H("0082000008") + cryptogram)
    host.create(0x0005, H("280010F0F0FFFF"))     # MF create AC F1 now met
    assert host.tx("00A40000020005") == b""


def test_external_auth_counter_counts_down_then_locks(host):
    host = Host(SimCard(rng=Rng(5), model="fm1208-16ff"))   # 15 tries: the legacy model (fm1208: 3, R8)
    host.select_mf()
    host.ext_auth(TRANSPORT)                       # correct: counter full
    wrong = b"\x01" * 8
    for left in (14, 13):
        host.challenge()
        host.tx(H("0082000008") + wrong, 0x63C0 | left)
    host.ext_auth(TRANSPORT)                       # success resets the counter (FF: 15 tries)
    for left in range(14, 0, -1):
        host.challenge()
        host.tx(H("0082000008") + wrong, 0x63C0 | left)
    host.challenge()
    host.tx(H("0082000008") + wrong, 0x63C0)       # the last try locks the key: 63C0 (SPEC §6 R12, UM 7.10)
    host.ext_auth(TRANSPORT, sw=0x6983)            # and a locked key cannot be used
    host.card.reset()
    host.ext_auth(TRANSPORT, sw=0x6983)            # persistent


def test_external_auth_challenge_only_for_next_command(host):
    host.select_mf()
    chal = host.challenge()
    host.select_mf()
    host.tx(H("0082000008") + crypto.ecb_encrypt(TRANSPORT, chal + bytes(4)), 0x6984)
    host.tx(H("0082000008") + bytes(8), 0x6984)    # no challenge at all
    host.tx("0084000005", 0x6700)
    host.tx("0082000007" + "00" * 7, 0x6700)
    host.tx("0082010008" + "00" * 8, 0x6A86)
    host.challenge()
    host.tx(H("0082000508") + bytes(8), 0x6A88)    # no such key


# ====================================================================== 2. CREATE FILE
SPEC_DF = "80E03F011138036FF0F095FFFFA00000000386980701"
SPEC_KEYFILE = "80E00000073F018F95F0FFFF"
SPEC_EF15 = "80E0001507A8001EF0F0FFFF"
SPEC_EF18 = "80E00018072E0A17F0EFFFFF"
SPEC_EP = "80E00002072F0208F000FF18"
SPEC_ED = "80E00001072F0208F100FF18"


def test_spec_scripts_byte_for_byte(host):
    authed(host)
    host.tx(SPEC_DF)
    fci = host.select_name(AID)
    assert fci == h("6F 0B 84 09 A00000000386980701")      # no EF0015 yet: no A5
    for script in (SPEC_KEYFILE, SPEC_EF15, SPEC_EF18, SPEC_EP, SPEC_ED):
        host.tx(script)
    card = host.card
    df = card.mf.children[0x3F01]
    assert (df.space, df.create_ac, df.erase_ac, df.sfi_byte, df.name) == (0x036F, 0xF0, 0xF0, 0x95, AID)
    kf = df.keyfile
    assert (kf.fid, kf.space, kf.df_sfi, kf.add_ac) == (0x0000, 0x018F, 0x95, 0xF0)
    ef15 = df.children[0x0015]
    assert (ef15.ftype, len(ef15.data), ef15.read_ac, ef15.write_ac, ef15.b7) == (0xA8, 30, 0xF0, 0xF0, 0xFF)
    ef18 = df.children[0x0018]
    assert (ef18.ftype, ef18.nrec, ef18.reclen, ef18.read_ac, ef18.write_ac) == (0x2E, 10, 0x17, 0xF0, 0xEF)
    ep, ed = df.children[0x0002], df.children[0x0001]
    assert (ep.usage_ac, ep.tac_kid, ep.detail_sfi, ep.is_ed) == (0xF0, 0x00, 0x18, False)
    assert (ed.usage_ac, ed.tac_kid, ed.detail_sfi, ed.is_ed) == (0xF1, 0x00, 0x18, True)
    # space: 0x36F - (0x18F+8) - (30+8) - (10*24+8) - 24 - 24 = 138 left
    assert df.free() == 138
    # the files are reachable
    for fid in (0x0015, 0x0018, 0x0002, 0x0001):
        assert host.select_fid(fid) == b""
    # the FCI now carries EF0015 (all zero) in 9F0C because of the SFI byte 95
    assert host.select_name(AID) == h("6F32 8409 A00000000386980701 A525 9F080102 9F0C1E") + bytes(30)


def test_every_file_type_created(host):
    authed(host)
    host.create(0x3F02, H("3801F0F0F001FFFF") + b"APP-2")
    host.select_name(b"APP-2")
    host.create(0x0000, H("3F0040F0F0FFFF"))     # KEY file
    host.create(0x0005, H("280010F0F0FFFF"))     # binary
    host.create(0x0006, H("2A030AF0F0FFFF"))     # fixed 3 x 10
    host.create(0x0007, H("2C0040F0F0FFFF"))     # variable TLV, 64 bytes
    host.create(0x0008, H("2E0408F0F0FFFF"))     # cyclic 4 x 8
    host.create(0x0002, H("2F0208F000FF18"))     # EP
    host.create(0x3F03, H("380040F0F001FFFF") + b"SUB-DF")   # nested DF
    df = host.card.mf.children[0x3F02]
    kinds = {fid: type(n).__name__ + f"/{n.ftype:02X}" for fid, n in df.children.items()}
    assert kinds == {5: "BinaryEF/28", 6: "RecordEF/2A", 7: "RecordEF/2C", 8: "RecordEF/2E",
                     2: "PurseEF/2F", 0x3F03: "DF/38"}
    # physical sizes: key 0x40+8, binary 16+8, fixed 3*11+8, variable 64+8, cyclic 4*9+8, purse 24,
    # DF its declared space
    assert df.used() == (0x48) + (24) + (41) + (72) + (44) + 24 + 0x40
    assert host.select_fid(0x3F03) == h("6F 0D 84 06") + b"SUB-DF" + h("A5 03 88 01 01")


@pytest.mark.parametrize("body, physical", [
    ("28 0010 F0F0FFFF", 0x10 + 8),            # binary: size + 8
    ("2A 030A F0F0FFFF", 3 * 11 + 8),          # fixed: n*(len+1)+8
    ("2E 0408 F0F0FFFF", 4 * 9 + 8),           # cyclic: n*(len+1)+8
    ("2C 0040 F0F0FFFF", 0x40 + 8),            # variable: space + 8
    ("2F 0208 F000FF18", 24),                  # purse: 24
    ("38 0030 F0F0 01FFFF 4142", 0x30),        # DF: its declared space
])
def test_space_accounting_exact(host, body, physical):
    """A DF of space (key file + physical) fits the file exactly; one byte less gives 6A84."""
    body = h(body)
    fid = 0x0002 if body[0] == 0x2F else 0x0011
    for slack, sw in ((0, 0x9000), (-1, 0x6A84)):
        h_ = Host(SimCard(rng=Rng(1), model="fm1208-16ff"))   # DF space enforced: the legacy model (R9)
        authed(h_)
        space = 0x10 + 8 + physical + slack
        h_.create(0x3F02, H("38") + space.to_bytes(2, "big") + H("F0F001FFFF") + b"DFX")
        h_.select_name(b"DFX")
        h_.create(0x0000, H("3F0010F0F0FFFF"))
        h_.create(fid, body, sw)


def test_space_6a84_in_spec_df_and_key_file(host):
    host = Host(SimCard(rng=Rng(5), model="fm1208-16ff"))   # DF space enforced: the legacy model (R9)
    authed(host)
    host.tx(SPEC_DF)
    host.select_name(AID)
    for script in (SPEC_KEYFILE, SPEC_EF15, SPEC_EF18, SPEC_EP, SPEC_ED):
        host.tx(script)
    host.create(0x0005, H("280083F0F0FFFF"), 0x6A84)   # 131 + 8 > 138
    host.create(0x0005, H("280082F0F0FFFF"))           # 130 + 8 = 138: exactly full
    host.create(0x0006, H("280001F0F0FFFF"), 0x6A84)
    host.create(0x0006, H("2A0201F0F0FFFF"), 0x6A84)
    # a DF larger than the MF's free space
    host.select_mf()
    host.create(0x3F09, H("38FFF0F0F001FFFF") + b"HUGE", 0x6A84)


def test_duplicate_fid_and_key_file_rules(host):
    authed(host)
    host.create(0x3F02, H("380200F0F001FFFF") + b"APP-2")
    host.create(0x3F02, H("380100F0F001FFFF") + b"APP-3", 0x6A86)   # FID taken
    host.select_name(b"APP-2")
    host.create(0x0000, H("3F0040F0F0FFFF"))
    host.create(0x0001, H("3F0040F0F0FFFF"), 0x6A86)   # one KEY file per DF
    host.create(0x0000, H("280010F0F0FFFF"), 0x6A86)   # FID of the KEY file
    host.create(0x0005, H("280010F0F0FFFF"))
    host.create(0x0005, H("2A020AF0F0FFFF"), 0x6A86)
    host.create(0x3F00, H("280010F0F0FFFF"), 0x6A86)
    # the KEY file must be the first file of a DF
    host.select_mf()
    host.create(0x3F03, H("380200F0F001FFFF") + b"APP-3")
    host.select_name(b"APP-3")
    host.create(0x0005, H("280010F0F0FFFF"))
    host.create(0x0000, H("3F0040F0F0FFFF"), 0x6985)


@pytest.mark.parametrize("fid, body", [
    (0x0006, "2A010AF0F0FFFF"),      # fixed file with one record
    (0x0006, "2E010AF0F0FFFF"),      # cyclic file with one record
    (0x0006, "2A0200F0F0FFFF"),      # zero-length records
    (0x0006, "280000F0F0FFFF"),      # empty binary
    (0x0006, "2C0000F0F0FFFF"),      # empty variable file
    (0x0003, "2F0208F000FF18"),      # a purse is 0001 or 0002 only
    (0x0002, "2F0108F000FF18"),      # purse space must be 0208
    (0x0006, "270010F0F0FFFF"),      # unknown file type
    (0x0006, "3F0010F0F0FF"),        # KEY file body of 6 bytes
])
def test_create_6a80(host, fid, body):
    authed(host)
    host.create(0x3F02, H("380400F0F001FFFF") + b"APP-2")
    host.select_name(b"APP-2")
    host.create(fid, h(body), 0x6A80 if len(h(body)) >= 7 else 0x6700)


def test_three_directory_levels(host):
    authed(host)
    host.create(0x3F02, H("380400F0F001FFFF") + b"LEVEL-2")         # MF is level 1
    host.select_name(b"LEVEL-2")
    host.create(0x3F03, H("380200F0F001FFFF") + b"LEVEL-3")
    host.select_fid(0x3F03)
    host.create(0x3F04, H("380100F0F001FFFF") + b"LEVEL-4", 0x6A80)
    host.create(0x0005, H("280010F0F0FFFF"))                           # EFs are fine at level 3


def test_bootstrap_rule():
    host = Host(SimCard(rng=Rng(1)))
    authed(host)
    # create AC and erase AC EF: never, once ACs apply
    host.create(0x3F02, H("380400EFEF01FFFF") + b"LOCKED")
    host.select_name(b"LOCKED")
    host.create(0x0000, H("3F010001EFFFFF"))   # KEY file, add AC EF
    host.add_key(0x39, 0x00, 0xEF, 0xEF, 0x0F, 0x33, H("0102030405060708"))
    host.create(0x0005, H("280004EFEFFFFF"))              # read and write never
    host.tx("00D6850004CAFEBABE")                        # still allowed: the DF was not re-entered
    assert host.tx("00B0850004") == H("CAFEBABE")
    host.select_mf()
    host.select_name(b"LOCKED")                          # entered again: ACs apply
    host.create(0x0006, H("280004F0F0FFFF"), 0x6982)
    host.tx("00B0850004", 0x6982)
    host.tx("00D6850004CAFEBABE", 0x6982)
    host.add_key(0x39, 0x01, 0xF0, 0xF0, 0x01, 0x33, H("0102030405060708"), sw=0x6982)
    host.tx("800E000000", 0x6982)
    host.card.reset()                                    # also after a reset
    host.select_name(b"LOCKED")
    host.tx("00B0850004", 0x6982)


def test_erase_df_with_its_ac():
    host = Host(SimCard(rng=Rng(1)))
    authed(host)
    k = H("0102030405060708")
    host.create(0x3F02, H("380400EFF101FFFF") + b"ERASABLE")   # create never, erase SR>=1
    host.select_name(b"ERASABLE")
    host.create(0x0000, H("3F010001F0FFFF"))
    host.add_key(0x39, 0x00, 0xF0, 0xF0, 0x01, 0x33, k)
    host.create(0x0005, H("280004F0F0FFFF"))
    host.select_name(b"ERASABLE")
    host.tx("800E000000", 0x6982)
    host.ext_auth(k)
    host.tx("800E000000")
    host.select_fid(0x0005, 0x6A82)
    host.challenge()
    host.tx("0082000008" + "00" * 8, 0x6A88)         # the KEY file went too
    # erased: everything allowed again, although the create AC is EF
    host.create(0x0005, H("2A020AEFEFFFFF"))
    host.create(0x0000, H("3F010001F0FFFF"), 0x6985)
    df = host.card.mf.children[0x3F02]
    assert (df.space, df.create_ac, df.erase_ac, df.name) == (0x400, 0xEF, 0xF1, b"ERASABLE")


def test_erase_mf_keeps_the_mf(host):
    authed(host)
    host.create(0x0005, H("280010F0F0FFFF"))
    host.create(0x3F02, H("380400F0F001FFFF") + b"APP-2")
    host.tx("800E000000")
    assert host.select_mf() == MF_FCI
    host.select_fid(0x0005, 0x6A82)
    host.select_name(b"APP-2", 0x6A82)
    host.challenge()
    host.tx(H("0082000008") + bytes(8), 0x6A88)       # the transport key is gone
    host.card.reset()
    host.create(0x0000, H("3F0050F0F0FFFF"))          # MF empty: free after reset too


def test_created_files_are_not_selected(host):
    authed(host)
    host.create(0x0005, H("280004F0F0FFFF"))
    host.tx("00B0000004", 0x6986)                        # no current EF
    host.select_fid(0x0005)
    host.create(0x0006, H("280004F0F0FFFF"))
    host.tx("00D6000004 11223344".replace(" ", ""))      # goes to 0005, still current
    assert host.tx("00B0860004", 0x6281) == bytes(4)     # never written (SPEC §6 R13)
    assert host.tx("00B0850004") == H("11223344")


def test_create_wrong_class_and_length(host):
    authed(host)
    host.tx("00E00005 07 280004F0F0FFFF".replace(" ", ""), 0x6E00)
    host.tx("80E00005 06 280004F0F0FF".replace(" ", ""), 0x6700)


# ====================================================================== 3. SELECT
def test_select_adf_fci_with_ef0015():
    host = app()
    fci = host.select_name(AID)
    assert fci == h("6F32 8409 A00000000386980701 A525 9F080102 9F0C1E") + EF15
    assert host.select_fid(0x3F01) == fci
    assert host.tx("00A4040009A0000000038698070100") == fci


def test_select_ef_answers_no_data():
    host = app()
    data, sw = host.send("00A40000020015")
    assert (data, sw) == (b"", 0x9000)
    assert host.tx("00B0000002") == EF15[:2]            # and it is current


def test_select_mf_from_anywhere():
    host = app()
    host.select_fid(0x0018)
    assert host.select_mf() == MF_FCI
    assert host.tx("00A4000000") == MF_FCI               # no FID: the MF
    host.select_name(AID)
    assert host.select_name(b"1PAY.SYS.DDF01") == MF_FCI


def test_select_by_partial_and_exact_name():
    host = Host(SimCard(rng=Rng(1)))
    authed(host)
    host.create(0x3F01, H("380100F0F001FFFF") + AID)
    host.create(0x3F02, H("380100F0F001FFFF") + AID[:8])   # a prefix of the first name
    assert host.select_name(AID[:5]) == h("6F 10 84 09") + AID + h("A5 03 88 01 01")   # partial
    assert host.select_name(AID[:8]) == h("6F 0F 84 08") + AID[:8] + h("A5 03 88 01 01")  # exact wins
    assert host.select_name(b"1PAY") == MF_FCI
    host.select_name(H("A000000004"), 0x6A82)
    host.select_name(AID + b"\x00", 0x6A82)


def test_select_errors():
    host = app()
    host.select_fid(0x0099, 0x6A82)
    host.tx("00A4020002 0015".replace(" ", ""), 0x6A86)    # P1 02 not supported
    host.tx("00A4000102 0015".replace(" ", ""), 0x6A86)    # P2 01
    host.tx("00A4000003 001500".replace(" ", ""), 0x6700)
    host.tx("00A4040011" + "41" * 17, 0x6700)              # name over 16 bytes


def test_select_df_without_b8_sfi_gives_88():
    host = Host(SimCard(rng=Rng(1)))
    authed(host)
    host.create(0x3F02, H("380100F0F015FFFF") + b"PLAIN")
    assert host.select_name(b"PLAIN") == h("6F 0C 84 05") + b"PLAIN" + h("A5 03 88 01 15")
