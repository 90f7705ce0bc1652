"""Transports and the APDU processing stack (DESIGN.md, "Transport stack").

A :class:`Transport` moves raw APDU bytes to a card and back.  A
:class:`CardSession` wraps one with processors, each doing one job:

* :class:`~citycard.transport.processors.T0Fetch` — ``61xx`` → GET RESPONSE,
  ``6Cxx`` → resend with the right Le;
* :class:`~citycard.transport.transcript.Transcript` — logs every exchange on the
  wire, masking the data of sensitive commands;
* above them all, :class:`~citycard.transport.protection.LineProtector` — a command sent
  with ``protect=LineProtection(key, encrypt=...)`` gets GET CHALLENGE and its MAC.

Every command citycard sends goes through the same stack.

:class:`CardSession` and :class:`LineProtection` are imported when first used (PEP 562): a
module that needs only a part of the package (the transcript's formatting, the PC/SC
transport) does not pay for the session stack and its commands (issue 19 item 3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .protection import LineProtection
    from .session import CardSession

#: the names this package re-exports -> the submodule defining them
_NAMES = {"CardSession": "session", "LineProtection": "protection"}


@runtime_checkable
class Transport(Protocol):
    """The small protocol every card connection implements."""

    name: str

    def connect(self) -> None: ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU, return response data ‖ SW1 SW2."""
        ...

    @property
    def atr(self) -> bytes: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


__all__ = ["Transport", "CardSession", "LineProtection"]


__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)
