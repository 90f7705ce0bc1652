"""A key source over PKCS#11: the masters stay in a hardware security module (docs/keys.md).

``--keys pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:CITYCARD_HSM_PIN``

An RFC 7512 URI.  Path attributes (``;``-separated) pick the token: ``token`` (label),
``serial``, ``manufacturer``, ``model``, ``slot-id``.  Query attributes (``&``-separated):

- ``module-path``: the PKCS#11 library (default ``$CITYCARD_PKCS11_MODULE``, else SoftHSM2's);
- ``pin-source``: ``env:NAME`` (an environment variable) or ``file:PATH`` / ``PATH`` (its
  first line); without it ``$CITYCARD_HSM_PIN``, else a hidden prompt on a terminal.
  ``pin-value`` is refused: a PIN in a command line shows in process lists and histories;
- ``labels``: the label template of the masters, default ``{unit}/{role}``.

What the token holds (``citycard keys hsm-import``): each master as a token object of type
DES2, ``CKA_SENSITIVE`` and not ``CKA_EXTRACTABLE`` (never readable, never wrappable), with
``CKA_DERIVE`` and ``CKA_ENCRYPT`` (for KCVs, keys used on cards as they are, and the exact
bytes of a key the profile lets out), no decrypt, wrap or unwrap, not modifiable;
``CKA_LABEL`` = the template, ``CKA_ID`` = ``v<version>``.  A master used on cards as it is
(a transport key: the ``factory`` unit, or ``--direct``) also gets its two single-DES halves
(``CKA_ID`` ``v<version>.L`` / ``.R``), which the retail MAC (ISO 9797-1 algorithm 3) needs.

Per-card keys are derived in the token with ``CKM_DES3_ECB_ENCRYPT_DATA`` over F ‖ ~F
(SPEC §2.4) into sensitive, non-extractable session objects, and used there: KCVs,
ext-auth cryptograms, line-protection MACs, enciphering, purse session keys (derived the
same way), MAC1/MAC2/MAC3/TAC.  A token without that mechanism falls back to encrypting
F ‖ ~F with ``C_Encrypt`` and creating the session object from the result (the per-card key
is then briefly in this process's memory).  Two things standard PKCS#11 cannot do in the
token are done through this process, and said here and in docs/keys.md:

- the TAC / PIN-reload key (left ⊕ right half): no mechanism XORs two halves of a key, so
  the two halves are encrypted by the token, XORed here and put back as a sensitive session
  object;
- a key written to a card: the WRITE KEY record is built around the key's value (no standard
  mechanism builds that record inside the token), so its exact bytes (``C_Encrypt`` of F ‖ ~F)
  come out when the planner asks with ``export=True``: the profile must allow it for keys
  sent in clear (``export = true``), a ciphered WRITE KEY still has it in memory here.
  Masters never come out.

Every token call runs under one lock (batch workers share the source).  Errors name the
token, never a PIN or a key value.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from .. import crypto
from .source import PKCS11_PREFIX, KeyError_
from .handles import KeyHandle, KeyHandleError

MODULE_ENV = "CITYCARD_PKCS11_MODULE"
PIN_ENV = "CITYCARD_HSM_PIN"
DEFAULT_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
DEFAULT_LABELS = "{unit}/{role}"
DIRECT_UNITS = ("factory",)      # masters used on cards as they are (transport keys)
_PATH_ATTRS = {"token", "serial", "manufacturer", "model", "slot-id"}
_QUERY_ATTRS = {"module-path", "pin-source", "labels"}
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID_RE = re.compile(r"^v(\d{1,3})(?:\.([LR]))?$")


class HsmError(KeyError_):
    """A PKCS#11 token problem; names the token, never a PIN or a key."""


def _lib() -> Any:
    try:
        import PyKCS11  # noqa: F401
    except ImportError:
        raise HsmError("pkcs11: key sources need the PyKCS11 package (pip install 'citycard[hsm]')") from None
    return PyKCS11


