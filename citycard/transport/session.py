"""The processing stack over one transport."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..apdu import CommandApdu, ResponseApdu
from ..commands import iso
from ..errors import CardError
from .processors import Processor, Send, T0Fetch

if TYPE_CHECKING:
    from . import Transport
    from .protection import LineProtection, LineProtector


class CardSession:
    """Sends :class:`CommandApdu` through processors to a :class:`Transport`.

    ``processors`` are listed outermost first; the transcript belongs last
    (nearest the wire) so it sees every APDU actually exchanged.  Above them all sits the
    :class:`~citycard.transport.protection.LineProtector`: a command sent with
    ``protect=LineProtection(...)`` gets its GET CHALLENGE and MAC there.
    """

    def __init__(self, transport: Transport, processors: Iterable[Processor] | None = None) -> None:
        self.transport = transport
        self.processors = list(processors) if processors is not None else [T0Fetch()]
        self._protector: LineProtector | None = None    # made at the first protected command
        self._send = self._build()
        self._send_unfetched = self._build(fetch=False)

    def _build(self, fetch: bool = True) -> Send:
        transmit = self.transport.transmit
        from_bytes = ResponseApdu.from_bytes

        def wire(cmd: CommandApdu) -> ResponseApdu:
            return from_bytes(transmit(cmd.encode()))

        send: Send = wire
        for proc in reversed(self.processors):
            if not fetch and isinstance(proc, T0Fetch):
                continue
            send = (lambda p, nxt: (lambda cmd: p.process(cmd, nxt)))(proc, send)
        return send

    def add_processor(self, proc: Processor, *, outermost: bool = False) -> None:
        """Add ``proc`` first (``outermost``, just below line protection) or last (nearest the wire)."""
        if outermost:
            self.processors.insert(0, proc)
        else:
            self.processors.append(proc)
        self._send = self._build()
        self._send_unfetched = self._build(fetch=False)

    # ------------------------------------------------------------------ sending
    def send(self, cmd: CommandApdu | bytes, *, expect: int | None = None, what: str = "",
             protect: LineProtection | None = None, fetch: bool = True) -> ResponseApdu:
        """Send a command; with ``protect`` under line protection (GET CHALLENGE, MAC, and
        cipher when asked); with ``expect`` raise :class:`~citycard.errors.CardError` on another SW.
        ``fetch=False``: the caller does not use the answer's data: a T=0 ``61xx`` is returned
        as it is, without GET RESPONSE (ISO/IEC 7816-4 5.1.3: ``61xx`` is normal processing;
        a reader that fetches by itself still gives data ‖ ``9000``)."""
        if not isinstance(cmd, CommandApdu):
            cmd = CommandApdu.parse(cmd)
        if protect is not None:
            resp = self._line_protector().process(cmd, self._send, protect)
        else:
            resp = self._send(cmd) if fetch else self._send_unfetched(cmd)
        if expect is not None and resp.sw != expect:
            raise CardError(resp.sw, what or cmd.hex()[:8], expected=expect)
        return resp

    def get_challenge(self, length: int = 4) -> bytes:
        return self.send(iso.get_challenge(length), expect=0x9000, what="GET CHALLENGE").data

    @property
    def line_challenge(self) -> bytes | None:
        """The challenge of the last command sent under line protection (the MAC of a
        protected read's answer is computed with it: SPEC §6 R14)."""
        return self._protector.challenge if self._protector is not None else None

    def _line_protector(self) -> LineProtector:
        """The line-protection layer, made at the first protected command: a session that sends
        none (raw APDUs, ``citycard apdu``) does not import it (start-up, issue 19 item 3)."""
        if self._protector is None:
            from .protection import LineProtector

            self._protector = LineProtector(lambda: getattr(self.transport, "atr", b""))
        return self._protector

    @property
    def atr(self) -> bytes:
        return self.transport.atr

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> CardSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
