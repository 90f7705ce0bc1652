"""Unit tests of the vpcd card side, against a local TCP listener playing pcscd/vpcd."""

from __future__ import annotations

import logging
import socket
import statistics
import sys
import threading
import time

import pytest

from citycard.sim import vpcd
from citycard.errors import InputError
from citycard.sim.vpcd import VpcdServer, parse_endpoint

ATR = bytes.fromhex("3B8701706373636C6162EA")


class RecordingCard:
    """Echo card recording its power events; raises on INS FF, returns b'' on INS FE."""

    atr = ATR

    def __init__(self) -> None:
        self.events: list[str] = []
        self.apdus: list[bytes] = []

    def power_on(self) -> None:
        self.events.append("on")

    def power_off(self) -> None:
        self.events.append("off")

    def reset(self) -> None:
        self.events.append("reset")

    def process(self, apdu: bytes) -> bytes:
        self.apdus.append(apdu)
        if apdu[1] == 0xFF:
            raise RuntimeError("card bug")
        if apdu[1] == 0xFE:
            return b""
        return apdu[5 : 5 + apdu[4]] + b"\x90\x00" if len(apdu) > 5 else b"\x90\x00"


class FakeReader:
    """The vpcd side: listens, accepts the card, exchanges frames."""

    def __init__(self, port: int = 0, *, listen: bool = True) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))  # bound but not listening: port kept, connects refused
        if listen:
            self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = 5.0) -> socket.socket:
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(timeout)
        return self.conn

    def send(self, payload: bytes, *, bytewise: bool = False) -> None:
        assert self.conn is not None
        frame = len(payload).to_bytes(2, "big") + payload
        if bytewise:
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(frame)):
                self.conn.sendall(frame[i : i + 1])
                time.sleep(0.002)
        else:
            self.conn.sendall(frame)

    def recv_exact(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise EOFError("card closed the connection")
            data += chunk
        return data

    def recv(self) -> bytes:
        n = int.from_bytes(self.recv_exact(2), "big")
        assert n > 0, "the card must never send an empty frame"
        return self.recv_exact(n)

    def transmit(self, apdu: bytes) -> bytes:
        self.send(apdu)
        return self.recv()

    def close(self) -> None:
        self.listener.close()  # first, so that the card cannot reconnect to it meanwhile
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture
def reader():
    r = FakeReader()
    yield r
    r.close()


def start(card, port: int, **kw) -> tuple[VpcdServer, threading.Thread]:
    server = VpcdServer(card, port=port, retry_interval=0.02, **kw)
    return server, server.start_thread()


def stop(server: VpcdServer, thread: threading.Thread) -> None:
    server.stop()
    thread.join(2)
    assert not thread.is_alive()


def test_apdu_round_trip_and_callback(reader):
    seen: list[tuple[bytes, bytes]] = []
    done = threading.Event()

    def on_apdu(apdu: bytes, rsp: bytes) -> None:
        seen.append((apdu, rsp))
        done.set()

    card = RecordingCard()
    server, thread = start(card, reader.port, on_apdu=on_apdu)
    reader.accept()
    assert server.wait_connected(2)
    apdu = bytes.fromhex("80EE000003ABCDEF00")
    assert reader.transmit(apdu) == bytes.fromhex("ABCDEF9000")
    assert done.wait(2)
    assert seen == [(apdu, bytes.fromhex("ABCDEF9000"))]
    # A 255-byte body and a response near the short-APDU maximum.
    big = bytes([0x80, 0xEE, 0, 0, 0xFF]) + bytes(range(255))
    assert reader.transmit(big) == bytes(range(255)) + b"\x90\x00"
    stop(server, thread)


def test_partial_and_coalesced_frames(reader):
    card = RecordingCard()
    server, thread = start(card, reader.port)
    reader.accept()
    # Byte-by-byte delivery of a whole frame, length prefix included.
    reader.send(bytes.fromhex("80EE0000020102"), bytewise=True)
    assert reader.recv() == bytes.fromhex("01029000")
    # Two frames in one segment: the card must not read past the first one.
    a1, a2 = bytes.fromhex("80EE00000101"), bytes.fromhex("80EE00000102")
    assert reader.conn is not None
    reader.conn.sendall(len(a1).to_bytes(2, "big") + a1 + len(a2).to_bytes(2, "big") + a2)
    assert reader.recv() == bytes.fromhex("019000")
    assert reader.recv() == bytes.fromhex("029000")
    assert card.apdus[-2:] == [a1, a2]
    stop(server, thread)


def test_control_codes(reader):
    card = RecordingCard()
    server, thread = start(card, reader.port)
    reader.accept()
    reader.send(b"\x04")  # never powered on: the ATR is still answered
    assert reader.recv() == ATR
    reader.send(b"\x01")
    reader.send(b"\x04")
    assert reader.recv() == ATR  # answers are in order: power on was handled before
    assert card.events == ["on"]
    reader.send(b"\x02")
    reader.send(b"\x00")
    reader.send(b"\x04", bytewise=True)
    assert reader.recv() == ATR  # powered off, still answered
    assert card.events == ["on", "reset", "off"]
    reader.send(b"\x07")  # unknown control code: ignored, no reply
    assert reader.transmit(bytes.fromhex("80EE000001AA")) == bytes.fromhex("AA9000")
    stop(server, thread)
    assert card.events[-1] == "off"  # removing the card powers it off


def test_card_errors_answer_6f00_and_serving_continues(reader):
    card = RecordingCard()
    server, thread = start(card, reader.port)
    reader.accept()
    assert reader.transmit(bytes.fromhex("00FF0000")) == b"\x6f\x00"
    assert reader.transmit(bytes.fromhex("00FE0000")) == b"\x6f\x00"  # empty response
    assert reader.transmit(bytes.fromhex("80EE00000142")) == bytes.fromhex("429000")
    assert thread.is_alive()
    stop(server, thread)


def test_reconnects_after_reader_restart():
    first = FakeReader()
    port = first.port
    card = RecordingCard()
    server, thread = start(card, port)
    try:
        first.accept()
        assert first.transmit(bytes.fromhex("80EE00000101")) == bytes.fromhex("019000")
        first.close()  # pcscd goes away: connection and listener closed
        second = FakeReader(port, listen=False)  # keeps the port from other processes
        deadline = time.monotonic() + 2
        while server.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server.connected
        assert card.events == ["off"]
        time.sleep(0.1)  # the card retries while nothing listens
        assert not server.connected
        second.listener.listen(1)
        try:
            second.accept()
            assert second.transmit(bytes.fromhex("80EE00000102")) == bytes.fromhex("029000")
            second.send(b"\x04")
            assert second.recv() == ATR
        finally:
            second.close()
    finally:
        stop(server, thread)


def test_no_reconnect_returns(reader):
    server, thread = start(RecordingCard(), reader.port, reconnect=False)
    reader.accept().close()
    thread.join(2)
    assert not thread.is_alive()


def test_stop_is_prompt_when_connected_and_when_waiting(reader):
    server, thread = start(RecordingCard(), reader.port)
    conn = reader.accept()
    assert server.wait_connected(2)
    t0 = time.monotonic()
    server.stop()
    thread.join(1)
    assert not thread.is_alive() and time.monotonic() - t0 < 0.5
    assert conn.recv(10) == b""  # the reader sees the card removed
    # Waiting for a reader that is not up (connection refused): stop is prompt too.
    idle = FakeReader(listen=False)
    server2 = VpcdServer(RecordingCard(), port=idle.port, retry_interval=5.0)
    thread2 = server2.start_thread()
    time.sleep(0.05)
    t0 = time.monotonic()
    server2.stop()
    thread2.join(1)
    idle.close()
    assert not thread2.is_alive() and time.monotonic() - t0 < 0.5
    # Stopped servers can be started again.
    thread3 = server.start_thread()
    reader.accept()
    assert reader.transmit(bytes.fromhex("80EE00000107")) == bytes.fromhex("079000")
    stop(server, thread3)


def test_stop_before_thread_runs():
    server = VpcdServer(RecordingCard(), port=1)
    thread = server.start_thread()
    server.stop()
    thread.join(1)
    assert not thread.is_alive()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_QUICKACK is Linux-only")
def test_no_delayed_ack_stall(reader):
    """vpcd sends length and body in two send()s with Nagle on; without TCP_QUICKACK
    on the card side every APDU waits for a delayed ACK (about 40 ms)."""
    server, thread = start(RecordingCard(), reader.port)
    conn = reader.accept()
    apdu = bytes.fromhex("80EE000004DEADBEEF")
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        conn.sendall(len(apdu).to_bytes(2, "big"))
        conn.sendall(apdu)
        assert reader.recv() == bytes.fromhex("DEADBEEF9000")
        times.append(time.perf_counter() - t0)
    stop(server, thread)
    assert statistics.median(times) < 0.010, f"median {statistics.median(times) * 1e3:.1f} ms"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:35965", ("localhost", 35965)),
        ("10.0.0.2", ("10.0.0.2", 35963)),
        (" 10.0.0.2:1 ", ("10.0.0.2", 1)),
        (":4000", ("127.0.0.1", 4000)),
        ("[::1]:35963", ("::1", 35963)),
        ("[fe80::1]", ("fe80::1", 35963)),
        ("card.example:65535", ("card.example", 65535)),
    ],
)
def test_parse_endpoint_good(text, expected):
    assert parse_endpoint(text) == expected


