"""Simulated card: malformed input never breaks the card OS (property tests).

Every answer must be bytes ending in a status word the card OS may legitimately send;
``6F00`` means the card caught one of its own exceptions (a bug) and must never appear.
Error answers carry no data.  The card runs in several states: factory, authenticated MF,
personalized, in the middle of a load / purchase / CAPP purchase / unload, with a
challenge pending, and with the application blocked.
"""

from __future__ import annotations

import copy
import functools
import logging
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citycard.sim import SimCard
from tests.simhost import DAMK, MK, TERMINAL, TRANSPORT, Host, Rng, app, h

ALLOWED = frozenset({
    0x9000, 0x6281, 0x6283, 0x6700, 0x6881, 0x6900, 0x6901, 0x6981, 0x6982, 0x6983, 0x6984, 0x6985,
    0x6986, 0x6987, 0x6988, 0x6A80, 0x6A81, 0x6A82, 0x6A83, 0x6A84, 0x6A86, 0x6A88, 0x6A8A, 0x6B00,
    0x6D00, 0x6E00, 0x9302, 0x9303, 0x9401, 0x9402, 0x9403, 0x9406,
})


def check_answer(resp: object) -> None:
    assert isinstance(resp, bytes) and len(resp) >= 2, resp
    sw = (resp[-2] << 8) | resp[-1]
    assert sw != 0x6F00, "6F00: the card OS raised an exception"
    assert sw in ALLOWED or sw >> 8 in (0x61, 0x6C) or sw & 0xFFF0 == 0x63C0, f"{sw:04X}"
    if sw not in (0x9000, 0x6281) and sw >> 8 != 0x61:   # 6281 comes with the data (SPEC §6 R13)
        assert len(resp) == 2, f"{sw:04X} with data"


@functools.cache
def states() -> dict[str, SimCard]:
    out: dict[str, SimCard] = {"factory": SimCard(rng=Rng(9))}
    host = Host(SimCard(rng=Rng(9)))
    host.select_mf()
    host.ext_auth(TRANSPORT)
    out["mf-authenticated"] = host.card
    host = app()
    host.verify()
    host.load(1000)
    host.load(50, p2=1)
    out["personalized"] = host.card
    host = app()
    host.load(1000)
    host.init_purchase(10)
    out["mid-purchase"] = host.card
    host = app()
    host.load(1000)
    host.init_purchase(10, p1=3)
    out["mid-capp"] = host.card
    host = app()
    host.load(1000)
    host.init_purchase(10, p1=3)
    host.tx("80DC02B805020378797A")
    out["mid-capp-cached"] = host.card
    host = app()
    host.init_load(10)
    out["mid-load"] = host.card
    host = app()
    host.verify()
    host.load(100, p2=1)
    host.tx(b"\x80\x50\x05\x01\x0B\x00\x00\x00\x00\x05" + TERMINAL + b"\x10")
    out["mid-unload"] = host.card
    host = app()
    host.ext_auth(MK)
    host.challenge()
    out["challenge-pending"] = host.card
    host = app()
    host.verify()
    host.challenge(8)
    out["challenge8-pending"] = host.card
    host = app()
    host.protected(0x80, 0x1E, 0x00, 0x00, b"", DAMK)
    out["app-blocked"] = host.card
    host = app()
    host.send(h("00A4040009A00000000386980701") + b"\x05")    # 61xx pending
    out["response-pending"] = host.card
    # the real-card model: factory, and issued as in BLOG16 (SPEC §6)
    from citycard.sim import new_card
    from tests.test_sim_realcard import BLOG16, Recorded
    out["fm1208-factory"] = new_card(rng=Rng(9))
    card = new_card(rng=Recorded("53fd1f262ec4e6e2", "88bbe4e3", "a3bbcfc8"))
    for cmd, _ in BLOG16:
        card.process(h(cmd))
    card.rng = Rng(9)
    out["fm1208-blog16"] = card
    host = app()
    host.verify()
    host.ext_auth(MK)
    host.add_key(0x3C, 0x00, 0xF0, 0xAA, 0x01, 0x00, bytes(range(16)))
    host.load(100, p2=1)
    host.tx(b"\x80\x50\x04\x01\x07\x00" + TERMINAL + b"\x13")
    out["mid-overdraw"] = host.card
    host = app()
    host.verify()
    host.load(100, p2=1)
    host.init_purchase(10, p1=0x02, p2=0x01)
    out["mid-withdraw"] = host.card
    return out


STATE_NAMES = [
    "factory", "mf-authenticated", "personalized", "mid-purchase", "mid-capp", "mid-capp-cached",
    "mid-load", "mid-unload", "challenge-pending", "challenge8-pending", "app-blocked", "response-pending",
    "fm1208-factory", "fm1208-blog16", "mid-overdraw", "mid-withdraw"]