# ------------------------------------------------------------------------------------ URI
@dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    slot_id: int | None = None
    module: str | None = None
    pin_source: str | None = None
    labels: str = DEFAULT_LABELS

    @property
    def name(self) -> str:
        """How messages name the source: the token, never the query (PIN source, module)."""
        parts = [f"{k}={v}" for k, v in (("token", self.token), ("serial", self.serial),
                                         ("slot-id", self.slot_id)) if v is not None]
        return PKCS11_PREFIX + (";".join(parts) or "(first token)")

    def module_path(self) -> str:
        if self.module:
            return self.module
        env = os.environ.get(MODULE_ENV)
        if env:
            return env
        for m in DEFAULT_MODULES:
            if Path(m).exists():
                return m
        raise HsmError(f"{self.name}: no PKCS#11 module: give module-path=... in the URI or set {MODULE_ENV}")


def parse_uri(text: str) -> Pkcs11Uri:
    """An RFC 7512 ``pkcs11:`` URI (see the module docstring).  Errors never echo values."""
    if not text.startswith(PKCS11_PREFIX):
        raise HsmError("not a pkcs11: URI")
    body = text[len(PKCS11_PREFIX):]
    path, _, query = body.partition("?")
    found: dict[str, str] = {}
    for part, allowed, sep in ((path, _PATH_ATTRS, ";"), (query, _QUERY_ATTRS, "&")):
        for item in filter(None, part.split(sep)):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if key == "pin-value":
                raise HsmError("pkcs11: URI: pin-value is refused (a PIN in a command line shows in process lists "
                               "and shell history): use pin-source=env:NAME or pin-source=file:PATH, or set "
                               f"{PIN_ENV}")
            if key in ("object", "id", "type"):
                raise HsmError(f"pkcs11: URI: {key}= names one object; a key source uses every key of the token "
                               "labelled by its template (labels=..., default {unit}/{role})")
            if key not in allowed:
                where = "path" if sep == ";" else "query"
                raise HsmError(f"pkcs11: URI: unknown {where} attribute {key!r} (known: "
                               f"{', '.join(sorted(allowed))})")
            if not eq:
                raise HsmError(f"pkcs11: URI: attribute {key!r} has no value")
            if key in found:
                raise HsmError(f"pkcs11: URI: attribute {key!r} given twice")
            found[key] = unquote(value)
    slot: int | None = None
    if "slot-id" in found:
        if not found["slot-id"].isdigit():
            raise HsmError("pkcs11: URI: slot-id must be a number")
        slot = int(found["slot-id"])
    labels = found.get("labels", DEFAULT_LABELS)
    if labels.count("{unit}") != 1 or labels.count("{role}") != 1:
        raise HsmError("pkcs11: URI: labels= must hold {unit} and {role} once each")
    return Pkcs11Uri(found.get("token"), found.get("serial"), found.get("manufacturer"), found.get("model"), slot,
                     found.get("module-path"), found.get("pin-source"), labels)


def _read_pin(uri: Pkcs11Uri, fallback: Callable[[str], str] | str | None) -> str:
    src = uri.pin_source
    if src:
        if src.startswith("env:"):
            var = src[4:]
            value = os.environ.get(var)
            if not value:
                raise HsmError(f"{uri.name}: pin-source env:{var}: the variable is not set")
            return value
        path = src[len("file://"):] if src.startswith("file://") else src[5:] if src.startswith("file:") else src
        try:
            with open(path, encoding="utf-8") as f:
                line = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise HsmError(f"{uri.name}: pin-source {path}: cannot read it ({exc.strerror})") from None
        if not line:
            raise HsmError(f"{uri.name}: pin-source {path}: the first line is empty")
        return line
    env = os.environ.get(PIN_ENV)
    if env:
        return env
    if fallback is not None:
        return fallback(uri.name) if callable(fallback) else fallback
    raise HsmError(f"{uri.name}: no PIN: give pin-source=env:NAME or pin-source=file:PATH in the URI, or set {PIN_ENV}")


