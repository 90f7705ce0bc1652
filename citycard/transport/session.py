"""The processing stack over one transport."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..apdu import ApduError, CommandApdu, ResponseApdu
from ..crypto.secure import protect
from .processors import Processor, Send, T0Fetch

if TYPE_CHECKING:
    from . import Transport


class CardSession:
    """Sends :class:`CommandApdu` through processors to a :class:`Transport`.

    ``processors`` are listed outermost first; the transcript belongs last
    (nearest the wire) so it sees every APDU actually exchanged.
    """

    def __init__(self, transport: Transport, processors: Iterable[Processor] | None = None) -> None:
        self.transport = transport
        self.processors = list(processors) if processors is not None else [T0Fetch()]
        self._send = self._build()

    def _build(self) -> Send:
        transmit = self.transport.transmit
        from_bytes = ResponseApdu.from_bytes

        def wire(cmd: CommandApdu) -> ResponseApdu:
            return from_bytes(transmit(cmd.encode()))

        send: Send = wire
        for proc in reversed(self.processors):
            send = (lambda p, nxt: (lambda cmd: p.process(cmd, nxt)))(proc, send)
        return send

    def add_processor(self, proc: Processor, *, outermost: bool = False) -> None:
        if outermost:
            self.processors.insert(0, proc)
        else:
            self.processors.append(proc)
        self._send = self._build()

    # ------------------------------------------------------------------ sending
    def send(self, cmd: CommandApdu | bytes, *, expect: int | None = None, what: str = "") -> ResponseApdu:
        """Send a command; with ``expect`` raise :class:`ApduError` on another SW."""
        if not isinstance(cmd, CommandApdu):
            cmd = CommandApdu.parse(cmd)
        resp = self._send(cmd)
        if expect is not None and resp.sw != expect:
            raise ApduError(resp.sw, command=what or cmd.hex()[:8], expected=expect)
        return resp

    def get_challenge(self, length: int = 4) -> bytes:
        return self.send(CommandApdu(0x00, 0x84, 0, 0, ne=length), expect=0x9000,
                         what="GET CHALLENGE").data

    def send_protected(self, cmd: CommandApdu, key: bytes, *, encrypt: bool = False,
                       expect: int | None = None, what: str = "") -> ResponseApdu:
        """GET CHALLENGE, then send ``cmd`` with line protection (SPEC.md §1.6)."""
        challenge = self.get_challenge(4)
        return self.send(protect(cmd, key, challenge, encrypt=encrypt), expect=expect, what=what)

    @property
    def atr(self) -> bytes:
        return self.transport.atr

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> CardSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
