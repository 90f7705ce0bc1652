"""`citycard purse balance|load|purchase` (amounts in yuan with fen precision)."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

import click

from ..errors import InputError
from .common import card_options
from .keyopts import keys_option, open_keys


def _fen(_ctx, _param, value):
    if value is None:
        return None
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise InputError(f"--amount {value!r}: expected yuan, e.g. 10.00") from None
    fen = d * 100
    if fen != fen.to_integral_value() or fen <= 0 or fen > 0xFFFFFFFF:
        raise InputError(f"--amount {value!r}: a positive amount in yuan with at most 2 decimals")
    return int(fen)


def _common(f):
    f = click.option("--json", "as_json", is_flag=True)(f)
    f = click.option("--app", "app_name", default=None, help="Purse application of the profile (default: the first).")(f)
    f = keys_option()(f)
    f = click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE")(f)
    return card_options(f)


@click.group()
def purse() -> None:
    """Electronic purse: balance, load, purchase."""


def _terminal(app, reader, sim, profile_path, keys, app_name):
    from ..profile import load_profile
    from ..terminal.purse import PurseTerminal

    spec = load_profile(profile_path)
    session = app.open_session(reader, sim=sim)
    return session, PurseTerminal(session, spec, open_keys(keys), app_name)


@purse.command()
@_common
@click.pass_obj
def balance(app, reader, sim, profile_path, keys, app_name, as_json):
    """Show the purse balance."""
    session, term = _terminal(app, reader, sim, profile_path, keys, app_name)
    try:
        term.select()
        fen = term.balance()
    finally:
        session.close()
    click.echo(json.dumps({"balance_fen": fen}) if as_json else f"balance {fen / 100:.2f} yuan")


def _tx(kind):
    @purse.command(kind, help=f"{kind.capitalize()} the purse by --amount yuan (MACs checked both ways).")
    @_common
    @click.option("--amount", required=True, callback=_fen, help="Yuan, e.g. 10.00")
    @click.pass_obj
    def command(app, reader, sim, profile_path, keys, app_name, as_json, amount):
        session, term = _terminal(app, reader, sim, profile_path, keys, app_name)
        try:
            res = term.load(amount) if kind == "load" else term.purchase(amount)
        finally:
            session.close()
        if as_json:
            click.echo(json.dumps({"amount_fen": res.amount, "balance_fen": res.balance_after,
                                   "counter": res.counter, "tac": res.tac.hex().upper()}))
        else:
            click.echo(f"{kind} {res.amount / 100:.2f} yuan: balance {res.balance_before / 100:.2f} -> "
                       f"{res.balance_after / 100:.2f} yuan (counter {res.counter}, TAC {res.tac.hex().upper()})")
    return command


_tx("load")
_tx("purchase")
