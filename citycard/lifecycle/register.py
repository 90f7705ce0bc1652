"""The card register (issue 23 item 1): every issued card, its cardholder, profile, batch and
state, and every change of state with who, when and why.

Stored in SQLite (a file, the default) or PostgreSQL (``postgresql://…``, shared by several
counters), like the batch journal.  Three tables:

- ``cards``: one row per card serial (state, cardholder, profile, batch and row, parent card,
  the card that replaced it);
- ``card_events``: every state change (from, to, time, operator, station, reason), never
  updated or deleted;
- ``hotlist``: the hotlist's history, one row per change (``add`` or ``remove`` of a serial),
  whose id is the hotlist version after the change (:mod:`citycard.lifecycle.hotlist`).  A card
  lost, found and lost again has three rows: a second add of one card is an ordinary event
  (PSAM-SM4.md §3.1: FNT's card-number primary key makes it fail).

States and what moves a card between them (:data:`TRANSITIONS`)::

    issued --lost--> lost --found--> issued
    issued|lost|blocked --close--> closed          (hotlisted; final)
    issued|lost|blocked --replace--> replaced      (hotlisted; final; the new card is linked)
    issued --blocked (a terminal blocked it on the spot)--> blocked

Hotlisted are the cards in ``lost``, ``blocked``, ``closed`` and ``replaced``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from ..errors import CitycardError, InputError

STATES = ("issued", "lost", "blocked", "closed", "replaced")
HOTLISTED = frozenset({"lost", "blocked", "closed", "replaced"})

#: action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "lost": (frozenset({"issued"}), "lost"),
    "found": (frozenset({"lost"}), "issued"),
    "blocked": (frozenset({"issued", "lost"}), "blocked"),
    "close": (frozenset({"issued", "lost", "blocked"}), "closed"),
    "replace": (frozenset({"issued", "lost", "blocked"}), "replaced"),
}

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS cards (
        serial TEXT PRIMARY KEY, cardholder_id TEXT NOT NULL, profile TEXT NOT NULL, batch TEXT, row INTEGER,
        state TEXT NOT NULL, parent TEXT, replaced_by TEXT, replaces TEXT, issued TEXT NOT NULL,
        updated TEXT NOT NULL, apps TEXT NOT NULL DEFAULT '')""",
    """CREATE INDEX IF NOT EXISTS cards_holder ON cards (cardholder_id)""",
    """CREATE TABLE IF NOT EXISTS card_events (
        id {serial} PRIMARY KEY, serial TEXT NOT NULL, action TEXT NOT NULL, state_from TEXT, state_to TEXT NOT NULL,
        at TEXT NOT NULL, operator TEXT NOT NULL, station TEXT NOT NULL, reason TEXT)""",
    """CREATE INDEX IF NOT EXISTS card_events_serial ON card_events (serial, id)""",
    """CREATE TABLE IF NOT EXISTS hotlist (
        version {serial} PRIMARY KEY, serial TEXT NOT NULL, change TEXT NOT NULL, at TEXT NOT NULL, reason TEXT)""",
]


class RegisterError(CitycardError):
    """The register cannot be opened or a change is not allowed (the message says why)."""


@dataclass(frozen=True)
class CardRecord:
    serial: str
    cardholder_id: str
    profile: str
    batch: str | None
    row: int | None
    state: str
    parent: str | None
    replaced_by: str | None
    replaces: str | None
    issued: str
    updated: str
    apps: str = ""              # the card's applications (comma-separated names from its profile)

    @property
    def applications(self) -> tuple[str, ...]:
        return tuple(a for a in self.apps.split(",") if a)

    @property
    def hotlisted(self) -> bool:
        return self.state in HOTLISTED

    def as_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "cardholder_id": self.cardholder_id, "profile": self.profile,
                "batch": self.batch, "row": self.row, "state": self.state, "hotlisted": self.hotlisted,
                "parent": self.parent, "replaced_by": self.replaced_by, "replaces": self.replaces,
                "issued": self.issued, "updated": self.updated, "applications": list(self.applications)}


_CARD_COLS = "serial, cardholder_id, profile, batch, row, state, parent, replaced_by, replaces, issued, updated, apps"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_serial(serial: str, what: str = "card serial") -> str:
    s = serial.strip()
    if not s or len(s) > 20 or not s.isdigit():
        raise InputError(f"{what} {serial!r}: the card number, up to 20 digits")
    return s