VALID = [h(x) for x in """
00A40000023F00 00A4040009A00000000386980701 00A40000020015 0084000004 0084000008
00820000080102030405060708 00880000080102030405060708 00880200080102030405060708
00B0950000 00B0960A05 00D6960302AABB 00B2011C00 00B201BC00 00B2011800 00B2011900
00E200B805020378797A 00DC02B805020378797A 80DC02B805020378797A 80DC01BC05020378797A
0020000003123456 805E010006123456FF6543 805E00000731323301020304 842400000C0102030405060708090A0B0C
80E0001907280010F0F0FFFF 80E03F051138036FF0F095FFFFA00000000386980702 80E00000073F018F95F0FFFF
800E000000 80D401001539F0F0AA3300112233445566778899AABBCCDDEEFF
84D439001939F0F0AA3300112233445566778899AABBCCDDEEFF01020304 80D43A000B3AF0EF013312345601020304
805000020B000000006400000000000110 805001020B00000000190000000000010F 805003020B00000000190000000000010F
805005010B000000000500000000000110 805200000B202611241200000102030404 805401000F00000007202611241201000102030408
805403000B202611241200000102030404 805C000204 805C000104 805A0006020000 805A0002020000 80CA000009
0022000009858877665544332211 841600000401020304 841E00000401020304 841E00010401020304 841800000401020304
00C0000010 00C0000000 04D6950008CAFEBABE01020304 04B09B000401020304 04DC02B8090203787A7901020304
80E03F000D38FFFFF0F001FFFFFFFFFFFFFF 805004010700000000000113 805800000E0001002026112412000001020304
805002010B000000000500000000000110 00E200BC05020378797A 00DC011A05020378797A 00DC00120401020304
0420000008010203040506070801020304 842400010C0102030405060708090A0B0C 805E010706123456FF6543
""".split()]
VALID = [v for v in VALID if len(v) >= 4]

INS = [0xA4, 0x84, 0x82, 0x88, 0xB0, 0xD6, 0xB2, 0xDC, 0xE2, 0x20, 0x22, 0xE0, 0x0E, 0xD4, 0x5E, 0x24,
       0x16, 0x1E, 0x18, 0x50, 0x52, 0x54, 0x58, 0x5A, 0x5C, 0xCA, 0xC0]
byte = st.integers(0, 255)


@st.composite
def mutated(draw) -> bytes:
    a = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(0, 8))
        if k == 0:
            a[draw(st.integers(0, len(a) - 1))] = draw(byte)
        elif k == 1:
            a = a[:draw(st.integers(0, len(a)))]
        elif k == 2:
            a += draw(st.binary(min_size=1, max_size=24))
        elif k == 3 and len(a) > 4:
            a[4] = draw(byte)                                   # Lc
        elif k == 4 and len(a) >= 4:
            a[draw(st.integers(0, 3))] = draw(byte)              # CLA, INS, P1 or P2
        elif k == 5 and len(a) > 5:
            a = a[:4] + b"\x00" + len(a[5:]).to_bytes(2, "big") + a[5:]   # extended form
        elif k == 6 and len(a) >= 4:
            a[0] = draw(st.sampled_from([0x00, 0x04, 0x80, 0x84, 0x0C, 0x40, 0x01, 0x90]))
        elif k == 7 and len(a) >= 4:
            a[2], a[3] = draw(byte), draw(byte)
        elif k == 8 and len(a) > 5:
            a = a[:-1] if draw(st.booleans()) else a + bytes((draw(byte),))   # drop / add Le
        if len(a) < 1:
            a = bytearray(b"\x00")
    return bytes(a)


@st.composite
def structured(draw) -> bytes:
    cla = draw(st.sampled_from([0x00, 0x04, 0x80, 0x84]) | byte)
    ins = draw(st.sampled_from(INS) | byte)
    p1, p2 = draw(byte), draw(byte)
    n = draw(st.sampled_from([0, 1, 2, 4, 7, 8, 9, 11, 12, 15, 16, 21, 23]) | st.integers(0, 300))
    data = draw(st.binary(min_size=n, max_size=n))
    out = bytes((cla, ins, p1, p2))
    extended = len(data) > 255 or draw(st.integers(0, 9)) == 0
    if data:
        out += (b"\x00" + len(data).to_bytes(2, "big") if extended else bytes((len(data),))) + data
    le = draw(st.none() | st.integers(0, 300))
    if le is not None:
        if extended:
            out += le.to_bytes(2, "big") if data else b"\x00" + le.to_bytes(2, "big")
        else:
            out += bytes((le & 0xFF,))
    return out


apdus = st.lists(st.binary(max_size=40) | mutated() | structured(), min_size=1, max_size=4)


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise TimeoutError("the card OS hung")


def run(state: str, seq: list[bytes]) -> None:
    card = copy.deepcopy(states()[state])
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        for apdu in seq:
            check_answer(card.process(apdu))
        # and the card still works afterwards
        card.reset()
        check_answer(card.process(b"\x00\xA4\x00\x00\x02\x3F\x00"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.CRITICAL)   # a 6F00 is caught by the assertion, not the log
    yield
    logging.disable(logging.NOTSET)


def fast(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None)


@fast(500)
@given(state=st.sampled_from(STATE_NAMES), seq=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_random_bytes(state, seq):
    run(state, seq)


@fast(900)
@given(state=st.sampled_from(STATE_NAMES), seq=st.lists(mutated(), min_size=1, max_size=4))
def test_mutated_valid_apdus(state, seq):
    run(state, seq)


@fast(700)
@given(state=st.sampled_from(STATE_NAMES), seq=st.lists(structured(), min_size=1, max_size=4))
def test_structured_random_apdus(state, seq):
    run(state, seq)


@pytest.mark.parametrize("state", STATE_NAMES)
def test_every_valid_apdu_in_every_state(state):
    for apdu in VALID:
        run(state, [apdu])
    run(state, VALID)


def test_check_answer_rejects_bad_answers():
    for bad in (b"", b"\x90", b"\x6F\x00", b"\x6D\x01", b"\x01\x02\x6A\x82", b"\x12\x34"):
        with pytest.raises(AssertionError):
            check_answer(bad)
    for good in (b"\x90\x00", b"\x01\x61\x10", b"\x63\xC2", b"\x6C\x05", b"\xAB\x90\x00"):
        check_answer(good)
