"""Block-cipher primitives: DES, 2-key and 3-key 3DES, SM4 (ECB and CBC).

Built on ``cryptography``.  DES is TripleDES with the key repeated (K‖K‖K) and
2-key 3DES is K1‖K2‖K1, as SPEC.md ("Cryptography in Python") notes; keys are
always expanded to 24 bytes so no deprecated key size is ever passed.

``alg`` selects the cipher family: ``"des"`` (DES / 3DES, chosen by key length:
8, 16 or 24 bytes) or ``"sm4"`` (16-byte key, 16-byte block).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 43 moved TripleDES to the decrepit module
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    TripleDES = algorithms.TripleDES  # type: ignore[attr-defined,misc]

from ..errors import InputError

Alg = Literal["des", "sm4"]
ALGS: tuple[str, ...] = ("des", "sm4")
_ECB = modes.ECB()


def block_size(alg: Alg = "des") -> int:
    return 16 if alg == "sm4" else 8


def check_key(key: bytes, alg: Alg = "des", what: str = "key") -> None:
    """Raise :class:`InputError` unless ``key`` has a valid length for ``alg``."""
    if alg == "sm4":
        if len(key) != 16:
            raise InputError(f"{what}: SM4 needs a 16-byte key, got {len(key)} bytes")
    elif alg == "des":
        if len(key) not in (8, 16, 24):
            raise InputError(f"{what}: DES/3DES needs an 8, 16 or 24-byte key, got {len(key)} bytes")
    else:
        raise InputError(f"unknown algorithm {alg!r} (expected des or sm4)")


@lru_cache(maxsize=256)
def _algorithm(key: bytes, alg: str) -> object:
    if alg == "sm4":
        return algorithms.SM4(key)
    if len(key) == 8:
        full = key * 3
    elif len(key) == 16:
        full = key + key[:8]
    else:
        full = key
    return TripleDES(full)


def _check(key: bytes, data: bytes, alg: Alg) -> None:
    check_key(key, alg)
    bs = block_size(alg)
    if len(data) % bs:
        raise InputError(f"data of {len(data)} bytes is not a multiple of the {bs}-byte block")


_local = threading.local()


def _contexts(key: bytes, alg: str) -> tuple[Any, Any]:
    """Cached ECB encryptor and decryptor for ``key`` (per thread: contexts are not
    thread-safe).  ECB keeps no state between blocks, so one context serves every call:
    ``update`` is called, ``finalize`` never."""
    cache = getattr(_local, "ctx", None)
    if cache is None:
        cache = _local.ctx = {}
    ctx = cache.get((key, alg))
    if ctx is None:
        if len(cache) >= 512:
            cache.clear()
        c = Cipher(_algorithm(key, alg), _ECB)  # type: ignore[arg-type]
        ctx = cache[(key, alg)] = (c.encryptor(), c.decryptor())
    return ctx


def _is_handle(key: object) -> bool:
    """A key handle (citycard.keys.handles.KeyHandle): a key kept by its key source, which
    does the block operations itself.  Plain ``bytes`` keys take the fast path."""
    return not isinstance(key, (bytes, bytearray))


def _handle_alg(alg: Alg) -> None:
    """A key handle does DES/3DES only (citycard.keys.handles): asked for SM4 it would compute
    3DES without a word, and the card would count a failed try (docs/sm4.md "Key sources")."""
    if alg != "des":
        raise InputError(f"a key held in a key source's token (HSM) does DES/3DES only, not {alg.upper()}: "
                         "keep SM4 keys in a keystore (docs/sm4.md)")


def ecb_encrypt(key: bytes, data: bytes, alg: Alg = "des") -> bytes:
    if _is_handle(key):
        _handle_alg(alg)
        return key.ecb_encrypt(data)  # type: ignore[attr-defined]
    _check(key, data, alg)
    return _contexts(key, alg)[0].update(data)


def ecb_decrypt(key: bytes, data: bytes, alg: Alg = "des") -> bytes:
    if _is_handle(key):
        _handle_alg(alg)
        return key.ecb_decrypt(data)  # type: ignore[attr-defined]
    _check(key, data, alg)
    return _contexts(key, alg)[1].update(data)


def cbc_mac_last(key: bytes, data: bytes, iv: bytes | None = None, alg: Alg = "des") -> bytes:
    """The last block of CBC encryption of ``data`` (already padded): the CBC-MAC."""
    if _is_handle(key):
        _handle_alg(alg)
        return key.cbc_mac(data, iv)  # type: ignore[attr-defined]
    _check(key, data, alg)
    bs = block_size(alg)
    enc = _contexts(key, alg)[0].update
    h = int.from_bytes(iv, "big") if iv else 0
    if iv is not None and len(iv) != bs:
        raise InputError(f"IV of {len(iv)} bytes, expected {bs}")
    block = b""
    for off in range(0, len(data), bs):
        block = enc((h ^ int.from_bytes(data[off:off + bs], "big")).to_bytes(bs, "big"))
        h = int.from_bytes(block, "big")
    return block


def cbc_encrypt(key: bytes, data: bytes, iv: bytes | None = None, alg: Alg = "des") -> bytes:
    _check(key, data, alg)
    bs = block_size(alg)
    iv = bytes(bs) if iv is None else iv
    if len(iv) != bs:
        raise InputError(f"IV of {len(iv)} bytes, expected {bs}")
    enc = Cipher(_algorithm(key, alg), modes.CBC(iv)).encryptor()  # type: ignore[arg-type]
    return enc.update(data) + enc.finalize()


def cbc_decrypt(key: bytes, data: bytes, iv: bytes | None = None, alg: Alg = "des") -> bytes:
    _check(key, data, alg)
    bs = block_size(alg)
    iv = bytes(bs) if iv is None else iv
    if len(iv) != bs:
        raise InputError(f"IV of {len(iv)} bytes, expected {bs}")
    dec = Cipher(_algorithm(key, alg), modes.CBC(iv)).decryptor()  # type: ignore[arg-type]
    return dec.update(data) + dec.finalize()


def xor(a: bytes, b: bytes) -> bytes:
    """Byte-wise XOR of two equal-length strings."""
    if len(a) != len(b):
        raise InputError(f"xor of {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def kcv(key: bytes, alg: Alg = "des", length: int = 3) -> bytes:
    """Key check value: the first ``length`` bytes of the key encrypting a zero block."""
    return ecb_encrypt(key, bytes(block_size(alg)), alg)[:length]
