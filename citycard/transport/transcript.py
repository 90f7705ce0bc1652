"""Transcript of every APDU exchanged, with sensitive data masked.

The data field of WRITE KEY, VERIFY, CHANGE/RELOAD PIN, UNBLOCK PIN and of any
command marked ``sensitive`` is replaced by ``<n bytes masked>``; the header and
Lc stay visible so the exchange can still be followed.  The one rule deciding it is
:func:`citycard.apdu.is_sensitive` (issue 17 item 6); every output of a command --
text, JSON (:func:`command_hex`), logs, transcripts, the shell -- goes through
:func:`format_command` or :func:`command_hex`.

Format (one exchange per pair of lines; ``#`` starts a comment)::

    # citycard transcript: reader "Citycard Virtual 00 00", ATR 3B88...
    > 00A4000002 3F00
    < 6F15840E315041592E5359532E4444463031A503880101 9000  # success
"""

from __future__ import annotations

import logging
import time
from typing import IO, Callable

from ..apdu import CommandApdu, ResponseApdu, describe_sw, is_sensitive

__all__ = ["Transcript", "command_hex", "format_command", "format_response", "is_sensitive"]

log = logging.getLogger("citycard.apdu")


def command_hex(cmd: CommandApdu) -> str:
    """A command as one hex string (the ``command`` of JSON outputs), or its masked form
    (:func:`format_command`) when :func:`~citycard.apdu.is_sensitive`."""
    return format_command(cmd) if is_sensitive(cmd) else cmd.encode().hex().upper()


def format_command(cmd: CommandApdu) -> str:
    """A command as ``HEADER[Lc] DATA [Le]`` with sensitive data masked."""
    raw = cmd.encode()
    if not cmd.data:
        return raw.hex().upper()
    nc = len(cmd.data)
    lc_len = 3 if cmd.is_extended else 1
    head = raw[: 4 + lc_len].hex().upper()
    tail = raw[4 + lc_len + nc:].hex().upper()
    body = f"<{nc} bytes masked>" if is_sensitive(cmd) else cmd.data.hex().upper()
    return f"{head} {body}" + (f" {tail}" if tail else "")


def format_response(resp: ResponseApdu) -> str:
    data = resp.data.hex().upper()
    sw = f"{resp.sw:04X}"
    return f"{data} {sw}" if data else sw


class Transcript:
    """Processor that records each exchange to ``sink`` (a text file) and the log."""

    def __init__(self, sink: IO[str] | None = None, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.sink = sink
        self.clock = clock
        self.count = 0

    def header(self, reader: str, atr: bytes) -> None:
        line = f'# citycard transcript: reader "{reader}", ATR {atr.hex().upper()}'
        if self.sink is not None:
            self.sink.write(line + "\n")
            self.sink.flush()
        log.debug(line)

    def process(self, cmd: CommandApdu, send: Callable[[CommandApdu], ResponseApdu]) -> ResponseApdu:
        t0 = self.clock()
        resp = send(cmd)
        ms = (self.clock() - t0) * 1000.0
        self.count += 1
        c, r = format_command(cmd), format_response(resp)
        meaning = describe_sw(resp.sw)
        if self.sink is not None:
            self.sink.write(f"> {c}\n< {r}  # {meaning}, {ms:.2f} ms\n")
            self.sink.flush()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("> %s", c)
            log.debug("< %s (%s, %.2f ms)", r, meaning, ms)
        return resp
