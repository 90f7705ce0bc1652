"""`citycard purse balance|load|purchase` (amounts in yuan with fen precision)."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import click

from ..errors import InputError
from ..money import yuan
from .common import card_options
from .keyopts import keys_option, open_keys
from .services_cmd import _pin_value, pin_stdin_option


#: the largest amount of one transaction: the 4-byte amount field of the purse commands (SPEC §2.2)
MAX_AMOUNT_FEN = 0xFFFFFFFF
_AMOUNT_RE = re.compile(r"[0-9]+(\.[0-9]{1,2})?|\.[0-9]{1,2}")


def parse_yuan(value: str, what: str = "--amount") -> int:
    """An amount in yuan (``10``, ``10.5``, ``10.00``) as fen: plain decimal digits only, no
    exponent (``1e3``), sign, separator or more than 2 decimals; positive and at most
    :data:`MAX_AMOUNT_FEN` fen, a limit the message states."""
    text = value.strip()
    if not _AMOUNT_RE.fullmatch(text):
        raise InputError(f"{what} {value!r}: expected yuan as digits with at most 2 decimals, e.g. 10.00 "
                         "(no exponent, sign or separator)")
    fen = int(Decimal(text) * 100)
    if fen <= 0:
        raise InputError(f"{what} {value!r}: the amount must be positive")
    if fen > MAX_AMOUNT_FEN:
        raise InputError(f"{what} {value!r}: too large: at most {yuan(MAX_AMOUNT_FEN)} yuan "
                         f"({MAX_AMOUNT_FEN} fen, the card's 4-byte amount)")
    return fen


def _fen(_ctx, _param, value):
    return None if value is None else parse_yuan(value)


def _common(f, need_keys: bool = True):
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")(f)
    f = click.option("--app", "app_name", default=None, help="Purse application of the profile (default: the first).")(f)
    f = keys_option(required=need_keys)(f)
    f = click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
                     help="Card profile (TOML) describing the purse application and its keys.")(f)
    return card_options(f)


def _common_read(f):
    """Options of the commands that only read the purse (GET BALANCE, records): no keys needed."""
    return _common(f, need_keys=False)


@click.group()
def purse() -> None:
    """Electronic purse: balance, load, purchase (and CAPP purchase), unload, history."""


def _terminal(app, reader, sim, profile_path, keys, app_name, *, writes: bool = False):
    from ..profile import load_profile
    from ..terminal.purse import PurseTerminal

    spec = load_profile(profile_path)
    ring = open_keys(keys) if keys else None
    if ring is not None and writes:
        from .keyopts import warn_test_keys
        warn_test_keys(ring, spec)
    session = app.open_session(reader, sim=sim, writes=writes)
    try:
        return session, PurseTerminal(session, spec, ring, app_name)  # type: ignore[arg-type]
    except BaseException:
        session.close()
        raise


@purse.command()
@_common_read
@click.pass_obj
def balance(app, reader, sim, profile_path, keys, app_name, as_json):
    """Show the purse balance."""
    session, term = _terminal(app, reader, sim, profile_path, keys, app_name)
    try:
        term.select()
        fen = term.balance()
    finally:
        session.close()
    click.echo(json.dumps({"balance_fen": fen, "balance_yuan": yuan(fen)}) if as_json
               else f"balance {yuan(fen)} yuan")


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


def _key_id(_ctx, _param, value):
    """``--key-id``: one byte in hex (the key id of INITIALIZE), or None."""
    if value is None:
        return None
    from ..hexutil import parse_hex
    return parse_hex(value, "--key-id", length=1)[0]


def _tx(kind):
    @purse.command(kind, help=f"{kind.capitalize()} the purse by --amount yuan (MACs checked both ways).")
    @_common
    @click.option("--amount", required=True, callback=_fen, metavar="YUAN",
                  help=f"Amount in yuan with at most 2 decimals, e.g. 10.00 (at most {yuan(MAX_AMOUNT_FEN)}).")
    @click.option("--capp-station", default=None, metavar="HEX4", hidden=kind != "purchase",
                  help="CAPP purchase: also record entry at this station (transit), 2 bytes in hex.")
    @click.option("--capp-line", default=None, metavar="HEX2", hidden=kind != "purchase",
                  help="CAPP purchase: the line of --capp-station, 1 byte in hex [default: 01].")
    @click.option("--key-id", "key_id", default=None, callback=_key_id, metavar="HEX2",
                  help=f"The {kind} key the card uses (INITIALIZE P2 data), 1 byte in hex [default: the profile's "
                       f"first {kind} key]; the card's answer says 3DES or SM4 (docs/sm4.md).")
    @click.option("--log", "log", default=None, metavar="FILE", type=click.Path(dir_okay=False), hidden=kind == "unload",
                  help="Append the transaction to this terminal log for clearing (docs/clearing.md); purchases "
                       "take their terminal serial (TTSN) from it.")
    @click.option("--terminal", "terminal", default="000000000001", show_default=True, metavar="HEX12",
                  help="This terminal's number (6 bytes in hex), sent to the card and logged.")
    @pin_stdin_option                       # an ED asks for the cardholder's PIN first
    @click.pass_obj
    def command(app, reader, sim, profile_path, keys, app_name, as_json, amount, capp_station, capp_line, key_id,
                log, terminal):
        from ..hexutil import parse_hex
        from ..terminal.txlog import append_record, next_ttsn

        terminal_id = parse_hex(terminal, "--terminal", length=6)
        if log is not None and kind == "unload":
            raise InputError("--log: an unload has no TAC and is not a clearing record")
        ttsn = next_ttsn(log, terminal_id.hex()) if log is not None else 1
        session, term = _terminal(app, reader, sim, profile_path, keys, app_name, writes=True)
        term.terminal = terminal_id
        try:
            term.identify()            # a card of the profile, before any key or PIN (issue 17 item 1)
            term.select()
            if term.purse.kind == "ed":
                term.verify_pin(_pin_value("CITYCARD_PIN", "PIN"))
            from ..terminal.purse import CardGone

            try:
                if kind == "load":
                    res = term.load(amount, key_id=key_id)
                elif kind == "unload":
                    res = term.unload(amount, key_id=key_id)
                else:
                    res = term.purchase(amount, capp=_capp(capp_station, capp_line), key_id=key_id,
                                        terminal_serial=ttsn)
            except CardGone as gone:
                if log is not None and gone.pending is not None:    # a grey record: proven later (purse prove)
                    append_record(log, gone.pending.record("host"))
                raise
        finally:
            session.close()
        if log is not None:
            append_record(log, res.record("host"))
        if as_json:
            click.echo(json.dumps({"ok": True, "kind": kind,
                                   "amount_fen": res.amount, "amount_yuan": yuan(res.amount),
                                   "balance_before_fen": res.balance_before,
                                   "balance_before_yuan": yuan(res.balance_before),
                                   "balance_fen": res.balance_after, "balance_yuan": yuan(res.balance_after),
                                   "counter": res.counter, "tac": res.tac.hex().upper(),
                                   "recovered": res.recovered}))
        else:
            click.echo(f"{kind} {yuan(res.amount)} yuan: balance {yuan(res.balance_before)} -> "
                       f"{yuan(res.balance_after)} yuan (counter {res.counter}, TAC {res.tac.hex().upper()})")
    return command


_tx("load")
_tx("purchase")
_tx("unload")


@purse.command()
@_common
@click.option("--log", "log", required=True, metavar="FILE", type=click.Path(dir_okay=False, exists=True),
              help="The terminal log holding this card's grey records (a transaction whose card went away).")
@click.pass_obj
def prove(app, reader, sim, profile_path, keys, app_name, as_json, log):
    """Settle this card's grey transactions of the terminal --log: GET TRANSACTION PROVE for each,
    its TAC checked, the proven record appended to the log for clearing (a transaction that never
    completed stays grey: it is not money)."""
    from ..terminal.purse import NotCompleted
    from ..terminal.txlog import append_record, read_records

    session, term = _terminal(app, reader, sim, profile_path, keys, app_name)
    results = []
    try:
        serial = term.select()
        settled = {(r.kind, r.counter) for _n, r in read_records(log) if r.card == serial and r.status != "grey"}
        grey = [r for _n, r in read_records(log) if r.card == serial and r.status == "grey" and r.app == term.df.name
                and (r.kind, r.counter) not in settled]
        for g in grey:
            try:
                proven = term.prove(g)
            except NotCompleted as exc:
                results.append({"kind": g.kind, "counter": g.counter, "amount_fen": g.amount, "proven": False,
                                "why": str(exc)})
                continue
            append_record(log, proven)
            results.append({"kind": g.kind, "counter": g.counter, "amount_fen": g.amount, "proven": True,
                            "tac": proven.tac})
    finally:
        session.close()
    if as_json:
        click.echo(json.dumps({"card": serial, "grey": results}))
        return
    if not results:
        click.echo(f"card {serial}: no grey transaction in {log}")
    for r in results:
        click.echo(f"card {serial} {r['kind']} counter {r['counter']} {yuan(r['amount_fen'])} yuan: "
                   + (f"proven (TAC {r['tac']}), appended to {log}" if r["proven"] else "never completed: not charged"))


@purse.command()
@_common_read
@click.pass_obj
def history(app, reader, sim, profile_path, keys, app_name, as_json):
    """The transaction-detail records, newest first."""
    session, term = _terminal(app, reader, sim, profile_path, keys, app_name)
    try:
        recs = term.history()
    finally:
        session.close()
    if as_json:   # the JSON vocabulary (docs/json.md): amounts as *_fen with *_yuan beside them
        out = [{**{k: v for k, v in r.items() if k != "amount"}, "amount_fen": r["amount"],
                "amount_yuan": yuan(r["amount"])} for r in recs]
        click.echo(json.dumps(out, indent=2))
        return
    names = {1: "ED load", 2: "EP load", 3: "unload", 5: "ED purchase", 6: "EP purchase", 9: "CAPP purchase"}
    for r in recs:
        click.echo(f"{r['date']} {r['time']}  #{r['counter']:<5} {names.get(r['type'], r['type']):<13} "
                   f"{r['amount'] / 100:>10.2f} yuan  terminal {r['terminal']}")
