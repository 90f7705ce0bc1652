"""`citycard cards ...` (the card register) and `citycard hotlist ...` (signed hotlists for
terminals): docs/lifecycle.md."""

from __future__ import annotations

import json

import click

from ..errors import InputError
from ..money import yuan
from .common import audit, card_options
from .dualopts import approval_options, dual_control
from .keyopts import keys_option
from .perso_cmd import _date

_REGISTER = click.option("--register", "register", envvar="CITYCARD_REGISTER", required=True, metavar="DB",
                         help="The card register: a SQLite file or a postgresql:// URL (env CITYCARD_REGISTER).")


def _open(register: str):
    from ..lifecycle import Register

    app = click.get_current_context().find_root().obj
    return Register(register, operator=getattr(app, "operator", None))


@click.group()
def cards() -> None:
    """The card register: issued cards, their states (lost, blocked, closed, replaced) and history."""


@cards.command("import")
@_REGISTER
@click.option("--journal", default=None, metavar="JOURNAL", help="The batch journal whose verified cards to register.")
@click.option("--batch", default=None, help="With --journal: only this batch (default: every batch).")
@click.option("--ledger", default=None, metavar="LEDGER",
              help="The clearing ledger: cards terminals blocked on the spot (hotlisted) become 'blocked'.")
@click.option("-p", "--profile", "profile_path", default=None, metavar="PROFILE",
              help="With --journal: the profile file the batches were issued from; its applications are recorded "
                   "with the cards of those batches.")
def import_(register: str, journal: str | None, batch: str | None, ledger: str | None,
            profile_path: str | None) -> None:
    """Register the verified cards of a batch journal, and/or the blocks terminals reported
    through clearing (idempotent)."""
    if journal is None and ledger is None:
        raise InputError("cards import: give --journal JOURNAL and/or --ledger LEDGER")
    with _open(register) as reg:
        if journal is not None:
            apps: tuple[str, ...] = ()
            if profile_path is not None:
                from ..profile import load_profile

                apps = tuple(df.name for df in load_profile(profile_path).apps)
            added, already = reg.import_journal(journal, batch, apps, profile_path)
            audit("cards.imported", journal, batch=batch, added=added, already=already)
            click.echo(f"registered {added} cards ({already} already in the register)")
        if ledger is not None:
            blocked, unchanged = reg.import_blocks(ledger)
            audit("cards.blocks-imported", ledger, blocked=blocked, unchanged=unchanged)
            click.echo(f"{blocked} cards blocked by terminals ({unchanged} events already known or not applicable)")


@cards.command()
@_REGISTER
@click.argument("serial")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show(register: str, serial: str, as_json: bool) -> None:
    """A card's state, cardholder and history."""
    with _open(register) as reg:
        card = reg.card(serial)
        events = reg.events(card.serial)
    if as_json:
        click.echo(json.dumps({**card.as_dict(), "events": events}, ensure_ascii=False))
        return
    click.echo(f"card {card.serial}: {card.state}{' (hotlisted)' if card.hotlisted else ''}, cardholder "
               f"{card.cardholder_id}, profile {card.profile}, batch {card.batch} row {card.row}"
               + (f", applications {', '.join(card.applications)}" if card.applications else ""))
    if card.replaced_by:
        click.echo(f"  replaced by {card.replaced_by}")
    for e in events:
        click.echo(f"  {e['at']} {e['action']}: {e['from'] or '-'} -> {e['to']} by {e['operator']}@{e['station']}"
                   + (f" ({e['reason']})" if e["reason"] else ""))


def _change(action: str, past: str):
    @cards.command(action if action != "close" else "close",
                   help=f"Record that card SERIAL is {past} (who, when and --reason go into its history).")
    @_REGISTER
    @click.argument("serial")
    @click.option("--reason", required=True, help="Why (kept in the card's history and the audit log).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object.")
    def command(register: str, serial: str, reason: str, as_json: bool) -> None:
        with _open(register) as reg:
            card = reg.change(serial, action, reason)
        audit(f"card.{action}", card.serial, state=card.state, reason=reason, hotlisted=card.hotlisted)
        if as_json:
            click.echo(json.dumps(card.as_dict(), ensure_ascii=False))
        else:
            click.echo(f"card {card.serial}: {card.state}" + (" (on the hotlist)" if card.hotlisted
                                                               else " (off the hotlist)"))
    return command


