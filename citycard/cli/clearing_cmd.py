"""`citycard clearing import|card|report|settle|grey`: verify terminal transactions and settle per
service unit (docs/clearing.md)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys

import click

from ..errors import InputError
from ..money import yuan
from .common import audit
from .keyopts import keys_option, open_keys

_LEDGER = click.option("--ledger", required=True, envvar="CITYCARD_LEDGER", metavar="DB",
                       help="The clearing ledger: a SQLite file or a postgresql:// URL (env CITYCARD_LEDGER).")


def _yuan(fen: int | None) -> str:
    return "-" if fen is None else yuan(fen)


#: the money fields of the ledger's records and cards (fen), shown as ``*_fen`` with ``*_yuan``
#: beside them at this edge (README: the JSON conventions)
_MONEY = ("balance", "amount", "balance_before", "balance_after")


def _money(d: dict) -> dict:
    """``d`` with every money field ``k`` as ``k_fen`` and ``k_yuan`` (other keys as they are);
    a ``*_fen`` key of a report gets its ``*_yuan`` beside it."""
    out: dict = {}
    for k, v in d.items():
        if k in _MONEY:
            out[f"{k}_fen"], out[f"{k}_yuan"] = v, (None if v is None else _yuan(v))
        elif k.endswith("_fen"):
            out[k], out[k[:-4] + "_yuan"] = v, (None if v is None else _yuan(v))
        else:
            out[k] = v
    return out


@click.group()
def clearing() -> None:
    """Back office: verify every terminal transaction's TAC, keep a ledger per card, settle."""


@clearing.command("import")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_LEDGER
@click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
              help="The card profile: its purse applications and TAC keys.")
@keys_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def import_(logs: tuple[str, ...], ledger: str, profile_path: str, keys: tuple[str, ...], as_json: bool) -> None:
    """Verify and file the records of terminal LOGS (all or nothing; a log imported again adds nothing)."""
    from ..clearing import Ledger, TacVerifier
    from ..profile import load_profile

    spec = load_profile(profile_path)
    ring = open_keys(keys)
    try:
        with Ledger(ledger) as book:
            summary = book.import_logs(logs, TacVerifier(spec, ring))
    finally:
        ring.close()
    audit("clearing.imported", ledger, files=len(logs), records=summary.records, new=summary.new,
          **{f"verdict_{k}": v for k, v in summary.verdicts.items()})
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
        return
    v = summary.verdicts
    click.echo(f"imported {summary.files - summary.skipped_files} of {summary.files} logs "
               f"({summary.skipped_files} already imported): {summary.records} records, {summary.new} new, "
               f"{summary.repeated} already in the ledger")
    click.echo("  " + ", ".join(f"{k} {v[k]}" for k in ("accepted", "suspicious", "rejected", "duplicate", "grey",
                                                          "settled") if v.get(k)))


