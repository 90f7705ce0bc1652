"""Record layouts: fixed-size binary records (:class:`Layout`) and TLV record files
(:class:`TlvLayout`), each declaring its own encode/decode vectors (the pySim way;
``tests/test_records.py`` round-trips every vector of every layout).

A :class:`Layout` is a :mod:`construct` ``Struct`` of ``Bytes``/``Int*ub`` fields
wrapped in :class:`~citycard.records.kinds.FieldAdapter`; the struct is compiled
on first use and cached.  Values are plain dicts in the text form of each field's
kind (see :mod:`citycard.records.kinds`), JSON-able both ways.

Errors are :class:`~citycard.errors.InputError` naming where the values came from
and the field::

    profile.toml apps.transit.files.0015.data.start_date: '2026-13-01' is not a date YYYYMMDD

When no ``where`` is given, the layout's name stands in (``pboc_ef0015.start_date: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import construct as cs

from citycard.errors import InputError

from .kinds import KINDS, FieldAdapter, FieldProblem, subcon_for

__all__ = ["Field", "Layout", "TlvLayout"]


@dataclass(frozen=True)
class Field:
    """One field of a record layout.

    ``kind`` is one of ``int bcd date time datetime hex ascii gbk``; ``length`` is
    in bytes.  ``tag`` is set for the fields of a :class:`TlvLayout` (the record's
    tag byte).  ``default`` replaces the kind's default (zeros / empty text) for a
    value left out of :meth:`Layout.encode`; ``choices``, when not empty, lists the
    only values encode accepts (decode reports whatever the card holds).
    """

    name: str
    kind: str
    length: int
    doc: str
    tag: int | None = None
    default: object = None
    choices: tuple = ()

    def __post_init__(self) -> None:
        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"field {self.name}: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.length < 1 or (kind.fixed_length is not None and self.length != kind.fixed_length):
            raise ValueError(f"field {self.name}: bad length {self.length} for kind {self.kind}")
        if self.tag is not None and not 0 < self.tag < 0xFF:
            raise ValueError(f"field {self.name}: bad tag {self.tag}")

    @property
    def default_value(self) -> object:
        """The value encode uses when this field is left out."""
        return self.default if self.default is not None else KINDS[self.kind].default(self.length)

    def encode_value(self, value: object) -> bytes:
        """``value`` as exactly ``length`` bytes; raises :class:`FieldProblem`."""
        try:
            self.check(value)
            return KINDS[self.kind].encode(value, self.length)
        except FieldProblem as problem:
            problem.field = self.name
            raise

    def decode_value(self, data: bytes) -> object:
        """The text form of ``data`` (``length`` bytes); raises :class:`FieldProblem`."""
        try:
            return KINDS[self.kind].decode(data)
        except FieldProblem as problem:
            problem.field = self.name
            raise

    def check(self, value: object) -> None:
        """Refuse a value outside ``choices`` (no-op when there are none)."""
        if self.choices and value not in self.choices:
            allowed = ", ".join(repr(c) for c in self.choices)
            raise FieldProblem(f"{value!r} is not one of {allowed}")


def _locate(where: str, layout_name: str) -> str:
    return where or layout_name


def _unknown(loc: str, layout_name: str, names: Sequence[str], values: Mapping) -> InputError | None:
    for key in values:
        if key not in names:
            known = ", ".join(names)
            return InputError(f"{loc}.{key}: unknown field of record layout {layout_name} (known: {known})")
    return None


def _check_mapping(loc: str, values: object) -> None:
    if not isinstance(values, Mapping):
        raise InputError(f"{loc}: expected a table of field values, got {type(values).__name__}")


def _check_fields(name: str, fields: tuple[Field, ...]) -> None:
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise ValueError(f"layout {name}: duplicate field names")


@dataclass(frozen=True, eq=False)
class Layout:
    """A fixed-size binary record or file content of ``size`` bytes.

    ``source`` names the SPEC section the layout comes from, or ``"citycard"`` for
    layouts this project defines.  ``vectors`` pairs decoded values (every field)
    with their encoding.
    """

    name: str
    title: str
    size: int
    fields: tuple[Field, ...]
    source: str
    vectors: tuple[tuple[dict, bytes], ...] = ()

    def __post_init__(self) -> None:
        _check_fields(self.name, self.fields)
        total = sum(f.length for f in self.fields)
        if total != self.size:
            raise ValueError(f"layout {self.name}: fields add up to {total} bytes, not {self.size}")
        if any(f.tag is not None for f in self.fields):
            raise ValueError(f"layout {self.name}: tagged field in a fixed layout")

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def _defaults(self) -> dict[str, object]:
        return {f.name: f.default_value for f in self.fields}

    @property
    def defaults(self) -> dict[str, object]:
        """Every field's default value (what ``encode({})`` writes); a fresh dict."""
        return dict(self._defaults)

    @cached_property
    def construct(self) -> cs.Struct:
        """The :mod:`construct` ``Struct`` of this layout (interpreted)."""
        parts = []
        for f in self.fields:
            check = f.check if f.choices else None
            adapter = FieldAdapter(subcon_for(f.kind, f.length), KINDS[f.kind], f.name, f.length, check)
            parts.append(f.name / adapter)
        return cs.Struct(*parts)

    @cached_property
    def struct(self) -> cs.Construct:
        """The compiled form of :attr:`construct`, used by encode and decode."""
        return self.construct.compile()

    def offset(self, name: str) -> int:
        """Byte offset of field ``name`` in the record."""
        pos = 0
        for f in self.fields:
            if f.name == name:
                return pos
            pos += f.length
        raise KeyError(name)

    def encode(self, values: Mapping[str, object], *, where: str = "") -> bytes:
        """The record bytes for ``values``; missing fields take their default."""
        defaults = self._defaults
        if values.__class__ is not dict:
            _check_mapping(where or self.name, values)
        if not defaults.keys() >= values.keys():
            raise _unknown(where or self.name, self.name, self.field_names, values)  # type: ignore[misc]
        merged = {**defaults, **values}
        try:
            return self.struct.build(merged)
        except FieldProblem as problem:
            raise InputError(f"{where or self.name}.{problem.field}: {problem.message}") from None

    def decode(self, data: bytes, *, where: str = "") -> dict[str, object]:
        """The text form of every field of ``data`` (exactly ``size`` bytes)."""
        loc = where or self.name
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(f"{loc}: expected bytes, got {type(data).__name__}")
        if len(data) != self.size:
            raise InputError(f"{loc}: {len(data)} bytes, expected {self.size}")
        try:
            parsed = self.struct.parse(bytes(data))
        except FieldProblem as problem:
            raise InputError(f"{loc}.{problem.field}: {problem.message}") from None
        return {name: parsed[name] for name in self.field_names}


