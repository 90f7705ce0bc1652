"""`citycard operator new|init|enroll|revoke|list`: personal credentials and the roster of
operators who approve dual-control actions (docs/audit.md, "Dual control")."""

from __future__ import annotations

import json

import click

from ..errors import InputError
from .common import audit
from .dualopts import approval_options, unlock_credentials


@click.group()
def operator() -> None:
    """Operator credentials and the roster (dual control: two people for sensitive actions)."""


@operator.command()
@click.argument("name")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The credential file to write (keep it yourself; readable by you only).")
@click.option("--passphrase-file", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Your new passphrase in the first line of FILE (else a hidden prompt, asked twice).")
def new(name: str, out: str, passphrase_file: str | None) -> None:
    """Make NAME's personal credential (an Ed25519 key under NAME's passphrase)."""
    from ..bureau import create_credential
    from ..bureau.credentials import check_operator_name
    from .keyopts import read_passphrase_file

    check_operator_name(name)
    if passphrase_file is not None:
        pw = read_passphrase_file(passphrase_file)
    else:
        from .dualopts import _interactive

        if not _interactive():
            raise InputError("operator new: give --passphrase-file FILE (no terminal to ask on)")
        pw = click.prompt(f"New passphrase of operator {name}", hide_input=True, confirmation_prompt=True, err=True)
    key = create_credential(out, name, pw)
    audit("operator.credential-created", name, fingerprint=key.fingerprint)
    click.echo(f"wrote the credential of {name} to {out} (fingerprint {key.fingerprint})")


@operator.command()
@click.argument("roster", type=click.Path(dir_okay=False))
@click.option("--credential", "creds", multiple=True, required=True, metavar="CRED",
              type=click.Path(dir_okay=False), help="One of the two first operators' credentials (give two).")
@click.option("--passphrase-file", "pfiles", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="The passphrase of the --credential in the same position (else a hidden prompt).")
def init(roster: str, creds: tuple[str, ...], pfiles: tuple[str, ...]) -> None:
    """Start ROSTER with two operators, each unlocking their credential."""
    from ..bureau import Roster

    if len(creds) != 2:
        raise InputError(f"operator init: give exactly two --credential (given {len(creds)})")
    a, b = unlock_credentials(creds, pfiles, "--credential")
    r = Roster.create(roster, a, b)
    audit("operator.roster-created", roster, fingerprint=r.fingerprint, operators=[a.name, b.name],
          roster_head=r.head)
    click.echo(f"created roster {roster} with {a.name} and {b.name} (fingerprint {r.fingerprint}: note it)")


@operator.command()
@click.argument("roster", type=click.Path(dir_okay=False))
@click.argument("credential", type=click.Path(dir_okay=False))
@approval_options
def enroll(roster: str, credential: str, approve: tuple[str, ...], approve_pfiles: tuple[str, ...]) -> None:
    """Add the owner of CREDENTIAL (its public part only) to ROSTER, approved by two operators."""
    from ..bureau import Roster, read_public

    r = Roster.load(roster)
    public, _doc = read_public(credential)
    r = r.append("enroll", public, unlock_credentials(approve, approve_pfiles))
    audit("operator.enrolled", public.name, roster=r.fingerprint, fingerprint=public.fingerprint,
          approved_by=[s for s in r.events[-1]["signatures"]], roster_head=r.head)
    click.echo(f"enrolled {public.name} on {roster} (fingerprint {public.fingerprint})")


@operator.command()
@click.argument("roster", type=click.Path(dir_okay=False))
@click.argument("name")
@approval_options
def revoke(roster: str, name: str, approve: tuple[str, ...], approve_pfiles: tuple[str, ...]) -> None:
    """Revoke NAME on ROSTER (a lost credential, a person who left), approved by two others."""
    from ..bureau import Roster

    r = Roster.load(roster)
    op = r.active(name)
    if op is None:
        raise InputError(f"{name} is not an active operator of {roster}")
    r = r.append("revoke", op.key, unlock_credentials(approve, approve_pfiles))
    audit("operator.revoked", name, roster=r.fingerprint, approved_by=[s for s in r.events[-1]["signatures"]],
          roster_head=r.head)
    click.echo(f"revoked {name} on {roster}")


@operator.command("list")
@click.argument("roster", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def list_(roster: str, as_json: bool) -> None:
    """The operators of ROSTER (its signatures checked first)."""
    from ..bureau import Roster

    r = Roster.load(roster)
    ops = [{"name": op.name, "fingerprint": op.key.fingerprint, "enrolled": op.enrolled,
            "revoked": op.revoked, "active": op.active} for op in r.operators.values()]
    if as_json:
        click.echo(json.dumps({"roster": roster, "fingerprint": r.fingerprint, "operators": ops}))
        return
    click.echo(f"roster {roster} (fingerprint {r.fingerprint}): {sum(o['active'] for o in ops)} active operators")
    for o in ops:
        state = f"revoked {o['revoked']}" if o["revoked"] else "active"
        click.echo(f"  {o['name']:<16} {o['fingerprint']}  enrolled {o['enrolled']}  {state}")
