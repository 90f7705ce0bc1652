"""What every key source is: the :class:`KeySource` protocol and its error type.

Kept apart from :mod:`citycard.keys` (which opens sources by name and so imports every
kind of source) so that the sources themselves depend on this module only: no import
cycle between the package and its sources.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..errors import CitycardError
from .handles import Key

#: how a ``pkcs11:`` key source (an RFC 7512 URI) starts
PKCS11_PREFIX = "pkcs11:"


class KeyError_(CitycardError):
    """A key source problem; never carries a key value."""


@runtime_checkable
class KeySource(Protocol):
    """Master keys of one or more service units, and per-card keys derived from them."""

    name: str

    def entries(self) -> set[tuple[str, str]]:
        """The (unit, role) pairs this source holds."""
        ...

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1, *,
               version: int | None = None) -> Key:
        """The per-card key: the master diversified with ``factor`` (rightmost 8 bytes per
        level), or the master itself when ``factor`` is None (transport keys).  ``version``
        picks a key version; None means the newest the source holds.  ``bytes``, or a
        :class:`~citycard.keys.handles.KeyHandle` from a source that keeps its keys inside
        (``holds_keys_inside = True``; its ``derive`` also takes ``export``)."""
        ...

    def kcv(self, unit: str, role: str, *, version: int | None = None) -> bytes:
        """The master's key check value (3 bytes); never the key."""
        ...
