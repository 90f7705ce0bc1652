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
