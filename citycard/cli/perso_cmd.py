"""`citycard perso` and `citycard dump`."""

from __future__ import annotations

import datetime
import json

import click

from ..errors import InputError
from .common import audit, card_options
from .dualopts import approval_options, dual_control
from .keyopts import keys_option, open_keys


def _date(_ctx, _param, value):
    if value is None:
        return datetime.date.today()
    try:
        return datetime.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise InputError(f"--issue-date {value!r}: expected YYYYMMDD") from None


@click.command()
@click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
              help="Card profile (TOML): the card's files, keys and data bindings.")
@keys_option()
@click.option("-d", "--data", "data_path", required=True, metavar="CSV", help="Cardholder data file.")
@click.option("--row", type=click.IntRange(1), required=True, help="Data row (1 = first after the header).")
@click.option("--card-number", type=click.IntRange(0), default=None,
              help="Card number in the serial (default: the row number).")
@click.option("--issue-date", callback=_date, default=None, metavar="YYYYMMDD",
              help="Issue date written to the card (its validity starts there) [default: today].")
@click.option("--encoding", default="utf-8", show_default=True, help="Data file encoding (utf-8, gb18030, gbk).")
@card_options
@click.option("--dry-run", is_flag=True, help="Print the plan (sensitive data masked); touch no card.")
@click.option("--no-verify", is_flag=True,
              help="Skip the verification after personalization (reading back every file and proving every "
                   "key); the card is then not known to be right.")
@click.option("--reissue-card", "reissue", is_flag=True,
              help="Erase and issue again a card of this cardholder that is already fully issued (its purse "
                   "balance and records are lost); without it such a card is refused.")
@click.option("--probe", is_flag=True,
              help="After the verification, read by every SFI 1-30 of each DF to find files the profile does not "
                   "name (reads only; docs/profile.md, \"What verification proves\").")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
@approval_options
@click.pass_obj
def perso(app, profile_path, keys, data_path, row, card_number, issue_date, encoding, reader, sim, dry_run,
          no_verify, reissue, probe, as_json, approve, approve_pfiles) -> None:
    """Personalize one card from PROFILE, key sources and one cardholder row."""
    from ..perso.job import prepare
    from ..perso.run import personalize
    from ..transport.transcript import format_command

    from .keyopts import warn_test_keys

    if probe and no_verify:
        raise InputError("--probe looks beyond the verification: it cannot go with --no-verify")
    job = prepare(profile_path, data_path, lambda: open_keys(keys), encoding=encoding)
    warn_test_keys(job.keys, job.spec)
    plan = job.plan(row, issue_date=issue_date, card_number=card_number)
    data, spec = job.data, job.spec
    if dry_run:
        if as_json:
            click.echo(json.dumps({"card_serial": plan.card_serial, "apdus": plan.apdu_count, "steps": [
                {"label": s.label, "kind": s.kind, "apdu": format_command(s.cmd), "expect": f"{s.expect:04X}",
                 "source": s.source}
                for s in plan.steps]}, indent=2, ensure_ascii=False))
            return
        click.echo(f"plan for card {plan.card_serial} ({data.where(row)}): {len(plan.steps)} steps, "
                   f"{plan.apdu_count} APDUs")
        for i, s in enumerate(plan.steps, 1):
            how = {"apdu": "", "protected": " [GET CHALLENGE, then "
                   + ("enciphered + MAC" if s.encrypt else "MAC") + "]",
                   "ext_auth": " [GET CHALLENGE, then the cryptogram]"}[s.kind]
            click.echo(f"{i:3d}. {s.label}: {format_command(s.cmd)}{how}" + (f" [{s.source}]" if s.source else ""))
        return
    approval = None
    if reissue:          # erasing an issued card: two people where dual control applies (issue 25 item 2)
        approval = dual_control("card.reissue", plan.card_serial, {"row": row, "profile": spec.name},
                                production=spec.production or bool(job.keys.production_sources),
                                approve=approve, pfiles=approve_pfiles,
                                pinned=tuple(getattr(s, "roster", None) for s in job.keys.sources))
    with app.open_session(reader, sim=sim, writes=True) as session:
        report = personalize(session, spec, plan, verify=not no_verify, reissue=reissue, probe=probe)
    action = "card.reissued" if report.reissued else ("card.verified" if not no_verify else "card.personalized")
    audit(action, report.card_serial, profile=spec.name, data=data.where(row), rerun=report.rerun,
          checks=len(report.checks) if not no_verify else None, **(approval.audit_details() if approval else {}))
    if as_json:
        click.echo(json.dumps({"card_serial": report.card_serial, "row": row, "steps": report.steps,
                               "rerun": report.rerun, "reissued": report.reissued, "verified": report.verified if not no_verify else None,
                               "checks": len(report.checks), "ms": round(report.seconds * 1000, 1)}, indent=2))
        return
    again = (" (a re-issue: the issued card was erased and issued again)" if report.reissued
             else " (card erased and redone)" if report.rerun else "")
    click.echo(f"personalized card {report.card_serial} from {data.where(row)}{again}: {report.steps} steps "
               f"in {report.seconds * 1000:.0f} ms")
    if not no_verify:
        from ..perso.verify import SCOPE

        click.echo(f"verified: {sum(1 for c in report.checks if c[1])}/{len(report.checks)} checks passed ({SCOPE})")


