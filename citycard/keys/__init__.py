"""Key sources: where master keys live and how per-card keys are derived from them.

A :class:`KeySource` holds the master keys of one or more service units and derives
per-card keys behind its interface (PBOC diversification, SPEC §2.4), so a hardware
security module can replace a file later without the planner noticing.
:class:`KeyRing` puts several sources together (custody: one source per unit) and
answers for each (unit, role) from the one source that holds it.
"""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

from ..errors import CitycardError


class KeyError_(CitycardError):
    """A key source problem; never carries a key value."""


@runtime_checkable
class KeySource(Protocol):
    name: str

    def entries(self) -> set[tuple[str, str]]:
        """The (unit, role) pairs this source holds."""
        ...

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1) -> bytes:
        """The per-card key: the master diversified with ``factor`` (rightmost 8 bytes per
        level), or the master itself when ``factor`` is None (transport keys)."""
        ...

    def kcv(self, unit: str, role: str) -> bytes:
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

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1) -> bytes:
        return self.source_of(unit, role).derive(unit, role, factor, levels)

    def kcv(self, unit: str, role: str) -> bytes:
        return self.source_of(unit, role).kcv(unit, role)
