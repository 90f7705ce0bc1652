"""Simulated card: access conditions and security states, exactly per SPEC §1.1."""

import pytest

from citycard.sim import SimCard
from tests.simhost import TRANSPORT, Host, Rng

H = bytes.fromhex

# DF-relative ACs (X != 0): the DF SR values that satisfy them, written out from SPEC §1.1
DF_ACS = {
    0xF0: set(range(16)),          # free
    0xEF: set(),                   # never
    0x53: {3, 4, 5},               # the SPEC example
    0x55: {5},                     # X = Y
    0xFF: {15},
    0x11: {1},
    0x21: {1, 2},
    0x30: {0, 1, 2, 3},
    0xA0: set(range(11)),
    0xF1: set(range(1, 16)),
    0x35: set(),                   # X < Y: never
    0x1F: set(),
    0x9A: set(),
}
# MF-relative ACs (X = 0): the minimum MF SR
MF_ACS = {0x00: 0, 0x01: 1, 0x03: 3, 0x05: 5, 0x0F: 15}
ALL_ACS = list(DF_ACS) + list(MF_ACS)

MF_KEYS = {3: H("3333333333333333"), 5: H("5555555555555555"), 15: H("FFFFFFFF00000000")}


def df_key(s: int) -> bytes:
    return bytes((s,)) * 7 + b"\x5A"


@pytest.fixture(scope="module")
def ac_card() -> SimCard:
    host = Host(SimCard(rng=Rng(3)))
    host.select_mf()
    host.ext_auth(TRANSPORT)
    # MF keys whose follow-up states give MF SR 3, 5 and F (high nibbles vary: only the low counts)
    for kid, (s, key) in enumerate(MF_KEYS.items(), start=1):
        host.add_key(0x39, kid, 0xF0, 0xF0, ((kid * 0x50) & 0xF0) | s, 0x33, key)
    for i, ac in enumerate(ALL_ACS):   # MF files, for the "selecting MF copies the MF SR" rule
        host.create(0x0200 + i, bytes((0x28, 0x00, 0x01, ac, ac, 0xFF, 0xFF)))
    host.create(0x3F02, H("380800F0F001FFFF") + b"AC-DF")
    host.select_name(b"AC-DF")
    host.create(0x0000, H("3F0100F0F0FFFF"))
    for s in range(1, 16):
        host.add_key(0x39, s, 0xF0, 0xF0, ((15 - s) << 4) | s, 0x33, df_key(s))
    host.add_key(0x3A, 0x00, 0xF0, 0xEF, 0x97, 0x33, H("1234"))     # PIN: follow-up 97 -> SR 7
    for i, ac in enumerate(ALL_ACS):
        host.create(0x0100 + i, bytes((0x28, 0x00, 0x01, ac, ac, 0xFF, 0xFF)))
    host.card.reset()
    return host.card


def reads(host: Host) -> dict[int, bool]:
    out = {}
    for i, ac in enumerate(ALL_ACS):
        host.select_fid(0x0100 + i)
        sw = host.sw("00B0000001")
        assert sw in (0x9000, 0x6281, 0x6982), hex(sw)    # 6281: never written (SPEC §6 R13)
        out[ac] = sw != 0x6982
    return out


@pytest.mark.parametrize("mf_sr", [0, 1, 3, 5, 15])
def test_ac_table_for_every_df_sr(ac_card, mf_sr):
    host = Host(ac_card)
    host.card.reset()
    host.select_mf()
    if mf_sr == 1:
        host.ext_auth(TRANSPORT)
    elif mf_sr:
        host.ext_auth(MF_KEYS[mf_sr], kid=list(MF_KEYS).index(mf_sr) + 1)
    for df_sr in range(16):
        host.select_name(b"AC-DF")             # resets the DF SR to 0
        if df_sr:
            host.ext_auth(df_key(df_sr), kid=df_sr)
        expected = {ac: df_sr in ok for ac, ok in DF_ACS.items()}
        expected.update({ac: mf_sr >= need for ac, need in MF_ACS.items()})
        assert reads(host) == expected, (mf_sr, df_sr)


def test_writes_follow_the_same_rule(ac_card):
    host = Host(ac_card)
    host.card.reset()
    host.select_name(b"AC-DF")
    i53 = ALL_ACS.index(0x53)
    for df_sr, sw in ((0, 0x6982), (3, 0x9000), (4, 0x9000), (5, 0x9000), (6, 0x6982)):
        host.select_name(b"AC-DF")
        if df_sr:
            host.ext_auth(df_key(df_sr), kid=df_sr)
        host.select_fid(0x0100 + i53)
        host.tx("00D6000001AB", sw)


def test_selecting_a_df_resets_its_sr(ac_card):
    host = Host(ac_card)
    host.card.reset()
    host.select_name(b"AC-DF")
    host.ext_auth(df_key(5), kid=5)
    assert reads(host)[0x55]
    host.select_name(b"AC-DF")
    assert not reads(host)[0x55]
    host.ext_auth(df_key(5), kid=5)
    host.select_mf()
    host.select_fid(0x3F02)                   # re-entered by FID as well
    assert not reads(host)[0x55]


def test_verify_sets_sr_from_follow_up(ac_card):
    host = Host(ac_card)
    host.card.reset()
    host.select_name(b"AC-DF")
    host.verify(H("1234"))
    r = reads(host)
    assert r[0xA0] and r[0xF1] and not r[0x55] and not r[0x53] and not r[0xFF]
    assert {ac for ac, ok in r.items() if ok} == {ac for ac, ok in DF_ACS.items() if 7 in ok} | {0x00}


def test_selecting_mf_copies_mf_sr(ac_card):
    host = Host(ac_card)
    host.card.reset()
    host.select_mf()
    host.ext_auth(MF_KEYS[3], kid=1)          # MF SR = current SR = 3

    def mf_read(ac: int) -> int:
        host.select_fid(0x0200 + ALL_ACS.index(ac))
        sw = host.sw("00B0000001")
        return 0x9000 if sw == 0x6281 else sw     # 6281: read, never written (SPEC §6 R13)

    assert mf_read(0x53) == 0x9000 and mf_read(0x03) == 0x9000 and mf_read(0x55) == 0x6982
    host.select_name(b"AC-DF")
    host.ext_auth(df_key(5), kid=5)           # DF SR 5, MF SR still 3
    r = reads(host)
    assert r[0x55] and r[0x03] and not r[0x05]
    host.select_mf()                          # copies the MF SR (3), not the DF SR (5)
    assert mf_read(0x55) == 0x6982 and mf_read(0x53) == 0x9000 and mf_read(0x30) == 0x9000
    host.select_name(b"AC-DF")
    r = reads(host)
    assert r[0x30] and r[0x03] and not r[0x53]      # DF SR back to 0, MF SR kept
    host.card.reset()                         # reset clears both
    host.select_name(b"AC-DF")
    assert not reads(host)[0x01]
