"""``--approve CRED`` options and dual control for the commands that need two people
(:mod:`citycard.bureau.dual`).

Each approver's passphrase comes from the ``--approve-passphrase-file`` given in the same
position, else from a hidden prompt naming the operator; never from the environment (one
variable for two people would defeat the second person)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable

import click

from ..errors import InputError

if TYPE_CHECKING:
    from ..bureau import Approval, Signer


def approval_options(f: Callable) -> Callable:
    f = click.option("--approve-passphrase-file", "approve_pfiles", multiple=True, metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="Passphrase of the --approve credential in the same position (its first line); "
                          "else a hidden prompt.")(f)
    return click.option("--approve", "approve", multiple=True, metavar="CRED", type=click.Path(dir_okay=False),
                        help="An operator credential approving this action (dual control: give two, "
                             "each person types their own passphrase).")(f)


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def unlock_credentials(creds: tuple[str, ...], pfiles: tuple[str, ...], option: str = "--approve") -> list[Signer]:
    """Each credential unlocked by its owner's passphrase (paired file, else a hidden prompt)."""
    from ..bureau import read_public, unlock
    from .keyopts import read_passphrase_file

    if len(pfiles) > len(creds):
        raise InputError(f"more passphrase files ({len(pfiles)}) than {option} credentials ({len(creds)})")
    signers = []
    for i, cred in enumerate(creds):
        public, _doc = read_public(cred)
        if i < len(pfiles):
            passphrase = read_passphrase_file(pfiles[i])
        elif _interactive():
            passphrase = click.prompt(f"Passphrase of operator {public.name} ({cred})", hide_input=True, err=True)
        else:
            raise InputError(f"{option} {cred}: no passphrase for operator {public.name}: give its passphrase file "
                             "in the same position (no terminal to ask on)")
        signers.append(unlock(cred, passphrase))
    return signers


def dual_control(action: str, subject: str, details: dict[str, Any], *, production: bool,
                 approve: tuple[str, ...], pfiles: tuple[str, ...], pinned: Any = ()) -> Approval | None:
    """The approvals of ``action`` when dual control applies (None when it does not); refuses
    with one line when it applies and two distinct operators of the roster did not approve.
    ``pinned``: roster fingerprints pinned by the keystores involved (their authenticated
    header): any other roster is refused, so nobody can bring a roster of their own making."""
    from ..bureau import DualControlRefused, Roster, approve as sign_approval, required

    app = click.get_current_context().find_root().obj
    roster_path = getattr(app, "roster", None)
    if not required(action, roster_configured=roster_path is not None, production=production):
        if approve:
            raise InputError("--approve needs a roster: give --roster ROSTER (or set CITYCARD_ROSTER)")
        return None
    from ..bureau.dual import DUAL_CONTROL_ACTIONS

    what = DUAL_CONTROL_ACTIONS[action]
    if len(approve) < 2:
        given = f"{len(approve)} given" if approve else "none given"
        raise DualControlRefused(f"{what} needs two people: give two --approve credentials ({given})")
    roster = Roster.load(roster_path)
    pins = {p for p in pinned if p}
    if pins and roster.fingerprint not in pins:
        raise DualControlRefused(f"--roster {roster_path} (fingerprint {roster.fingerprint}) is not the roster the "
                                 f"keystore pins ({', '.join(sorted(pins))})")
    if not pins and production:
        click.echo("citycard: warning: no keystore pins a roster: any roster is taken (pin one with "
                   "'keys create --production' under --roster; docs/audit.md)", err=True)
    from ..bureau.roster import canonical

    click.echo(f"{what}: {subject} " + canonical(details).decode("utf-8"), err=True)   # what they approve
    signers = unlock_credentials(approve, pfiles)
    approval = sign_approval(roster, action, subject, details, signers)
    click.echo(f"approved by {' and '.join(approval.names)} (roster {approval.roster})", err=True)
    return approval