class Register:
    """The card register (one connection; open one per thread)."""

    def __init__(self, url: str, *, operator: str | None = None, station: str | None = None,
                 create: bool = True) -> None:
        from ..audit import default_operator
        from ..db import Database

        self.url = url
        self.operator = operator or default_operator()
        self.station = station or socket.gethostname()
        self.db = Database(url, _SCHEMA, what="register", lock_id=736865, error=RegisterError, create=create)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Register":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ cards
    def add_card(self, serial: str, cardholder_id: str, profile: str, *, batch: str | None = None,
                 row: int | None = None, parent: str | None = None, replaces: str | None = None,
                 reason: str = "issued", apps: tuple[str, ...] = ()) -> bool:
        """Register an issued card (False when it is already registered: idempotent)."""
        check_serial(serial)
        at = now()
        with self.db.transaction() as cur:
            cur.execute(f"INSERT INTO cards ({_CARD_COLS}) VALUES (?, ?, ?, ?, ?, 'issued', ?, NULL, ?, ?, ?, ?) "
                        "ON CONFLICT (serial) DO NOTHING",       # two counters importing at once: one wins
                        (serial, cardholder_id, profile, batch, row, parent, replaces, at, at, ",".join(apps)))
            if cur.rowcount == 0:
                return False
            self._event(cur, serial, "issue", None, "issued", at, reason)
            return True

    def card(self, serial: str) -> CardRecord:
        row = self.db.one(f"SELECT {_CARD_COLS} FROM cards WHERE serial = ?", (check_serial(serial),))
        if row is None:
            raise RegisterError(f"card {serial} is not in the register {self.url}")
        return CardRecord(*row)

    def cards_of(self, cardholder_id: str) -> list[CardRecord]:
        return [CardRecord(*r) for r in self.db.all(
            f"SELECT {_CARD_COLS} FROM cards WHERE cardholder_id = ? ORDER BY issued, serial", (cardholder_id,))]

    def children(self, parent: str) -> list[str]:
        """The supplementary (child) cards linked to ``parent``."""
        return [r[0] for r in self.db.all("SELECT serial FROM cards WHERE parent = ? ORDER BY serial", (parent,))]

    def link(self, child: str, parent: str, reason: str) -> CardRecord:
        """Make ``child`` a supplementary card of ``parent`` (a family's main card)."""
        if child == parent:
            raise RegisterError(f"card {child} cannot be its own parent")
        self.card(parent)
        with self.db.transaction() as cur:
            row = cur.execute("SELECT state FROM cards WHERE serial = ?", (check_serial(child),)).fetchone()
            if row is None:
                raise RegisterError(f"card {child} is not in the register {self.url}")
            cur.execute("UPDATE cards SET parent = ?, updated = ? WHERE serial = ?", (parent, now(), child))
            self._event(cur, child, "link", row[0], row[0], now(), f"child of {parent}: {reason}")
        return self.card(child)

    def relink_children(self, old: str, new: str) -> tuple[str, ...]:
        """Every child card of ``old`` becomes a child of ``new`` (a replaced main card)."""
        moved = []
        at = now()
        with self.db.transaction() as cur:
            for (serial, state) in cur.execute("SELECT serial, state FROM cards WHERE parent = ? ORDER BY serial",
                                               (old,)).fetchall():
                cur.execute("UPDATE cards SET parent = ?, updated = ? WHERE serial = ?", (new, at, serial))
                self._event(cur, serial, "relink", state, state, at, f"main card {old} replaced by {new}")
                moved.append(serial)
        return tuple(moved)

    def events(self, serial: str) -> list[dict[str, Any]]:
        keys = ("id", "action", "from", "to", "at", "operator", "station", "reason")
        return [dict(zip(keys, r)) for r in self.db.all(
            "SELECT id, action, state_from, state_to, at, operator, station, reason FROM card_events "
            "WHERE serial = ? ORDER BY id", (serial,))]

    def change(self, serial: str, action: str, reason: str, *, replaced_by: str | None = None) -> CardRecord:
        """Move a card by ``action`` (:data:`TRANSITIONS`), recording who, when and why, and
        adding it to or removing it from the hotlist as its new state says."""
        if action not in TRANSITIONS:
            raise InputError(f"unknown card action {action!r}")
        if not reason.strip():
            raise InputError(f"{action}: say why (--reason)")
        allowed, target = TRANSITIONS[action]
        check_serial(serial)
        at = now()
        with self.db.transaction() as cur:
            if self.db.pg:     # hotlist versions commit in the order they are given (a delta never skips one)
                cur.execute("SELECT pg_advisory_xact_lock(736868)")
            row = cur.execute("SELECT state FROM cards WHERE serial = ?" + (" FOR UPDATE" if self.db.pg else ""),
                              (serial,)).fetchone()
            if row is None:
                raise RegisterError(f"card {serial} is not in the register {self.url}")
            state = row[0]
            if state not in allowed:
                raise RegisterError(f"card {serial} is {state}: it cannot be {_past(action)} "
                                    f"(only a card that is {' or '.join(sorted(allowed))})")
            cur.execute("UPDATE cards SET state = ?, updated = ?" + (", replaced_by = ?" if replaced_by else "")
                        + " WHERE serial = ?", (target, at, replaced_by, serial) if replaced_by else (target, at, serial))
            self._event(cur, serial, action, state, target, at, reason)
            was, now_listed = state in HOTLISTED, target in HOTLISTED
            if now_listed != was:
                cur.execute("INSERT INTO hotlist (serial, change, at, reason) VALUES (?, ?, ?, ?)",
                            (serial, "add" if now_listed else "remove", at, action))
        return self.card(serial)

    def _event(self, cur: Any, serial: str, action: str, state_from: str | None, state_to: str, at: str,
               reason: str) -> None:
        cur.execute("INSERT INTO card_events (serial, action, state_from, state_to, at, operator, station, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (serial, action, state_from, state_to, at, self.operator,
                                                         self.station, reason))

    # ------------------------------------------------------------------ from the journal
    def import_journal(self, journal_url: str, batch: str | None = None, apps: tuple[str, ...] = (),
                       apps_profile: str | None = None) -> tuple[int, int]:
        """Register every verified card of a batch journal (streamed); ``(added, already)``.
        ``apps``: the applications of the profile file ``apps_profile`` (``cards import
        --profile``), recorded only for the batches issued from that same file."""
        from pathlib import Path
        from ..perso.journal import Journal

        added = already = 0
        j = Journal(journal_url, create=False)
        try:
            profiles: dict[str, str] = {}
            for rec in j.iter_report(batch):
                if rec.get("status") != "verified" or not rec.get("card_serial"):
                    continue
                b = str(rec["batch"])
                if b not in profiles:
                    found = j.find_batch(b)
                    profiles[b] = found[1] if found else ""
                same = apps_profile is not None and profiles[b] != "" and \
                    Path(profiles[b]).resolve() == Path(apps_profile).resolve()
                if self.add_card(str(rec["card_serial"]), str(rec["cardholder_id"]), profiles[b], batch=b,
                                 row=int(rec["row"]), reason=f"journal {os.path.basename(journal_url)}",
                                 apps=apps if same else ()):
                    added += 1
                else:
                    already += 1
        finally:
            j.close()
        return added, already

    def import_blocks(self, ledger_url: str) -> tuple[int, int]:
        """Cards that terminals blocked on the spot (block events filed by clearing) become
        ``blocked``; ``(newly blocked, already blocked or not in a state to block)``."""
        from ..clearing import Ledger

        changed = unchanged = 0
        with Ledger(ledger_url, create=False) as book:
            for ev in book.blocks():
                try:
                    card = self.card(ev["card"])
                except (RegisterError, InputError):
                    unchanged += 1
                    continue
                if card.state not in TRANSITIONS["blocked"][0]:
                    unchanged += 1
                    continue
                self.change(card.serial, "blocked", f"blocked by terminal {ev['terminal']} on {ev['date']} "
                                                    f"{ev['time']} ({ev['app']})")
                changed += 1
        return changed, unchanged

    # ------------------------------------------------------------------ hotlist
    def hotlist_version(self) -> int:
        row = self.db.one("SELECT MAX(version) FROM hotlist")
        return int(row[0]) if row and row[0] is not None else 0

    def hotlist_snapshot(self) -> tuple[int, Iterator[str]]:
        """The hotlist version and the serials hotlisted at that version, sorted, read in one
        snapshot (streamed: constant memory)."""
        states = ", ".join(f"'{s}'" for s in sorted(HOTLISTED))
        if self.db.pg:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=False)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute("SELECT MAX(version) FROM hotlist").fetchone()

            def rows() -> Iterator[str]:
                try:
                    with conn.cursor(name="hotlist_full") as cur:
                        cur.execute(f"SELECT serial FROM cards WHERE state IN ({states}) ORDER BY serial")
                        for r in cur:
                            yield r[0]
                finally:
                    conn.close()
            return (int(row[0]) if row and row[0] is not None else 0), rows()
        reader = sqlite3.connect(self.url, timeout=60.0, isolation_level=None)
        reader.execute("BEGIN")                      # one read snapshot (WAL) for the version and the list
        row = reader.execute("SELECT MAX(version) FROM hotlist").fetchone()

        def lite_rows() -> Iterator[str]:
            try:
                for r in reader.execute(f"SELECT serial FROM cards WHERE state IN ({states}) ORDER BY serial"):
                    yield r[0]
            finally:
                reader.close()
        return (int(row[0]) if row and row[0] is not None else 0), lite_rows()

    def hotlist_changes(self, since: int) -> Iterator[tuple[int, str, str]]:
        """``(version, serial, 'add'|'remove')`` after version ``since``, in order (streamed)."""
        for version, serial, change in self.db.stream(
                "SELECT version, serial, change FROM hotlist WHERE version > ? ORDER BY version", (since,)):
            yield int(version), serial, change


def _past(action: str) -> str:
    return {"lost": "reported lost", "found": "reported found", "blocked": "blocked", "close": "closed",
            "replace": "replaced"}[action]
