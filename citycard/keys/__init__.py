"""Key sources: where master keys live and how per-card keys are derived from them.

A :class:`KeySource` holds the master keys of one or more service units and derives
per-card keys behind its interface (PBOC diversification, SPEC §2.4), so a hardware
security module can replace a file later without the planner noticing.
:class:`KeyRing` puts several sources together (custody: one source per unit) and
answers for each (unit, role) from the one source that holds it.

Sources: :class:`citycard.keys.keystore.Keystore` (encrypted at rest),
:class:`citycard.keys.demo.DemoKeyFile` (clear TEST keys for the demo and tests),
:class:`citycard.keys.pkcs11.Pkcs11Source` (a hardware security module: the masters never
leave it).  :func:`open_source` opens one from its name (``--keys`` on the command line).

A file source derives per-card keys as ``bytes``; an HSM derives them inside and returns
:class:`citycard.keys.handles.KeyHandle` objects, which ``citycard.crypto`` uses as it uses
bytes (see :mod:`citycard.keys.handles`).  Only a handle derived with ``export=True`` gives
its value (the planner asks so for keys it writes to a card, as the profile allows).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import InputError
from .handles import Key
from .source import PKCS11_PREFIX, KeyError_, KeySource

__all__ = ["Key", "KeyError_", "KeyRing", "KeySource", "PKCS11_PREFIX", "TestKeysRefused", "clear_masters",
           "is_keystore_source", "open_ring", "open_source", "check_test_keys"]

log = logging.getLogger("citycard.keys")


class TestKeysRefused(KeyError_):
    """TEST KEYS offered where production is declared (a profile or a keystore)."""

    __test__ = False        # not a pytest test class


class KeyRing:
    """Several key sources; each (unit, role) must be held by exactly one of them."""

    def __init__(self, sources: Iterable[KeySource]) -> None:
        self.sources = list(sources)
        self._where: dict[tuple[str, str], KeySource] = {}
        for src in self.sources:
            for entry in src.entries():
                other = self._where.get(entry)
                if other is not None:
                    raise KeyError_(f"key {entry[0]}/{entry[1]} is in two key sources ({other.name}, {src.name})")
                self._where[entry] = src
        self._cache: dict[tuple[str, str, bytes | None, int], bytes] = {}

    @property
    def name(self) -> str:
        return " + ".join(s.name for s in self.sources)

    def entries(self) -> set[tuple[str, str]]:
        return set(self._where)

    def has(self, unit: str, role: str) -> bool:
        return (unit, role) in self._where

    def source_of(self, unit: str, role: str) -> KeySource:
        src = self._where.get((unit, role))
        if src is None:
            raise KeyError_(f"no key source holds {unit}/{role} (sources: {self.name or 'none'})")
        return src

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1, *,
               version: int | None = None, export: bool = False, alg: str = "des", on: str | None = None,
               serving: bool = False) -> Key:
        """The per-card key: ``bytes`` from a file source, a key handle from an HSM.  ``export``
        asks an HSM for a handle that also gives its value (a key to be written to a card);
        file sources hold every key in this process anyway.  ``alg`` ``sm4``: an SM4 key
        (docs/sm4.md), passed to the source only then (so 3DES calls are as before)."""
        src = self.source_of(unit, role)
        kw: dict[str, Any] = {}
        if version is not None:
            kw["version"] = version
        if alg != "des":
            kw["alg"] = alg
        if export and getattr(src, "holds_keys_inside", False):
            kw["export"] = True
        if hasattr(src, "in_force"):     # sources with a key inventory (docs/keys.md)
            if on is not None:
                kw["on"] = on
            if serving:
                kw["serving"] = True
        return src.derive(unit, role, factor, levels, **kw)

    def version_in_force(self, unit: str, role: str) -> int:
        """The version of ``unit/role`` that issues new cards: the key inventory's choice in a
        keystore (docs/keys.md), the newest in a token, 1 in the demo key file."""
        src = self.source_of(unit, role)
        pick = getattr(src, "version_in_force", None)
        if pick is not None:
            return int(pick(unit, role))
        versions = getattr(src, "versions", None)
        held = versions(unit, role) if versions is not None else []
        return max(held) if held else 1

    @property
    def in_hsm(self) -> bool:
        """Whether any source keeps its keys inside (a hardware security module)."""
        return any(getattr(s, "holds_keys_inside", False) for s in self.sources)

    @property
    def test_key_sources(self) -> list[str]:
        """The names of the sources holding published TEST KEYS: the clear demo key file, a
        keystore made by ``keys demo`` (header ``purpose = "test"``), an HSM token whose
        objects carry the test-key marker."""
        return [s.name for s in self.sources if getattr(s, "test_keys", False)]

    @property
    def production_sources(self) -> list[str]:
        """The names of the sources declared for production (a keystore ``purpose = "production"``)."""
        return [s.name for s in self.sources if getattr(s, "production", False)]

    def kcv(self, unit: str, role: str, *, version: int | None = None) -> bytes:
        src = self.source_of(unit, role)
        return src.kcv(unit, role) if version is None else src.kcv(unit, role, version=version)

    def close(self) -> None:
        """Close the sources that can be closed (a keystore forgets its decrypted keys)."""
        self.close_all(self.sources)

    @staticmethod
    def close_all(sources: Iterable[KeySource]) -> None:
        for src in sources:
            close = getattr(src, "close", None)
            if callable(close):
                close()


def check_test_keys(ring: KeyRing, *, production: bool = False, what: str = "cards") -> str | None:
    """Decide about TEST KEYS before they are used on ``what`` (issue 17 item 5).

    None when no source of ``ring`` holds test keys; else the warning for the caller to show
    (and an INFO log line on ``citycard.keys``, the record of the use).  Refused with :class:`TestKeysRefused` when
    production is declared: by the profile (``production``, ``[profile] production = true``)
    or by a keystore of the ring (``purpose = "production"``)."""
    tests = ring.test_key_sources
    if not tests:
        return None
    names = ", ".join(tests)
    if production:
        raise TestKeysRefused(f"{names}: TEST KEYS (published demo keys) refused: the profile is marked "
                              "production ([profile] production = true)")
    prod = ring.production_sources
    if prod:
        raise TestKeysRefused(f"{names}: TEST KEYS (published demo keys) refused next to the production "
                              f"keystore {', '.join(prod)}")
    # the log line of every use, at INFO: the caller shows the warning returned (the CLI prints it
    # once on stderr; a WARNING here printed it a second time); `--log-level info` shows both
    log.info("TEST KEYS in use for %s: %s", what, names)
    verb = "hold" if len(tests) > 1 else "holds"
    return f"{names} {verb} published TEST KEYS: anyone can read them; never use them for real {what}"


def is_keystore_source(source: str) -> bool:
    """True when ``source`` names an encrypted keystore (so it needs a passphrase)."""
    return not (source.startswith(PKCS11_PREFIX) or source.lower().endswith(".toml"))


def open_source(source: str, passphrase: Callable[..., str] | str | None = None, *,
                pin: Callable[[str], str] | str | None = None) -> KeySource:
    """Open one key source by name:

    - ``*.toml``: the clear demo key file (TEST KEYS ONLY);
    - ``pkcs11:...``: a hardware security module (RFC 7512 URI, :mod:`citycard.keys.pkcs11`);
      ``pin`` is its PIN or a function of the source's name asked when the URI, the
      environment (``CITYCARD_HSM_PIN``) give none;
    - anything else: an encrypted keystore file; ``passphrase`` is the passphrase or a
      function of the keystore header (see :meth:`Keystore.open`), called once the file is
      known to be a keystore.
    """
    if source.startswith(PKCS11_PREFIX):
        # the URI is never echoed whole: it names where the PIN comes from
        from .pkcs11 import Pkcs11Source

        return Pkcs11Source.open(source, pin)
    if source.lower().endswith(".toml"):
        from .demo import DemoKeyFile

        return DemoKeyFile(source)
    from .keystore import Keystore

    if passphrase is None:
        raise KeyError_(f"{source}: a keystore needs a passphrase")
    return Keystore.open(Path(source), passphrase)


Passphrase = Callable[..., str] | str


def open_ring(sources: Iterable[str], passphrases: Iterable[Passphrase | None] = (), *,
              pin: Callable[[str], str] | str | None = None) -> KeyRing:
    """A :class:`KeyRing` over the sources named in ``sources`` (see :func:`open_source`).

    ``passphrases`` gives one passphrase (or function of the keystore header) per keystore
    source, in order; ``pin`` serves every HSM source.  When one source fails to open, the
    ones already open are closed (a keystore forgets its keys) before the error goes on."""
    names = list(sources)
    if not names:
        raise KeyError_("no key source given")
    given = iter(passphrases)
    opened: list[KeySource] = []
    try:
        for name in names:
            if is_keystore_source(name):
                opened.append(open_source(name, next(given, None)))
            else:
                opened.append(open_source(name, pin=pin))
        return KeyRing(opened)
    except BaseException:
        KeyRing.close_all(opened)
        raise


MasterId = tuple[str, str, int]     # (unit, role, version)


def clear_masters(source: str, passphrase: Passphrase | None = None, *,
                  unit: str | None = None) -> list[tuple[MasterId, bytes]]:
    """Every master of a file source as ((unit, role, version), key), to load them into a
    hardware security module: the demo key file (a ``.toml``: TEST KEYS, version 1) or a
    keystore (opened with ``passphrase``; 2-key 3DES masters only, as PKCS#11 tokens here
    hold).  ``unit`` keeps one unit's keys.  The keys are bytes: the caller drops them once
    stored."""
    out: list[tuple[MasterId, bytes]] = []
    if source.lower().endswith(".toml"):
        from .demo import DemoKeyFile

        for (u, r), key in sorted(DemoKeyFile(source).masters()):
            out.append(((u, r, 1), key))
    else:
        from .keystore import Keystore

        if passphrase is None:
            raise KeyError_(f"{source}: a keystore needs a passphrase")
        store = Keystore.open(Path(source), passphrase)
        try:
            for info in store.keys():
                if info.algorithm != "3des":
                    raise InputError(f"{source}: {info.label} is {info.algorithm}: PKCS#11 tokens here hold 2-key "
                                     "3DES masters only; nothing stored")
                out.append(((info.unit, info.name, info.version),
                            store.derive(info.unit, info.name, None, version=info.version)))
        finally:
            store.close()
    if unit is not None:
        out = [m for m in out if m[0][0] == unit]
        if not out:
            raise InputError(f"{source} holds no keys of unit {unit!r}")
    return out