@dataclass(frozen=True, eq=False)
class TlvLayout:
    """A variable-record file holding one record per tag: ``tag(1) len(1) value``.

    Every field has a ``tag`` and is written with its full ``length`` (text padded
    with ``00``).  Decode also accepts a shorter value for ascii/gbk fields, and
    ``00``/``FF`` padding after a record's value (fixed-size record reads).
    """

    name: str
    title: str
    fields: tuple[Field, ...]
    source: str
    vectors: tuple[tuple[dict, list[bytes]], ...] = ()

    def __post_init__(self) -> None:
        _check_fields(self.name, self.fields)
        tags = [f.tag for f in self.fields]
        if None in tags or len(set(tags)) != len(tags):
            raise ValueError(f"layout {self.name}: every field needs its own tag")
        if any(f.length > 0xFF for f in self.fields):
            raise ValueError(f"layout {self.name}: value longer than 255 bytes")

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def _in_tag_order(self) -> tuple[Field, ...]:
        return tuple(sorted(self.fields, key=lambda f: f.tag))  # type: ignore[arg-type,return-value]

    @cached_property
    def _by_tag(self) -> dict[int, Field]:
        return {f.tag: f for f in self.fields}  # type: ignore[misc]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def encode(self, values: Mapping[str, object], *, where: str = "") -> list[bytes]:
        """One record per field present in ``values`` (or with a default), in tag order."""
        loc = where or self.name
        _check_mapping(loc, values)
        error = _unknown(loc, self.name, self.field_names, values)
        if error is not None:
            raise error
        records = []
        for f in self._in_tag_order:
            if f.name in values:
                value = values[f.name]
            elif f.default is not None:
                value = f.default
            else:
                continue
            try:
                data = f.encode_value(value)
            except FieldProblem as problem:
                raise InputError(f"{loc}.{problem.field}: {problem.message}") from None
            records.append(bytes((f.tag, f.length)) + data)  # type: ignore[arg-type]
        return records

    def decode(self, records: Sequence[bytes], *, where: str = "") -> dict[str, object]:
        """The text form of each record's field, keyed by field name, in tag order."""
        loc = where or self.name
        if isinstance(records, (bytes, bytearray, memoryview, str)) or not isinstance(records, Sequence):
            raise InputError(f"{loc}: expected a list of records, got {type(records).__name__}")
        found: dict[int, object] = {}
        for number, record in enumerate(records, 1):
            at = f"{loc} record {number}"
            if not isinstance(record, (bytes, bytearray, memoryview)):
                raise InputError(f"{at}: expected bytes, got {type(record).__name__}")
            record = bytes(record)
            if len(record) < 2:
                raise InputError(f"{at}: {len(record)} bytes, too short for a tag and a length")
            tag, size = record[0], record[1]
            f = self._by_tag.get(tag)
            if f is None:
                known = ", ".join(f"{t:02X}" for t in sorted(self._by_tag))
                raise InputError(f"{at}: unknown tag {tag:02X} (known: {known})")
            if tag in found:
                raise InputError(f"{at}: tag {tag:02X} ({f.name}) appears twice")
            if len(record) < 2 + size or record[2 + size :].strip(b"\x00\xff"):
                raise InputError(f"{at}: length byte {size:02X} does not match the {len(record) - 2} value bytes")
            value = record[2 : 2 + size]
            if size != f.length and not (f.kind in ("ascii", "gbk") and size < f.length):
                raise InputError(f"{loc}.{f.name}: {size} bytes, expected {f.length}")
            try:
                found[tag] = f.decode_value(value.ljust(f.length, b"\x00"))
            except FieldProblem as problem:
                raise InputError(f"{loc}.{problem.field}: {problem.message}") from None
        return {self._by_tag[t].name: found[t] for t in sorted(found)}
