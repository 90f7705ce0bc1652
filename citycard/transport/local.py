"""An in-process transport over a card object (anything with ``atr``, ``power_on``,
``reset`` and ``process(apdu) -> response``): the simulated card without a reader."""

from __future__ import annotations

from ..errors import TransportError


class LocalTransport:
    def __init__(self, card, name: str = "in-process card") -> None:
        self.card = card
        self.name = name
        self._connected = False

    def connect(self) -> None:
        self.card.power_on()
        self._connected = True

    def transmit(self, apdu: bytes) -> bytes:
        if not self._connected:
            raise TransportError("not connected", self.name)
        return self.card.process(apdu)

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def reset(self) -> None:
        self.card.reset()

    def close(self) -> None:
        if self._connected:
            self._connected = False
