"""ISO/IEC 9797-1 padding and MAC algorithms 1 and 3 (SPEC.md §1.6, §4 vector 3).

* Padding method 1: zeros up to a block boundary (none if already aligned, and a
  single zero block for empty data).  Method 2: ``80`` then zeros, always added,
  so an aligned input gains a whole block.
* Algorithm 1: CBC-MAC with the whole key (DES for 8 bytes, 3DES for 16/24,
  SM4 when ``alg="sm4"``).
* Algorithm 3 (retail MAC): single-DES CBC with K, then the last block is
  decrypted with K' and encrypted with K; needs a 16-byte DES key.
"""

from __future__ import annotations

from .cipher import Alg, block_size, cbc_mac_last, check_key, ecb_decrypt, ecb_encrypt
from ..errors import InputError


def pad(data: bytes, method: int = 2, block: int = 8) -> bytes:
    if method == 1:
        if not data:
            return bytes(block)
        return data + bytes(-len(data) % block)
    if method == 2:
        data = data + b"\x80"
        return data + bytes(-len(data) % block)
    raise InputError(f"padding method {method} not supported (1 or 2)")


def unpad2(data: bytes) -> bytes:
    """Remove ISO 9797-1 method 2 padding; raise when it is malformed."""
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80:
        raise InputError("padding method 2 not found")
    return stripped[:-1]


def mac_alg1(key: bytes, data: bytes, *, iv: bytes | None = None, pad_method: int = 2,
             alg: Alg = "des") -> bytes:
    """Full-block ISO 9797-1 MAC algorithm 1 (CBC-MAC); truncate as needed."""
    return cbc_mac_last(key, pad(data, pad_method, block_size(alg)), iv, alg)


def mac_alg3(key: bytes, data: bytes, *, iv: bytes | None = None, pad_method: int = 2) -> bytes:
    """Full-block ISO 9797-1 MAC algorithm 3 (retail MAC) with a 16-byte DES key."""
    if len(key) != 16:
        raise InputError(f"MAC algorithm 3 needs a 16-byte key, got {len(key)} bytes")
    k, k2 = key[:8], key[8:]
    h = cbc_mac_last(k, pad(data, pad_method, 8), iv, "des")
    return ecb_encrypt(k, ecb_decrypt(k2, h))


def iso9797_mac(key: bytes, data: bytes, *, alg: int = 1, pad_method: int = 2,
                iv: bytes | None = None, length: int = 8, cipher: Alg = "des") -> bytes:
    """ISO 9797-1 MAC ``alg`` 1 or 3, truncated to ``length`` bytes."""
    check_key(key, cipher)
    if alg == 1:
        full = mac_alg1(key, data, iv=iv, pad_method=pad_method, alg=cipher)
    elif alg == 3:
        if cipher != "des":
            raise InputError("MAC algorithm 3 is defined here for DES keys only")
        full = mac_alg3(key, data, iv=iv, pad_method=pad_method)
    else:
        raise InputError(f"MAC algorithm {alg} not supported (1 or 3)")
    if not 1 <= length <= len(full):
        raise InputError(f"MAC length {length} outside 1..{len(full)}")
    return full[:length]
