"""Dual control (issue 25 item 2): an action that the card-production requirements reserve to
two people runs only with the approvals of two distinct operators of the roster, each
unlocking their own credential.

Which actions (:data:`DUAL_CONTROL_ACTIONS`): importing a master (key ceremony, HSM import),
deleting a key, putting a retired key version back to active, releasing a production batch, re-issuing (erasing) an issued card, closing a card
with a balance.  When dual control applies (:func:`required`): whenever a roster is configured,
and always for production keys or profiles (which then refuse to run without a roster).

An approval signs a statement naming the action, its subject and details, the time, the station
and the roster's fingerprint; the statement's hash, the two names and their signatures go into
the audit entry of the action, so an auditor can check them against the roster later.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from ..errors import CitycardError
from .credentials import Signer
from .roster import Roster, RosterError, _check_approvers, canonical

#: action -> what it is called in messages
DUAL_CONTROL_ACTIONS = {
    "keys.import": "importing a master key",
    "keys.hsm-import": "importing master keys into an HSM",
    "keys.delete": "deleting a key",
    "keys.reactivate": "putting a retired key version back to active",
    "batch.release": "releasing a production batch",
    "card.reissue": "re-issuing (erasing) an issued card",
    "card.close-with-balance": "closing a card that holds a balance",
    "card.replace-with-balance": "moving a card's balance onto a replacement",
}


class DualControlRefused(CitycardError):
    """The action needs two people and did not get them (or the approvals do not check)."""


def required(action: str, *, roster_configured: bool, production: bool) -> bool:
    """Whether ``action`` needs two approvals here; production without a roster is refused."""
    if action not in DUAL_CONTROL_ACTIONS:
        return False
    if production and not roster_configured:
        raise DualControlRefused(f"{DUAL_CONTROL_ACTIONS[action]} with production keys or a production profile "
                                 "needs dual control: give --roster ROSTER and two --approve credentials")
    return roster_configured


@dataclass(frozen=True)
class Approval:
    """Two (or more) operators approved one statement."""

    action: str
    names: tuple[str, ...]
    statement_hash: str
    signatures: tuple[str, ...]
    roster: str
    roster_head: str
    statement: str = ""        # the canonical JSON both signed: an auditor checks the signatures on it

    def audit_details(self) -> dict[str, Any]:
        return {"approved_by": list(self.names), "approval": self.statement_hash, "approval_statement": self.statement,
                "approval_signatures": list(self.signatures), "roster": self.roster,
                "roster_head": self.roster_head}


def approve(roster: Roster, action: str, subject: str, details: Mapping[str, Any],
            signers: Sequence[Signer]) -> Approval:
    """Two distinct active operators of ``roster`` sign the statement of ``action``."""
    what = DUAL_CONTROL_ACTIONS.get(action, action)
    try:
        names = _check_approvers(roster, signers, what)
    except RosterError as exc:
        raise DualControlRefused(str(exc)) from None
    statement = {"action": action, "subject": subject, "details": dict(details), "roster": roster.fingerprint,
                 "roster_head": roster.head,
                 "station": socket.gethostname(),
                 "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    message = canonical(statement)
    sigs = tuple(base64.b64encode(s.sign(message)).decode("ascii") for s in signers)
    for s, sig in zip(signers, sigs):                     # belt and braces: each checks under the roster key
        op = roster.active(s.name)
        if op is None or not op.key.verifies(base64.b64decode(sig), message):
            raise DualControlRefused(f"{s.name}: the approval does not verify under the roster's key")
    return Approval(action, tuple(names), hashlib.sha256(message).hexdigest(), sigs, roster.fingerprint, roster.head,
                    message.decode("utf-8"))
