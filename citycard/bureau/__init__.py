"""Bureau controls (issue 25): personal operator credentials, the roster of operators and
dual control.  docs/audit.md ("Dual control")."""

from .credentials import CredentialError, OperatorKey, Signer, create_credential, read_public, unlock
from .dual import DUAL_CONTROL_ACTIONS, Approval, DualControlRefused, approve, required
from .roster import Roster, RosterError

__all__ = ["Approval", "CredentialError", "DUAL_CONTROL_ACTIONS", "DualControlRefused", "OperatorKey",
           "Roster", "RosterError", "Signer", "approve", "create_credential", "read_public", "required",
           "unlock"]
