"""The keystore: master keys encrypted at rest, one file per custodian.

A keystore file is a JSON envelope (format version 1)::

    {"format": "citycard-keystore", "version": 1, "unit": "transit",
     "kdf": {"name": "scrypt", "salt": "<b64>", "n": 32768, "r": 8, "p": 1},
     "check": "<b64>", "nonce": "<b64>", "ciphertext": "<b64>"}

- The key-encryption key is scrypt(passphrase, salt, n, r, p) (32 bytes); the
  passphrase is NFC-normalized UTF-8.
- ``ciphertext`` is AES-256-GCM over the JSON list of entries, each
  ``{"unit", "name", "version", "algorithm", "key", "kcv", "created"}`` and, once set, the
  key inventory's ``state``, ``activation`` and ``expiry`` (:mod:`citycard.keys.inventory`);
  the key value exists only inside it.
- The header (``format``, ``version``, ``unit``, ``kdf``, ``check``), serialized
  canonically, is the GCM associated data: editing any of it is detected.
- ``check`` is HMAC-SHA256(kek, "citycard-keystore passphrase check")[:16]; it only
  tells a wrong passphrase apart from an altered file (the GCM tag already lets
  anyone with the file test a guess, so it gives an attacker nothing new).
- ``unit`` (or null) restricts the keystore to one service unit (custody).
- ``purpose`` (optional): ``"test"`` for a keystore holding published TEST KEYS (``citycard
  keys demo`` writes it), ``"production"`` for one that must never be used with test keys
  (issue 17 item 5); part of the associated data like the rest of the header.  A file
  without it (older files) has no declared purpose.

The file is written atomically (temporary file in the same folder, fsync, rename,
fsync of the folder) with mode 0600, and every save draws a fresh nonce.  Errors name
the file, never a passphrase or a key value.  Decrypted keys live only in the memory
of the :class:`Keystore` object (Python cannot promise to wipe them; :meth:`close`
drops the references).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .. import crypto
from ..fsutil import atomic_write
from ..errors import InputError
from .inventory import Lifecycle, check_date
from .source import KeyError_

FORMAT = "citycard-keystore"
VERSION = 1
DEFAULT_N = 2 ** 15          # scrypt cost: ~0.1 s and 32 MiB with r = 8
DEFAULT_R = 8
DEFAULT_P = 1
MAX_N = 2 ** 20              # refuse to spend more than ~1 GiB on a file's say-so
# What a keystore's header may make an open cost, whatever its n, r and p say (a tampered
# header must not make "wrong passphrase" cost gigabytes and minutes: issue 18 point 8).
MAX_KDF_MEMORY = 2 ** 28     # scrypt memory 128·n·r bytes: 256 MiB (defaults: 32 MiB)
MAX_KDF_WORK = 2 ** 22       # n·r·p: 16 times the defaults' 2^18 (~1.5 s here)
ALGORITHMS = ("3des", "sm4")
KEY_LENGTH = 16
MIN_PASSPHRASE = 8
_CHECK_LABEL = b"citycard-keystore passphrase check"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEADER_KEYS = {"format", "version", "unit", "kdf", "check", "nonce", "ciphertext"}
_OPTIONAL_HEADER_KEYS = {"purpose", "roster"}
#: the declared purposes of a keystore (header ``purpose``)
PURPOSES = ("test", "production")
_KDF_KEYS = {"name", "salt", "n", "r", "p"}
_ENTRY_KEYS = {"unit", "name", "version", "algorithm", "key", "kcv", "created"}
_LIFE_KEYS = {"state", "activation", "expiry"}      # the key inventory (absent in older files: active)


class KeystoreError(KeyError_):
    """A keystore that cannot be read or written; the message names the file."""


class KeystoreFormatError(KeystoreError):
    """Not a keystore, or its envelope is damaged."""


class KeystoreAuthError(KeystoreError):
    """Wrong passphrase, or the file was altered (authentication failed)."""


# ---------------------------------------------------------------------- values
@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a stored key: everything but its value."""

    unit: str
    name: str
    version: int
    algorithm: str          # "3des" | "sm4"
    kcv: bytes              # 3 bytes
    created: str            # ISO date
    life: Lifecycle = Lifecycle()   # state, activation and end dates (key inventory)

    @property
    def label(self) -> str:
        return f"{self.unit}/{self.name} version {self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "name": self.name, "version": self.version, "algorithm": self.algorithm,
                "kcv": self.kcv.hex().upper(), "created": self.created, **self.life.as_dict()}


