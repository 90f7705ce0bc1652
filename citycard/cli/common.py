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