# ------------------------------------------------------------------------------------ token
class _Token:
    """One logged-in session on one token; every call under one (re-entrant) lock."""

    def __init__(self, lib: Any, session: Any, slot: int, name: str, mechanisms: set[str]) -> None:
        self.lib, self.session, self.slot, self.name = lib, session, slot, name
        self.lock = threading.RLock()
        self.closed = False
        self.mechanisms = mechanisms
        self.can_derive = "CKM_DES3_ECB_ENCRYPT_DATA" in mechanisms
        self._dropped: list[Any] = []     # session objects of dropped handles, destroyed at the next call

    def _fail(self, what: str, exc: Exception) -> HsmError:
        return HsmError(f"{self.name}: {what}: {exc}")

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        P = _lib()
        with self.lock:
            if self.closed:
                raise HsmError(f"{self.name}: the key source is closed")
            self._flush()
            try:
                return fn()
            except P.PyKCS11Error as exc:
                raise self._fail(what, exc) from None

    def encrypt(self, obj: Any, data: bytes, iv: bytes | None = None, what: str = "encrypt") -> bytes:
        P = _lib()
        mech = P.Mechanism(P.CKM_DES3_ECB) if iv is None else P.Mechanism(P.CKM_DES3_CBC, iv)
        return bytes(self._call(what, lambda: self.session.encrypt(obj, data, mech)))

    def decrypt(self, obj: Any, data: bytes, what: str = "decrypt") -> bytes:
        P = _lib()
        return bytes(self._call(what, lambda: self.session.decrypt(obj, data, P.Mechanism(P.CKM_DES3_ECB))))

    @staticmethod
    def _session_template(P: Any) -> list[tuple[int, Any]]:
        return [(P.CKA_CLASS, P.CKO_SECRET_KEY), (P.CKA_KEY_TYPE, P.CKK_DES2), (P.CKA_TOKEN, False),
                (P.CKA_PRIVATE, True), (P.CKA_SENSITIVE, True), (P.CKA_EXTRACTABLE, False),
                (P.CKA_ENCRYPT, True), (P.CKA_DECRYPT, True), (P.CKA_DERIVE, True),
                (P.CKA_WRAP, False), (P.CKA_UNWRAP, False)]

    def derive(self, base: Any, data: bytes, what: str = "derive") -> Any:
        """A session DES2 key E(base, data) (16 bytes of data, ECB), sensitive, non-extractable."""
        P = _lib()
        if self.can_derive:
            mech = P.KEY_DERIVATION_STRING_DATA_MechanismBase(data, P.CKM_DES3_ECB_ENCRYPT_DATA)
            return self._call(what, lambda: self.session.deriveKey(base, self._session_template(P), mech))
        raw = self.encrypt(base, data, what=what)      # fallback: the key passes through this process
        try:
            return self.create(raw, what=what)
        finally:
            del raw

    def create(self, value: bytes, what: str = "create a key") -> Any:
        P = _lib()
        template = self._session_template(P) + [(P.CKA_VALUE, value)]
        return self._call(what, lambda: self.session.createObject(template))

    def destroy(self, obj: Any) -> None:
        """Destroy a session object: at the next token call (a handle's ``__del__`` may run in
        the middle of another call, from any thread)."""
        self._dropped.append(obj)

    def _flush(self) -> None:
        while self._dropped:
            obj = self._dropped.pop()
            try:
                self.session.destroyObject(obj)
            except Exception:
                pass

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self._flush()
            self.closed = True
            try:
                self.session.closeSession()
            except Exception:
                pass
            try:
                self.lib.unload()
            except Exception:
                pass


# ------------------------------------------------------------------------------------ handles
class Pkcs11Key(KeyHandle):
    """A key in the token: a master (token object) or a per-card key (session object, destroyed
    with this handle).  Never holds a value unless the source let this key out (``export``)."""

    def __init__(self, token: _Token, obj: Any, length: int, what: str, *, parent: "Pkcs11Key | None" = None,
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


# ------------------------------------------------------------------------------------ source
@dataclass(frozen=True)
class HsmKeyInfo:
    """What may be shown of a master in the token: never its value."""

    unit: str
    name: str
    version: int
    kcv: bytes
    label: str
    sensitive: bool
    extractable: bool
    direct: bool             # its single-DES halves are in the token too

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "name": self.name, "version": self.version, "algorithm": "3des",
                "kcv": self.kcv.hex().upper(), "label": self.label, "sensitive": self.sensitive,
                "extractable": self.extractable, "direct": self.direct}


@dataclass
class _Master:
    unit: str
    role: str
    version: int
    obj: Any
    halves: list[Any]


