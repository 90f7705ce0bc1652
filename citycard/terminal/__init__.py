"""Card services after issuance: purse transactions (and later PIN and blocking)."""
