"""A handle on a key in a PKCS#11 token: a master (token object) or a per-card key derived
from it (session object, derived on first use, destroyed with the handle).  The operations
the card protocols need (ECB, CBC-MAC, diversification, session keys, the left ⊕ right
key) run in the token (see :mod:`citycard.keys.pkcs11` for the two that cannot)."""

from __future__ import annotations

from typing import Any

from .. import crypto
from .handles import KeyHandle, KeyHandleError
from .pkcs11_token import Token
from .pkcs11_uri import HsmError


class Pkcs11Key(KeyHandle):
    """A key in the token: a master (token object) or a per-card key (session object, destroyed
    with this handle).  Never holds a value unless the source let this key out (``export``)."""

    def __init__(self, token: Token, obj: Any, length: int, what: str, *, parent: "Pkcs11Key | None" = None,
                 data: bytes | None = None, value: bytes | None = None, owned: bool = True,
                 halves: tuple[Any, Any] | None = None) -> None:
        # obj None: a per-card key derived from ``parent`` with ``data`` on first use
        self._token, self._obj, self._len, self.what = token, obj, length, what
        self._parent, self._data, self._value = parent, data, value
        self._owned, self._halves = owned, halves
        self._cache: dict[str, Pkcs11Key] = {}
        self.exportable = value is not None

    def __repr__(self) -> str:
        return f"<Pkcs11Key {self.what} in {self._token.name}>"

    def __len__(self) -> int:
        return self._len

    def __del__(self) -> None:
        try:
            if self._owned and self._obj is not None:
                self._token.destroy(self._obj)
        except Exception:
            pass

    @property
    def obj(self) -> Any:
        """The token object, derived now if it was not yet (a key only written to a card
        never needs one)."""
        if self._obj is None:
            assert self._parent is not None and self._data is not None
            self._obj = self._token.derive(self._parent.obj, self._data, f"derive {self.what}")
        return self._obj

    # -------------------------------------------------------------- halves
    def __getitem__(self, item: slice) -> "Pkcs11Key":
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("a key handle slices into its 8-byte halves only ([:8], [8:])")
        start, stop, _ = item.indices(self._len)
        if (start, stop) == (0, self._len):
            return self
        if self._len == 16 and (start, stop) == (0, 8):
            return self._half(0)
        if self._len == 16 and (start, stop) == (8, 16):
            return self._half(1)
        raise TypeError("a key handle slices into its 8-byte halves only ([:8], [8:])")

    def _half(self, i: int) -> "Pkcs11Key":
        tag = "LR"[i]
        hit = self._cache.get(tag)
        if hit is not None:
            return hit
        value = self._value[8 * i:8 * i + 8] if self._value is not None else None
        what = f"{self.what} ({'left' if i == 0 else 'right'} half)"
        if self._halves is not None:
            out = Pkcs11Key(self._token, self._halves[i], 8, what, value=value, owned=False)
        elif self._parent is not None and self._data is not None:
            block = self._data[8 * i:8 * i + 8]
            out = Pkcs11Key(self._token, None, 8, what, parent=self._parent, data=block + block, value=value)
        else:
            raise HsmError(f"{self._token.name}: {self.what} is used on the card as it is and its line-protection "
                           "MAC needs its single-DES halves, which the token does not hold: import it with "
                           "`citycard keys hsm-import ... --direct UNIT/ROLE`")
        self._cache[tag] = out
        return out

    # -------------------------------------------------------------- operations
    def ecb_encrypt(self, data: bytes) -> bytes:
        return self._token.encrypt(self.obj, data, what=f"encrypt with {self.what}")

    def ecb_decrypt(self, data: bytes) -> bytes:
        return self._token.decrypt(self.obj, data, what=f"decrypt with {self.what}")

    def cbc_mac(self, data: bytes, iv: bytes | None = None) -> bytes:
        if not data:
            raise HsmError("CBC-MAC of no data")
        return self._token.encrypt(self.obj, data, iv or bytes(8), what=f"MAC with {self.what}")[-8:]

    def diversify(self, data: bytes, *, export: bool = False, what: str = "") -> "Pkcs11Key":
        """The key E(self, F) ‖ E(self, ~F) (``data`` = F ‖ ~F), derived in the token; with
        ``export`` also its exact bytes (``C_Encrypt``), for writing it to a card."""
        what = what or f"{self.what} (diversified)"
        value = self._token.encrypt(self.obj, data, what=f"export {what}") if export else None
        return Pkcs11Key(self._token, None, 16, what, parent=self, data=data, value=value)

    def derive_ecb(self, block: bytes) -> "Pkcs11Key":
        if len(block) != 8:
            raise HsmError(f"session key derivation from {len(block)} bytes, expected 8")
        obj = self._token.derive(self.obj, block + block, f"derive a session key from {self.what}")
        return Pkcs11Key(self._token, obj, 8, f"session key of {self.what}", parent=self, data=block + block)

    def xor_halves(self) -> "Pkcs11Key":
        if self._len == 8:
            return self
        hit = self._cache.get("X")
        if hit is not None:
            return hit
        if self._value is not None:
            raw = self._value
        elif self._parent is not None and self._data is not None:
            # no PKCS#11 mechanism XORs the halves of a key: both halves through this process
            raw = self._token.encrypt(self._parent.obj, self._data, what=f"fold {self.what}")
        else:
            raise HsmError(f"{self._token.name}: {self.what}: the left ⊕ right key of a master is not available")
        half = crypto.xor(raw[:8], raw[8:])
        obj = self._token.create(half + half, what=f"fold {self.what}")
        del raw, half
        out = Pkcs11Key(self._token, obj, 8, f"{self.what} (left ⊕ right)")
        self._cache["X"] = out
        return out

    def value(self) -> bytes:
        if self._value is None:
            raise KeyHandleError(f"{self.what} stays in the HSM ({self._token.name}): its value cannot be read")
        return self._value
