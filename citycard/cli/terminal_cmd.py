"""`citycard terminal purchase|info`: a purse terminal that holds no keys (the PSAM computes
MAC1 and checks MAC2; docs/psam.md)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ..errors import InputError
from ..money import yuan
from .purse_cmd import _capp, _fen


def _reader_or_image(which: str, reader: str | None, image: str | None) -> None:
    if reader is not None and image is not None:
        raise InputError(f"choose either --{which} or --{which}-sim, not both")
    if reader is None and image is None:
        raise InputError(f"name the {'card' if which == 'card' else 'PSAM'} with --{which} READER "
                         f"or --{which}-sim IMAGE")


def _psam_options(f):
    f = click.option("--psam-sim", "psam_sim", default=None, metavar="IMAGE",
                     help="Use the simulated PSAM in this image file (in process).")(f)
    f = click.option("--psam", "psam_reader", default=None, metavar="READER",
                     help="PC/SC reader holding the PSAM: name, unique name fragment, or index.")(f)
    return f


def _card_and_psam_options(f):
    """The card's profile, the card (image or reader), the PSAM, the purse application."""
    f = click.option("--app", "app_name", default=None, help="Purse application of the profile (default: the first).")(f)
    f = _psam_options(f)
    f = click.option("--card", "card_reader", default=None, metavar="READER",
                     help="PC/SC reader holding the user card: name, unique name fragment, or index.")(f)
    f = click.option("--card-sim", "card_sim", default=None, metavar="IMAGE",
                     help="Use the simulated card in this image file (in process).")(f)
    return click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
                        help="The card's profile (TOML): its purse application and serial file; no keys are read.")(f)


@click.group()
def terminal() -> None:
    """A purse terminal without keys: the card in one reader, its PSAM in another."""


@terminal.command()
@_psam_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
@click.pass_obj
def info(app, psam_reader, psam_sim, as_json):
    """Show the PSAM's serial, terminal number, card key index and next TTSN."""
    from ..terminal.psam_purchase import Psam

    _reader_or_image("psam", psam_reader, psam_sim)
    session = app.open_session(psam_reader, sim=psam_sim)
    try:
        found = Psam(session).open()
    finally:
        session.close()
    if as_json:
        click.echo(json.dumps(asdict(found)))
        return
    click.echo(f"PSAM {found.serial} (version {found.version:02X}): terminal {found.terminal_number}, "
               f"card key index {found.key_index:02X}, issuer {found.issuer_id}, next TTSN {found.next_ttsn}")


@terminal.command()
@_card_and_psam_options
@click.option("--amount", required=True, callback=_fen, metavar="YUAN",
              help="Amount in yuan with at most 2 decimals, e.g. 2.50.")
@click.option("--capp-station", default=None, metavar="HEX4",
              help="CAPP purchase: also record entry at this station (transit), 2 bytes in hex.")
@click.option("--capp-line", default=None, metavar="HEX2",
              help="CAPP purchase: the line of --capp-station, 1 byte in hex [default: 01].")
@click.option("--log", "log_path", default=None, metavar="FILE",
              help="Append the transaction to this terminal log for clearing (docs/clearing.md).")
