"""Options shared by the commands that talk to a card."""

from __future__ import annotations

from typing import Callable

import click

from ..errors import InputError


def card_options(f: Callable) -> Callable:
    """``--reader R`` or ``--sim IMAGE`` (mutually exclusive)."""
    f = click.option("--sim", "sim", metavar="IMAGE", default=None,
                     help="Use the simulated card in this image file (in process).")(f)
    f = click.option("-r", "--reader", default=None,
                     help="PC/SC reader: name, unique name fragment, or index.")(f)
    return f


def check_card_choice(reader: str | None, sim: str | None) -> None:
    if reader is not None and sim is not None:
        raise InputError("choose either --reader or --sim, not both")


def default_reader_for_writing() -> str:
    """The reader a writing command uses when neither ``--reader`` nor ``--sim`` is given
    (issue 17 item 2): ``$CITYCARD_READER``, else the one reader holding a card, which the
    output names (on stderr); with none or several holding a card, an error asking for
    ``--reader``/``--sim``.  Never reader 0 by default."""
    import os

    from ..errors import NoReaderError
    from ..transport.pcsc import choose_default_reader

    try:
        name = choose_default_reader()
    except NoReaderError as exc:
        raise NoReaderError(f"this command writes to a card: name it with --reader or --sim ({exc})") from None
    if not os.environ.get("CITYCARD_READER"):
        click.echo(f"citycard: using reader {name!r}, the only reader holding a card", err=True)
    return name


class ProgressDrawer:
    """Draws a batch's progress from the library's ``on_progress`` callback
    (:class:`citycard.perso.batch.BatchProgress`): on a terminal a bar redrawn at most every
    ``tty_interval`` seconds (and at the end); without one, a plain line every
    ``line_interval`` seconds (and at the end), for logs and CI (issue 17)."""

    WIDTH = 30

    def __init__(self, stream, *, tty: bool | None = None, tty_interval: float = 0.2,
                 line_interval: float = 5.0, clock=None) -> None:
        import time

        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)()) if tty is None else tty
        self.interval = tty_interval if self.tty else line_interval
        self.clock = clock or time.monotonic
        self._last: float | None = None

    def __call__(self, p) -> None:
        now = self.clock()
        if not p.final and self._last is not None and now - self._last < self.interval:
            return
        if self._last is None and not p.final and not self.tty:
            self._last = now        # the first line after one interval, not at card 1
            return
        self._last = now
        import time

        eta = time.strftime("%H:%M:%S", time.gmtime(p.seconds_left))
        text = f"{p.done}/{p.total} cards, {p.failed} failed, {p.cards_per_minute:,.0f}/min, ETA {eta}"
        if self.tty:
            filled = int(self.WIDTH * (p.done / p.total if p.total else 1.0))
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {text}" + ("\n" if p.final else ""))
        else:
            self.stream.write(f"batch: {'done: ' if p.final else ''}{text}\n")
        self.stream.flush()


def audit_seal_key(keystore: str) -> bytes:
    """The audit seal key: the ``audit/seal`` master of ``keystore`` diversified with
    :data:`citycard.audit.SEAL_FACTOR` (the passphrase as for any keystore)."""
    from pathlib import Path

    from ..audit import SEAL_FACTOR, SEAL_ROLE, SEAL_UNIT
    from ..keys.keystore import Keystore
    from .keyopts import get_passphrase, keystore_label

    store = Keystore.open(Path(keystore), lambda header: get_passphrase(keystore_label(header)))
    try:
        return store.derive(SEAL_UNIT, SEAL_ROLE, SEAL_FACTOR)
    finally:
        store.close()


def audit(action: str, subject: str = "", **details: object) -> None:
    """Record ``action`` in the ``--audit-log`` when one is configured (docs/audit.md)."""
    ctx = click.get_current_context(silent=True)
    app = ctx.find_root().obj if ctx is not None else None
    if app is not None and hasattr(app, "audit"):
        app.audit(action, subject, **details)
