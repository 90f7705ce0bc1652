"""Clearing (issue 22): verify terminal transactions with the issuer's keys, keep a ledger
per card, settle per service unit.  docs/clearing.md."""

from .ledger import LATE_KEYS, MONEY, ImportSummary, Ledger, LedgerError, Settlement
from .verify import KeysUnavailable, TacVerifier

__all__ = ["KeysUnavailable", "ImportSummary", "LATE_KEYS", "Ledger", "LedgerError", "MONEY", "Settlement",
           "TacVerifier"]