@dataclass(frozen=True)
class _Entry:
    info: KeyInfo
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class KeystoreHeader:
    """The clear part of a keystore file (what is known before the passphrase)."""

    path: str
    unit: str | None
    n: int
    r: int
    p: int
    salt: bytes = field(repr=False)
    check: bytes = field(repr=False)
    purpose: str | None = None      # "test", "production" or None (not declared)
    roster: str | None = None       # the fingerprint of the roster pinned for dual control (docs/audit.md)


def cipher_alg(algorithm: str) -> crypto.Alg:
    """The ``citycard.crypto`` cipher family of a keystore algorithm."""
    return "sm4" if algorithm == "sm4" else "des"


def key_kcv(key: bytes, algorithm: str) -> bytes:
    return crypto.kcv(key, cipher_alg(algorithm))


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InputError(f"{what} {value!r}: use letters, digits, '.', '_' or '-' (at most 64, "
                         "starting with a letter or digit)")
    return value


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise InputError(f"algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    return algorithm


def check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 255:
        raise InputError(f"key version {version!r}: expected 1..255")
    return version


def check_passphrase(passphrase: str, *, new: bool = False) -> bytes:
    """The passphrase as bytes (NFC, UTF-8); a new one must have ``MIN_PASSPHRASE`` characters."""
    if not isinstance(passphrase, str) or not passphrase:
        raise InputError("the keystore passphrase is empty")
    if new and len(passphrase) < MIN_PASSPHRASE:
        raise InputError(f"the new keystore passphrase is too short (at least {MIN_PASSPHRASE} characters)")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


# ---------------------------------------------------------------------- envelope helpers
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str, where: str, length: int | None = None) -> bytes:
    """Strict base64: canonical encoding only, so no character of the file can change
    without changing the bytes it stands for."""
    if not isinstance(value, str):
        raise KeystoreFormatError(f"{where}: damaged keystore ({what} is not base64)")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise KeystoreFormatError(f"{where}: damaged keystore ({what} is not base64)") from None
    if _b64(raw) != value or (length is not None and len(raw) != length):
        raise KeystoreFormatError(f"{where}: damaged keystore ({what})")
    return raw


