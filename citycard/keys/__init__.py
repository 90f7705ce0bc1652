"""Key sources: where master keys live and how per-card keys are derived from them.

A :class:`KeySource` holds the master keys of one or more service units and derives
per-card keys behind its interface (PBOC diversification, SPEC §2.4), so a hardware
security module can replace a file later without the planner noticing.
:class:`KeyRing` puts several sources together (custody: one source per unit) and
answers for each (unit, role) from the one source that holds it.

Sources: :class:`citycard.keys.keystore.Keystore` (encrypted at rest, the real thing),
:class:`citycard.keys.demo.DemoKeyFile` (clear TEST keys for the demo and tests).
:func:`open_source` opens one from its name (``--keys`` on the command line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

from ..errors import CitycardError


class KeyError_(CitycardError):
    """A key source problem; never carries a key value."""


@runtime_checkable
class KeySource(Protocol):
    name: str

    def entries(self) -> set[tuple[str, str]]:
        """The (unit, role) pairs this source holds."""
        ...

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1, *,
               version: int | None = None) -> bytes:
        """The per-card key: the master diversified with ``factor`` (rightmost 8 bytes per
        level), or the master itself when ``factor`` is None (transport keys).  ``version``
        picks a key version; None means the newest the source holds."""
        ...

    def kcv(self, unit: str, role: str, *, version: int | None = None) -> bytes:
        """The master's key check value (3 bytes); never the key."""
        ...


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
               version: int | None = None) -> bytes:
        src = self.source_of(unit, role)
        if version is None:
            return src.derive(unit, role, factor, levels)
        return src.derive(unit, role, factor, levels, version=version)

    def kcv(self, unit: str, role: str, *, version: int | None = None) -> bytes:
        src = self.source_of(unit, role)
        return src.kcv(unit, role) if version is None else src.kcv(unit, role, version=version)

    def close(self) -> None:
        """Close the sources that can be closed (a keystore forgets its decrypted keys)."""
        for src in self.sources:
            close = getattr(src, "close", None)
            if callable(close):
                close()


PKCS11_PREFIX = "pkcs11:"


def is_keystore_source(source: str) -> bool:
    """True when ``source`` names an encrypted keystore (so it needs a passphrase)."""
    return not (source.startswith(PKCS11_PREFIX) or source.lower().endswith(".toml"))


def open_source(source: str, passphrase: Callable[..., str] | str | None = None) -> KeySource:
    """Open one key source by name:

    - ``*.toml``: the clear demo key file (TEST KEYS ONLY);
    - ``pkcs11:...``: a hardware security module (not supported yet);
    - anything else: an encrypted keystore file; ``passphrase`` is the passphrase or a
      function of the keystore header (see :meth:`Keystore.open`), called once the file is
      known to be a keystore.
    """
    if source.startswith(PKCS11_PREFIX):
        # the URI is not echoed: a PKCS#11 URI may carry a PIN (pin-value=...)
        raise KeyError_("pkcs11: key sources (hardware security modules) are not supported yet")
    if source.lower().endswith(".toml"):
        from .demo import DemoKeyFile

        return DemoKeyFile(source)
    from .keystore import Keystore

    if passphrase is None:
        raise KeyError_(f"{source}: a keystore needs a passphrase")
    return Keystore.open(Path(source), passphrase)
