"""The card-time model (citycard.sim.timing): per-APDU times pinned by an independent
computation written here (ISO 7816-3 T=0/T=1 and ISO 14443-4 character and block counts),
accumulation on the modelled clock, EEPROM writes as the simulator reports them, and the
sleeping readers (an injected sleeper: no test depends on wall-clock speed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from citycard import crypto
from citycard.errors import InputError
from citycard.sim import SimCard
from citycard.sim.batch_readers import SimSource, simulated_readers
from citycard.sim.timing import (PRESETS, TimedCard, TimingPreset, activation_time, apdu_timing, get_preset,
                                 unwrap)

H = bytes.fromhex
PROC = 0.001      # the presets' processing time per command (an assumption, docs/sim.md)
EEPROM = 0.0025   # the presets' EEPROM write time per writing command (an assumption)


def test_presets_listed_with_their_bit_rates():
    assert {"contact-9600", "contact-115200", "contactless-106", "contactless-424"} <= set(PRESETS)
    # 3.5712 MHz / 372 and / 31 (F = 372, D = 1 and D = 12)
    assert get_preset("contact-9600").bit_rate == pytest.approx(9600)
    assert get_preset("contact-115200").bit_rate == pytest.approx(115200)
    # ISO 14443: 1 etu = 128/fc at 106 kbit/s (9.44 µs), 32/fc at 424 kbit/s
    assert get_preset("contactless-106").etu_s == pytest.approx(128 / 13.56e6)
    assert get_preset("contactless-106").etu_s == pytest.approx(9.44e-6, rel=1e-3)
    assert get_preset("contactless-424").etu_s == pytest.approx(32 / 13.56e6)
    with pytest.raises(InputError, match="unknown timing preset 'fast'.*contact-9600"):
        get_preset("fast")


def test_t0_case1_at_9600():
    # header CLA INS P1 P2 P3=00 (5 chars), then SW1 SW2 (2 chars; SW1 is the procedure
    # byte): 7 characters of 12 etu, two changes of direction of 4 etu (16 etu apart)
    t = apdu_timing("contact-9600", H("80EE0000"), H("9000"), wrote=False)
    assert (t.chars_to_card, t.chars_from_card) == (5, 2)
    assert t.wire_s == pytest.approx(((5 + 2) * 12 + 2 * 4) / 9600)
    assert t.total_s == pytest.approx(((5 + 2) * 12 + 2 * 4) / 9600 + PROC)


def test_t0_case2_case3_case4_at_115200():
    etu = 1 / 115200
    # case 2 (GET CHALLENGE, 4 bytes): header → ACK ‖ 4 data ‖ SW
    t = apdu_timing("contact-115200", H("0084000004"), H("0102030490 00".replace(" ", "")), wrote=False)
    assert (t.chars_to_card, t.chars_from_card, t.exchanges) == (5, 1 + 4 + 2, 1)
    assert t.wire_s == pytest.approx(((5 + 7) * 12 + 2 * 4) * etu)
    # case 3 (UPDATE BINARY, 10 bytes) that wrote EEPROM: header → ACK → data → SW
    t = apdu_timing("contact-115200", H("00D695000A") + bytes(10), H("9000"), wrote=True)
    assert (t.chars_to_card, t.chars_from_card) == (5 + 10, 1 + 2)
    assert t.wire_s == pytest.approx(((15 + 3) * 12 + 4 * 4) * etu)
    assert t.eeprom_s == EEPROM and t.total_s == pytest.approx(t.wire_s + PROC + EEPROM)
    # case 4 (SELECT by name, 23-byte FCI): ... → 61 17, then GET RESPONSE header → ACK ‖ FCI ‖ SW
    sel = H("00A4040009A0000000038698070100")
    t = apdu_timing("contact-115200", sel, bytes(23) + H("9000"), wrote=False)
    assert (t.chars_to_card, t.chars_from_card, t.exchanges) == (5 + 9 + 5, 1 + 2 + 1 + 23 + 2, 2)
    assert t.wire_s == pytest.approx(((19 + 29) * 12 + 6 * 4) * etu)
    # case 4 answered by an SW only: no GET RESPONSE
    t = apdu_timing("contact-115200", sel, H("6A82"), wrote=False)
    assert (t.chars_to_card, t.chars_from_card, t.exchanges) == (14, 3, 1)


def test_t1_blocks_and_chaining():
    etu = 1 / 115200
    # prologue NAD PCB LEN (3) ‖ INF ‖ LRC (1) each way; 22 etu block guard time = 10 etu
    # beyond the 12 of the last character, at each of the 2 changes of direction
    t = apdu_timing("contact-115200-t1", H("0084000008"), bytes(8) + H("9000"), wrote=False)
    assert (t.chars_to_card, t.chars_from_card) == (3 + 5 + 1, 3 + 10 + 1)
    assert t.wire_s == pytest.approx(((9 + 14) * 12 + 2 * 10) * etu)
    # IFSC 32: a 40-byte APDU goes in two I-blocks; the card acknowledges the first (R-block, 4)
    small = TimingPreset("t1-ifs32", "test", "T=1", bit_rate=9600, etu_per_char=12, turnaround_etu=10,
                         max_inf=32, processing_s=0.0, eeprom_write_s=0.0)
    cmd = H("00D6000023") + bytes(35)
    t = apdu_timing(small, cmd, H("9000"), wrote=False)
    assert (t.chars_to_card, t.chars_from_card) == (40 + 2 * 4, 4 + (2 + 4))
    frames = 2 + 1 + 1   # I, R, I, then the answer
    assert t.wire_s == pytest.approx(((48 + 10) * 12 + frames * 10) / 9600)


def test_contactless_106_frame():
    fc = 13.56e6
    # PCB ‖ INF ‖ CRC_A; 9 bit durations per byte (8 bits + odd parity), 2 per frame for start
    # and end; each change of direction waits the frame delay time 1172/fc
    t = apdu_timing("contactless-106", H("805C000204"), H("000003E89000"), wrote=False)
    assert (t.chars_to_card, t.chars_from_card) == (1 + 5 + 2, 1 + 6 + 2)
    bits = (8 + 9) * 9 + 2 * 2
    assert t.wire_s == pytest.approx(bits * 128 / fc + 2 * 1172 / fc)
    faster = apdu_timing("contactless-424", H("805C000204"), H("000003E89000"), wrote=False)
    assert faster.wire_s == pytest.approx(bits * 32 / fc + 2 * 1172 / fc)


def test_activation_contact_atr_and_pps():
    atr = bytes(15)
    # the ATR at 9600 bps; above it a PPS exchange (4 characters each way) at 9600 too
    assert activation_time("contact-9600", atr) == pytest.approx(15 * 12 / 9600)
    assert activation_time("contact-115200", atr) == pytest.approx((15 + 8) * 12 / 9600)
    assert activation_time("contactless-106", atr) == get_preset("contactless-106").activation_s


def _transport_auth(card) -> list[tuple[bytes, bytes]]:
    """SELECT MF, GET CHALLENGE, EXTERNAL AUTHENTICATE with the legacy transport key, ERASE DF."""
    out = []

    def tx(apdu: bytes) -> bytes:
        r = card.process(apdu)
        out.append((apdu, r))
        return r

    tx(H("00A40000023F00"))
    chal = tx(H("0084000004"))[:-2]
    tx(H("0082000008") + crypto.ecb_encrypt(b"\xff" * 16, chal + bytes(4)))
    assert tx(H("800E000000"))[-2:] == H("9000")
    return out


def test_timed_card_accounts_and_knows_eeprom_writes_from_the_simulator():
    card = TimedCard(SimCard(), "contact-115200")       # accounts only: nothing sleeps
    atr = card.power_on()
    assert atr == card.atr
    exchanged = _transport_auth(card)
    clock = card.clock
    assert clock.apdus == 4
    # only ERASE DF changed the card's persistent state (the simulator's NVM says so)
    writes = {name: f.writes for name, f in clock.families.items()}
    assert writes == {"SELECT": 0, "GET CHALLENGE": 0, "EXTERNAL AUTHENTICATE": 0, "ERASE DF": 1}
    expected = activation_time("contact-115200", card.atr) + sum(
        apdu_timing("contact-115200", c, r, wrote=c[1] == 0x0E).total_s for c, r in exchanged)
    assert clock.seconds == pytest.approx(expected)
    assert clock.families["ERASE DF"].eeprom_s == EEPROM
    assert unwrap(card) is card.card
    assert card.nvm is card.card.nvm      # the rest is the card's


def test_timed_card_sleeps_the_modelled_time_scaled():
    slept: list[float] = []
    card = TimedCard(SimCard(), "contactless-106", sleep=slept.append, scale=0.5)
    card.power_on()
    r = card.process(H("0084000004"))
    act = get_preset("contactless-106").activation_s
    one = apdu_timing("contactless-106", H("0084000004"), r, wrote=False).total_s
    assert slept == pytest.approx([act * 0.5, one * 0.5])
    assert card.clock.seconds == pytest.approx(act + one)   # the clock keeps modelled (unscaled) time


def test_sim_source_with_timing_sleeps_per_apdu(tmp_path: Path):
    slept: list[float] = []
    source = SimSource("sim-1", tmp_path, timing="contact-9600", sleep=slept.append)
    session = source.next_card(threading.Event())
    timed = session.transport.card
    assert isinstance(timed, TimedCard)
    resp = session.send(H("0084000008"))
    assert resp.sw == 0x9000
    assert len(slept) == 2          # power-on, then the APDU
    assert slept[1] == pytest.approx(apdu_timing("contact-9600", H("0084000008"), resp.data + H("9000"),
                                                 wrote=False).total_s)
    assert sum(slept) == pytest.approx(timed.clock.seconds)
    source.done(session, "S1")
    assert (tmp_path / "S1.json").exists()           # the image of the card itself


def test_simulated_readers_timing_option():
    readers = simulated_readers(3, timing="contactless-424")
    assert [r.timing.name for r in readers] == ["contactless-424"] * 3
    assert all(r.timing is None for r in simulated_readers(2))
    with pytest.raises(InputError, match="unknown timing preset"):
        simulated_readers(1, timing="warp")


def test_cli_timing_options_refuse_bad_input(run_cli, tmp_path):
    r = run_cli("sim", "serve", str(tmp_path / "card.json"), "--timing", "warp")
    assert r.exit_code != 0 and "unknown timing preset 'warp'" in r.stderr
    assert not (tmp_path / "card.json.lock").exists()
    root = Path(__file__).resolve().parent.parent
    r = run_cli("batch", "run", "-p", str(root / "profiles/citycard.toml"), "-d",
                str(root / "profiles/citycard-sample.csv"), "-j", str(tmp_path / "j.db"),
                "-k", str(root / "profiles/demo-keys.toml"),
                "-r", "nothing", "--timing", "contact-9600")
    assert r.exit_code != 0 and "--timing is an option of the simulated readers" in r.stderr
    assert not (tmp_path / "j.db").exists()
    r = run_cli("batch", "run", "-p", str(root / "profiles/citycard.toml"), "-d",
                str(root / "profiles/citycard-sample.csv"), "-j", str(tmp_path / "j.db"),
                "-k", str(root / "profiles/demo-keys.toml"), "--sims", "1", "--timing", "warp")
    assert r.exit_code != 0 and "unknown timing preset 'warp'" in r.stderr
    assert not (tmp_path / "j.db").exists()


def test_served_timed_card_sleeps_before_answering_through_vpcd(tmp_path: Path):
    """``sim serve --timing``: the vpcd server serves a TimedCard (around a dispenser here),
    which sleeps each APDU's modelled time before the answer goes; writes are seen through
    the dispenser's current card."""
    from citycard.sim.dispenser import Dispenser
    from citycard.sim.vpcd import VpcdServer
    from tests.test_vpcd import FakeReader

    slept: list[float] = []
    seen: list[bytes] = []
    holder = Dispenser(SimCard(), tmp_path / "out")
    card = TimedCard(holder, "contact-115200", sleep=slept.append)
    reader = FakeReader()
    server = VpcdServer(card, port=reader.port, retry_interval=0.02,
                        on_apdu=lambda apdu, rsp: seen.append(rsp))
    thread = server.start_thread()
    try:
        reader.accept()
        assert server.wait_connected(2)
        exchanged = []
        for apdu in (H("00A40000023F00"), H("0084000004")):
            exchanged.append((apdu, reader.transmit(apdu)))
        chal = exchanged[-1][1][:-2]
        auth = H("0082000008") + crypto.ecb_encrypt(b"\xff" * 16, chal + bytes(4))
        exchanged.append((auth, reader.transmit(auth)))
        exchanged.append((H("800E000000"), reader.transmit(H("800E000000"))))
    finally:
        server.stop()
        thread.join(2)
        reader.close()
    assert [r[-2:] for _a, r in exchanged] == [H("9000")] * 4
    expected = [apdu_timing("contact-115200", a, r, wrote=a[1] == 0x0E).total_s for a, r in exchanged]
    assert slept[-4:] == pytest.approx(expected)
    assert card.clock.families["ERASE DF"].writes == 1 and card.clock.apdus == 4
    assert seen[-4:] == [r for _a, r in exchanged]            # the server's hook saw each answer
    assert holder.swaps == 1 and len(list((tmp_path / "out").glob("card-*.json"))) == 1   # the ERASE changed
    #   the dispenser's card, which was filed when the server powered it off