lost = _change("lost", "reported lost")
found = _change("found", "found again (back in use)")


@cards.command("close")
@_REGISTER
@click.argument("serial")
@click.option("--reason", required=True, help="Why (kept in the card's history and the audit log).")
@click.option("--ledger", default=None, metavar="LEDGER",
              help="The clearing ledger: a card still holding a cleared balance needs two people to close.")
@approval_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def close(register: str, serial: str, reason: str, ledger: str | None, approve: tuple[str, ...],
          approve_pfiles: tuple[str, ...], as_json: bool) -> None:
    """Record that card SERIAL is closed for good (hotlisted; final).  With a roster (dual
    control), --ledger is needed: a card holding a cleared balance needs two --approve."""
    app = click.get_current_context().find_root().obj
    approval = None
    with _open(register) as reg:
        card = reg.card(serial)
        balance: int | None = 0
        if ledger is not None:
            from ..clearing import Ledger

            with Ledger(ledger, create=False) as book:
                balance = _proven_balance(book, card.serial)
        elif getattr(app, "roster", None) is not None:
            raise InputError("cards close: give --ledger LEDGER (dual control: a card with a balance needs two people)")
        if balance is None or balance > 0:     # a balance, or one the ledger cannot tell: two people
            approval = dual_control("card.close-with-balance", card.serial,
                                    {"balance_fen": "unknown" if balance is None else balance},
                                    production=False, approve=approve, pfiles=approve_pfiles)
        card = reg.change(serial, "close", reason)
    audit("card.close", card.serial, state=card.state, reason=reason, balance_fen=balance,
          **(approval.audit_details() if approval else {}))
    if as_json:
        click.echo(json.dumps({**card.as_dict(), "balance_fen": balance}, ensure_ascii=False))
    else:
        held = ("" if not balance else f"; it held {yuan(balance)} yuan") if balance is not None \
            else "; its balance is not known to the ledger"
        click.echo(f"card {card.serial}: closed (on the hotlist){held}")


def _proven_balance(book, serial: str) -> int | None:
    """The card's balance the ledger proves, over its purse applications; None when the ledger
    has no record of it or a chain with suspicious records (the balance is not known)."""
    from ..clearing import LedgerError

    try:
        apps = book.card(serial)["apps"]
    except LedgerError:
        return None
    total = 0
    for app in apps:
        fen, suspicious = book.carried_balance(serial, app)
        if suspicious or fen is None:
            return None
        total += fen
    return total


@click.group()
def hotlist() -> None:
    """Signed hotlists for terminals: full lists and deltas (docs/lifecycle.md)."""


@hotlist.command()
@_REGISTER
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The hotlist file to write.")
@click.option("--full", "full", is_flag=True, help="Every card hotlisted now.")
@click.option("--since", type=click.IntRange(0), default=None, metavar="VERSION",
              help="Only the changes after VERSION (a delta for terminals holding VERSION).")
@click.option("--sign", "cred", required=True, type=click.Path(dir_okay=False), metavar="CRED",
              help="The issuer's hotlist signing credential (made with 'citycard operator new').")