@click.option("--hotlist-state", "hotlist_state", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="This terminal's hotlist (loaded with 'terminal hotlist'): a card on it is refused and its "
                   "purse application blocked on the spot (the PSAM MACs the block), logged for clearing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
@click.pass_obj
def purchase(app, profile_path, card_sim, card_reader, psam_reader, psam_sim, app_name, amount, capp_station,
             capp_line, log_path, hotlist_state, as_json):
    """Purchase --amount yuan from the card through the PSAM (MAC1 and MAC2 in the PSAM)."""
    from ..profile import load_profile
    from ..terminal.psam_purchase import CardHotlisted, Mac2NotChecked, PsamPurchaseTerminal, append_log
    from ..terminal.purse import CardGone

    _reader_or_image("card", card_reader, card_sim)
    _reader_or_image("psam", psam_reader, psam_sim)
    spec = load_profile(profile_path)
    capp = _capp(capp_station, capp_line)
    hotlist = None
    if hotlist_state is not None:
        from ..lifecycle import TerminalHotlist

        hotlist = TerminalHotlist(hotlist_state)
        if not hotlist.loaded:
            raise InputError(f"--hotlist-state {hotlist_state}: no hotlist loaded yet ('citycard terminal hotlist')")
    psam_session = app.open_session(psam_reader, sim=psam_sim)
    try:
        card_session = app.open_session(card_reader, sim=card_sim)
        try:
            try:
                tx = PsamPurchaseTerminal(card_session, psam_session, spec, app_name).purchase(amount, capp=capp,
                                                                                              hotlist=hotlist)
            except CardHotlisted as refused:
                _block_hotlisted(card_session, psam_session, spec, app_name, log_path, refused)
                raise
            except Mac2NotChecked as done:       # the card was debited: logged whatever the PSAM said
                if log_path is not None:
                    append_log(log_path, done.transaction)
                raise
            except CardGone as gone:             # may have been debited: a grey record, proven later
                if log_path is not None and gone.pending is not None:
                    append_log(log_path, gone.pending)  # type: ignore[arg-type]
                raise
        finally:
            card_session.close()
    finally:
        psam_session.close()
    if log_path is not None:
        append_log(log_path, tx)
    if as_json:
        click.echo(json.dumps({"ok": True, "kind": "capp purchase" if capp else "purchase", **asdict(tx),
                               "amount_yuan": yuan(tx.amount_fen), "balance_before_yuan": yuan(tx.balance_before_fen),
                               "balance_after_yuan": yuan(tx.balance_after_fen)}))
    else:
        click.echo(f"purchase {yuan(tx.amount_fen)} yuan: balance {yuan(tx.balance_before_fen)} -> "
                   f"{yuan(tx.balance_after_fen)} yuan (card counter {tx.card_counter}, terminal "
                   f"{tx.terminal_number}, TTSN {tx.ttsn}, TAC {tx.tac})")


def _block_hotlisted(card_session, psam_session, spec, app_name, log_path, refused) -> None:
    """A hotlisted card presented for a purchase: its purse application is blocked now (MAC by
    the PSAM's maintenance master) and the event logged for clearing (issue 23 item 3)."""
    from ..terminal.psam_hotlist import block_application
    from ..terminal.txlog import append_record

    res = block_application(card_session, psam_session, spec, app_name)
    if log_path is not None:
        append_record(log_path, res.record())
    click.echo(f"card {res.card_serial} is on the hotlist: its {res.application} application is blocked "
               f"(terminal {res.terminal_number})", err=True)


@terminal.command("hotlist")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--state", "state", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="This terminal's hotlist copy (created on the first full list).")
@click.option("--trust", "trust", multiple=True, required=True, type=click.Path(dir_okay=False), metavar="KEYFILE",
              help="A trusted hotlist key file ('citycard hotlist key'); several may be given.")
def hotlist_load(file: str, state: str, trust: tuple[str, ...]) -> None:
    """Load a signed hotlist FILE (full or delta) into this terminal (forged, rolled-back or
    out-of-sequence lists are refused)."""
    from ..lifecycle import TerminalHotlist
    from ..lifecycle.hotlist import read_public_key

    term = TerminalHotlist(state)
    header = term.load(file, [read_public_key(t) for t in trust])
    click.echo(f"terminal hotlist now at version {header.version} ({header.kind} list): {len(term)} cards")


@terminal.command("check-log")
@click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
              help="The cards' profile (TOML): which master is the TAC key's.")
@click.option("-k", "--keys", "keys", multiple=True, required=True, metavar="SOURCE",
              help="Key source holding the cards' TAC master: keystore, pkcs11: HSM or the demo key file.")
@click.option("--log", "log_path", required=True, metavar="FILE", help="The terminal log (docs/clearing.md).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
def check_log(profile_path, keys, log_path, as_json):
    """Back office: check the TAC of every transaction of a terminal log with the card keys
    (what 'citycard clearing import' does before filing them)."""
    from ..clearing import TacVerifier
    from ..profile import load_profile
    from ..terminal.txlog import read_records
    from .keyopts import open_keys

    spec = load_profile(profile_path)
    ring = open_keys(keys)
    try:
        check = TacVerifier(spec, ring)
        results = [(rec, None if rec.status == "grey" else check(rec)) for _line, rec in read_records(log_path)]
    finally:
        ring.close()
    bad = [(rec, why) for rec, why in results if why is not None]
    if as_json:
        click.echo(json.dumps({"ok": not bad, "transactions": len(results),
                               "bad": [{"card_serial": r.card, "ttsn": r.ttsn, "terminal_number": r.terminal,
                                        "reason": why} for r, why in bad]}))
    else:
        for rec, why in results:
            click.echo(f"{'ok ' if why is None else 'BAD'} card {rec.card} counter {rec.counter} "
                       f"{yuan(rec.amount)} yuan terminal {rec.terminal} TTSN {rec.ttsn} TAC {rec.tac}"
                       + (f" ({why})" if why else ""))
    if bad and as_json:
        click.get_current_context().exit(1)   # the JSON object above says which (exit code 1: docs/json.md)
    if bad:
        from ..terminal.purse import PurseError
        raise PurseError(f"{len(bad)} of {len(results)} TACs do not check out")


@terminal.command()
@_card_and_psam_options
@click.option("--permanent", is_flag=True, help="Block for good (P2 01); default: temporary (P2 00).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
@click.pass_obj
def block(app, profile_path, card_sim, card_reader, psam_reader, psam_sim, app_name, permanent, as_json):
    """Block a hotlisted card's purse application (the PSAM MACs APPLICATION BLOCK)."""
    from ..profile import load_profile
    from ..terminal.psam_hotlist import block_application

    _reader_or_image("card", card_reader, card_sim)
    _reader_or_image("psam", psam_reader, psam_sim)
    spec = load_profile(profile_path)
    psam_session = app.open_session(psam_reader, sim=psam_sim)
    try:
        card_session = app.open_session(card_reader, sim=card_sim)
        try:
            res = block_application(card_session, psam_session, spec, app_name, permanent=permanent)
        finally:
            card_session.close()
    finally:
        psam_session.close()
    if as_json:
        click.echo(json.dumps({"ok": True, **asdict(res)}))
    else:
        click.echo(f"blocked {res.application} of card {res.card_serial} "
                   f"({'permanently' if res.permanent else 'temporarily'}; terminal {res.terminal_number})")
