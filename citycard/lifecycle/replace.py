"""Replacing a card (补卡, issue 23 item 4): a new card for the same cardholder with a new
serial, the old card marked replaced and hotlisted, its purse balance restored from the
clearing ledger as a recorded load, its child cards relinked.

Decisions (PSAM-SM4.md §3.4 and §5 item 9; docs/lifecycle.md):

- **The balance carried is the back office's**, as FNT does; never what the lost card says (it
  is not here): what the TACs prove (:meth:`citycard.clearing.Ledger.carried_balance`: the last
  load's new balance minus the purchase amounts after it); a card whose chain has suspicious
  records is refused until they are explained.
- **Waiting period**: ``[card] replacement_wait_days`` (default 0, FNT's choice). With N > 0 a
  card reported lost less than N days ago is refused: offline terminals may still upload its
  last purchases, and a balance moved too early would pay them twice.
- **Grey records** (transactions whose answer was lost) of the old card not yet settled refuse
  the replacement whatever the waiting period: its balance is not known.
- The cardholder data is the row the old card was issued from (register: batch and row), read
  from the batch's data file, which must be unchanged (its SHA-256 as the journal recorded it)
  and hold the same cardholder.
- The new serial comes from the journal's counter (never one a batch gives out); the card in
  the reader must be a factory card (perso's identification refuses anything else).
- Order: the new card is personalized and verified first; only then is the register changed
  (old → replaced, new → issued, children relinked) and the balance loaded.  A failure before
  the register change leaves the old card as it was; the load is logged for clearing.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Callable

from ..errors import CitycardError
from ..money import yuan
from .register import Register, RegisterError


class ReplacementRefused(CitycardError):
    """The replacement cannot be done now (the message says why and what to do)."""


@dataclass(frozen=True)
class ReplaceResult:
    old_serial: str
    new_serial: str
    cardholder_id: str
    balances: dict[str, int] = field(default_factory=dict)      # purse application -> fen restored
    children: tuple[str, ...] = ()


def lost_since(register: Register, serial: str) -> _dt.datetime | None:
    """When the card was last reported lost (None if it never was)."""
    for e in reversed(register.events(serial)):
        if e["action"] == "lost":
            return _dt.datetime.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    return None


def check_replaceable(register: Register, old_serial: str, *, wait_days: int, ledger=None,
                      purse_apps: tuple[str, ...] = (), now: _dt.datetime | None = None) -> dict[str, int]:
    """Refuse (with the reason) a replacement that may not happen now; the balances to carry,
    per purse application, from the ledger (empty without a ledger)."""
    card = register.card(old_serial)
    if card.state in ("replaced", "closed"):
        raise ReplacementRefused(f"card {old_serial} is {card.state}: it cannot be replaced"
                                 + (f" (replaced by {card.replaced_by})" if card.replaced_by else ""))
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if wait_days:
        since = lost_since(register, old_serial)
        if since is None:
            raise ReplacementRefused(f"card {old_serial} was never reported lost, and the profile waits "
                                     f"{wait_days} days after a loss before a replacement ('cards lost' first)")
        ready = since + _dt.timedelta(days=wait_days)
        if now < ready:
            raise ReplacementRefused(f"card {old_serial} was reported lost on {since:%Y-%m-%d}; the profile waits "
                                     f"{wait_days} days for its last offline transactions to be cleared: replace it "
                                     f"from {ready:%Y-%m-%d %H:%M} UTC")
    balances: dict[str, int] = {}
    if ledger is not None:
        grey = [g for g in ledger.grey() if g["card"] == old_serial]
        if grey:
            raise ReplacementRefused(f"card {old_serial} has {len(grey)} transaction(s) whose card answer was lost "
                                     "and is not settled (clearing grey): its balance is not known yet")
        for app in purse_apps:
            fen, suspicious = ledger.carried_balance(old_serial, app)
            if suspicious:
                raise ReplacementRefused(f"card {old_serial} has {suspicious} suspicious record(s) in {app} (a gap in "
                                         "its counters or a balance that does not follow): its balance is not proven; "
                                         "import the missing logs first ('clearing card')")
            if fen is not None and fen < 0:
                raise ReplacementRefused(f"card {old_serial}: its cleared records of {app} do not add up (no load "
                                         "before its purchases): import the missing logs first")
            if fen:
                balances[app] = fen
    return balances


def replace_card(register: Register, old_serial: str, *, issue_new: Callable[[], str],
                 load: Callable[[str, int], None], balances: dict[str, int], reason: str) -> ReplaceResult:
    """After :func:`check_replaceable`: ``issue_new()`` personalizes and verifies the new card
    and returns its serial; then the register is changed and ``load(app, fen)`` restores each
    balance on the new card."""
    old = register.card(old_serial)
    new_serial = issue_new()
    try:
        register.change(old_serial, "replace", reason, replaced_by=new_serial)
    except RegisterError as exc:           # changed meanwhile (another counter): say so, the card stays
        raise ReplacementRefused(f"the new card {new_serial} is personalized, but {exc}; keep it aside") from None
    register.add_card(new_serial, old.cardholder_id, old.profile, batch=old.batch, row=old.row, parent=old.parent,
                      replaces=old_serial, reason=f"replaces {old_serial}: {reason}", apps=old.applications)
    children = register.relink_children(old_serial, new_serial)
    done: dict[str, int] = {}
    for app, fen in balances.items():
        try:
            load(app, fen)
        except CitycardError as exc:
            left = ", ".join(f"{a} {yuan(f)} yuan" for a, f in balances.items() if a not in done)
            raise ReplacementRefused(f"card {old_serial} is replaced by {new_serial}, but the balance was not all "
                                     f"restored ({exc}); still to load on {new_serial}: {left} "
                                     "('citycard purse load ... --log', recorded as a load for clearing)") from None
        done[app] = fen
    return ReplaceResult(old_serial, new_serial, old.cardholder_id, dict(balances), children)
