"""The card side of the vsmartcard *vpcd* protocol.

pcscd's vpcd driver is the TCP **server**; a virtual card is the **client**: opening
the connection inserts the card into the reader, closing it removes the card.
Every message, in both directions, is a 2-byte big-endian length followed by that
many bytes.  A 1-byte message from the reader is a control code (``00`` power off,
``01`` power on, ``02`` reset: no reply; ``04`` get ATR: reply with the framed ATR,
at any time, even while powered off); a longer message is a command APDU, answered
with the framed response APDU (data || SW1 SW2).  See ``/work/shared/PCSC.md``.

vpcd sends the length and the body in two ``send()`` calls without disabling Nagle,
so the card sets ``TCP_QUICKACK`` before every ``recv``: without it each APDU waits
for a delayed ACK (about 44 ms instead of about 0.1 ms).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from citycard.apdu import CommandApdu, is_sensitive
from citycard.errors import InputError
from citycard.transport.transcript import format_command

__all__ = ["DEFAULT_PORT", "VirtualCard", "VpcdServer", "parse_endpoint"]

log = logging.getLogger("citycard.vpcd")

DEFAULT_PORT = 35963
"""Port of the first slot of Debian's default vpcd configuration."""

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
_SW_ERROR = b"\x6f\x00"  # answered when the card raises or returns an unsendable response
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


@runtime_checkable
class VirtualCard(Protocol):
    """What :class:`VpcdServer` needs from a simulated card."""

    atr: bytes
    """Answer to reset, sent whenever the reader asks (also while powered off)."""

    def power_on(self) -> None:
        """Contacts powered: the card starts in its reset state."""

    def power_off(self) -> None:
        """Power removed (also called when the card leaves the reader)."""

    def reset(self) -> None:
        """Warm reset."""

    def process(self, apdu: bytes) -> bytes:
        """Execute one command APDU; return response data || SW1 SW2. Should not raise."""


def masked_apdu(apdu: bytes) -> str:
    """A command APDU for a log line, with key and PIN data masked by the same rule as the host
    transcript (``citycard.transport.transcript.format_command``)."""
    try:
        return format_command(CommandApdu.parse(apdu))
    except Exception:  # unparsable: header only
        return apdu[:4].hex().upper() + (f" <{len(apdu) - 4} bytes>" if len(apdu) > 4 else "")