class Pkcs11Source:
    """A :class:`~citycard.keys.KeySource` whose masters are objects in a PKCS#11 token."""

    holds_keys_inside = True     # KeyRing passes ``export`` through

    def __init__(self, uri: Pkcs11Uri, token: _Token) -> None:
        self.uri, self._token = uri, token
        self.name = uri.name
        pattern = re.escape(uri.labels).replace(r"\{unit\}", f"(?P<unit>{_NAME})").replace(r"\{role\}",
                                                                                           f"(?P<role>{_NAME})")
        self._label_re = re.compile(f"^{pattern}$")
        self._masters: dict[tuple[str, str, int], _Master] = {}
        self._handles: dict[tuple[str, str, int], Pkcs11Key] = {}
        self._scan()

    def __repr__(self) -> str:
        return f"<Pkcs11Source {self.name} keys={len(self._masters)}>"

    def __enter__(self) -> "Pkcs11Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def mechanisms(self) -> set[str]:
        return set(self._token.mechanisms)

    @property
    def derives_in_token(self) -> bool:
        return self._token.can_derive

    # -------------------------------------------------------------- opening
    @classmethod
    def open(cls, text: str, pin: Callable[[str], str] | str | None = None) -> "Pkcs11Source":
        """Open the token a ``pkcs11:`` URI names and log in (PIN: see the module docstring)."""
        uri = parse_uri(text)
        P = _lib()
        module = uri.module_path()
        lib = P.PyKCS11Lib()
        try:
            lib.load(module)
        except P.PyKCS11Error as exc:
            raise HsmError(f"{uri.name}: cannot load the PKCS#11 module {module} ({exc})") from None
        try:
            slot = cls._find_slot(lib, uri)
            session = lib.openSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION)
            try:
                mechanisms = {str(m) for m in lib.getMechanismList(slot)}
                try:
                    session.login(_read_pin(uri, pin))
                except P.PyKCS11Error as exc:
                    if exc.value != P.CKR_USER_ALREADY_LOGGED_IN:
                        what = "wrong PIN" if exc.value == P.CKR_PIN_INCORRECT else f"login failed ({exc})"
                        raise HsmError(f"{uri.name}: {what}") from None
            except BaseException:
                session.closeSession()
                raise
        except P.PyKCS11Error as exc:
            lib.unload()
            raise HsmError(f"{uri.name}: {exc}") from None
        except BaseException:
            lib.unload()
            raise
        return cls(uri, _Token(lib, session, slot, uri.name, mechanisms))

    @staticmethod
    def _find_slot(lib: Any, uri: Pkcs11Uri) -> int:
        slots = lib.getSlotList(tokenPresent=True)
        for slot in slots:
            if uri.slot_id is not None and slot != uri.slot_id:
                continue
            info = lib.getTokenInfo(slot)
            checks = ((uri.token, info.label), (uri.serial, info.serialNumber),
                      (uri.manufacturer, info.manufacturerID), (uri.model, info.model))
            if all(want is None or want == str(have).strip() for want, have in checks):
                return slot
        raise HsmError(f"{uri.name}: no such token ({len(slots)} token(s) present)")

    def _scan(self) -> None:
        """Index the token's masters by (unit, role, version)."""
        P = _lib()
        t = self._token
        objs = t._call("list the keys", lambda: t.session.findObjects([(P.CKA_CLASS, P.CKO_SECRET_KEY)]))
        self._masters.clear()
        halves: dict[tuple[str, str, int], dict[str, Any]] = {}
        for obj in objs:
            label, ident, ktype, is_token = t._call("read key attributes", lambda o=obj: t.session.getAttributeValue(
                o, [P.CKA_LABEL, P.CKA_ID, P.CKA_KEY_TYPE, P.CKA_TOKEN]))
            if not is_token or ktype != P.CKK_DES2 or not isinstance(label, str):
                continue
            m = self._label_re.match(label.strip())
            if not m:
                continue
            idm = _ID_RE.match(bytes(ident or b"").decode("ascii", "replace")) if ident else None
            if ident and not idm:
                continue
            version = int(idm.group(1)) if idm else 1
            key = (m.group("unit"), m.group("role"), version)
            if idm and idm.group(2):
                halves.setdefault(key, {})[idm.group(2)] = obj
            elif key in self._masters:
                raise HsmError(f"{self.name}: two keys labelled {label.strip()!r} version {version}")
            else:
                self._masters[key] = _Master(*key, obj, [])
        for key, h in halves.items():
            if key in self._masters and set(h) == {"L", "R"}:
                self._masters[key].halves = [h["L"], h["R"]]
        self._handles.clear()

    # -------------------------------------------------------------- KeySource
    def entries(self) -> set[tuple[str, str]]:
        return {(u, r) for (u, r, _v) in self._masters}

    def versions(self, unit: str, role: str) -> list[int]:
        return sorted(v for (u, r, v) in self._masters if (u, r) == (unit, role))

    def label(self, unit: str, role: str) -> str:
        return self.uri.labels.format(unit=unit, role=role)

    def master(self, unit: str, role: str, version: int | None = None) -> Pkcs11Key:
        """A handle on the master itself (it never leaves the token)."""
        if version is None:
            versions = self.versions(unit, role)
            if not versions:
                raise KeyError_(f"{self.name} holds no key {unit}/{role}")
            version = versions[-1]
        m = self._masters.get((unit, role, version))
        if m is None:
            raise KeyError_(f"{self.name} holds no key {unit}/{role} version {version}")
        key = (unit, role, version)
        h = self._handles.get(key)
        if h is None:
            halves = (m.halves[0], m.halves[1]) if m.halves else None
            h = self._handles[key] = Pkcs11Key(self._token, m.obj, 16, f"{unit}/{role}", owned=False, halves=halves)
        return h

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1, *,
               version: int | None = None, export: bool = False) -> Pkcs11Key:
        """The per-card key, derived in the token (PBOC, SPEC §2.4); the master itself when
        ``factor`` is None (it never leaves the token).  ``export``: the handle also carries
        the key's exact bytes (for a WRITE KEY record; the planner decides when)."""
        master = self.master(unit, role, version)
        if factor is None:
            if export:
                raise HsmError(f"{self.name}: {unit}/{role} is a master key: it never leaves the HSM")
            return master
        if levels < 1:
            raise KeyError_(f"levels {levels}: must be at least 1")
        if levels == 1:
            if len(factor) < 8:
                raise KeyError_(f"diversification factor: {len(factor)} bytes, needs at least 8")
            factors = [factor[-8:]]
        else:
            if len(factor) != 8 * levels:
                raise KeyError_(f"diversification factor: {len(factor)} bytes, {levels} levels need {8 * levels}")
            factors = [factor[8 * i:8 * i + 8] for i in range(levels)]
        key = master
        for i, f in enumerate(factors):
            last = i == len(factors) - 1
            key = key.diversify(f + bytes(b ^ 0xFF for b in f), export=export and last,
                                what=f"{unit}/{role} (per-card)" if last else f"{unit}/{role} (level {i + 1})")
        return key

    def kcv(self, unit: str, role: str, *, version: int | None = None) -> bytes:
        return self.master(unit, role, version).kcv()

    # -------------------------------------------------------------- listing
    def keys(self) -> list[HsmKeyInfo]:
        """Every master's unit, name, version, KCV and protection attributes (never a value)."""
        P = _lib()
        t = self._token
        out = []
        for (u, r, v) in sorted(self._masters):
            m = self._masters[(u, r, v)]
            sens, extr = t._call("read key attributes", lambda: t.session.getAttributeValue(
                m.obj, [P.CKA_SENSITIVE, P.CKA_EXTRACTABLE]))
            out.append(HsmKeyInfo(u, r, v, self.kcv(u, r, version=v), self.label(u, r), bool(sens), bool(extr),
                                  bool(m.halves)))
        return out

    def attributes(self, unit: str, role: str, version: int | None = None) -> dict[str, Any]:
        """The protection attributes of a master (for checks and tests)."""
        P = _lib()
        m = self._masters[(unit, role, version or self.versions(unit, role)[-1])]
        names = ("CKA_SENSITIVE", "CKA_EXTRACTABLE", "CKA_ALWAYS_SENSITIVE", "CKA_NEVER_EXTRACTABLE", "CKA_TOKEN",
                 "CKA_PRIVATE", "CKA_MODIFIABLE", "CKA_ENCRYPT", "CKA_DECRYPT", "CKA_DERIVE", "CKA_WRAP",
                 "CKA_UNWRAP")
        t = self._token
        values = t._call("read key attributes", lambda: t.session.getAttributeValue(
            m.obj, [getattr(P, n) for n in names]))
        return {n: bool(v) for n, v in zip(names, values)}

    def read_value(self, unit: str, role: str, version: int | None = None) -> bytes:
        """Try to read a master's CKA_VALUE: always refused (sensitive, non-extractable)."""
        P = _lib()
        m = self._masters[(unit, role, version or self.versions(unit, role)[-1])]
        t = self._token
        got = t._call("read CKA_VALUE", lambda: t.session.getAttributeValue(m.obj, [P.CKA_VALUE], allAsBinary=True))
        if not got or got[0] is None:
            raise HsmError(f"{self.name}: {unit}/{role}: CKA_VALUE is sensitive (not readable)")
        raise HsmError(f"{self.name}: {unit}/{role}: the token revealed a master's value: it is not protected")

    # -------------------------------------------------------------- import
    def import_key(self, unit: str, role: str, key: bytes, *, version: int = 1,
                   direct: bool | None = None) -> HsmKeyInfo:
        """Store a 16-byte 2-key 3DES master as a sensitive, non-extractable token object and
        check its KCV in the token.  ``direct`` (default: units in ``DIRECT_UNITS``) also stores
        its single-DES halves (a key used on cards as it is, e.g. a transport key)."""
        from .keystore import check_name, check_version

        P = _lib()
        check_name(unit, "unit")
        check_name(role, "key name")
        check_version(version)
        if not isinstance(key, (bytes, bytearray)) or len(key) != 16:
            raise HsmError(f"{unit}/{role}: a master key is 16 bytes (2-key 3DES)")
        if (unit, role, version) in self._masters:
            raise HsmError(f"{self.name}: already holds {unit}/{role} version {version} (a key is never replaced)")
        direct = unit in DIRECT_UNITS if direct is None else direct
        label = self.label(unit, role)
        t = self._token

        def template(value: bytes, ident: str, *, derive: bool, decrypt: bool) -> list[tuple[int, Any]]:
            return [(P.CKA_CLASS, P.CKO_SECRET_KEY), (P.CKA_KEY_TYPE, P.CKK_DES2), (P.CKA_TOKEN, True),
                    (P.CKA_PRIVATE, True), (P.CKA_LABEL, label), (P.CKA_ID, ident.encode("ascii")),
                    (P.CKA_SENSITIVE, True), (P.CKA_EXTRACTABLE, False), (P.CKA_MODIFIABLE, False),
                    (P.CKA_ENCRYPT, True), (P.CKA_DECRYPT, decrypt), (P.CKA_DERIVE, derive),
                    (P.CKA_WRAP, False), (P.CKA_UNWRAP, False), (P.CKA_SIGN, False), (P.CKA_VERIFY, False),
                    (P.CKA_VALUE, value)]

        made: list[Any] = []
        try:
            made.append(t._call(f"store {unit}/{role}", lambda: t.session.createObject(
                template(bytes(key), f"v{version}", derive=True, decrypt=False))))
            if direct:
                for tag, half in (("L", key[:8]), ("R", key[8:])):
                    made.append(t._call(f"store {unit}/{role} halves", lambda h=half, g=tag: t.session.createObject(
                        template(bytes(h) * 2, f"v{version}.{g}", derive=False, decrypt=True))))
            got = t.encrypt(made[0], bytes(8), what=f"KCV of {unit}/{role}")[:3]
            ok = got == crypto.kcv(bytes(key))
            if direct:
                ok = ok and all(t.encrypt(o, bytes(8))[:3] == crypto.kcv(bytes(h))
                                for o, h in zip(made[1:], (key[:8], key[8:])))
            if not ok:
                raise HsmError(f"{self.name}: {unit}/{role}: the KCV computed by the token does not match; "
                               "nothing stored")
        except BaseException:
            for o in made:
                t.destroy(o)
            t._call("discard a failed import", lambda: None)
            raise
        self._scan()
        info = next(i for i in self.keys() if (i.unit, i.name, i.version) == (unit, role, version))
        return info

    def close(self) -> None:
        """Destroy the per-card session objects (closing the session) and unload the module."""
        self._handles.clear()
        self._token.close()

