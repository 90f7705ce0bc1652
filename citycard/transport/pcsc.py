"""PC/SC transport over pyscard's low-level ``smartcard.scard`` API.

Readers are chosen by exact name, by index (``"0"``, ``"1"``, ...), or by a
case-insensitive name fragment.  A fragment matching several readers picks the only
one of them holding a card and says so (a WARNING log line): the vpcd virtual reader
always opens two slots, ``"<name> 00 00"`` and ``"<name> 00 01"`` (PCSC.md), so
``"Virtual"`` matches both while only one holds the simulated card.  Errors say why
nothing was found and how to fix it (pcscd not running, no reader configured).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ..errors import NoReaderError, TransportError


try:
    from smartcard import scard
except ImportError:  # pragma: no cover - pyscard is a hard dependency
    scard = None  # type: ignore[assignment]

_PROTOCOLS = {1: "T=0", 2: "T=1"}
log = logging.getLogger(__name__)


def _hr(hresult: int) -> int:
    return hresult & 0xFFFFFFFF


def _explain(hresult: int) -> str:
    code = _hr(hresult)
    if code == _hr(scard.SCARD_E_NO_SERVICE):
        sock = os.environ.get("PCSCLITE_CSOCK_NAME")
        where = f" at {sock}" if sock else ""
        return (f"PC/SC service not available{where}: pcscd is not running; "
                "start it (as root: `pcscd`, or `systemctl start pcscd`) or use --sim IMAGE")
    if code == _hr(scard.SCARD_E_NO_READERS_AVAILABLE):
        return ("pcscd is running but has no reader: plug one in, or configure the vpcd virtual "
                "reader (/etc/reader.conf.d/vpcd, see shared/PCSC.md) and run `citycard sim serve IMAGE`")
    return f"{scard.SCardGetErrorMessage(hresult)} (0x{code:08X})"


class PcscContext:
    """An established PC/SC context (one per process is plenty)."""

    def __init__(self) -> None:
        if scard is None:  # pragma: no cover
            raise TransportError("pyscard is not installed")
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr != scard.SCARD_S_SUCCESS:
            raise NoReaderError(_explain(hr))
        self.handle = ctx

    def readers(self) -> list[str]:
        hr, names = scard.SCardListReaders(self.handle, [])
        if hr == scard.SCARD_E_NO_READERS_AVAILABLE or (hr == scard.SCARD_S_SUCCESS and not names):
            return []
        if hr != scard.SCARD_S_SUCCESS:
            raise NoReaderError(_explain(hr))
        return list(names)

    def status(self, names: list[str]) -> list[ReaderStatus]:
        if not names:
            return []
        states = [(n, scard.SCARD_STATE_UNAWARE) for n in names]
        hr, result = scard.SCardGetStatusChange(self.handle, 0, states)
        if hr not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
            raise TransportError(_explain(hr))
        return [_reader_status(name, state, atr) for name, state, atr in result]

    def release(self) -> None:
        if self.handle is not None:
            scard.SCardReleaseContext(self.handle)
            self.handle = None


@dataclass(frozen=True, slots=True)
class ReaderStatus:
    """One reader as ``SCardGetStatusChange`` shows it.  ``events`` is the reader's card event
    counter: pcsc-lite (and Windows) keep in the high 16 bits of ``dwEventState`` the number of
    card insertions and removals seen on the reader, so a card taken out and put back between
    two looks still changes it (pcsc-lite ``winscard_clnt.c``, SCardGetStatusChange; 0 where a
    stack does not count).  ``state`` is the raw ``dwEventState`` (what :class:`ReaderWatch`
    hands back to wait for the next change)."""

    name: str
    card_present: bool
    in_use: bool
    atr: bytes
    events: int = 0
    state: int = 0


#: the event counter's place in ``dwEventState`` (pcsc-lite: ``eventCounter << 16``)
EVENT_COUNTER_SHIFT = 16


def _reader_status(name: str, state: int, atr: object) -> ReaderStatus:
    present = bool(state & scard.SCARD_STATE_PRESENT)
    return ReaderStatus(name, present,
                        bool(state & scard.SCARD_STATE_EXCLUSIVE) or bool(state & scard.SCARD_STATE_INUSE),
                        bytes(atr) if present else b"",  # type: ignore[call-overload]
                        (state >> EVENT_COUNTER_SHIFT) & 0xFFFF, state)


class ReaderWatch:
    """Watches one reader's card presence and event counter (for a batch station: a card is
    never taken again until it left the reader, :mod:`citycard.perso.card_sources`)."""

    def __init__(self, reader: str) -> None:
        self.reader = reader
        self._ctx = PcscContext()

    def state(self) -> ReaderStatus:
        """The reader now."""
        return self.wait(None, 0.0)

    def wait(self, known: ReaderStatus | None, timeout: float) -> ReaderStatus:
        """The reader's state once it differs from ``known`` (presence or event counter), or
        after ``timeout`` seconds as it is then; ``known`` None: at once."""
        if self._ctx is None or self._ctx.handle is None:
            raise TransportError("the reader watch is closed", self.reader)
        current = scard.SCARD_STATE_UNAWARE if known is None else known.state & ~scard.SCARD_STATE_CHANGED
        ms = 0 if known is None else max(0, int(timeout * 1000))
        hr, result = scard.SCardGetStatusChange(self._ctx.handle, ms, [(self.reader, current)])
        if _hr(hr) == _hr(scard.SCARD_E_TIMEOUT) and known is not None:
            return known
        if hr != scard.SCARD_S_SUCCESS or not result:
            raise TransportError(f"cannot watch reader {self.reader!r}: {_explain(hr)}", self.reader)
        name, state, atr = result[0]
        if state & scard.SCARD_STATE_UNKNOWN:
            raise TransportError(f"reader {self.reader!r} is gone", self.reader)
        return _reader_status(name, state, atr)

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.release()
            self._ctx = None


def list_readers() -> list[ReaderStatus]:
    """Every reader with card presence and ATR.  Raises :class:`NoReaderError` with the reason
    when PC/SC is unavailable or no reader is configured."""
    ctx = PcscContext()
    try:
        names = ctx.readers()
        if not names:
            raise NoReaderError(_explain(scard.SCARD_E_NO_READERS_AVAILABLE))
        return ctx.status(names)
    finally:
        ctx.release()


def resolve_reader(spec: str, names: list[str],
                   holding_card: Callable[[list[str]], Collection[str]] | None = None) -> str:
    """Pick one reader by exact name, index, or case-insensitive fragment.

    A fragment matching several readers needs ``holding_card`` (given the matching names,
    it returns those with a card in them): the only one holding a card is picked, with a
    WARNING log line naming it; none or several holding a card is an error listing them.
    """
    if not names:
        raise NoReaderError(_explain(scard.SCARD_E_NO_READERS_AVAILABLE))
    if spec in names:
        return spec
    if spec.isdigit():
        i = int(spec)
        if i < len(names):
            return names[i]
        raise NoReaderError(f"reader index {i} out of range: {len(names)} reader(s): {', '.join(names)}")
    hits = [n for n in names if spec.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise NoReaderError(f"no reader matches {spec!r}; readers: {', '.join(names)}")
    if holding_card is None:
        raise NoReaderError(f"{spec!r} matches {len(hits)} readers ({', '.join(hits)}); be more specific")
    present = set(holding_card(hits))
    with_card = [n for n in hits if n in present]
    if len(with_card) == 1:
        log.warning("reader %r matches %d readers; using %r, the only one holding a card",
                    spec, len(hits), with_card[0])
        return with_card[0]
    if not with_card:
        raise NoReaderError(f"{spec!r} matches {len(hits)} readers and none holds a card: {', '.join(hits)}")
    raise NoReaderError(f"{spec!r} matches {len(with_card)} readers holding a card ({', '.join(with_card)});"
                        " give the full name or the index (citycard readers)")


def _holding_card(ctx: PcscContext) -> Callable[[list[str]], list[str]]:
    def query(names: list[str]) -> list[str]:
        return [r.name for r in ctx.status(names) if r.card_present]

    return query


class PcscTransport:
    """A card in a PC/SC reader.  ``reader`` is a name, fragment or index."""

    def __init__(self, reader: str = "0", *, shared: bool = True, reset_on_close: bool = False) -> None:
        """``shared`` False takes the card exclusively (``SCARD_SHARE_EXCLUSIVE``: no other PC/SC
        client can send a command inside this one's security state); ``reset_on_close`` resets the
        card when it is released, so the next client does not inherit a security state reached
        with keys or PINs (issue 18, "card custody")."""
        self.spec = reader
        self.name = reader
        self._resolved: str | None = None   # the reader picked at the first connect
        self.shared = shared
        self.reset_on_close = reset_on_close
        self._ctx: PcscContext | None = None
        self._card = None
        self._pci = None
        self._atr = b""

    def connect(self) -> None:
        ctx = PcscContext()
        try:
            if self._resolved is None:   # reconnect() comes back to the same reader
                self._resolved = resolve_reader(self.spec, ctx.readers(), _holding_card(ctx))
            self.name = self._resolved
            mode = scard.SCARD_SHARE_SHARED if self.shared else scard.SCARD_SHARE_EXCLUSIVE
            hr, card, proto = scard.SCardConnect(ctx.handle, self.name, mode,
                                                 scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            if hr != scard.SCARD_S_SUCCESS:
                if _hr(hr) == _hr(scard.SCARD_E_NO_SMARTCARD) or _hr(hr) == _hr(scard.SCARD_W_REMOVED_CARD):
                    raise TransportError(f"no card in reader {self.name!r}", self.name)
                raise TransportError(f"cannot connect to {self.name!r}: {_explain(hr)}", self.name)
        except BaseException:
            ctx.release()
            raise
        self._ctx, self._card = ctx, card
        self._pci = scard.SCARD_PCI_T0 if proto == scard.SCARD_PROTOCOL_T0 else scard.SCARD_PCI_T1
        self.protocol = _PROTOCOLS.get(proto, str(proto))
        hr, _reader, _state, _proto, atr = scard.SCardStatus(card)
        self._atr = bytes(atr) if hr == scard.SCARD_S_SUCCESS else b""

    def transmit(self, apdu: bytes) -> bytes:
        if self._card is None:
            raise TransportError("not connected", self.name)
        hr, resp = scard.SCardTransmit(self._card, self._pci, list(apdu))
        if hr != scard.SCARD_S_SUCCESS:
            raise TransportError(f"transmit failed on {self.name!r}: {_explain(hr)}", self.name)
        if len(resp) < 2:
            raise TransportError(f"no answer from the card in {self.name!r} (removed?)", self.name)
        return bytes(resp)

    @property
    def atr(self) -> bytes:
        return self._atr

    def reset(self) -> None:
        if self._card is None:
            return
        mode = scard.SCARD_SHARE_SHARED if self.shared else scard.SCARD_SHARE_EXCLUSIVE
        hr, proto = scard.SCardReconnect(self._card, mode, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
                                         scard.SCARD_RESET_CARD)
        if hr != scard.SCARD_S_SUCCESS:
            raise TransportError(f"reset failed on {self.name!r}: {_explain(hr)}", self.name)
        hr, _reader, _state, _proto, atr = scard.SCardStatus(self._card)
        self._atr = bytes(atr) if hr == scard.SCARD_S_SUCCESS else self._atr

    def reconnect(self, timeout: float = 10.0) -> None:
        """After the card was removed (or lost power): wait for a card in the same reader and
        connect again."""
        import time

        self.close()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.connect()
                return
            except TransportError as exc:
                last = exc
                time.sleep(0.05)
        raise TransportError(f"no card came back in {self.name!r} within {timeout:.0f} s ({last})", self.name)

    def close(self, unpower: bool = False) -> None:
        """Release the card; ``unpower`` powers it down (the card is done: a card dispenser
        such as ``citycard sim serve --dispenser`` then swaps it for a fresh one)."""
        if self._card is not None:
            disposition = (scard.SCARD_UNPOWER_CARD if unpower else
                           scard.SCARD_RESET_CARD if self.reset_on_close else scard.SCARD_LEAVE_CARD)
            scard.SCardDisconnect(self._card, disposition)
            self._card = None
        if self._ctx is not None:
            self._ctx.release()
            self._ctx = None


def choose_default_reader() -> str:
    """The reader to use when none is named: ``$CITYCARD_READER``, else the only
    reader holding a card."""
    env = os.environ.get("CITYCARD_READER")
    if env:
        return env
    readers = list_readers()
    with_card = [r.name for r in readers if r.card_present]
    if len(with_card) == 1:
        return with_card[0]
    names = ", ".join(r.name + (" (card)" if r.card_present else "") for r in readers)
    if not with_card:
        raise NoReaderError(f"no reader holds a card; readers: {names}")
    raise NoReaderError(f"{len(with_card)} readers hold a card ({names}); choose one with --reader")


def wait_card_change(reader: str, present: bool, timeout: float = 10.0) -> bool:
    """Wait until ``reader`` shows a card (``present``) or none; True when it did in time."""
    import time

    ctx = PcscContext()
    try:
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            hr, result = scard.SCardGetStatusChange(ctx.handle, int(min(left, 1.0) * 1000), [(reader, state)])
            if hr not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
                raise TransportError(_explain(hr), reader)
            if hr == scard.SCARD_S_SUCCESS and result:
                _name, state, _atr = result[0]
                if bool(state & scard.SCARD_STATE_PRESENT) == present:
                    return True
                state &= ~scard.SCARD_STATE_CHANGED
    finally:
        ctx.release()
