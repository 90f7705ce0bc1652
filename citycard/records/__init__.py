"""Record layouts of the city-card files: what each byte of a record means.

Each layout declares its fields and its own encode/decode vectors beside it (as
pySim's file classes do); ``tests/test_records.py`` round-trips every vector of
every layout both ways.

* :class:`Layout` — a fixed-size binary record or file content, built with
  :mod:`construct`: ``encode(values, where=...) -> bytes``, ``decode(bytes) -> dict``.
* :class:`TlvLayout` — a variable-record file, one ``tag len value`` record per
  field: ``encode(values) -> list[bytes]``, ``decode(records) -> dict``.
* :data:`LAYOUTS` by name, and :func:`get` with a located error.

Values are JSON-able dicts: ``int`` for int fields, ``str`` for everything else
(digits for BCD, dates and times; upper-case hex; text).  See
:mod:`citycard.records.kinds` for each kind's text form and defaults.
"""

from __future__ import annotations

from citycard.errors import InputError

from . import mohurd, pboc, psam, services, social
from .kinds import KINDS
from .layout import Field, Layout, TlvLayout

__all__ = ["KINDS", "LAYOUTS", "Field", "Layout", "TlvLayout", "get"]

LAYOUTS: dict[str, Layout | TlvLayout] = {
    layout.name: layout
    for layout in (*pboc.LAYOUTS, *mohurd.LAYOUTS, *social.LAYOUTS, *services.LAYOUTS, *psam.LAYOUTS)
}


def get(name: str, *, where: str = "") -> Layout | TlvLayout:
    """The layout called ``name``; an :class:`InputError` naming ``where`` if none is."""
    layout = LAYOUTS.get(name)
    if layout is None:
        prefix = f"{where}: " if where else ""
        raise InputError(f"{prefix}unknown record layout {name!r} (known: {', '.join(sorted(LAYOUTS))})")
    return layout