def _int(value: Any, what: str, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise KeystoreFormatError(f"{where}: damaged keystore ({what})")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate member")
        out[k] = v
    return out


def _header_dict(unit: str | None, n: int, r: int, p: int, salt: bytes, check: bytes,
                 purpose: str | None = None, roster: str | None = None) -> dict[str, Any]:
    header = {"format": FORMAT, "version": VERSION, "unit": unit,
              "kdf": {"name": "scrypt", "salt": _b64(salt), "n": n, "r": r, "p": p}, "check": _b64(check)}
    if purpose is not None:     # absent from older files: their associated data stays the same
        header["purpose"] = purpose
    if roster is not None:      # the pinned roster of dual control: authenticated like the rest
        header["roster"] = roster
    return header


def check_purpose(purpose: str | None) -> str | None:
    if purpose is not None and purpose not in PURPOSES:
        raise InputError(f"keystore purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
    return purpose


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _derive_kek(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _check_value(kek: bytes) -> bytes:
    return hmac.new(kek, _CHECK_LABEL, hashlib.sha256).digest()[:16]


def _affordable(n: int, r: int, p: int) -> bool:
    """Whether scrypt(n, r, p) stays within what an open may cost (MAX_KDF_MEMORY, MAX_KDF_WORK)."""
    return 128 * n * r <= MAX_KDF_MEMORY and n * r * p <= MAX_KDF_WORK


def _valid_n(n: int) -> bool:
    return 2 <= n <= MAX_N and n & (n - 1) == 0


def read_header(path: str | os.PathLike[str]) -> tuple[KeystoreHeader, dict[str, Any]]:
    """Read and check a keystore's envelope (no passphrase needed)."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"{where}: no such keystore (make one with `citycard keys create {where}`)") from None
    except IsADirectoryError:
        raise KeystoreError(f"{where}: is a folder, not a keystore") from None
    except OSError as exc:
        raise KeystoreError(f"{where}: cannot read the keystore ({exc.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        if b'"citycard-keystore"' in raw:
            raise KeystoreFormatError(f"{where}: damaged keystore (not valid JSON)")
        raise KeystoreFormatError(f"{where}: not a citycard keystore")
    if not _HEADER_KEYS <= set(data) <= _HEADER_KEYS | _OPTIONAL_HEADER_KEYS:
        raise KeystoreFormatError(f"{where}: damaged keystore (unexpected or missing fields)")
    if data["version"] != VERSION or isinstance(data["version"], bool):
        raise KeystoreFormatError(f"{where}: keystore format version {data['version']!r} not supported "
                                  f"(this citycard reads {VERSION})")
    unit = data["unit"]
    if unit is not None and (not isinstance(unit, str) or not _NAME_RE.match(unit)):
        raise KeystoreFormatError(f"{where}: damaged keystore (unit)")
    kdf = data["kdf"]
    if not isinstance(kdf, dict) or set(kdf) != _KDF_KEYS or kdf["name"] != "scrypt":
        raise KeystoreFormatError(f"{where}: damaged keystore (kdf)")
    n = _int(kdf["n"], "kdf n", where, 2, MAX_N)
    if not _valid_n(n):
        raise KeystoreFormatError(f"{where}: damaged keystore (kdf n)")
    r = _int(kdf["r"], "kdf r", where, 1, 32)
    p = _int(kdf["p"], "kdf p", where, 1, 16)
    if not _affordable(n, r, p):
        raise KeystoreFormatError(f"{where}: damaged keystore (kdf cost n={n} r={r} p={p} beyond "
                                  f"{MAX_KDF_MEMORY >> 20} MiB or {MAX_KDF_WORK} n·r·p)")
    salt = _unb64(kdf["salt"], "kdf salt", where, 16)
    check = _unb64(data["check"], "check", where, 16)
    purpose = data.get("purpose")
    if "purpose" in data and purpose not in PURPOSES:
        raise KeystoreFormatError(f"{where}: damaged keystore (purpose)")
    roster = data.get("roster")
    if "roster" in data and (not isinstance(roster, str) or not 1 <= len(roster) <= 64):
        raise KeystoreFormatError(f"{where}: damaged keystore (roster)")
    header = KeystoreHeader(where, unit, n, r, p, salt, check, purpose, roster)
    return header, data


# ---------------------------------------------------------------------- the keystore
class Keystore:
    """An open keystore: a :class:`~citycard.keys.KeySource` over the decrypted entries.

    Make one with :meth:`create` or :meth:`open`; change it with :meth:`add`,
    :meth:`remove`, :meth:`change_passphrase` and write it back with :meth:`save`.
    """

    def __init__(self, path: Path, unit: str | None, kdf: tuple[int, int, int], salt: bytes, kek: bytes,
                 entries: Iterable[_Entry] = (), purpose: str | None = None, roster: str | None = None) -> None:
        self.path = path
        self.name = str(path)
        self.unit = unit
        self.purpose = check_purpose(purpose)
        self.roster = roster
        self._kdf = kdf
        self._salt = salt
        self._kek: bytes | None = kek
        self._entries: dict[tuple[str, str, int], _Entry] = {}
        for e in entries:
            self._entries[(e.info.unit, e.info.name, e.info.version)] = e

    def __repr__(self) -> str:
        return f"<Keystore {self.name!r} unit={self.unit!r} keys={len(self._entries)}>"

    @property
    def test_keys(self) -> bool:
        """Whether the keystore declares it holds published TEST KEYS (``keys demo``)."""
        return self.purpose == "test"

    @property
    def production(self) -> bool:
        """Whether the keystore is declared for production (never with test keys)."""
        return self.purpose == "production"

    def __enter__(self) -> "Keystore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ making / opening
    @classmethod
    def create(cls, path: str | os.PathLike[str], passphrase: str, *, unit: str | None = None,
               n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P,
               overwrite: bool = False, purpose: str | None = None, roster: str | None = None) -> "Keystore":
        """Write a new, empty keystore (optionally for one service unit only; ``purpose``
        "test" or "production" declares what it is for, in its header)."""
        path = Path(path)
        check_purpose(purpose)
        if unit is not None:
            check_name(unit, "unit")
        if not _valid_n(n) or not 1 <= r <= 32 or not 1 <= p <= 16 or not _affordable(n, r, p):
            raise InputError(f"scrypt parameters n={n} r={r} p={p}: n a power of 2 up to {MAX_N}, r 1..32, "
                             f"p 1..16, memory 128·n·r at most {MAX_KDF_MEMORY >> 20} MiB, n·r·p at most "
                             f"{MAX_KDF_WORK}")
        pw = check_passphrase(passphrase, new=True)
        if path.exists() and not overwrite:
            raise KeystoreError(f"{path}: already exists (a keystore is never overwritten)")
        salt = os.urandom(16)
        store = cls(path, unit, (n, r, p), salt, _derive_kek(pw, salt, n, r, p), purpose=purpose, roster=roster)
        store.save()
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str],
             passphrase: str | Callable[[KeystoreHeader], str]) -> "Keystore":
        """Open and decrypt a keystore.  ``passphrase`` may be a function of the header,
        called only once the file is known to be a keystore (e.g. to prompt naming it)."""
        header, data = read_header(path)
        where = header.path
        nonce = _unb64(data["nonce"], "nonce", where, 12)
        ciphertext = _unb64(data["ciphertext"], "ciphertext", where)
        if len(ciphertext) < 16:
            raise KeystoreFormatError(f"{where}: damaged keystore (ciphertext)")
        pw = check_passphrase(passphrase(header) if callable(passphrase) else passphrase)
        kek = _derive_kek(pw, header.salt, header.n, header.r, header.p)
        if not hmac.compare_digest(_check_value(kek), header.check):
            raise KeystoreAuthError(f"{where}: wrong passphrase for this keystore (or its header was altered)")
        aad = _aad(_header_dict(header.unit, header.n, header.r, header.p, header.salt, header.check,
                                header.purpose, header.roster))
        try:
            plain = AESGCM(kek).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise KeystoreAuthError(f"{where}: the keystore was altered or damaged (authentication failed)") from None
        entries = _parse_entries(plain, where, header.unit)
        return cls(Path(path), header.unit, (header.n, header.r, header.p), header.salt, kek, entries,
                   purpose=header.purpose, roster=header.roster)

    # ------------------------------------------------------------ writing
    def _require_open(self) -> bytes:
        if self._kek is None:
            raise KeystoreError(f"{self.name}: the keystore is closed")
        return self._kek

    def save(self) -> None:
        """Encrypt the entries (fresh nonce) and replace the file atomically, mode 0600."""
        kek = self._require_open()
        n, r, p = self._kdf
        header = _header_dict(self.unit, n, r, p, self._salt, _check_value(kek), self.purpose, self.roster)
        entries = [{**e.info.as_dict(), "key": e.key.hex().upper()} for e in self._sorted()]
        plain = json.dumps(entries, separators=(",", ":")).encode("utf-8")
        nonce = os.urandom(12)
        ciphertext = AESGCM(kek).encrypt(nonce, plain, _aad(header))
        doc = {**header, "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
        _atomic_write(self.path, (json.dumps(doc, indent=2) + "\n").encode("ascii"))

    def change_passphrase(self, new_passphrase: str, *, n: int | None = None) -> None:
        """Re-key the file under a new passphrase (fresh salt); call :meth:`save` after."""
        self._require_open()
        pw = check_passphrase(new_passphrase, new=True)
        cost_n, r, p = self._kdf
        if n is not None:
            if not _valid_n(n) or not _affordable(n, r, p):
                raise InputError(f"scrypt n={n}: a power of 2 up to {MAX_N}, memory 128·n·r at most "
                                 f"{MAX_KDF_MEMORY >> 20} MiB, n·r·p at most {MAX_KDF_WORK}")
            cost_n = n
        self._salt = os.urandom(16)
        self._kdf = (cost_n, r, p)
        self._kek = _derive_kek(pw, self._salt, cost_n, r, p)

    def add(self, unit: str, name: str, key: bytes, *, version: int = 1, algorithm: str = "3des",
            created: str | None = None, life: Lifecycle = Lifecycle()) -> KeyInfo:
        """Add a master key (in memory; :meth:`save` writes it).  Never replaces one."""
        self._require_open()
        check_name(unit, "unit")
        check_name(name, "key name")
        check_version(version)
        check_algorithm(algorithm)
        self._check_room(unit)
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LENGTH:
            raise InputError(f"{unit}/{name}: a master key is {KEY_LENGTH} bytes")
        self._check_free(unit, name, version)
        info = KeyInfo(unit, name, version, algorithm, key_kcv(bytes(key), algorithm),
                       created or _dt.date.today().isoformat(), life)
        self._entries[(unit, name, version)] = _Entry(info, bytes(key))
        return info

    def check_can_add(self, unit: str, name: str, version: int) -> None:
        """Refuse, before any key material is typed or drawn, a key this keystore would not
        take: another unit than the one it is restricted to, or a version it already holds."""
        self._require_open()
        self._check_room(unit)
        self._check_free(unit, name, version)

    def _check_room(self, unit: str) -> None:
        if self.unit is not None and unit != self.unit:
            raise KeystoreError(f"{self.name}: this keystore holds the keys of unit {self.unit!r} only, "
                                f"not {unit!r}")

    def _check_free(self, unit: str, name: str, version: int) -> None:
        if (unit, name, version) in self._entries:
            raise KeystoreError(f"{self.name}: already holds {unit}/{name} version {version} "
                                "(give another --version, or delete it first)")

    def set_lifecycle(self, unit: str, name: str, version: int, *, state: str | None = None,
                      activation: str | None = None, expiry: str | None = None) -> KeyInfo:
        """Change a version's state or dates (in memory; :meth:`save` writes it)."""
        entry = self._entry(unit, name, version)
        info = dataclasses.replace(entry.info, life=entry.info.life.change(state=state, activation=activation,
                                                                             expiry=expiry))
        self._entries[(unit, name, version)] = _Entry(info, entry.key)
        return info

    def generate(self, unit: str, name: str, *, version: int = 1, algorithm: str = "3des",
                 life: Lifecycle = Lifecycle()) -> KeyInfo:
        """Add a random master key (from the OS's CSPRNG)."""
        while True:
            key = secrets.token_bytes(KEY_LENGTH)
            if algorithm == "sm4" or key[:8] != key[8:]:
                break
        return self.add(unit, name, key, version=version, algorithm=algorithm, life=life)

    def remove(self, unit: str, name: str, version: int) -> KeyInfo:
        self._require_open()
        entry = self._entries.pop((unit, name, version), None)
        if entry is None:
            raise KeystoreError(f"{self.name}: holds no key {unit}/{name} version {version}")
        return entry.info

    def close(self) -> None:
        """Forget the decrypted keys and the key-encryption key."""
        self._entries.clear()
        self._kek = None

    # ------------------------------------------------------------ reading
    def _sorted(self) -> list[_Entry]:
        return [self._entries[k] for k in sorted(self._entries)]

    def keys(self) -> list[KeyInfo]:
        """Every stored key's unit, name, version, algorithm, KCV and date (never its value)."""
        return [e.info for e in self._sorted()]

    def entries(self) -> set[tuple[str, str]]:
        return {(u, n) for (u, n, _v) in self._entries}

    def versions(self, unit: str, role: str) -> list[int]:
        return sorted(v for (u, n, v) in self._entries if (u, n) == (unit, role))

    def _entry(self, unit: str, role: str, version: int | None) -> _Entry:
        self._require_open()
        if version is None:
            versions = self.versions(unit, role)
            if not versions:
                raise KeyError_(f"{self.name} holds no key {unit}/{role}")
            version = versions[-1]
        entry = self._entries.get((unit, role, version))
        if entry is None:
            raise KeyError_(f"{self.name} holds no key {unit}/{role} version {version}")
        return entry

    def info(self, unit: str, role: str, version: int | None = None) -> KeyInfo:
        return self._entry(unit, role, version).info

    def in_force(self, unit: str, role: str, version: int | None = None, *, on: str | None = None,
                 serving: bool = False) -> _Entry:
        """The version to use (key inventory, :mod:`citycard.keys.inventory`): without
        ``version`` the newest one that may issue cards; a named version if the cards already
        issued with it may still use it.  Refused with the reason otherwise."""
        self._require_open()
        if version is not None:
            entry = self._entry(unit, role, version)
            why = entry.info.life.refusal(issuing=False, on=on)
            if why is not None:
                raise KeyError_(f"{self.name}: {entry.info.label} is {why}: not used")
            return entry
        versions = self.versions(unit, role)
        if not versions:
            raise KeyError_(f"{self.name} holds no key {unit}/{role}")
        reasons = []
        for v in reversed(versions):
            entry = self._entries[(unit, role, v)]
            why = entry.info.life.refusal(issuing=not serving, on=on)
            if why is None:
                return entry
            reasons.append(f"version {v} {why}")
        raise KeyError_(f"{self.name}: no version of {unit}/{role} may be used today ({'; '.join(reasons)})")

    def version_in_force(self, unit: str, role: str) -> int:
        """The version :meth:`in_force` gives new cards."""
        return self.in_force(unit, role).info.version

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1, *,
               version: int | None = None, alg: crypto.Alg | None = None, on: str | None = None,
               serving: bool = False) -> bytes:
        """The per-card key (PBOC diversification with the entry's algorithm) from the version
        :meth:`in_force` picks; the master itself if ``factor`` is None.  ``alg``: the cipher
        family the caller (a profile's key) expects; a different entry is refused.  ``on``: the
        date (YYYY-MM-DD) the key was used, for a transaction checked later (clearing).
        ``serving``: for a card already issued (terminals, clearing): a retired version still
        serves until its end date."""
        entry = self.in_force(unit, role, version, on=on, serving=serving)
        if alg is not None and cipher_alg(entry.info.algorithm) != alg:
            raise KeyError_(f"{self.name}: key {unit}/{role} is {entry.info.algorithm} here, but the profile "
                            f"declares it {'sm4' if alg == 'sm4' else '3des'}")
        if factor is None:
            return entry.key
        return crypto.diversify(entry.key, factor, levels, cipher_alg(entry.info.algorithm))

    def kcv(self, unit: str, role: str, *, version: int | None = None) -> bytes:
        return self._entry(unit, role, version).info.kcv


def _parse_entries(plain: bytes, where: str, unit: str | None) -> list[_Entry]:
    """The decrypted entry list, checked (authenticated data, so a failure here means a bug or
    a file written by something else with the passphrase)."""
    def bad(what: str) -> KeystoreFormatError:
        return KeystoreFormatError(f"{where}: damaged keystore contents ({what})")

    try:
        data = json.loads(plain.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError):
        raise bad("not JSON") from None
    if not isinstance(data, list):
        raise bad("not a list of keys")
    out: list[_Entry] = []
    seen: set[tuple[str, str, int]] = set()
    for i, e in enumerate(data, 1):
        if not isinstance(e, dict) or not _ENTRY_KEYS <= set(e) <= _ENTRY_KEYS | _LIFE_KEYS:
            raise bad(f"entry {i}")
        u, n, v, alg = e["unit"], e["name"], e["version"], e["algorithm"]
        if not (isinstance(u, str) and _NAME_RE.match(u) and isinstance(n, str) and _NAME_RE.match(n)):
            raise bad(f"entry {i}: unit or name")
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 255 or alg not in ALGORITHMS:
            raise bad(f"entry {i}: version or algorithm")
        if unit is not None and u != unit:
            raise bad(f"entry {i}: a key of unit {u!r} in a keystore of unit {unit!r}")
        if (u, n, v) in seen:
            raise bad(f"entry {i}: {u}/{n} version {v} twice")
        seen.add((u, n, v))
        try:
            key = bytes.fromhex(e["key"]) if isinstance(e["key"], str) else b""
            kcv = bytes.fromhex(e["kcv"]) if isinstance(e["kcv"], str) else b""
        except ValueError:
            raise bad(f"entry {i}: {u}/{n}: not hex") from None
        if len(key) != KEY_LENGTH:
            raise bad(f"entry {i}: {u}/{n}: key length")
        if not hmac.compare_digest(key_kcv(key, alg), kcv):
            raise bad(f"entry {i}: {u}/{n}: the KCV does not match the key")
        created = e["created"]
        if not isinstance(created, str) or len(created) > 32:
            raise bad(f"entry {i}: created")
        try:
            life = Lifecycle(e.get("state") or "active", check_date(e.get("activation"), "activation"),
                             check_date(e.get("expiry"), "expiry"))
        except InputError:
            raise bad(f"entry {i}: {u}/{n}: state or dates") from None
        out.append(_Entry(KeyInfo(u, n, v, alg, kcv, created, life), key))
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    """Crash-safe (citycard.fsutil), mode 0600; on failure the old file is left as it was."""
    try:
        atomic_write(path, data, 0o600)
    except OSError as exc:
        raise KeystoreError(f"{path}: cannot write the keystore ({exc.strerror or exc})") from None


def write_demo(path: str | os.PathLike[str], passphrase: str, demo_file: str | os.PathLike[str], *,
               unit: str | None = None, n: int = DEFAULT_N, overwrite: bool = False) -> Keystore:
    """A keystore holding the TEST masters of a demo key file (all units, or ``unit`` only),
    marked as such in its header (``purpose = "test"``)."""
    from .demo import DemoKeyFile

    demo = DemoKeyFile(demo_file)
    masters = sorted(demo.masters())
    if unit is not None:
        masters = [m for m in masters if m[0][0] == unit]
        if not masters:
            raise InputError(f"{demo_file} holds no keys of unit {unit!r}")
    store = Keystore.create(path, passphrase, unit=unit, n=n, overwrite=overwrite, purpose="test")
    for (u, role), key in masters:
        store.add(u, role, key)
    store.save()
    return store
