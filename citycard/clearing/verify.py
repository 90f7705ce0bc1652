"""The back office's TAC check (issue 22): recompute each record's TAC with the issuer's keys
(keystore, or an HSM where the keys never leave the token) from the profile's purse
application, exactly as the card computed it (SPEC §2.2: load TAC over the new balance, online
counter, amount, type, terminal, date, time; purchase TAC over amount, type, terminal, TTSN,
date, time; the TAC key's left ⊕ right half; SM4 records by the SM4 TAC key, docs/sm4.md)."""

from __future__ import annotations

import hmac

from ..commands import walk
from ..errors import CitycardError
from ..commands.fmcos import KeyType
from ..crypto import pboc
from ..keys import KeySource
from ..spec import CardSpec, DFSpec, KeySpec
from ..terminal.txlog import TxRecord


class KeysUnavailable(CitycardError):
    """The issuer's key for a record cannot be had (wrong --keys or --profile, a key the
    inventory refuses, an HSM gone): the import stops and files nothing, since filing the
    record as rejected would blame the card for good."""


class TacVerifier:
    """``verifier(record)`` → None when the record's TAC verifies, else why not; raises
    :class:`KeysUnavailable` when the keys, not the record, are the problem."""

    def __init__(self, spec: CardSpec, keys: KeySource) -> None:
        self.keys = keys
        self._apps: dict[str, DFSpec] = {df.name: df for df in spec.apps}

    def __call__(self, rec: TxRecord) -> str | None:
        df = self._apps.get(rec.app)
        if df is None:
            raise KeysUnavailable(f"application {rec.app!r} of card {rec.card} is not in the profile: the wrong "
                                  "--profile for this log?")
        alg = pboc.alg_of_id(rec.algorithm)
        if alg is None:
            return f"algorithm byte {rec.algorithm:02X}: not DES/3DES (00, 01) or SM4 (04) (SPEC §6.6)"
        spec = _tac_key_spec(df, alg)
        if isinstance(spec, str):
            raise KeysUnavailable(spec)
        assert spec.master is not None
        kw: dict = {"alg": alg} if alg != "des" else {}
        if spec.master_version:     # the master generation the card used (key rotation, docs/keys.md)
            kw["version"] = rec.key_version
        kw["on"] = f"{rec.date[:4]}-{rec.date[4:6]}-{rec.date[6:8]}"   # the inventory as on the day of the record
        kw["serving"] = True        # an issued card: a retired version still serves until its end date
        try:
            dtk = self.keys.derive(spec.master[0], spec.master[1], walk.diversification_factor(rec.card), **kw)
        except CitycardError as exc:   # a key the source refuses (inventory, missing): named, never the key
            raise KeysUnavailable(f"card {rec.card}: no TAC key: {exc}") from None
        if spec.length == 8:
            dtk = dtk[:8]
        terminal, date, time = bytes.fromhex(rec.terminal), bytes.fromhex(rec.date), bytes.fromhex(rec.time)
        if rec.kind in ("purchase", "capp-purchase"):
            if rec.ttsn is None:
                return "no terminal serial (TTSN) in a purchase record"
            expect = pboc.purchase_tac(dtk, rec.amount, rec.ttype, terminal, bytes.fromhex(rec.ttsn), date, time,
                                       alg=alg)
        else:               # a load
            expect = pboc.load_tac(dtk, rec.balance_after, rec.counter, rec.amount, rec.ttype, terminal, date, time,
                                   alg=alg)
        got = bytes.fromhex(rec.tac or "")
        return None if hmac.compare_digest(bytes(expect), got) else "the TAC does not verify under the issuer's key"


def _tac_key_spec(df: DFSpec, alg: str) -> KeySpec | str:
    """The TAC key the card used: of the transaction's algorithm, the purse's TAC key id if it
    has that algorithm, else the first TAC key of that algorithm (as the card and the terminal
    choose, docs/sm4.md)."""
    purse = next((f for f in df.files if f.kind in ("ed", "ep")), None)
    if purse is None:
        return f"application {df.name!r} has no purse"
    tacs = [k for k in df.keys if k.ktype == KeyType.TAC and k.alg == alg]
    k = next((k for k in tacs if k.kid == purse.tac_key), tacs[0] if tacs else None)
    if k is None or k.master is None:
        return f"application {df.name!r} has no {alg.upper()} TAC key with a master"
    return k
