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

Where each part lives: :mod:`.pkcs11_uri` (the URI, the PIN, loading PyKCS11),
:mod:`.pkcs11_token` (opening the token, the session and its calls), :mod:`.pkcs11_key`
(key handles and their operations), :mod:`.pkcs11_import` (storing a master); this module
is the key source itself and re-exports the public names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from .source import KeyError_
from .inventory import Lifecycle
from .pkcs11_import import mark_purpose, read_purpose, store_master
from .pkcs11_inventory import read_inventory, write_inventory
from .pkcs11_key import Pkcs11Key
from .pkcs11_token import Token, open_token
from .pkcs11_uri import (DEFAULT_LABELS, DEFAULT_MODULES, MODULE_ENV, PIN_ENV, HsmError, Pkcs11Uri, parse_uri,
                         pykcs11, read_pin)

__all__ = [
    "DEFAULT_LABELS",
    "DEFAULT_MODULES",
    "DIRECT_UNITS",
    "MODULE_ENV",
    "PIN_ENV",
    "HsmError",
    "HsmKeyInfo",
    "Pkcs11Key",
    "Pkcs11Source",
    "Pkcs11Uri",
    "parse_uri",
    "read_pin",
]

DIRECT_UNITS = ("factory",)      # masters used on cards as they are (transport keys)
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID_RE = re.compile(r"^v(\d{1,3})(?:\.([LR]))?$")


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
    life: Lifecycle = Lifecycle()   # state and dates (the token's key inventory)

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "name": self.name, "version": self.version, "algorithm": "3des",
                "kcv": self.kcv.hex().upper(), "label": self.label, "sensitive": self.sensitive,
                "extractable": self.extractable, "direct": self.direct, **self.life.as_dict()}


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

    def __init__(self, uri: Pkcs11Uri, token: Token) -> None:
        self.uri, self._token = uri, token
        self.name = uri.name
        pattern = re.escape(uri.labels).replace(r"\{unit\}", f"(?P<unit>{_NAME})").replace(r"\{role\}",
                                                                                           f"(?P<role>{_NAME})")
        self._label_re = re.compile(f"^{pattern}$")
        self._masters: dict[tuple[str, str, int], _Master] = {}
        self._handles: dict[tuple[str, str, int], Pkcs11Key] = {}
        self._scan()
        self.purpose = read_purpose(token, self.name)   # the token's marker (docs/keys.md), None: unmarked
        self._life = read_inventory(token, self.name)   # states and dates of the masters (docs/keys.md)

    @property
    def test_keys(self) -> bool:
        """The token holds the published demo TEST KEYS (its purpose marker says ``test``)."""
        return self.purpose == "test"

    @property
    def production(self) -> bool:
        """The token is declared for production (its purpose marker says ``production``)."""
        return self.purpose == "production"

    def mark_test_keys(self) -> None:
        """Mark the token as holding TEST KEYS (before they go in: ``keys hsm-import --from``
        the demo key file or a ``keys demo`` keystore).  Never undone by citycard."""
        mark_purpose(self._token, self.name, "test")
        self.purpose = "test"

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
        return cls(uri, open_token(uri, pin))

    def _scan(self) -> None:
        """Index the token's masters by (unit, role, version)."""
        self._masters.clear()
        halves: dict[tuple[str, str, int], dict[str, Any]] = {}
        for obj, label, ident in self._labelled_keys():
            parsed = self._parse_name(label, ident)
            if parsed is None:
                continue
            key, half = parsed
            if half:
                halves.setdefault(key, {})[half] = obj
            elif key in self._masters:
                raise HsmError(f"{self.name}: two keys labelled {label!r} version {key[2]}")
            else:
                self._masters[key] = _Master(*key, obj, [])
        for key, h in halves.items():
            if key in self._masters and set(h) == {"L", "R"}:
                self._masters[key].halves = [h["L"], h["R"]]
        self._handles.clear()

    def _labelled_keys(self) -> list[tuple[Any, str, Any]]:
        """(object, label, CKA_ID) of every DES2 token object with a text label."""
        P = pykcs11()
        t = self._token
        objs = t.call("list the keys", lambda: t.session.findObjects([(P.CKA_CLASS, P.CKO_SECRET_KEY)]))
        out = []
        for obj in objs:
            label, ident, ktype, is_token = t.call("read key attributes", lambda o=obj: t.session.getAttributeValue(
                o, [P.CKA_LABEL, P.CKA_ID, P.CKA_KEY_TYPE, P.CKA_TOKEN]))
            if is_token and ktype == P.CKK_DES2 and isinstance(label, str):
                out.append((obj, label.strip(), ident))
        return out

    def _parse_name(self, label: str, ident: Any) -> tuple[tuple[str, str, int], str | None] | None:
        """((unit, role, version), half "L"/"R" or None) of a label the template matches and a
        CKA_ID ``v<version>[.L|.R]`` (none: version 1); None for other objects."""
        m = self._label_re.match(label)
        if not m:
            return None
        idm = _ID_RE.match(bytes(ident or b"").decode("ascii", "replace")) if ident else None
        if ident and not idm:
            return None
        version = int(idm.group(1)) if idm else 1
        return (m.group("unit"), m.group("role"), version), (idm.group(2) if idm else None)

    # -------------------------------------------------------------- KeySource
    def entries(self) -> set[tuple[str, str]]:
        return {(u, r) for (u, r, _v) in self._masters}

    def versions(self, unit: str, role: str) -> list[int]:
        return sorted(v for (u, r, v) in self._masters if (u, r) == (unit, role))

    def label(self, unit: str, role: str) -> str:
        return self.uri.labels.format(unit=unit, role=role)

    def life(self, unit: str, role: str, version: int) -> Lifecycle:
        return self._life.get((unit, role, version), Lifecycle())

    def in_force(self, unit: str, role: str, version: int | None = None, *, on: str | None = None,
                 serving: bool = False) -> int:
        """The version to use, by the token's key inventory (the rules of
        :meth:`citycard.keys.keystore.Keystore.in_force`); refused with the reason."""
        versions = self.versions(unit, role)
        if not versions:
            raise KeyError_(f"{self.name} holds no key {unit}/{role}")
        if version is not None:
            if version not in versions:
                raise KeyError_(f"{self.name} holds no key {unit}/{role} version {version}")
            why = self.life(unit, role, version).refusal(issuing=False, on=on)
            if why is not None:
                raise KeyError_(f"{self.name}: {unit}/{role} version {version} is {why}: not used")
            return version
        reasons = []
        for v in reversed(versions):
            why = self.life(unit, role, v).refusal(issuing=not serving, on=on)
            if why is None:
                return v
            reasons.append(f"version {v} {why}")
        raise KeyError_(f"{self.name}: no version of {unit}/{role} may be used today ({'; '.join(reasons)})")

    def version_in_force(self, unit: str, role: str) -> int:
        return self.in_force(unit, role)

    def set_lifecycle(self, unit: str, role: str, version: int, *, state: str | None = None,
                      activation: str | None = None, expiry: str | None = None) -> HsmKeyInfo:
        """Change a master version's state or dates in the token's inventory."""
        if version not in self.versions(unit, role):
            raise KeyError_(f"{self.name} holds no key {unit}/{role} version {version}")
        life = self.life(unit, role, version).change(state=state, activation=activation, expiry=expiry)
        versions = dict(self._life)
        versions[(unit, role, version)] = life
        write_inventory(self._token, self.name, versions)
        self._life = versions
        return next(i for i in self.keys() if (i.unit, i.name, i.version) == (unit, role, version))

    def master(self, unit: str, role: str, version: int | None = None) -> Pkcs11Key:
        """A handle on the master itself (it never leaves the token), of the version the key
        inventory allows (:meth:`in_force`)."""
        return self._handle(unit, role, self.in_force(unit, role, version))

    def _handle(self, unit: str, role: str, version: int) -> Pkcs11Key:
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
               version: int | None = None, export: bool = False, alg: str = "des",
               on: str | None = None, serving: bool = False) -> Pkcs11Key:
        """The per-card key, derived in the token (PBOC, SPEC §2.4); the master itself when
        ``factor`` is None (it never leaves the token).  ``export``: the handle also carries
        the key's exact bytes (for a WRITE KEY record; the planner decides when).  ``alg``
        ``sm4``: refused, the tokens citycard drives (PKCS#11 2.40/3.0, SoftHSM2) define no SM4
        mechanism (docs/sm4.md)."""
        if alg != "des":
            raise HsmError(f"{self.name}: key {unit}/{role} is an SM4 key and this token offers no SM4 mechanism "
                           "(PKCS#11 defines none); keep SM4 masters in a keystore")
        master = self._handle(unit, role, self.in_force(unit, role, version, on=on, serving=serving))
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
        """A master's KCV (any state: a KCV is what custodians check a key by)."""
        if version is None:
            versions = self.versions(unit, role)
            if not versions:
                raise KeyError_(f"{self.name} holds no key {unit}/{role}")
            version = versions[-1]
        return self._handle(unit, role, version).kcv()

    # -------------------------------------------------------------- listing
    def keys(self) -> list[HsmKeyInfo]:
        """Every master's unit, name, version, KCV and protection attributes (never a value)."""
        P = pykcs11()
        t = self._token
        out = []
        for (u, r, v) in sorted(self._masters):
            m = self._masters[(u, r, v)]
            sens, extr = t.call("read key attributes", lambda: t.session.getAttributeValue(
                m.obj, [P.CKA_SENSITIVE, P.CKA_EXTRACTABLE]))
            out.append(HsmKeyInfo(u, r, v, self.kcv(u, r, version=v), self.label(u, r), bool(sens), bool(extr),
                                  bool(m.halves), self.life(u, r, v)))
        return out

    def attributes(self, unit: str, role: str, version: int | None = None) -> dict[str, Any]:
        """The protection attributes of a master (for checks and tests)."""
        P = pykcs11()
        m = self._masters[(unit, role, version or self.versions(unit, role)[-1])]
        names = ("CKA_SENSITIVE", "CKA_EXTRACTABLE", "CKA_ALWAYS_SENSITIVE", "CKA_NEVER_EXTRACTABLE", "CKA_TOKEN",
                 "CKA_PRIVATE", "CKA_MODIFIABLE", "CKA_ENCRYPT", "CKA_DECRYPT", "CKA_DERIVE", "CKA_WRAP",
                 "CKA_UNWRAP")
        t = self._token
        values = t.call("read key attributes", lambda: t.session.getAttributeValue(
            m.obj, [getattr(P, n) for n in names]))
        return {n: bool(v) for n, v in zip(names, values)}

    def read_value(self, unit: str, role: str, version: int | None = None) -> bytes:
        """Try to read a master's CKA_VALUE: always refused (sensitive, non-extractable)."""
        P = pykcs11()
        m = self._masters[(unit, role, version or self.versions(unit, role)[-1])]
        t = self._token
        got = t.call("read CKA_VALUE", lambda: t.session.getAttributeValue(m.obj, [P.CKA_VALUE], allAsBinary=True))
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

        check_name(unit, "unit")
        check_name(role, "key name")
        check_version(version)
        if not isinstance(key, (bytes, bytearray)) or len(key) != 16:
            raise HsmError(f"{unit}/{role}: a master key is 16 bytes (2-key 3DES)")
        if (unit, role, version) in self._masters:
            raise HsmError(f"{self.name}: already holds {unit}/{role} version {version} (a key is never replaced)")
        direct = unit in DIRECT_UNITS if direct is None else direct
        store_master(self._token, self.name, self.label(unit, role), unit, role, key, version, direct)
        self._scan()
        return next(i for i in self.keys() if (i.unit, i.name, i.version) == (unit, role, version))

    def close(self) -> None:
        """Destroy the per-card session objects (closing the session) and unload the module."""
        self._handles.clear()
        self._token.close()

