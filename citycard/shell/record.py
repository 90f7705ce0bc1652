"""Transcripts that ``citycard script run`` replays (``script run --transcript``, the shell's
``--transcript``).

The global ``citycard --transcript`` records the wire, which cannot replay what depends on
the card's random numbers or on keys.  This recorder writes script syntax instead:

* an exchange that replays byte for byte as ``> command`` / ``< response SW`` (the
  random bytes of a GET CHALLENGE or INITIALIZE answer written ``..``; a capture kept as
  ``=> NAME`` on the ``<`` line);
* a statement that needs the key source or a PIN (``auth``, ``protect``, ``mac``,
  ``verify-pin``, ``serial``), or whose APDU was built from values that change from run to
  run (captures, MACs), as the statement itself, followed by what it exchanged as
  ``#>`` / ``#<`` comments;
* ``set``, ``echo`` and ``expect`` as written.

Sensitive command data is masked (:func:`~citycard.transport.transcript.format_command`);
keys never reach this module.
"""

from __future__ import annotations

import datetime as _dt
from typing import IO, Iterable

from .card import Exchange
from .pattern import ResponsePattern, volatile_bytes
from ..apdu import CommandApdu, is_sensitive
from .script import RECORD_HEADER, after_random


class Recorder:
    def __init__(self, sink: IO[str]) -> None:
        self.sink = sink
        self._last: CommandApdu | None = None      # the last '>' command written

    def _write(self, lines: Iterable[str]) -> None:
        self.sink.write("".join(line + "\n" for line in lines))
        self.sink.flush()

    def header(self, reader: str, atr: bytes, source: str, replay_hint: str = "") -> None:
        when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        lines = [f'{RECORD_HEADER} reader "{reader}", ATR {atr.hex().upper()}',
                 f"# recorded {when} from {source}"]
        if replay_hint:
            lines.append(f"# replay: {replay_hint}")
        self._write(lines)

    def comment(self, text: str) -> None:
        self._write(f"# {line}".rstrip() for line in text.splitlines() or [""])

    def statement(self, text: str, exchanges: Iterable[Exchange] = ()) -> None:
        """A statement as written, with its exchanges as comments."""
        lines = [text]
        for ex in exchanges:
            lines += [f"#> {ex.command_text}", f"#< {ex.response_text}"]
        self._write(lines)

    def exchanges(self, exchanges: list[Exchange], *, capture: str | None = None,
                  pattern: str | None = None, note: str = "") -> None:
        """Exchanges that replay as they are; ``pattern`` replaces the last response (the
        script's own pattern), ``capture`` goes on the last ``<`` line."""
        lines = [f"# {note}"] if note else []
        for i, ex in enumerate(exchanges):
            last = i == len(exchanges) - 1
            if is_sensitive(ex.cmd) or "masked" in ex.command_text:
                lines.append(f"#> {ex.command_text}    (masked: not replayable)")
                lines.append(f"#< {ex.response_text}")
                continue
            if last and pattern is not None:
                expected = pattern
            else:
                wild = volatile_bytes(ex.cmd.encode(), ex.resp.data)
                expected = ResponsePattern.exact(ex.resp.data, ex.resp.sw, wild).text if wild \
                    else ex.response_text
            keep = f" => {capture}" if last and capture else ""
            if self._last is not None and after_random(self._last, ex.cmd):
                # a '>' line here would read as a cryptogram over the recorded random number
                # (which a wire transcript cannot replay): the same exchange as a plain APDU line
                lines.append(f"{ex.command_text} -> {expected}{keep}")
                continue
            lines.append(f"> {ex.command_text}")
            lines.append(f"< {expected}{keep}")
            if ex.cmd.ins != 0xC0:
                self._last = ex.cmd
        self._write(lines)
