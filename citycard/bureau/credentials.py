"""Personal operator credentials (issue 25 item 2): an Ed25519 signing key per person,
encrypted at rest under that person's passphrase, with which they approve dual-control actions.

A credential file (``alice.cred``, ``0600``)::

    {"format": "citycard-operator-credential", "version": 1, "name": "alice",
     "public_key": "<b64, 32 bytes>",
     "kdf": {"name": "scrypt", "salt": "<b64>", "n": 32768, "r": 8, "p": 1},
     "nonce": "<b64>", "private_key": "<b64: AES-256-GCM of the 32-byte Ed25519 seed>"}

The GCM associated data binds the name and the public key, so a file whose name or public key
was changed does not open.  The scrypt parameters accepted on open are bounded (a forged
header cannot make an open cost gigabytes).  Nothing here ever prints or logs the seed or the
passphrase.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CitycardError, InputError

FORMAT = "citycard-operator-credential"
_N, _R, _P = 2 ** 15, 8, 1
_MAX_N = 2 ** 17
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")


class CredentialError(CitycardError):
    """A credential file that cannot be used (missing, damaged, wrong passphrase)."""


def check_operator_name(name: str, what: str = "operator name") -> str:
    if not _NAME.match(name):
        raise InputError(f"{what} {name!r}: 1-32 characters, lower-case letters, digits, '.', '_' or '-', "
                         "starting with a letter")
    return name


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(v: object, what: str, where: str, length: int | None = None) -> bytes:
    try:
        out = base64.b64decode(str(v), validate=True)
    except (ValueError, TypeError):
        raise CredentialError(f"{where}: {what} is not base64") from None
    if length is not None and len(out) != length:
        raise CredentialError(f"{where}: {what} has {len(out)} bytes, not {length}")
    return out


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _aad(name: str, public_key: bytes) -> bytes:
    return f"{FORMAT}/1/{name}/".encode("ascii") + public_key


@dataclass(frozen=True)
class OperatorKey:
    """An operator's public key: what the roster holds and signatures are checked with."""

    name: str
    public_key: bytes

    @property
    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.public_key).hexdigest()[:16]

    def verifies(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            return False


class Signer:
    """An unlocked credential: signs approvals.  Holds the private key only while open."""

    def __init__(self, name: str, seed: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.name = name
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        from cryptography.hazmat.primitives import serialization

        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = OperatorKey(name, raw)

    def __repr__(self) -> str:
        return f"Signer({self.name!r})"

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def create_credential(path: str | os.PathLike[str], name: str, passphrase: str) -> OperatorKey:
    """Write a new credential for ``name`` (never over an existing file); its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ..keys.keystore import check_passphrase

    check_operator_name(name)
    check_passphrase(passphrase, new=True)
    path = Path(path)
    if path.exists():
        raise CredentialError(f"{path}: already exists (a credential is never overwritten)")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_kek(passphrase, salt, _N, _R, _P)).encrypt(nonce, seed, _aad(name, public))
    doc = {"format": FORMAT, "version": 1, "name": name, "public_key": _b64(public),
           "kdf": {"name": "scrypt", "salt": _b64(salt), "n": _N, "r": _R, "p": _P},
           "nonce": _b64(nonce), "private_key": _b64(sealed)}
    from ..fsutil import atomic_write

    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode("ascii"))
    return OperatorKey(name, public)


def read_public(path: str | os.PathLike[str]) -> tuple[OperatorKey, dict]:
    """The name and public key of a credential file (no passphrase needed), and its document."""
    where = str(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialError(f"{where}: no such credential file") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CredentialError(f"{where}: not a citycard operator credential ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise CredentialError(f"{where}: not a citycard operator credential (format/version)")
    name = str(doc.get("name", ""))
    try:
        check_operator_name(name)
    except InputError:
        raise CredentialError(f"{where}: name: not a valid operator name") from None
    return OperatorKey(name, _unb64(doc.get("public_key"), "public_key", where, 32)), doc


def unlock(path: str | os.PathLike[str], passphrase: str) -> Signer:
    """The credential opened with its owner's passphrase (one line on any failure)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    where = str(path)
    public, doc = read_public(path)
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise CredentialError(f"{where}: kdf: scrypt expected")
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)) or not (
            2 ** 14 <= n <= _MAX_N and n & (n - 1) == 0 and r == 8 and p == 1):
        raise CredentialError(f"{where}: kdf: parameters out of the accepted bounds (n 2^14..2^17, r 8, p 1)")
    salt = _unb64(kdf.get("salt"), "kdf.salt", where, 16)
    nonce = _unb64(doc.get("nonce"), "nonce", where, 12)
    sealed = _unb64(doc.get("private_key"), "private_key", where)
    try:
        seed = AESGCM(_kek(passphrase, salt, n, r, p)).decrypt(nonce, sealed, _aad(public.name, public.public_key))
    except InvalidTag:
        raise CredentialError(f"{where}: wrong passphrase for operator {public.name} "
                              "(or the file was altered)") from None
    signer = Signer(public.name, seed)
    if signer.public.public_key != public.public_key:
        raise CredentialError(f"{where}: the private key does not match the public key")
    return signer