@clearing.command()
@click.argument("serial")
@_LEDGER
@click.option("--app", default=None, help="Only this application.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def card(serial: str, ledger: str, app: str | None, as_json: bool) -> None:
    """A card's cleared balance and counters per application, and its history."""
    from ..clearing import Ledger

    with Ledger(ledger, create=False) as book:
        info = book.card(serial, app)
    if as_json:
        click.echo(json.dumps({"card": info["card"], "apps": {n: _money(a) for n, a in info["apps"].items()},
                               "history": [_money(h) for h in info["history"]]}, ensure_ascii=False))
        return
    for name, a in info["apps"].items():
        online, offline = (("-" if c is None else c) for c in (a["online_counter"], a["offline_counter"]))
        click.echo(f"card {serial} {name}: balance {_yuan(a['balance'])} yuan, online counter "
                   f"{online}, offline counter {offline}, {a['records']} records")
    for h in info["history"]:
        click.echo(f"  {h['tx_date']} {h['tx_time']} {h['app']:<10} {h['kind']:<13} {_yuan(h['amount']):>9} "
                   f"ctr {h['counter']:<5} {h['verdict']}" + (f" ({h['reason']})" if h["reason"] else ""))


def _date(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).strftime("%Y%m%d")
    except ValueError:
        raise InputError(f"{what} {value}: a date YYYY-MM-DD") from None


@clearing.command()
@_LEDGER
@click.option("--from", "date_from", default=None, metavar="DATE", help="First day (YYYY-MM-DD).")
@click.option("--to", "date_to", default=None, metavar="DATE", help="Last day (YYYY-MM-DD).")
@click.option("--by", type=click.Choice(["unit", "terminal", "day"]), default="unit", show_default=True,
              help="Group the totals by service unit (application), terminal or day.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (amounts in fen).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (amounts in fen).")
def report(ledger: str, date_from: str | None, date_to: str | None, by: str, as_csv: bool, as_json: bool) -> None:
    """Settlement: purchases owed per unit, terminal or day (yuan; suspicious shown apart), with
    counts of rejected, duplicate and grey records."""
    from ..clearing import Ledger

    if as_csv and as_json:
        raise InputError("--csv and --json: one of them")
    first, last = _date(date_from, "--from"), _date(date_to, "--to")
    with Ledger(ledger, create=False) as book:
        closed = book.settlements(first, last)
        rows = book.report(by=by, date_from=first, date_to=last)
        for period in closed:   # which figures are frozen (stderr: the CSV/JSON on stdout stay data)
            click.echo(f"closed period {period.as_dict()['from']}..{period.as_dict()['to']} (at {period.at}): "
                       "its records as they stood then; records filed after it, apart as late", err=True)
        if as_csv:
            w = None
            for r in rows:
                if w is None:
                    w = csv.DictWriter(sys.stdout, fieldnames=list(r))
                    w.writeheader()
                w.writerow(r)
            return
        if as_json:
            for r in rows:
                click.echo(json.dumps(_money(r)))
            return
        late = bool(closed)
        click.echo(f"{by.upper():<14} {'PURCHASES':>9} {'OWED (yuan)':>12} {'SUSPICIOUS':>10} {'LOADED':>10} "
                   f"{'REJECTED':>8} {'DUPL.':>5} {'GREY':>4}" + (f" {'LATE':>4} {'LATE OWED':>10}" if late else ""))
        for r in rows:
            click.echo(f"{str(r[by]):<14} {r['purchases']:>9} {_yuan(r['purchase_fen']):>12} "
                       f"{_yuan(r['suspicious_fen']):>10} {_yuan(r['load_fen']):>10} {r['rejected']:>8} "
                       f"{r['duplicates']:>5} {r['grey']:>4}"
                       + (f" {r['late_purchases']:>4} {_yuan(r['late_purchase_fen']):>10}" if late else ""))


@clearing.command()
@_LEDGER
@click.option("--from", "date_from", required=True, metavar="DATE", help="First day of the period (YYYY-MM-DD).")
@click.option("--to", "date_to", required=True, metavar="DATE", help="Last day of the period (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def settle(ledger: str, date_from: str, date_to: str, as_json: bool) -> None:
    """Close a settlement period (transaction dates, both days included): its report keeps the
    figures of now; records dated inside it that arrive later are shown apart as late."""
    from ..clearing import Ledger

    first, last = _date(date_from, "--from"), _date(date_to, "--to")
    assert first is not None and last is not None
    with Ledger(ledger, create=False) as book:
        done = book.settle(first, last)
    audit("clearing.settled", ledger, **done.as_dict())
    if as_json:
        click.echo(json.dumps({"ok": True, **done.as_dict()}))
        return
    click.echo(f"closed the period {date_from}..{date_to}: {done.records} records as they stand now "
               f"(at {done.at}); records dated inside it filed from now on are reported as late")


@clearing.command()
@_LEDGER
@click.option("--older-than", "days", type=click.IntRange(0), default=2, show_default=True,
              help="Only grey records at least this many days old (0: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def grey(ledger: str, days: int, as_json: bool) -> None:
    """Grey records (the card's answer lost at the terminal) still without their proof."""
    from ..clearing import Ledger

    cutoff = (dt.date.today() - dt.timedelta(days=days)).strftime("%Y%m%d") if days else None
    n = 0
    with Ledger(ledger, create=False) as book:
        for g in book.grey(cutoff):
            n += 1
            click.echo(json.dumps(_money(g)) if as_json else
                       f"{g['date']} {g['time']} card {g['card']} {g['app']} {g['kind']} {_yuan(g['amount'])} yuan "
                       f"counter {g['counter']} terminal {g['terminal']} ({g['file']}:{g['line']})")
    if not as_json:
        click.echo(f"{n} grey records" + (f" older than {days} days" if days else ""), err=True)
