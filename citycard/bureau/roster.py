"""The bureau's roster of operators (issue 25 item 2): who may approve dual-control actions.

A roster file (``roster.json``) is a chain of signed events::

    {"format": "citycard-roster", "version": 1, "events": [
      {"seq": 1, "event": "init", "operators": [{"name": "alice", "public_key": "<b64>"},
                                                {"name": "bob", "public_key": "<b64>"}],
       "time": "...", "prev": "000…", "signatures": {"alice": "<b64>", "bob": "<b64>"}},
      {"seq": 2, "event": "enroll", "operators": [{"name": "carol", ...}], ..., "signatures": {"alice": …, "bob": …}},
      {"seq": 3, "event": "revoke", "operators": [{"name": "bob", ...}], ..., "signatures": {"alice": …, "carol": …}}]}

Each event's signatures cover its canonical JSON without ``signatures`` (which includes
``prev``, the SHA-256 of the event before it).  The first event enrolls exactly two operators,
each signing it; every later event is signed by two distinct operators active before it (and
never by the operator it enrolls or revokes).  :meth:`Roster.load` checks all of it, so a roster
edited by hand (a name added, a key swapped, an event removed) does not load.  The roster's
**fingerprint** (the hash of its first event) names it in approvals and audit entries; a bureau
notes it when the roster is made (it is printed and recorded in the audit log).

What the roster alone cannot show: that it was cut back to an earlier state (its last events,
e.g. a revocation, removed).  Its :attr:`Roster.head` goes into the audit log with every roster
change and every approval, where an auditor compares it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..audit.chain import canonical   # one canonical JSON for hashes and signatures
from ..errors import CitycardError
from .credentials import OperatorKey, Signer, check_operator_name

FORMAT = "citycard-roster"
GENESIS = "0" * 64


class RosterError(CitycardError):
    """A roster that cannot be used: missing, damaged, or not signed as it must be."""


def _unsigned(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "signatures"}


def event_hash(event: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(_unsigned(event))).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Operator:
    key: OperatorKey
    enrolled: str
    revoked: str | None = None

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def active(self) -> bool:
        return self.revoked is None


class Roster:
    """A checked roster: the operators and whether each is active."""

    def __init__(self, path: Path, events: list[dict[str, Any]], operators: dict[str, Operator]) -> None:
        self.path = path
        self.events = events
        self.operators = operators

    @property
    def fingerprint(self) -> str:
        return event_hash(self.events[0])[:16] if self.events else ""

    @property
    def head(self) -> str:
        """``<events>:<hash of the last event>``: recorded in the audit log with every roster change
        and every approval, since a roster cut back to an earlier state (its last events removed)
        cannot be told from the roster file alone."""
        return f"{len(self.events)}:{event_hash(self.events[-1])[:16]}"

    def active(self, name: str) -> Operator | None:
        op = self.operators.get(name)
        return op if op is not None and op.active else None

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Roster":
        where = str(path)
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RosterError(f"{where}: no such roster (make one with 'citycard operator init')") from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise RosterError(f"{where}: not a roster ({exc.__class__.__name__})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
            raise RosterError(f"{where}: not a citycard roster (format/version)")
        events = doc.get("events")
        if not isinstance(events, list) or not events:
            raise RosterError(f"{where}: events: none")
        operators: dict[str, Operator] = {}
        prev = GENESIS
        for i, ev in enumerate(events, 1):
            at = f"{where}: events[{i}]"
            if not isinstance(ev, dict) or ev.get("seq") != i or ev.get("prev") != prev:
                raise RosterError(f"{at}: out of chain (removed, reordered or edited event)")
            kind = ev.get("event")
            keys = _keys(ev.get("operators"), at)
            sigs = ev.get("signatures")
            if not isinstance(sigs, dict):
                raise RosterError(f"{at}: signatures missing")
            message = canonical(_unsigned(ev))
            if i == 1:
                if kind != "init" or len(keys) != 2 or keys[0].name == keys[1].name:
                    raise RosterError(f"{at}: the first event must enroll exactly two distinct operators")
                signers = {k.name: k for k in keys}
            else:
                if kind not in ("enroll", "revoke") or len(keys) != 1:
                    raise RosterError(f"{at}: event {kind!r} unknown")
                signers = {n: op.key for n, op in operators.items() if op.active and n != keys[0].name}
            good = {n for n, s in sigs.items() if n in signers and signers[n].verifies(_sig(s, at), message)}
            if len(good) < 2 or (i == 1 and good != set(signers)):
                raise RosterError(f"{at}: not signed by two distinct active operators (forged or edited?)")
            when = str(ev.get("time", ""))
            if kind in ("init", "enroll"):
                for k in keys:
                    if k.name in operators:
                        raise RosterError(f"{at}: operator {k.name} is already on the roster")
                    if any(op.key.public_key == k.public_key for op in operators.values()) or \
                            (i == 1 and keys[0].public_key == keys[1].public_key):
                        raise RosterError(f"{at}: {k.name}'s key is already on the roster under another name")
                    operators[k.name] = Operator(k, when)
            else:
                old = operators.get(keys[0].name)
                if old is None or not old.active or old.key != keys[0]:
                    raise RosterError(f"{at}: revokes an operator who is not active on the roster")
                operators[keys[0].name] = Operator(old.key, old.enrolled, when)
            prev = event_hash(ev)
        return cls(Path(path), events, operators)

    # ------------------------------------------------------------------ writing
    @classmethod
    def create(cls, path: str | os.PathLike[str], first: Signer, second: Signer) -> "Roster":
        """A new roster enrolling two operators, each signing (they are both present)."""
        if Path(path).exists():
            raise RosterError(f"{path}: already exists (a roster is never overwritten)")
        if first.name == second.name:
            raise RosterError("a roster starts with two distinct operators")
        ev = {"seq": 1, "event": "init", "operators": [_key_doc(first.public), _key_doc(second.public)],
              "time": _now(), "prev": GENESIS}
        ev["signatures"] = {s.name: _b64(s.sign(canonical(ev))) for s in (first, second)}
        _save(Path(path), [ev])
        return cls.load(path)

    def append(self, kind: str, subject: OperatorKey, approvers: Sequence[Signer]) -> "Roster":
        """Enroll or revoke ``subject``, approved by two distinct active operators.  Under an
        exclusive lock, against the roster as it is on disk then (a concurrent change is not
        lost: this one is refused, to be done again)."""
        import fcntl

        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            current = Roster.load(self.path)
            if current.head != self.head:
                raise RosterError(f"{self.path} changed meanwhile (another change was made): run the command again")
            names = _check_approvers(self, approvers, f"{kind} {subject.name}")
            if subject.name in names:
                raise RosterError(f"{subject.name} cannot approve their own {kind}")
            if kind == "enroll" and subject.name in self.operators:
                raise RosterError(f"{subject.name} is already on the roster {self.path}")
            if kind == "enroll" and any(op.key.public_key == subject.public_key for op in self.operators.values()):
                raise RosterError(f"{subject.name}'s key is already on the roster {self.path} under another name")
            if kind == "revoke" and self.active(subject.name) is None:
                raise RosterError(f"{subject.name} is not an active operator of {self.path}")
            ev = {"seq": len(self.events) + 1, "event": kind, "operators": [_key_doc(subject)], "time": _now(),
                  "prev": event_hash(self.events[-1])}
            ev["signatures"] = {s.name: _b64(s.sign(canonical(ev))) for s in approvers}
            _save(self.path, self.events + [ev])
            return Roster.load(self.path)
        finally:
            os.close(lock_fd)


def _check_approvers(roster: Roster, approvers: Sequence[Signer], what: str) -> list[str]:
    names = [s.name for s in approvers]
    if len(set(names)) < 2 or len({s.public.public_key for s in approvers}) < 2:
        given = ", ".join(names) or "none"
        raise RosterError(f"{what} needs two distinct people (approvals given: {given})")
    for s in approvers:
        op = roster.active(s.name)
        if op is None:
            raise RosterError(f"{s.name} is not an active operator of the roster {roster.path}")
        if op.key.public_key != s.public.public_key:
            raise RosterError(f"{s.name}: this credential is not the one enrolled on the roster {roster.path}")
    return names


def _key_doc(k: OperatorKey) -> dict[str, str]:
    return {"name": k.name, "public_key": _b64(k.public_key)}


def _keys(value: Any, at: str) -> list[OperatorKey]:
    if not isinstance(value, list):
        raise RosterError(f"{at}: operators missing")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise RosterError(f"{at}: operators: not an object")
        name = str(item.get("name", ""))
        try:
            check_operator_name(name)
        except Exception:
            raise RosterError(f"{at}: operator name {name!r} invalid") from None
        raw = _sig(item.get("public_key"), at)
        if len(raw) != 32:
            raise RosterError(f"{at}: {name}: public key of {len(raw)} bytes")
        out.append(OperatorKey(name, raw))
    return out


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _sig(value: Any, at: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (ValueError, TypeError):
        raise RosterError(f"{at}: not base64") from None


def _save(path: Path, events: list[dict[str, Any]]) -> None:
    from ..fsutil import atomic_write

    doc = {"format": FORMAT, "version": 1, "events": events}
    atomic_write(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8"), mode=0o644)
