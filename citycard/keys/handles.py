"""Key handles: a per-card key that is used through its key source, not held as bytes.

A key source returns per-card keys either as ``bytes`` (the file sources: keystore and demo
key file, which hold the masters in this process anyway) or as a :class:`KeyHandle` (a
hardware security module, :mod:`citycard.keys.pkcs11`, which keeps them inside).

The cryptography of :mod:`citycard.crypto` accepts either: its block-cipher primitives
(``ecb_encrypt``, ``ecb_decrypt``, the CBC-MAC under every ISO 9797-1 MAC) hand a handle's
work to the handle, and a handle slices like a key (``key[:8]`` and ``key[8:]`` are its
single-DES halves, as the retail MAC and 8-byte keys need), so the planner, the runner, the
verifier, the purse terminal and the card services use a handle as they use bytes.  Two
PBOC steps that would otherwise compute a key on the host ask the handle instead: a
session key (``derive_ecb``) and a TAC or PIN-reload key, the XOR of the two halves
(``xor_halves``).

Only :meth:`KeyHandle.value` gives the bytes, and only for a key that its source let out
(``export``); it raises for every other key.  Nothing here ever prints a key value.
"""

from __future__ import annotations

from typing import Union

from ..errors import CitycardError


class KeyHandleError(CitycardError):
    """A key handle was asked for something its source does not allow (e.g. its value)."""


class KeyHandle:
    """The interface a key-source-backed key implements (see the module docstring).

    Block operations are DES/3DES by :func:`len` (8 = single DES, 16 = 2-key 3DES), ECB or
    CBC without padding; data is a multiple of 8 bytes.
    """

    #: whether :meth:`value` answers (the source let this key out)
    exportable: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, item: slice) -> "KeyHandle":
        """``[:8]`` / ``[8:]``: the single-DES halves of a 16-byte key; the full range: itself."""
        raise NotImplementedError

    def ecb_encrypt(self, data: bytes) -> bytes:
        raise NotImplementedError

    def ecb_decrypt(self, data: bytes) -> bytes:
        raise NotImplementedError

    def cbc_mac(self, data: bytes, iv: bytes | None = None) -> bytes:
        """The last block of CBC encryption of ``data`` (already padded) from ``iv`` (zeros)."""
        raise NotImplementedError

    def derive_ecb(self, block: bytes) -> "KeyHandle":
        """The 8-byte (single-DES) key E(self, block): a PBOC session key (SPEC §2.2)."""
        raise NotImplementedError

    def xor_halves(self) -> "KeyHandle":
        """The 8-byte key left ⊕ right (the TAC key, D6; the PIN-reload MAC key, D2)."""
        raise NotImplementedError

    def value(self) -> bytes:
        """The key's bytes, for writing it to a card; raises :class:`KeyHandleError` unless
        the source let this key out."""
        raise KeyHandleError(f"{self!r}: the key stays in its key source")

    def kcv(self) -> bytes:
        """Key check value: the first 3 bytes of the key encrypting a zero block."""
        return self.ecb_encrypt(bytes(8))[:3]

    def __bytes__(self) -> bytes:
        return self.value()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


Key = Union[bytes, KeyHandle]


def is_handle(key: object) -> bool:
    return isinstance(key, KeyHandle)


def key_bytes(key: Key) -> bytes:
    """The bytes of ``key``: itself, or a handle's value (raises when the source keeps it)."""
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    return key.value()
