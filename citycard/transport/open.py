"""Opening a card session: a transport plus the processing stack (DESIGN.md, "Transport stack").

Every command citycard sends to a card goes through a session opened here::

    from citycard.transport.open import open_session

    with open_session(reader="0", transcript=open("apdus.log", "a")) as session:
        print(session.send(bytes.fromhex("00A40000023F00")).sw)

The card is either in a PC/SC reader (``reader``: a name, a unique name fragment or an
index; by default the one reader holding a card) or behind any other :class:`Transport`
(``transport``: e.g. a simulated card from :func:`citycard.sim.saver.open_image`; host code
never imports the simulator, the caller hands its transport in).

The stack, outermost first: :class:`T0Fetch` (``61xx``/``6Cxx``, unless ``fetch`` is False:
raw exchanges), then a :class:`Transcript` nearest the wire when a transcript sink is given
or ``log_apdus`` (default: when the ``citycard.apdu`` logger is at DEBUG).
"""

from __future__ import annotations

import logging
from typing import IO, Callable, Union

from ..errors import InputError
from . import Transport
from .processors import Processor, T0Fetch
from .session import CardSession
from .transcript import Transcript

#: where the transcript goes: a text file, or a function giving it (or None) once the card is connected
TranscriptSink = Union[IO[str], Callable[[], Union[IO[str], None]]]


def open_session(reader: str | None = None, *, transport: Transport | None = None,
                 transcript: TranscriptSink | None = None, log_apdus: bool | None = None,
                 fetch: bool = True, custody: bool = True) -> CardSession:
    """Connect to the card and return a ready :class:`CardSession` (a context manager: leaving
    it closes the card connection).  A ``transcript`` given as a function is called once the
    card is connected (a transcript file is then created only for a card that answered).

    ``custody`` (the default, for a PC/SC reader): the card is held exclusively for the whole
    session and reset when it is released, so no other program on the station can send commands
    inside this session's security state, and none inherits it afterwards.  ``custody=False``
    shares the card and leaves it as it is (raw APDU tools, like opensc-tool and scriptor)."""
    if reader is not None and transport is not None:
        raise InputError("choose either a reader or a transport, not both")
    if transport is None:
        from .pcsc import PcscTransport, choose_default_reader

        transport = PcscTransport(reader if reader is not None else choose_default_reader(),
                                  shared=not custody, reset_on_close=custody)
    transport.connect()
    try:
        sink = transcript() if callable(transcript) else transcript
    except BaseException:
        transport.close()
        raise
    processors: list[Processor] = [T0Fetch()] if fetch else []
    if log_apdus is None:
        log_apdus = logging.getLogger("citycard.apdu").isEnabledFor(logging.DEBUG)
    if sink is not None or log_apdus:
        recorder = Transcript(sink)
        recorder.header(transport.name, transport.atr)
        processors.append(recorder)
    return CardSession(transport, processors)
