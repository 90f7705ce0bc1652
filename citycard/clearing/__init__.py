"""Clearing (issue 22): verify terminal transactions with the issuer's keys, keep a ledger
per card, settle per service unit.  docs/clearing.md."""

from .ledger import MONEY, ImportSummary, Ledger, LedgerError
from .verify import KeysUnavailable, TacVerifier

__all__ = ["KeysUnavailable", "ImportSummary", "Ledger", "LedgerError", "MONEY", "TacVerifier"]
