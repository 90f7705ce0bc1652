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
    """Electronic purse: balance, load, purchase (and CAPP purchase), unload, history."""


def _terminal(app, reader, sim, profile_path, keys, app_name):
    from ..profile import load_profile
    from ..terminal.purse import PurseTerminal

    spec = load_profile(profile_path)
    session = app.open_session(reader, sim=sim)
    try:
        return session, PurseTerminal(session, spec, open_keys(keys), app_name)
    except BaseException:
        session.close()
        raise


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


def _capp(station: str | None, line: str | None) -> tuple[int, bytes] | None:
    """A CAPP metro record (layout capp_metro): entered at STATION on LINE, now."""
    if station is None:
        return None
    import datetime
    from .. import records
    lay = records.get("capp_metro")
    rec = lay.encode({"tag": 2, "length": 46, "state": 1, "line": line or "01", "station": station,
                      "terminal": "000000000001", "entry_time": datetime.datetime.now().strftime("%Y%m%d%H%M%S"),
                      "amount": 0}, where="--capp-station")
    return 2, rec


def _tx(kind):
    @purse.command(kind, help=f"{kind.capitalize()} the purse by --amount yuan (MACs checked both ways).")
    @_common
    @click.option("--amount", required=True, callback=_fen, help="Yuan, e.g. 10.00")
    @click.option("--capp-station", default=None, metavar="HEX4", hidden=kind != "purchase",
                  help="CAPP purchase: also record entry at this station (transit).")
    @click.option("--capp-line", default=None, metavar="HEX2", hidden=kind != "purchase")
    @click.option("--pin-env", is_flag=True, hidden=True)
    @click.pass_obj
    def command(app, reader, sim, profile_path, keys, app_name, as_json, amount, capp_station, capp_line, pin_env):
        session, term = _terminal(app, reader, sim, profile_path, keys, app_name)
        try:
            term.select()
            if term.purse.kind == "ed":
                from .services_cmd import _pin_value
                term.verify_pin(_pin_value("CITYCARD_PIN", "PIN"))
            if kind == "load":
                res = term.load(amount)
            elif kind == "unload":
                res = term.unload(amount)
            else:
                res = term.purchase(amount, capp=_capp(capp_station, capp_line))
        finally:
            session.close()
        if as_json:
            click.echo(json.dumps({"amount_fen": res.amount, "balance_fen": res.balance_after,
                                   "counter": res.counter, "tac": res.tac.hex().upper(),
                                   "recovered": res.recovered}))
        else:
            click.echo(f"{kind} {res.amount / 100:.2f} yuan: balance {res.balance_before / 100:.2f} -> "
                       f"{res.balance_after / 100:.2f} yuan (counter {res.counter}, TAC {res.tac.hex().upper()})")
    return command


_tx("load")
_tx("purchase")
_tx("unload")


@purse.command()
@_common
@click.pass_obj
def history(app, reader, sim, profile_path, keys, app_name, as_json):
    """The transaction-detail records, newest first."""
    session, term = _terminal(app, reader, sim, profile_path, keys, app_name)
    try:
        recs = term.history()
    finally:
        session.close()
    if as_json:
        click.echo(json.dumps(recs, indent=2))
        return
    names = {1: "ED load", 2: "EP load", 3: "unload", 5: "ED purchase", 6: "EP purchase", 9: "CAPP purchase"}
    for r in recs:
        click.echo(f"{r['date']} {r['time']}  #{r['counter']:<5} {names.get(r['type'], r['type']):<13} "
                   f"{r['amount'] / 100:>10.2f} yuan  terminal {r['terminal']}")
