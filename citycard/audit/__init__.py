"""The bureau's audit trail (issue 25 item 1): an append-only, hash-chained log of who did
what (key ceremonies, batches, cards, lifecycle, clearing), optionally sealed under a
custodian's key, that :meth:`AuditLog.verify` checks entry by entry.  docs/audit.md."""

from .chain import Finding, Head, Verdict, check_chain, entry_hash
from .log import AuditBroken, AuditError, AuditLog, check_details, default_operator

SEAL_UNIT, SEAL_ROLE = "audit", "seal"
#: the seal key is the keystore's ``audit/seal`` master diversified with this factor, so the
#: master itself never keys an HMAC
SEAL_FACTOR = b"AUDITLOG"

__all__ = ["AuditBroken", "AuditError", "AuditLog", "Finding", "Head", "Verdict", "check_chain", "check_details",
           "default_operator", "entry_hash", "SEAL_UNIT", "SEAL_ROLE", "SEAL_FACTOR"]
