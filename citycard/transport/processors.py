"""APDU processors: small layers stacked by :class:`~citycard.transport.session.CardSession`.

A processor is an object with ``process(cmd, send) -> ResponseApdu`` where
``send`` is the next layer down.  Each does one job.
"""

from __future__ import annotations

from typing import Callable, Protocol

from ..apdu import CommandApdu, ResponseApdu
from ..commands import iso

Send = Callable[[CommandApdu], ResponseApdu]


class Processor(Protocol):
    def process(self, cmd: CommandApdu, send: Send) -> ResponseApdu: ...


class T0Fetch:
    """Fetch response data the T=0 way (ISO 7816-4 §5.1.3, §5.3.1).

    * ``61xx``: send GET RESPONSE ``00 C0 00 00 xx`` and append its data; repeat
      while the card keeps answering ``61xx`` (bounded by ``max_rounds``).
    * ``6Cxx``: resend the same command once with Le = ``xx``.
    The CLA of GET RESPONSE keeps the logical-channel bits of the command.
    """

    def __init__(self, max_rounds: int = 64) -> None:
        self.max_rounds = max_rounds

    def process(self, cmd: CommandApdu, send: Send) -> ResponseApdu:
        resp = send(cmd)
        sw1 = resp.sw >> 8
        if sw1 == 0x6C:
            resp = send(cmd.with_ne(resp.sw2 or 256))
            sw1 = resp.sw >> 8
        if sw1 != 0x61:
            return resp
        data = bytearray(resp.data)
        cla = cmd.cla & 0x03
        for _ in range(self.max_rounds):
            resp = send(iso.get_response(resp.sw2 or 256, cla=cla))
            data += resp.data
            if resp.sw >> 8 != 0x61:
                break
        return ResponseApdu(bytes(data), resp.sw)
