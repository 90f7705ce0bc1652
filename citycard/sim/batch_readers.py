"""Simulated readers for ``citycard batch run --sims N``: the simulator's side of the batch.

The batch (:mod:`citycard.perso.batch`) is host code and never imports the simulator; it
takes any reader that follows its :class:`~citycard.perso.batch.CardSource` protocol.  The
caller (the command line, a benchmark, a script) makes simulated readers here and hands
them in.  Each gives a fresh factory card for every cardholder; with ``keep_dir`` every
finished card's image is filed there as ``SERIAL.json``.  With ``timing`` (a preset of
:mod:`citycard.sim.timing`) every card sleeps its modelled card time per APDU, so the
batch sees real card time (``citycard batch run --sims N --timing PRESET``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from ..transport import CardSession
from .card import new_card
from . import image as _image
from .timing import TimedCard, TimingPreset, get_preset, unwrap
from .transport import SimTransport


class SimSource:
    """A simulated reader: a fresh factory card for every cardholder."""

    #: the card runs in this process (pure Python): the batch gives it a worker process
    in_process_card = True

    def __init__(self, name: str, keep_dir: Path | None = None, *, timing: str | TimingPreset | None = None,
                 sleep: Callable[[float], None] = time.sleep, scale: float = 1.0, max_lag: float = 0.0,
                 model: str = "fm1208") -> None:
        """``timing``: a card-time preset; each card then sleeps (``sleep(seconds × scale)``)
        the modelled time of every APDU; ``max_lag``: the card may answer up to that many
        seconds ahead of its modelled time and sleep what it owes in one piece, and all of
        it when the card is taken out (:class:`~citycard.sim.timing.TimedCard`).  ``model``:
        the card model of the fresh cards (e.g. ``psam`` for a batch of PSAMs, docs/psam.md)."""
        self.name = name
        self.model = model
        self.keep_dir = keep_dir
        self.timing = get_preset(timing) if timing is not None else None
        self.sleep = sleep
        self.scale = scale
        self.max_lag = max_lag

    def next_card(self, stop: threading.Event) -> CardSession | None:
        return self._session(self.sleep)

    def rehearsal_card(self) -> CardSession:
        """A throwaway card of this reader's model and timing that never sleeps: the batch
        warms up on it before forking its workers (:meth:`citycard.perso.batch.Batch._warm_up`)."""
        return self._session(lambda _seconds: None)

    def _session(self, sleep: Callable[[float], None]) -> CardSession:
        card: object = new_card(self.model)
        if self.timing is not None:
            card = TimedCard(card, self.timing, sleep=sleep, scale=self.scale, max_lag=self.max_lag,
                             t0_get_response="host")     # the host's T0Fetch sends GET RESPONSE
        transport = SimTransport(card, name=self.name)  # type: ignore[arg-type]
        transport.connect()
        return CardSession(transport)

    def keep(self, session: CardSession, serial: str) -> None:
        """File the finished card's image (``keep_dir``): the batch calls it before the row is
        recorded as done, so that no done row lacks its card (issue 18 point 8)."""
        if self.keep_dir is not None:
            self._kept = serial              # tried: done() does not try again
            transport = session.transport
            assert isinstance(transport, SimTransport)
            _image.save(unwrap(transport.card), self.keep_dir / f"{serial}.json")

    def done(self, session: CardSession, serial: str | None) -> None:
        """The card leaves the reader; its image is filed now unless :meth:`keep` did (a card
        that was not good: its image too, for the bureau)."""
        if serial and serial != getattr(self, "_kept", None):
            self.keep(session, serial)
        self._kept = None
        session.close()


def simulated_readers(count: int, keep_dir: str | Path | None = None, *, max_lag: float = 0.2,
                      timing: str | TimingPreset | None = None, model: str = "fm1208") -> list[SimSource]:
    """``count`` simulated readers named ``sim-1`` … ``sim-N``; ``keep_dir`` (created if
    missing) receives every finished card's image; ``timing``: a card-time preset whose
    modelled time every card sleeps; ``model``: the card model (:data:`citycard.sim.MODELS`).
    ``max_lag``: how far ahead of its modelled time a card may answer before it sleeps what it
    owes (0.2 s: ~4 wake-ups per demo card; 64 readers × 16 cards on 2 CPUs, A/B: 0.958–0.972
    of linear at 0.2 s, 0.938–0.964 at 0.05 s: docs/performance.md, "Timed readers")."""
    from .models import MODELS

    if model not in MODELS:
        from ..errors import InputError

        raise InputError(f"--sim-model {model}: unknown card model (known: {', '.join(sorted(MODELS))})")
    keep = Path(keep_dir) if keep_dir is not None else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    preset = get_preset(timing) if timing is not None else None
    return [SimSource(f"sim-{i}", keep, timing=preset, max_lag=max_lag, model=model) for i in range(1, count + 1)]