@click.command()
@card_options
@click.option("-p", "--profile", "profile_path", default=None, metavar="PROFILE",
              help="Read and decode every file of this profile.")
@keys_option(required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
@click.pass_obj
def dump(app, reader, sim, profile_path, keys, as_json) -> None:
    """Read every application, file and record of a card, decoded."""
    from ..perso.dump import dump_card
    from ..profile import load_profile

    spec = load_profile(profile_path) if profile_path else None
    ring = open_keys(keys) if keys else None
    # with keys, dump authenticates (a try counter may move): a card named, as for writing (issue 17 item 2)
    with app.open_session(reader, sim=sim, writes=ring is not None) as session:
        out = dump_card(session, spec, ring)
    if out.get("keys_refused") and not as_json:
        click.echo(f"citycard: warning: the card refused a key ({out['keys_refused']}): the files behind its "
                   "access conditions are not read (check --keys and --profile)", err=True)
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    click.echo(f"ATR {out['atr']}" + (f"   card serial {out['card_serial']}" if out.get("card_serial") else ""))
    for a in out["applications"]:
        head = f"{a.get('name', '')} {a.get('fid', '')} {a.get('aid', '')}".strip()
        status = "" if a.get("sw") == "9000" else f"  [{a.get('sw')}: {a.get('error', '')}]"
        click.echo(f"\n== {head}{status}")
        for e in a.get("directory", []):
            click.echo(f"   directory: {e.get('aid')} {e.get('label')}")
        for f in a.get("files", []):
            title = f"   {f['kind']} {f['fid']} {f['name']}"
            if "error" in f:
                click.echo(f"{title}: {f['sw']} {f['error']}")
            elif "balance_fen" in f:
                click.echo(f"{title}: balance {f['balance_fen'] / 100:.2f} yuan ({f['balance_fen']} fen)")
            else:
                click.echo(title + (f" ({f['layout']})" if f.get("layout") else ""))
                dec = f.get("decoded")
                if isinstance(dec, dict):
                    for k, v in dec.items():
                        click.echo(f"      {k}: {v}")
                elif isinstance(dec, list):
                    for i, d in enumerate(dec, 1):
                        click.echo(f"      record {i}: " + (", ".join(f"{k}={v}" for k, v in d.items())
                                                          if isinstance(d, dict) else str(d)))
                elif "data" in f:
                    click.echo(f"      {f['data']}")
                elif "records" in f:
                    for i, r in enumerate(f["records"], 1):
                        click.echo(f"      record {i}: {r}")
