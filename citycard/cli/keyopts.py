"""``--keys`` options: key sources for the commands that need master keys."""

from __future__ import annotations

from typing import Callable

import click

from ..errors import InputError


def keys_option(required: bool = True) -> Callable:
    return click.option("-k", "--keys", "keys", multiple=True, required=required, metavar="SOURCE",
                        help="Key source (repeatable, e.g. one per service unit): a key file such as "
                             "profiles/demo-keys.toml.")


def open_keys(sources: tuple[str, ...]):
    from ..keys import KeyRing
    from ..keys.demo import DemoKeyFile

    if not sources:
        raise InputError("no key source given (--keys)")
    return KeyRing(DemoKeyFile(s) for s in sources)
