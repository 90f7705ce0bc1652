"""A card dispenser for batch runs through pcscd (``citycard sim serve --dispenser DIR``).

When the host is done with a card it powers it down (``SCardDisconnect`` with
``SCARD_UNPOWER_CARD``, as ``citycard batch`` does).  If the card was changed since it
was inserted, the dispenser files its image in DIR, takes the card out of the reader
(the vpcd connection closes: pcscd sees the removal) and inserts a fresh factory card.

The reader stays empty for :attr:`Dispenser.out_time` seconds between the two, as a physical
card change does: pcscd looks at a vpcd slot about every 0.4 s (shared/PCSC.md), and a card
swapped faster than that (measured: within about 0.4 s of its insertion, with no gap) is never
seen to leave: no removal, no event counted.  A batch station takes a card only after it saw
the previous one leave (:mod:`citycard.perso.card_sources`), so an unseen swap would stall it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path

from . import image
from .card import SimCard

log = logging.getLogger("citycard.sim")


class Dispenser:
    #: seconds the reader stays empty when a card is swapped (over two pcscd presence polls)
    out_time = 1.0

    def __init__(self, card: SimCard, directory: str | Path) -> None:
        self.card = card
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.server = None                       # set by the caller (the VpcdServer serving us)
        self._inserted_gen = card.generation
        self._count = itertools.count(len(list(self.dir.glob("card-*.json"))) + 1)
        self.swaps = 0

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def power_on(self) -> None:
        self.card.power_on()

    def reset(self) -> None:
        self.card.reset()

    def process(self, apdu: bytes) -> bytes:
        return self.card.process(apdu)

    def power_off(self) -> None:
        self.card.power_off()
        if self.card.generation == self._inserted_gen:
            return
        path = self.dir / f"card-{next(self._count):06d}.json"
        image.save(self.card, path)
        self.card = SimCard(model=self.card.model)   # a fresh card of the same model
        self._inserted_gen = self.card.generation
        self.swaps += 1
        log.info("dispenser: card filed as %s, fresh card inserted", path.name)
        server = self.server
        if server is None:
            return
        old = threading.current_thread()
        out_time = self.out_time

        def reinsert() -> None:
            if old is not threading.current_thread():
                old.join(10)
            time.sleep(out_time)            # the slot empty long enough for pcscd to see it
            server.start_thread()

        server.stop()                            # card out of the reader ...
        threading.Thread(target=reinsert, daemon=True).start()   # ... and a fresh one in
