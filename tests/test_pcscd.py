"""Integration: a real private pcscd + vpcd + DemoCard, seen by independent PC/SC clients."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import pytest

from citycard.testing.democard import DEMO_ATR, DemoCard
from citycard.testing.pcscd import PrivatePcscd, free_port_pair, wait_for_card
from citycard.sim.vpcd import VpcdServer

pytestmark = pytest.mark.pcsc

FCI = bytes.fromhex("6F15840E315041592E5359532E4444463031A503880101")
FCI_SPACED = " ".join(f"{b:02X}" for b in FCI)


def hex_bytes(text: str) -> str:
    """Hex byte pairs of a hex dump (opensc/scriptor style), joined, ASCII column dropped."""
    out = []
    for line in text.splitlines():
        for token in line.lstrip("<> ").split():
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", token):
                break
            out.append(token.upper())
    return "".join(out)


class Scard:
    """A raw smartcard.scard connection, always released."""

    def __init__(self, reader: str) -> None:
        from smartcard import scard

        self.scard = scard
        hres, self.ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert hres == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hres)
        hres, self.card, self.proto = scard.SCardConnect(
            self.ctx, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        if hres != scard.SCARD_S_SUCCESS:
            scard.SCardReleaseContext(self.ctx)
            raise ConnectionError(scard.SCardGetErrorMessage(hres))

    def transmit(self, apdu: bytes) -> bytes:
        hres, rsp = self.scard.SCardTransmit(self.card, self.proto, list(apdu))
        assert hres == self.scard.SCARD_S_SUCCESS, self.scard.SCardGetErrorMessage(hres)
        return bytes(rsp)

    def close(self) -> None:
        self.scard.SCardDisconnect(self.card, self.scard.SCARD_LEAVE_CARD)
        self.scard.SCardReleaseContext(self.ctx)

    def __enter__(self) -> Scard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_reader_listed_with_card_and_atr(vcard, pcscd):
    from smartcard.System import readers

    names = [str(r) for r in readers()]
    assert list(pcscd.reader_names) == names[:2] or set(pcscd.reader_names) <= set(names)
    assert wait_for_card(vcard.reader) == DEMO_ATR
    conn = next(r for r in readers() if str(r) == vcard.reader).createConnection()
    conn.connect()
    try:
        assert bytes(conn.getATR()) == DEMO_ATR
        data, sw1, sw2 = conn.transmit(list(bytes.fromhex("00B0000010")))
        assert (bytes(data), sw1, sw2) == (bytes(range(1, 17)), 0x90, 0x00)
    finally:
        conn.disconnect()
        conn.release()
    # Slot 1 is empty.
    assert wait_for_card(pcscd.reader_names[1], present=False, timeout=1) == b""


def test_raw_select_get_response(vcard):
    with Scard(vcard.reader) as c:
        assert c.transmit(bytes.fromhex("00A404000E315041592E5359532E4444463031")) == b"\x61\x17"
        assert c.transmit(bytes.fromhex("00C0000017")) == FCI + b"\x90\x00"
        assert c.transmit(bytes.fromhex("00B0000008")) == b"\x6c\x10"  # not retried by PC/SC
        challenge = c.transmit(bytes.fromhex("0084000008"))
        assert len(challenge) == 10 and challenge.endswith(b"\x90\x00")
        assert c.transmit(bytes.fromhex("80EE0000FF") + bytes(range(255))) == bytes(range(255)) + b"\x90\x00"


def test_opensc_tool(vcard, pcscd):
    res = subprocess.run(
        ["opensc-tool", "-r", "0", "-s", "00A40000023F00", "-s", "00C0000017"],
        env={**os.environ, **pcscd.env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert FCI.hex().upper() in hex_bytes(res.stdout), res.stdout


def test_scriptor(vcard, pcscd):
    res = subprocess.run(
        ["scriptor", "-r", vcard.reader],
        input="00A40000023F00\n00C0000017\n80EE000003A1B2C3\n",
        env={**os.environ, **pcscd.env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    replies = [line for line in res.stdout.splitlines() if line.startswith("<")]
    assert replies[0].startswith("< 61 17"), res.stdout
    after_get_response = res.stdout.split("> 00 C0 00 00 17", 1)[1]
    assert hex_bytes(after_get_response).startswith(FCI.hex().upper() + "9000"), res.stdout
    assert "< A1 B2 C3 90 00" in res.stdout


def test_echo_latency(vcard):
    """About 0.1-0.3 ms per APDU; ~44 ms would mean TCP_QUICKACK is not effective."""
    apdu = bytes.fromhex("80EE000004DEADBEEF")
    times = []
    with Scard(vcard.reader) as c:
        for _ in range(300):
            t0 = time.perf_counter()
            rsp = c.transmit(apdu)
            times.append(time.perf_counter() - t0)
            assert rsp == bytes.fromhex("DEADBEEF9000")
    assert statistics.median(times) < 0.005, f"median {statistics.median(times) * 1e3:.2f} ms"


def test_card_removed_and_reinserted(vcard):
    with Scard(vcard.reader) as c:
        assert c.transmit(bytes.fromhex("80EE00000101")) == b"\x01\x90\x00"
    vcard.server.stop()
    vcard.thread.join(2)
    assert not vcard.thread.is_alive()
    assert wait_for_card(vcard.reader, present=False, timeout=3) == b""
    with pytest.raises(ConnectionError):
        Scard(vcard.reader).close()
    vcard.thread = vcard.server.start_thread()  # the fixture stops this one
    assert wait_for_card(vcard.reader, present=True, timeout=3) == DEMO_ATR
    with Scard(vcard.reader) as c:
        assert c.transmit(bytes.fromhex("80EE00000102")) == b"\x02\x90\x00"


def test_slot_1(pcscd):
    server = VpcdServer(DemoCard(atr=bytes.fromhex("3B8701706373636C6162EA")), port=pcscd.port + 1)
    thread = server.start_thread()
    try:
        assert wait_for_card(pcscd.reader_names[1]).hex() == "3b8701706373636c6162ea"
        with Scard(pcscd.reader_names[1]) as c:
            assert c.transmit(bytes.fromhex("00A40000023F00")) == b"\x61\x17"
    finally:
        server.stop()
        thread.join(2)
    wait_for_card(pcscd.reader_names[1], present=False)


def test_card_reconnects_when_pcscd_restarts(pcscd):
    """A second private pcscd (own namespace), restarted on the same socket and port;
    checked with opensc-tool since this process's client library is bound to ``pcscd``."""
    workdir = tempfile.mkdtemp(prefix="cc", dir="/tmp")
    port = free_port_pair()
    server = VpcdServer(DemoCard(), port=port, retry_interval=0.05)
    thread = server.start_thread()

    def atr_seen(daemon: PrivatePcscd) -> str:
        deadline = time.monotonic() + 5
        while True:
            res = subprocess.run(["opensc-tool", "-r", "0", "-a"], env={**os.environ, **daemon.env},
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
            if res.returncode == 0 or time.monotonic() > deadline:
                return res.stdout + res.stderr
            time.sleep(0.1)

    try:
        with PrivatePcscd(workdir=workdir, port=port) as first:
            assert server.wait_connected(5)
            assert DEMO_ATR.hex(":") in atr_seen(first).lower()
        deadline = time.monotonic() + 3
        while server.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.connected
        with PrivatePcscd(workdir=workdir, port=port) as second:
            assert server.wait_connected(5), second.log_tail()
            assert DEMO_ATR.hex(":") in atr_seen(second).lower()
    finally:
        server.stop()
        thread.join(2)
        shutil.rmtree(workdir, ignore_errors=True)