class VpcdServer:
    """Connects a :class:`VirtualCard` to a vpcd reader slot and serves it.

    Named a server because it serves the card, although it is the TCP client.
    ``on_apdu(apdu, response)`` is called in the serving thread after the card processed each
    APDU and **before** the answer is sent, so that a saver can persist the change first
    (exceptions from it are logged, not propagated).  The debug log masks key and PIN data
    with the host transcript's rule (:func:`masked_apdu`).
    """

    def __init__(
        self,
        card: VirtualCard,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        reconnect: bool = True,
        retry_interval: float = 0.2,
        on_apdu: Callable[[bytes, bytes], None] | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.reconnect = reconnect
        self.retry_interval = retry_interval
        self.on_apdu = on_apdu
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    # -- control -------------------------------------------------------------------
    def stop(self) -> None:
        """Make :meth:`serve_forever` return promptly (thread-safe; removes the card)."""
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv(); close follows
            except OSError:
                pass

    def start_thread(self) -> threading.Thread:
        """Run :meth:`serve_forever` in a new daemon thread and return the thread."""
        self._stop.clear()  # here, not in the thread: a stop() right after start wins
        thread = threading.Thread(
            target=self.serve_forever, name=f"vpcd-card-{self.host}:{self.port}", daemon=True
        )
        thread.start()
        return thread

    @property
    def connected(self) -> bool:
        """True while the card is in the reader (connected to vpcd)."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until connected to vpcd; return whether it is."""
        return self._connected.wait(timeout)

    # -- serving ---------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Connect (retrying while vpcd is not listening) and serve until :meth:`stop`.

        When vpcd closes the connection (pcscd stopped or restarted) the card is
        powered off and, if ``reconnect``, inserted again as soon as vpcd listens.
        A :meth:`stop` issued before this starts makes it return at once.
        """
        try:
            self._serve()
        finally:
            self._stop.clear()  # the server can be started again
        log.debug("vpcd %s:%d card stopped", self.host, self.port)

    def _serve(self) -> None:
        while not self._stop.is_set():
            sock = self._connect()
            if sock is None:
                break
            try:
                self._serve_connection(sock)
            except OSError as exc:
                if not self._stop.is_set():
                    log.info("vpcd %s:%d connection lost: %s", self.host, self.port, exc)
            finally:
                with self._lock:
                    self._sock = None
                sock.close()
                log.info("card removed from vpcd %s:%d", self.host, self.port)
                self._call_card(self.card.power_off)
                self._connected.clear()  # last: the card is off once not connected
            if not self.reconnect:
                break

    def _connect(self) -> socket.socket | None:
        """Connect to vpcd, retrying every ``retry_interval``; None once stopped."""
        addr = (self.host, self.port)
        waiting_logged = False
        while not self._stop.is_set():
            try:
                sock = socket.create_connection(addr, timeout=self.connect_timeout)
            except OSError as exc:
                if not waiting_logged:
                    log.info("waiting for vpcd at %s:%d (%s)", self.host, self.port, exc)
                    waiting_logged = True
                self._stop.wait(self.retry_interval)
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stop.is_set():
                    sock.close()
                    return None
                self._sock = sock
            self._connected.set()
            log.info("card inserted into vpcd %s:%d", self.host, self.port)
            return sock
        return None

    def _call_card(self, method: Callable[[], None]) -> None:
        try:
            method()
        except Exception:
            log.exception("virtual card %s() raised", getattr(method, "__name__", "?"))

    def _serve_connection(self, sock: socket.socket) -> None:
        """Serve one connection until it closes (returns) or fails (OSError)."""
        recv, sendall = sock.recv, sock.sendall
        quickack = _TCP_QUICKACK
        if quickack is not None:
            setsockopt = sock.setsockopt
            tcp = socket.IPPROTO_TCP

            def read(n: int) -> bytes:
                setsockopt(tcp, quickack, 1)
                data = recv(n)
                while len(data) < n:
                    if not data:
                        return data
                    setsockopt(tcp, quickack, 1)
                    more = recv(n - len(data))
                    if not more:
                        return b""
                    data += more
                return data
        else:

            def read(n: int) -> bytes:
                data = recv(n)
                while data and len(data) < n:
                    more = recv(n - len(data))
                    if not more:
                        return b""
                    data += more
                return data

        card = self.card
        process = card.process
        debug = log.isEnabledFor(logging.DEBUG)
        while True:
            head = read(2)
            if len(head) != 2:
                return
            n = (head[0] << 8) | head[1]
            if n == 0:
                log.warning("vpcd sent an empty frame; ignored")
                continue
            msg = read(n)
            if len(msg) != n:
                return
            if n == 1:
                self._control(sock, msg[0])
                continue
            try:
                rsp = process(msg)
                size = len(rsp)
                if not 2 <= size <= 0xFFFF:
                    log.error("card returned %d bytes for %s; answering 6F00", size, masked_apdu(msg))
                    rsp, size = _SW_ERROR, 2
            except Exception:
                log.exception("card raised on APDU %s; answering 6F00", masked_apdu(msg))
                rsp, size = _SW_ERROR, 2
            if self.on_apdu is not None:
                # before the answer: a saver persists the change first, as a real card writes
                # its EEPROM before it answers (issue 18 point 5)
                try:
                    self.on_apdu(msg, rsp)
                except Exception:
                    log.exception("on_apdu callback raised")
            sendall(size.to_bytes(2, "big") + rsp)
            if debug:
                shown = bytes(rsp).hex().upper()
                if is_sensitive(msg) and len(rsp) > 2:   # never echo what a sensitive command carried
                    shown = f"<{len(rsp) - 2} bytes masked> {shown[-4:]}"
                log.debug("C: %s  R: %s", masked_apdu(msg), shown)

    def _control(self, sock: socket.socket, code: int) -> None:
        card = self.card
        if code == CTRL_ATR:
            try:
                atr = bytes(card.atr)
            except Exception:
                log.exception("card.atr raised")
                atr = b""
            if not atr:  # an empty frame would block pcscd; a bogus ATR only fails power-up
                log.error("card has no ATR; answering 3B 00")
                atr = b"\x3b\x00"
            sock.sendall(len(atr).to_bytes(2, "big") + atr)
        elif code == CTRL_ON:
            self._call_card(card.power_on)
        elif code == CTRL_OFF:
            self._call_card(card.power_off)
        elif code == CTRL_RESET:
            self._call_card(card.reset)
        else:
            log.warning("unknown vpcd control code %02X ignored", code)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("control %02X", code)


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Parse ``HOST``, ``HOST:PORT``, ``:PORT`` (localhost) or ``[IPv6]:PORT``.

    >>> parse_endpoint("localhost:35965")
    ('localhost', 35965)
    """
    where = f"endpoint {text!r}"
    s = text.strip()
    if not s:
        raise InputError(f"{where}: empty; expected HOST:PORT")
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise InputError(f"{where}: missing ']' after the IPv6 address")
        host, rest = s[1:end], s[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InputError(f"{where}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    elif s.count(":") > 1:
        raise InputError(f"{where}: put an IPv6 address in brackets, as [::1]:{default_port}")
    else:
        host, sep, port_text_ = s.partition(":")
        port_text = port_text_ if sep else None
    host = host or "127.0.0.1"
    if any(c.isspace() for c in host):
        raise InputError(f"{where}: host contains whitespace")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdecimal()):
        raise InputError(f"{where}: port {port_text!r} is not a decimal number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InputError(f"{where}: port {port} is out of range 1..65535")
    return host, port
