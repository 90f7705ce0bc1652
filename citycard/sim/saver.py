"""Keeping a card image file in step with its simulated card: one saver for every user.

:class:`ImageSaver` saves the card (atomically, :func:`citycard.sim.image.save`) when it
changed since the last save: at once after an APDU, at most every ``interval`` seconds, or
only when asked (:meth:`ImageSaver.save`, :meth:`ImageSaver.close`).  It serves
``citycard sim serve`` (after every APDU through vpcd, the card possibly swapped by a
:class:`~citycard.sim.dispenser.Dispenser`) and the in-process ``--sim IMAGE`` of every
command (:func:`open_image`: saved when the session closes).

"Changed" is the card's ``generation`` (bumped by every persistent write) together with
the card object's identity (a dispenser inserts a new card).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Protocol, Union

from . import image as _image
from .transport import ImageTransport

if TYPE_CHECKING:
    from . import SimCard


class CardHolder(Protocol):
    """Something holding a card that may be swapped (a dispenser)."""

    card: SimCard


Holder = Union["SimCard", CardHolder]
ImagePath = Union[str, "os.PathLike[str]"]


class ImageSaver:
    """Saves ``holder``'s card to ``path`` when it changed (see the module docstring).
    ``interval`` 0 saves after every APDU that changed the card; above 0, at most that often
    (a timer thread); :meth:`close` saves what is left."""

    def __init__(self, holder: Holder, path: ImagePath, interval: float = 0.0) -> None:
        self.holder, self.path, self.interval = holder, path, interval
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.saved = self._generation()

    @property
    def card(self) -> SimCard:
        return getattr(self.holder, "card", self.holder)

    def _generation(self) -> tuple[int, int]:
        card = self.card
        return (id(card), card.generation)

    @property
    def changed(self) -> bool:
        return self._generation() != self.saved

    def after_apdu(self, _apdu: bytes, _resp: bytes) -> None:
        """Hook for a server: called after each APDU answered."""
        if not self.changed:
            return
        if self.interval <= 0:
            self.save()
        elif self._timer is None:
            self._timer = threading.Timer(self.interval, self.save)
            self._timer.daemon = True
            self._timer.start()

    def save(self) -> None:
        """Save the card now if it changed since the last save."""
        with self._lock:
            self._timer = None
            generation = self._generation()
            if generation != self.saved:
                _image.save(self.card, self.path)
                self.saved = generation

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.save()


class SavedImageTransport(ImageTransport):
    """The card of an image file in process, saved back through an :class:`ImageSaver` when
    the session closes (if it changed)."""

    def __init__(self, path: ImagePath) -> None:
        super().__init__(path)
        self.saver = ImageSaver(self.card, path)

    def save(self) -> None:
        self.saver.save()


def open_image(path: ImagePath) -> SavedImageTransport:
    """A transport to the simulated card kept in the image file ``path``, for
    :func:`citycard.transport.open.open_session` (``transport=open_image(path)``)."""
    return SavedImageTransport(path)