def test_parse_endpoint_default_port():
    assert parse_endpoint("host", default_port=4242) == ("host", 4242)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("host:", "not a decimal"),
        ("host:port", "not a decimal"),
        ("host:-1", "not a decimal"),
        ("host:0", "out of range"),
        ("host:65536", "out of range"),
        ("::1", "brackets"),
        ("[::1", "missing ']'"),
        ("[::1]35963", "':PORT'"),
        ("my host:1", "whitespace"),
        ("host:١٢", "not a decimal"),
    ],
)
def test_parse_endpoint_bad(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_endpoint(text)
    assert repr(text) in str(info.value)


def test_module_constants():
    assert vpcd.DEFAULT_PORT == 35963
    assert isinstance(RecordingCard(), vpcd.VirtualCard)


def test_on_apdu_runs_before_the_answer_is_sent(reader):
    """Durability (issue 18 point 5): the saver hook runs before the host gets the answer."""
    in_hook, release = threading.Event(), threading.Event()

    def on_apdu(apdu: bytes, rsp: bytes) -> None:
        in_hook.set()
        assert release.wait(5)

    server, thread = start(RecordingCard(), reader.port, on_apdu=on_apdu)
    reader.accept()
    assert server.wait_connected(2)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(reader.transmit(bytes.fromhex("80EE000001AA00"))))
    t.start()
    assert in_hook.wait(5)
    assert not got                      # the hook holds the answer back
    release.set()
    t.join(5)
    assert got == [bytes.fromhex("AA9000")]
    stop(server, thread)


def test_debug_log_masks_pins_and_keys(reader, caplog):
    """Issue 18 point 7: the card side logs with the host transcript's masking rule."""
    caplog.set_level(logging.DEBUG, logger="citycard.vpcd")
    server, thread = start(RecordingCard(), reader.port)
    reader.accept()
    assert server.wait_connected(2)
    reader.transmit(bytes.fromhex("0020000003123456"))
    reader.transmit(bytes.fromhex("80D401000D36F0F0FF33A1B2C3D4E5F60718"))
    stop(server, thread)
    text = caplog.text.upper()
    assert "0020000003 <3 BYTES MASKED>" in text and "80D401000D <13 BYTES MASKED>" in text
    assert "123456" not in text and "A1B2C3D4E5F60718" not in text
