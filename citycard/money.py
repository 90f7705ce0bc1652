"""Amounts: the card and the ledger count fen (a purse's 4-byte amounts, SPEC §2.1); people
read yuan with two decimals (the ``*_yuan`` keys beside ``*_fen``, docs/json.md)."""

from __future__ import annotations


def yuan(fen: int) -> str:
    """Fen as a yuan string with 2 decimals: 1750 → ``17.50``, -5 → ``-0.05``."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"