@click.option("--sign-passphrase-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="The signing credential's passphrase (first line); else a hidden prompt.")
def export(register: str, out: str, full: bool, since: int | None, cred: str, sign_passphrase_file: str | None) -> None:
    """Write a signed hotlist: --full, or --since VERSION."""
    from ..lifecycle import write_hotlist
    from .dualopts import unlock_credentials

    if full == (since is not None):
        raise InputError("hotlist export: give --full or --since VERSION (one of them)")
    (signer,) = unlock_credentials((cred,), (sign_passphrase_file,) if sign_passphrase_file else (), "--sign")
    with _open(register) as reg:
        if full:
            version, serials = reg.hotlist_snapshot()
            header = write_hotlist(out, signer, version=version, entries=((s, True) for s in serials))
        else:
            version = reg.hotlist_version()
            if since >= version:
                raise InputError(f"--since {since}: the register's hotlist is at version {version}: "
                                 + ("nothing changed since" if since == version else "no such version yet"))
            changes = ((s, c == "add") for v, s, c in reg.hotlist_changes(since) if v <= version)
            header = write_hotlist(out, signer, version=version, entries=changes, base=since)
    audit("hotlist.exported", out, kind=header.kind, version=header.version, base=header.base, entries=header.count)
    click.echo(f"wrote {header.kind} hotlist version {header.version}"
               + (f" (changes since {header.base})" if header.kind == "delta" else "")
               + f": {header.count} entries, signed by {signer.name}, to {out}")


@hotlist.command()
@click.argument("credential", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The public key file for terminals.")
def key(credential: str, out: str) -> None:
    """Write the public key of a hotlist signing CREDENTIAL for terminals to trust."""
    from ..bureau import read_public
    from ..lifecycle.hotlist import key_id, write_public_key

    public, _doc = read_public(credential)
    write_public_key(out, public)
    click.echo(f"wrote the hotlist key of {public.name} (id {key_id(public.public_key).hex()}) to {out}")


@hotlist.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--trust", "trust", multiple=True, required=True, type=click.Path(dir_okay=False), metavar="KEYFILE",
              help="A trusted hotlist key file (from 'citycard hotlist key'); several may be given.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show_hotlist(file: str, trust: tuple[str, ...], as_json: bool) -> None:
    """Check a hotlist file's signature and show it."""
    from ..lifecycle import read_hotlist
    from ..lifecycle.hotlist import read_public_key

    header, entries = read_hotlist(file, [read_public_key(t) for t in trust])
    listed = [(s, flag) for s, flag in entries]
    if as_json:
        click.echo(json.dumps({"kind": header.kind, "version": header.version, "base": header.base,
                               "issued": header.issued, "signer": header.signer.hex(),
                               "entries": [{"serial": s, "listed": f} for s, f in listed]}))
        return
    click.echo(f"{file}: {header.kind} hotlist version {header.version}"
               + (f" (since {header.base})" if header.kind == "delta" else "")
               + f", {header.count} entries, signature good")
    for s, f in listed:
        click.echo(f"  {s} {'listed' if f else 'removed'}")


@cards.command()
@_REGISTER
@click.argument("serial")
@click.option("--journal", required=True, metavar="JOURNAL", help="The batch journal (the card counter, the batch's data).")
@click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE", help="The card profile.")
@click.option("--data", "data_path", required=True, metavar="FILE",
              help="The data file the old card was issued from (unchanged: its SHA-256 is checked).")
@keys_option()
@click.option("--ledger", default=None, metavar="LEDGER",
              help="The clearing ledger: the old card's cleared purse balances are loaded onto the new card.")
@click.option("--no-balance", is_flag=True, help="Carry no balance (the profile has no purse, or it is settled apart).")
@click.option("--reason", required=True, help="Why (kept in both cards' histories and the audit log).")
@click.option("--issue-date", callback=_date, default=None, metavar="YYYYMMDD", help="Issue date [default: today].")
@click.option("--log", "log", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Append the balance load to this terminal log for clearing.")
@click.option("--terminal", default="000000000001", show_default=True, metavar="HEX12",
              help="The terminal number of this counter (6 bytes in hex), for the load.")
@card_options
@approval_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_obj
def replace(app, register: str, serial: str, journal: str, profile_path: str, data_path: str, keys: tuple[str, ...],
            ledger: str | None, no_balance: bool, reason: str, issue_date, log: str | None, terminal: str,
            reader: str | None, sim: str | None, approve: tuple[str, ...], approve_pfiles: tuple[str, ...],
            as_json: bool) -> None:
    """Replace card SERIAL (lost, blocked or broken): a new card for the same cardholder in the
    given reader, the old one replaced and hotlisted, its cleared purse balance restored."""
    from ..clearing import Ledger
    from ..hexutil import parse_hex
    from ..lifecycle import check_replaceable, replace_card
    from ..fsutil import file_sha256
    from ..perso.job import prepare
    from ..perso.journal import Journal
    from ..perso.run import personalize
    from ..terminal.purse import PurseTerminal
    from ..terminal.txlog import append_record
    from .keyopts import open_keys, warn_test_keys

    terminal_id = parse_hex(terminal, "--terminal", length=6)
    with _open(register) as reg:
        old = reg.card(serial)
        if old.batch is None or old.row is None:
            raise InputError(f"card {serial} was not issued from a batch row: its cardholder data is not known")
        j = Journal(journal, create=False)
        try:
            found = j.find_batch(old.batch)
            if found is None:
                raise InputError(f"{journal}: no batch {old.batch!r} (the batch card {serial} was issued in)")
            if file_sha256(data_path) != found[0]:
                raise InputError(f"--data {data_path}: not the data file of batch {old.batch} (its SHA-256 differs)")
            job = prepare(profile_path, data_path, lambda: open_keys(keys))
            warn_test_keys(job.keys, job.spec)
            row = job.data.row(old.row)
            holder = row.get("cardholder_id") or row.get("id_number") or ""
            if holder != old.cardholder_id:
                raise InputError(f"{job.data.where(old.row)}: cardholder {holder!r}, but card {serial} is "
                                 f"{old.cardholder_id!r}'s")
            purse_apps = tuple(df.name for df in job.spec.apps if any(f.kind in ("ed", "ep") for f in df.files))
            if purse_apps and ledger is None and not no_balance:
                raise InputError("the profile has a purse: give --ledger LEDGER to carry the old card's cleared "
                                 "balance (or --no-balance to carry none)")
            book = Ledger(ledger, create=False) if ledger is not None else None
            try:
                balances = check_replaceable(reg, serial, wait_days=job.spec.replacement_wait_days, ledger=book,
                                             purse_apps=purse_apps)
            finally:
                if book is not None:
                    book.close()
            if balances and log is None:
                raise InputError("a balance is carried: give --log FILE so clearing accounts for the load")
            if balances:         # money onto a new card: two people where dual control applies
                approval = dual_control("card.replace-with-balance", serial, {"balances_fen": balances},
                                        production=job.spec.production or bool(job.keys.production_sources),
                                        approve=approve, pfiles=approve_pfiles,
                                        pinned=tuple(getattr(s, "roster", None) for s in job.keys.sources))
                audit("card.replacing", serial, reason=reason, **{f"restoring_{a}_fen": f for a, f in balances.items()},
                      **(approval.audit_details() if approval else {}))
            with app.open_session(reader, sim=sim, writes=True) as session:
                def issue_new() -> str:
                    number = j.allocate_number(job.spec.serial_prefix)
                    plan = job.plan(old.row, issue_date=issue_date, card_number=number)
                    report = personalize(session, job.spec, plan, verify=True)
                    if not report.verified:
                        raise InputError(f"the new card {report.card_serial} did not verify: the old card is kept")
                    return report.card_serial

                def load(app_name: str, fen: int) -> None:
                    term = PurseTerminal(session, job.spec, job.keys, app_name, terminal_id=terminal_id)
                    res = term.load(fen)
                    if log is not None:
                        append_record(log, res.record("host"))

                result = replace_card(reg, serial, issue_new=issue_new, load=load, balances=balances, reason=reason)
        finally:
            j.close()
    audit("card.replaced", serial, new_serial=result.new_serial, cardholder=result.cardholder_id, reason=reason,
          children=list(result.children), **{f"restored_{a}_fen": f for a, f in result.balances.items()})
    if as_json:
        click.echo(json.dumps({"old_serial": result.old_serial, "new_serial": result.new_serial,
                               "cardholder_id": result.cardholder_id, "balances_fen": result.balances,
                               "children": list(result.children)}))
        return
    click.echo(f"card {serial} replaced by {result.new_serial} for cardholder {result.cardholder_id}"
               + "".join(f"; {a}: {yuan(f)} yuan restored" for a, f in result.balances.items())
               + (f"; {len(result.children)} child card(s) relinked" if result.children else ""))
    click.echo(f"card {serial} is now replaced and on the hotlist (export a new hotlist)", err=True)


@cards.command()
@_REGISTER
@click.argument("child")
@click.option("--parent", required=True, metavar="SERIAL", help="The main card.")
@click.option("--reason", required=True, help="Why (kept in the card's history).")
def link(register: str, child: str, parent: str, reason: str) -> None:
    """Make CHILD a supplementary card of the main card --parent (a family's cards)."""
    with _open(register) as reg:
        card = reg.link(child, parent, reason)
    audit("card.linked", child, parent=parent, reason=reason)
    click.echo(f"card {card.serial} is now a child card of {card.parent}")
