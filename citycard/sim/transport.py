"""Transports for the simulated card: in process over a card image file."""

from __future__ import annotations

import os

from ..errors import TransportError
from ..transport.local import LocalTransport
from . import image as _image
from .card import SimCard
from .nvm import PowerLoss


class SimTransport(LocalTransport):
    """The card of ``card`` in process.  A torn write (tests) surfaces as
    :class:`TransportError` ("card lost power"); :meth:`reset` powers it on again."""

    def __init__(self, card: SimCard, name: str = "simulated card") -> None:
        super().__init__(card, name)

    def transmit(self, apdu: bytes) -> bytes:
        try:
            return self.card.process(apdu)
        except PowerLoss:
            raise TransportError("card lost power during the command", self.name) from None

    def close(self) -> None:
        self.card.power_off()
        super().close()


class ImageTransport(SimTransport):
    """A simulated card loaded from an image file and saved back (atomically) on close
    when its state changed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        # the only writer of this image while open (a second one: one clear ImageError line)
        super().__init__(_image.load(path, lock=True), name=f"sim:{path}")
        self._saved = self.card.generation

    def save(self) -> None:
        if self.card.generation != self._saved:
            _image.save(self.card, self.path)
            self._saved = self.card.generation

    def close(self) -> None:
        try:
            self.save()
        finally:
            try:
                super().close()
            finally:
                _image.release(self.path)
