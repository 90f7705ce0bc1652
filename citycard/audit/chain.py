"""The hash chain of the audit log (issue 25 item 1): what an entry is, how it is hashed and
sealed, and how a sequence of entries is checked.

An entry is a flat JSON object::

    {"seq": 7, "time": "2026-12-03T08:10:00.123456Z", "operator": "alice", "station": "bureau-1",
     "action": "batch.created", "subject": "b-2026-12", "details": {...},
     "prev": "<SHA-256 of entry 6, hex>", "hash": "<SHA-256 of this entry, hex>", "seal": "<hex>"}

``hash`` is SHA-256 over the entry's canonical JSON (sorted keys, no spaces, UTF-8) without
``hash`` and ``seal``; ``prev`` of entry 1 is 64 zeros.  An edited entry no longer matches its
hash; a removed, inserted or reordered entry breaks ``seq`` or ``prev``.  Someone who rewrites
the whole chain from an edited entry on can recompute every hash, so two anchors exist:

- ``seal``: HMAC-SHA-256 of the hash under a custodian's seal key (optional; whoever lacks the
  key cannot forge a seal after an edit);
- the *head* (the last entry's ``seq`` and ``hash``, sealed too), kept beside the log and
  printable for the operator's paper or another system: a log cut short (its last entries
  removed) no longer reaches the head.

Nothing here knows where entries are stored (:mod:`citycard.audit.log`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

GENESIS = "0" * 64

#: the fields every entry has, in the order they are shown
FIELDS = ("seq", "time", "operator", "station", "action", "subject", "details", "prev", "hash")


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the entry without its ``hash`` and ``seal``."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "seal")}
    return hashlib.sha256(canonical(body)).hexdigest()


def seal_of(seal_key: bytes, seq: int, digest: str) -> str:
    """HMAC-SHA-256 (hex) under the seal key over ``seq`` and the entry's hash."""
    return hmac.new(seal_key, f"{seq}:{digest}".encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Head:
    """The last entry of a log as last written: what a truncation cannot reach any more."""

    seq: int
    hash: str
    seal: str | None = None

    def text(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str, what: str = "head") -> "Head":
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{what}: expected SEQ:SHA256 (e.g. 12:{'ab' * 32}), got {text.strip()[:80]!r}")
        return cls(int(seq), digest)


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a log, named by its line (1-based) and the entry it concerns."""

    line: int
    seq: int | None
    problem: str

    def text(self) -> str:
        where = f"line {self.line}" if self.line else "log"
        entry = f" (entry {self.seq})" if self.seq is not None else ""
        return f"{where}{entry}: {self.problem}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`check_chain`."""

    entries: int
    head: Head | None           # the last good entry
    findings: tuple[Finding, ...]
    sealed: bool                # every entry's seal was checked (a seal key was given)
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings


def check_chain(lines: Iterable[tuple[int, Mapping[str, Any] | str]], *, seal_key: bytes | None = None,
                expect_head: Head | None = None) -> Verdict:
    """Check entries given as ``(line number, parsed entry or a parse error message)``.

    Every problem is reported with its line; the walk goes on after a problem (re-anchoring
    on what the line says) so one edit does not hide a later one.  ``expect_head``: the head
    recorded when the log was last written (from the head file, or given by the operator)."""
    findings: list[Finding] = []
    prev_hash, prev_seq = GENESIS, 0
    count = 0
    last: Head | None = None
    at_head: str | None = None          # the hash of the entry numbered as the expected head
    for line, item in lines:
        if isinstance(item, str):
            findings.append(Finding(line, None, item))
            continue
        count += 1
        seq = item.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            findings.append(Finding(line, None, "no entry number (seq)"))
            continue
        missing = [f for f in FIELDS if f not in item]
        if missing:
            findings.append(Finding(line, seq, f"fields missing: {', '.join(missing)}"))
        if seq != prev_seq + 1:
            if seq == prev_seq:
                findings.append(Finding(line, seq, f"a second entry {seq} (inserted or duplicated)"))
            elif seq < prev_seq:
                findings.append(Finding(line, seq, f"out of order: follows entry {prev_seq}"))
            else:
                gap = f"entry {prev_seq + 1}" if seq == prev_seq + 2 else f"entries {prev_seq + 1}-{seq - 1}"
                findings.append(Finding(line, seq, f"{gap} removed (entry {seq} follows entry {prev_seq})"))
        elif item.get("prev") != prev_hash:
            findings.append(Finding(line, seq, "does not chain to the entry before it (prev hash differs)"))
        digest = entry_hash(item)
        if item.get("hash") != digest:
            findings.append(Finding(line, seq, "edited: its content does not match its hash"))
        if seal_key is not None:
            seal = item.get("seal")
            if not isinstance(seal, str):
                findings.append(Finding(line, seq, "not sealed (no seal, but a seal key was given)"))
            elif not hmac.compare_digest(seal, seal_of(seal_key, seq, str(item.get("hash")))):
                findings.append(Finding(line, seq, "seal does not verify under the seal key (rewritten?)"))
        prev_hash, prev_seq = str(item.get("hash")), seq
        if expect_head is not None and seq == expect_head.seq and at_head is None:
            at_head = prev_hash
        last = Head(seq, prev_hash, item.get("seal") if isinstance(item.get("seal"), str) else None)
    notes: list[str] = []
    if expect_head is not None:
        if last is None or last.seq < expect_head.seq:
            have = last.seq if last is not None else 0
            findings.append(Finding(0, None, f"truncated: ends at entry {have}, the head says entry "
                                             f"{expect_head.seq}"))
        elif at_head != expect_head.hash:
            findings.append(Finding(0, expect_head.seq, f"entry {expect_head.seq} is not the one the head records: "
                                                        "the log was rewritten from there on"))
        elif last.seq > expect_head.seq:
            notes.append(f"{last.seq - expect_head.seq} entries after the head given")
        if seal_key is not None and expect_head.seal is not None and not hmac.compare_digest(
                expect_head.seal, seal_of(seal_key, expect_head.seq, expect_head.hash)):
            findings.append(Finding(0, None, "the head's seal does not verify (head file forged)"))
    else:
        notes.append("no head to compare with: a log cut short at its end cannot be detected")
    if seal_key is None:
        notes.append("seals not checked (no seal key given): a rewritten chain cannot be detected")
    return Verdict(count, last, tuple(findings), seal_key is not None, tuple(notes))
