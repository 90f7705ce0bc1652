"""Hotlist files (issue 23 item 2): what a terminal loads to refuse lost, blocked, closed and
replaced cards; signed so a terminal rejects a forged or rolled-back list.

Our format (decision 10 of PSAM-SM4.md §5; big-endian integers)::

    offset  size  field
    0       4     magic "CCHL"
    4       1     format version (1)
    5       1     kind: "F" full list, "D" delta (changes since a base version)
    6       4     version: the register's hotlist version this list brings the terminal to
    10      4     base: 0 for a full list; for a delta, the version the terminal must hold
    14      4     issued: seconds since 1970-01-01 UTC
    18      8     signer: the first 8 bytes of SHA-256 of the signer's Ed25519 public key
    26      4     n: number of entries
    30      9·n   entries, sorted by serial in a full list, in order of change in a delta:
                  the card serial as 8 bytes BCD (16 digits, zero-padded on the left) and one
                  byte: 01 listed (full list: always; delta: add), 00 removed (delta only)
    30+9n   64    Ed25519 signature over SHA-256 of bytes 0 .. 30+9n

Choices, with the reasons:

- **Whole serials** (8 bytes), not the 4 bytes MZT terminals compare (§3.1): a 4-byte compare
  refuses other cardholders' cards whose numbers share those bytes.
- **Signature, not a MAC**: the terminal holds only the public key (no secret, nothing for a
  terminal to leak); the signing key is a credential of the issuer (:mod:`citycard.bureau`).
- **Versions are the register's** (every add or remove bumps it; a card lost, found and lost again
  is three changes, §3.1's FNT primary-key flaw avoided). A terminal refuses a list whose version
  is not above the one it holds (rollback), a delta whose base is not its version (gap), and any
  file whose signature does not verify under a trusted key.
- The signature covers a SHA-256 of the content so a list of any size is written and checked
  in constant memory.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import CitycardError, InputError

MAGIC = b"CCHL"
_HEADER = struct.Struct(">4sBcIII8sI")          # 30 bytes
ENTRY_SIZE = 9
SIG_SIZE = 64


class HotlistError(CitycardError):
    """A hotlist file that must not be used (damaged, forged, rolled back, out of sequence)."""


def serial_bcd(serial: str) -> bytes:
    """The card serial as 8 bytes BCD (16 digits, zero-padded on the left)."""
    if not serial.isdigit() or len(serial) > 16:
        raise InputError(f"card serial {serial!r}: a hotlist holds serials of up to 16 digits")
    return bytes.fromhex(serial.rjust(16, "0"))


def bcd_serial(raw: bytes) -> str:
    text = raw.hex()
    if not text.isdigit():
        raise HotlistError(f"entry {raw.hex().upper()}: not a BCD card serial")
    return text


def key_id(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()[:8]


@dataclass(frozen=True)
class HotlistHeader:
    kind: str                 # "full" | "delta"
    version: int
    base: int
    issued: int
    signer: bytes
    count: int


def write_hotlist(path: str | os.PathLike[str], signer, *, version: int, entries: Iterable[tuple[str, bool]],
                  base: int | None = None) -> HotlistHeader:
    """Write a full list (``base`` None; entries all listed) or a delta since ``base``, signed by
    ``signer`` (:class:`citycard.bureau.Signer`); atomic, streamed."""
    from ..fsutil import atomic_file

    kind = b"F" if base is None else b"D"
    issued = int(time.time())
    signer_id = key_id(signer.public.public_key)
    count = 0
    with atomic_file(path, 0o644) as f:
        f.write(b"\0" * _HEADER.size)
        for serial, listed in entries:
            if kind == b"F" and not listed:
                raise InputError("a full hotlist lists cards only")
            f.write(serial_bcd(serial) + (b"\x01" if listed else b"\x00"))
            count += 1
        f.seek(0)
        f.write(_HEADER.pack(MAGIC, 1, kind, version, base or 0, issued, signer_id, count))
        f.seek(0)
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 16), b""):      # hash what was written, in blocks
            digest.update(block)
        f.seek(0, os.SEEK_END)
        f.write(signer.sign(digest.digest()))
    return HotlistHeader("full" if kind == b"F" else "delta", version, base or 0, issued, signer_id, count)


def read_hotlist(path: str | os.PathLike[str], trusted: Iterable) -> tuple[HotlistHeader, Iterator[tuple[str, bool]]]:
    """Check a hotlist file's structure and signature against ``trusted`` public keys
    (:class:`citycard.bureau.OperatorKey`); its header and its entries (streamed)."""
    where = str(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except FileNotFoundError:
        raise HotlistError(f"{where}: no such hotlist file") from None
    except OSError as exc:
        raise HotlistError(f"{where}: cannot read it ({exc.strerror})") from None
    with f:
        raw = f.read(_HEADER.size)
        if len(raw) < _HEADER.size or raw[:4] != MAGIC:
            raise HotlistError(f"{where}: not a citycard hotlist (magic)")
        magic, fmt, kind, version, base, issued, signer_id, count = _HEADER.unpack(raw)
        if fmt != 1 or kind not in (b"F", b"D"):
            raise HotlistError(f"{where}: byte {4 if fmt != 1 else 5}: unknown format or kind")
        if size != _HEADER.size + ENTRY_SIZE * count + SIG_SIZE:
            raise HotlistError(f"{where}: {size} bytes, but the header says {count} entries "
                               f"({_HEADER.size + ENTRY_SIZE * count + SIG_SIZE} bytes): cut or padded")
        keys = {key_id(k.public_key): k for k in trusted}
        signer = keys.get(signer_id)
        if signer is None:
            raise HotlistError(f"{where}: signed by key {signer_id.hex()}, which is not a trusted hotlist key")
        digest = hashlib.sha256(raw)
        left = ENTRY_SIZE * count
        while left:
            block = f.read(min(left, 9 << 13))
            digest.update(block)
            left -= len(block)
        signature = f.read(SIG_SIZE)
        if not signer.verifies(signature, digest.digest()):
            raise HotlistError(f"{where}: the signature does not verify (forged or altered)")
    header = HotlistHeader("full" if kind == b"F" else "delta", version, base, issued, signer_id, count)
    if header.kind == "full" and base != 0:
        raise HotlistError(f"{where}: byte 10: a full list has base 0")
    if header.kind == "delta" and version <= base:
        raise HotlistError(f"{where}: a delta from version {base} to {version}")

    signed = digest.digest()

    def entries() -> Iterator[tuple[str, bool]]:
        """The entries, hashed again as they are read: a file changed since its signature was
        checked fails at its end (the caller applies nothing before the end)."""
        again = hashlib.sha256()
        with open(path, "rb") as g:
            again.update(g.read(_HEADER.size))
            for i in range(count):
                rec = g.read(ENTRY_SIZE)
                again.update(rec)
                flag = rec[8] if len(rec) == ENTRY_SIZE else -1
                if flag not in (0, 1) or (header.kind == "full" and flag != 1):
                    raise HotlistError(f"{where}: entry {i + 1}: flag byte {flag:02X}")
                yield bcd_serial(rec[:8]), flag == 1
        if again.digest() != signed:
            raise HotlistError(f"{where}: the file changed while it was read: nothing applied")
    return header, entries()


class TerminalHotlist:
    """A terminal's copy of the hotlist: loads full lists and deltas (refusing forgeries,
    rollbacks and gaps) and answers whether a card is hotlisted.  Kept in a state file (the
    signed files it applied are not needed again): ``{"version": V, "serials": [...]}``."""

    def __init__(self, state_file: str | os.PathLike[str] | None = None) -> None:
        self.state_file = Path(state_file) if state_file is not None else None
        self.version = -1                   # none loaded yet (a first full list may be version 0)
        self._serials: set[str] = set()
        if self.state_file is not None and self.state_file.exists():
            import json

            try:
                doc = json.loads(self.state_file.read_text())
                self.version = int(doc["version"])
                self._serials = {str(s) for s in doc["serials"]}
            except (ValueError, KeyError, TypeError):
                raise HotlistError(f"{self.state_file}: not a terminal hotlist state (damaged?)") from None

    def __contains__(self, serial: str) -> bool:
        return serial.rjust(16, "0") in self._serials

    def __len__(self) -> int:
        return len(self._serials)

    @property
    def loaded(self) -> bool:
        return self.version >= 0

    def load(self, path: str | os.PathLike[str], trusted: Iterable) -> HotlistHeader:
        header, entries = read_hotlist(path, trusted)
        if header.version <= self.version:
            raise HotlistError(f"{path}: version {header.version} is not newer than the version held "
                               f"({self.version}): refused (rollback)")
        if header.kind == "delta" and self.version < 0:
            raise HotlistError(f"{path}: a delta, but this terminal holds no hotlist yet: load a full list first")
        if header.kind == "delta" and header.base != self.version:
            raise HotlistError(f"{path}: a delta from version {header.base}, but this terminal holds version "
                               f"{self.version}: load a full list")
        if header.kind == "full":
            serials = {s for s, _ in entries}
        else:
            serials = set(self._serials)
            for s, listed in entries:
                (serials.add if listed else serials.discard)(s)
        self._serials, self.version = serials, header.version
        self._save()
        return header

    def _save(self) -> None:
        if self.state_file is None:
            return
        import json

        from ..fsutil import atomic_write

        atomic_write(self.state_file, json.dumps({"version": self.version,
                                                  "serials": sorted(self._serials)}).encode("ascii"), 0o644)


PUBLIC_FORMAT = "citycard-hotlist-key"


def write_public_key(path: str | os.PathLike[str], key) -> None:
    """The signer's public key as terminals trust it (no secret in it)."""
    import base64
    import json

    from ..fsutil import atomic_write

    doc = {"format": PUBLIC_FORMAT, "version": 1, "name": key.name,
           "public_key": base64.b64encode(key.public_key).decode("ascii")}
    atomic_write(path, (json.dumps(doc) + "\n").encode("ascii"), 0o644)


def read_public_key(path: str | os.PathLike[str]):
    """A trusted hotlist key file (:func:`write_public_key`)."""
    import base64
    import json

    from ..bureau import OperatorKey

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("format") != PUBLIC_FORMAT or doc.get("version") != 1:
            raise ValueError("format")
        raw = base64.b64decode(doc["public_key"], validate=True)
        if len(raw) != 32:
            raise ValueError("length")
        return OperatorKey(str(doc["name"]), raw)
    except FileNotFoundError:
        raise HotlistError(f"{path}: no such hotlist key file") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise HotlistError(f"{path}: not a citycard hotlist key file") from None
