"""Where a batch gets its cards: the :class:`CardSource` protocol and PC/SC readers.

A PC/SC reader of a bureau station (issue 17 item 3) never hands out a card it handed out
before unless that card left the reader in between.  "Left" is seen by presence and by the
reader's card event counter (pcsc-lite counts every insertion and removal in the high 16
bits of ``dwEventState``: :class:`citycard.transport.pcsc.ReaderStatus`), so a card taken
out and put back between two looks counts too, while a card that stayed is refused however
long it stays: the reader keeps asking for it to be removed ("remove the card", repeated
every :attr:`PcscSource.remind_every` seconds), and the row waits.  A second guard compares
identity: a card showing the serial just finished (read freely, when the caller gives a
``read_serial``), with the same ATR and no card event since, is handed back to the reader
and asked for again (the row is never tried on it).

The operator's prompts ("insert a card", "remove the card ...") go to ``on_prompt`` and to
the ``citycard.batch`` log: the library says them, the caller shows them (the CLI: a line on
stderr, which is a log line without a terminal).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from ..errors import CitycardError, InputError, TransportError
from ..transport import CardSession

if TYPE_CHECKING:
    from ..transport import Transport
    from ..transport.pcsc import ReaderStatus, ReaderWatch

log = logging.getLogger("citycard.batch")

__all__ = ["CardSeen", "CardSource", "PcscSource", "card_left", "pcsc_readers"]


class CardSource(Protocol):
    """A reader that hands out cards.

    ``in_process_card`` (optional, default False): the card runs in this process on the
    host's CPU (a simulated card), so the batch gives the reader a worker process of its
    own.  Simulated readers come from the simulator side
    (:func:`citycard.sim.batch_readers.simulated_readers`): host code never imports it."""

    name: str

    def next_card(self, stop: threading.Event) -> CardSession | None:
        """Wait for a card and return a session to it (None when stopping)."""
        ...

    def done(self, session: CardSession, serial: str | None) -> None:
        """The card is finished (taken out of the reader)."""
        ...

    # optional: ``keep(session, serial)`` files a good card (e.g. a simulated card's image)
    # before its row is recorded as done; an error there leaves the row not done (Batch._one)


@dataclass(frozen=True)
class CardSeen:
    """A card a reader handed out: the reader's card event counter while it was connected,
    its ATR, and its serial (the one written, else the one read freely; None unknown)."""

    events: int
    atr: bytes
    serial: str | None = None


def card_left(card: CardSeen, now: ReaderStatus) -> bool:
    """Whether ``card`` has left the reader since it was connected: no card now, or the
    reader counted a card event (a removal, then an insertion) since."""
    return not now.card_present or now.events != card.events


SerialReader = Callable[[CardSession], "str | None"]


class PcscSource:
    """A PC/SC reader of a batch station (see the module docstring).

    ``on_prompt(message)`` is told what the operator must do at this reader, when it becomes
    true and again every :attr:`remind_every` seconds while it stays true.  ``read_serial``
    (optional) reads the serial of a connected card without any key (the profile's free-read
    serial file): the identity guard."""

    in_process_card = False

    remove_grace = 1.0     # seconds done() waits quietly for the card to leave before asking for it
    remind_every = 15.0    # seconds between two reminders of the same prompt
    poll = 0.5             # seconds between two looks at the stop event while waiting

    def __init__(self, reader: str, on_prompt: Callable[[str], None] | None = None, *,
                 read_serial: SerialReader | None = None) -> None:
        self.name = reader
        self.on_prompt = on_prompt
        self.read_serial = read_serial
        self._held: CardSeen | None = None        # the card handed out, until done()
        self._finished: CardSeen | None = None    # the card done last, until it has left the reader
        self._said: tuple[str, float] | None = None
        self._last: CardSeen | None = None        # the card done last, for the identity guard
        self._seen_empty = False                  # a look showed no card since the last done()

    # ------------------------------------------------------------------ prompts
    def _prompt(self, what: str) -> None:
        log.info("%s: %s", self.name, what)
        if self.on_prompt is not None:
            self.on_prompt(f"{self.name}: {what}")

    def _ask(self, what: str) -> None:
        """Say ``what`` when it is new, and again every :attr:`remind_every` seconds."""
        now = time.monotonic()
        if self._said is None or self._said[0] != what or now - self._said[1] >= self.remind_every:
            self._prompt(what)
            self._said = (what, now)

    def _remove_prompt(self, card: CardSeen) -> str:
        return f"remove the card{f' {card.serial}' if card.serial else ''}"

    # ------------------------------------------------------------------ the card
    def _watch(self) -> ReaderWatch:
        from ..transport.pcsc import ReaderWatch

        return ReaderWatch(self.name)

    def _transport(self) -> Transport:
        """The card in this reader, held exclusively and reset when released (card custody,
        issue 18); not connected yet."""
        from ..transport.pcsc import PcscTransport

        return PcscTransport(self.name, shared=False, reset_on_close=True)

    def _look(self, state: ReaderStatus) -> ReaderStatus:
        if not state.card_present:
            self._seen_empty = True
        return state

    def next_card(self, stop: threading.Event) -> CardSession | None:
        """A session to a card that is not the card finished last (unless it left the reader
        in between); None once ``stop`` is set.  Waits, and prompts, for as long as it takes."""
        watch = self._watch()
        try:
            state = self._look(watch.state())
            while not stop.is_set():
                finished = self._finished
                if finished is not None and card_left(finished, state):
                    self._finished = finished = None
                if finished is not None:
                    self._ask(self._remove_prompt(finished))
                elif not state.card_present:
                    self._ask("insert a card")
                else:
                    session = self._take(watch)
                    if isinstance(session, CardSession):
                        self._said = None
                        return session
                    if session:
                        self._ask(session)
                state = self._look(watch.wait(state, self.poll))
            return None
        finally:
            watch.close()

    def _take(self, watch: ReaderWatch) -> CardSession | str | None:
        """Connect to the card in the reader and check it is not the card finished last; else
        what to ask the operator ("" or None: nothing new, the card stays asked for)."""
        t = self._transport()
        try:
            t.connect()
        except TransportError as exc:
            t.close()
            if not self._look(watch.state()).card_present:
                return None              # it went between the look and the connect
            return f"the card cannot be used ({exc}): remove it"
        session = CardSession(t)
        try:
            held = self._look(watch.state())   # the counter while this card is held: it cannot change under us
            finished = self._finished
            if finished is not None and not card_left(finished, held):
                t.close()                        # the race of a look before connecting: never taken
                return None
            serial = self.read_serial(session) if self.read_serial is not None else None
            if self._same_card_again(serial, t.atr, held):
                log.warning("%s: card %s is the card just finished, and the reader did not show it leave: "
                            "not taken", self.name, serial)
                # asked out again, counted from now: a card event or an empty slot from here on
                self._finished = self._last = CardSeen(held.events, t.atr, serial)
                t.close()
                return None
        except CitycardError as exc:
            t.close()
            return f"the card could not be read ({exc}): remove it"
        except BaseException:
            t.close()
            raise
        self._held = CardSeen(held.events, t.atr, serial)
        self._last = None
        return session

    def _same_card_again(self, serial: str | None, atr: bytes, now: ReaderStatus) -> bool:
        """The identity guard: the card shows the serial and ATR of the card finished last, and
        the reader showed neither an empty slot nor a whole removal and insertion (two card
        events) since.  A counter moved by one event while a card stayed present is not a card
        change (a reader glitch): the same card is not taken on that alone."""
        last = self._last
        if last is None or serial is None or serial != last.serial or atr != last.atr:
            return False
        return not self._seen_empty and (now.events - last.events) % 0x10000 < 2

    def done(self, session: CardSession, serial: str | None) -> None:
        """The card is finished: power it down (a card dispenser then swaps it) and ask for it
        to be taken out unless it leaves within :attr:`remove_grace` seconds.  The next
        :meth:`next_card` does not take it again while it stays."""
        watch = self._watch()
        try:
            held = self._held if self._held is not None else CardSeen(watch.state().events, session.atr)
            self._held = None
            session.transport.close(unpower=True)  # type: ignore[call-arg]
            card = CardSeen(held.events, held.atr, serial or held.serial)
            self._finished = self._last = card
            self._seen_empty = False
            state = self._look(watch.state())
            deadline = time.monotonic() + self.remove_grace
            while not card_left(card, state) and time.monotonic() < deadline:
                state = self._look(watch.wait(state, max(0.0, deadline - time.monotonic())))
            if card_left(card, state):
                self._finished = None
            else:
                self._ask(self._remove_prompt(card))
        finally:
            watch.close()


def pcsc_readers(names: Iterable[str], on_prompt: Callable[[str], None] | None = None, *,
                 read_serial: SerialReader | None = None) -> list[PcscSource]:
    """One :class:`PcscSource` per named PC/SC reader (a name, a unique name fragment or an
    index, resolved against the readers present); a reader named twice is an error."""
    from ..transport.pcsc import PcscContext, resolve_reader

    wanted = list(names)
    if not wanted:
        return []
    ctx = PcscContext()
    try:
        present = ctx.readers()
    finally:
        ctx.release()
    resolved = [resolve_reader(r, present) for r in wanted]
    if len(set(resolved)) != len(resolved):
        raise InputError("the same reader is named twice")
    return [PcscSource(r, on_prompt, read_serial=read_serial) for r in resolved]
