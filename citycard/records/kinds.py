"""Field kinds of record layouts: their text form and their bytes.

Every kind is a pair of pure functions, ``encode(value, length) -> bytes`` and
``decode(data) -> value``, and a :mod:`construct` adapter that applies them to a
``Bytes``/``Int*ub`` sub-construct inside a layout's ``Struct``.

Text forms (what :meth:`Layout.decode` returns and :meth:`Layout.encode` accepts):

========== ================================================== ========================
kind       text form                                          unset / default
========== ================================================== ========================
int        ``int``, big-endian unsigned                       ``0``
bcd        ``str`` of exactly 2·length digits (encode also    all ``0`` digits
           takes fewer digits, left-padded with ``0``, or an
           ``int``)
date       ``"YYYYMMDD"``, a real calendar date (BCD, 4 bytes) ``"00000000"``
time       ``"hhmmss"`` (BCD, 3 bytes)                        ``"000000"``
datetime   ``"YYYYMMDDhhmmss"`` (BCD, 7 bytes)                ``"00000000000000"``
hex        upper-case hex ``str`` of exactly 2·length digits  all ``00``
           (encode also takes lower case, spaces between
           bytes, or ``bytes``)
ascii      printable ASCII ``str``, padded with ``00``;       ``""``
           decode strips trailing ``00`` and spaces
gbk        Chinese text in GBK (GB 18030's two-byte subset),  ``""``
           padded with ``00``; decode strips trailing ``00``
           and spaces
========== ================================================== ========================

Encode also takes an ``int`` for date/time/datetime (``20240411``), zero-padded.
Errors are raised as :class:`FieldProblem` without location; the layout that
called adds where and which field (see :mod:`citycard.records.layout`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from functools import lru_cache

import construct as cs

__all__ = ["KINDS", "Kind", "FieldProblem", "FieldAdapter", "subcon_for"]


class FieldProblem(Exception):
    """A value does not fit its field. ``field`` is filled in by the adapter."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.field: str | None = None


def _show(value: object) -> str:
    """A value for an error message, cut short if long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_HEX = frozenset("0123456789abcdefABCDEF")


# --------------------------------------------------------------------------- int


def _int_check(value: object, length: int) -> int:
    if value.__class__ is not int:
        if not isinstance(value, int) or isinstance(value, bool):  # IntEnum yes, True no
            raise FieldProblem(f"{_show(value)} is not an integer")
        value = int(value)
    if not 0 <= value < 1 << (8 * length):  # type: ignore[operator]
        raise FieldProblem(f"{value} is out of range 0..{(1 << (8 * length)) - 1}")
    return value  # type: ignore[return-value]


def _int_encode(value: object, length: int) -> bytes:
    if value.__class__ is int and 0 <= value < 1 << (8 * length):  # type: ignore[operator]
        return value.to_bytes(length, "big")  # type: ignore[attr-defined]
    return _int_check(value, length).to_bytes(length, "big")


def _int_decode(data: bytes) -> int:
    return int.from_bytes(data, "big")


# --------------------------------------------------------------------------- bcd


def _bcd_digits(data: bytes) -> str:
    text = data.hex()  # each digit 0-9 is its own hex nibble
    if not text.isdigit():
        raise FieldProblem(f"{data.hex().upper()} is not packed BCD (a nibble above 9)")
    return text


def _bcd_encode(value: object, length: int) -> bytes:
    width = 2 * length
    text = value
    if value.__class__ is int:
        if value < 0:  # type: ignore[operator]
            raise FieldProblem(f"{value} is negative, not BCD digits")
        text = str(value)
    elif value.__class__ is not str:
        raise FieldProblem(f"{_show(value)} is not a string of decimal digits")
    if not (text.isascii() and text.isdigit()):  # type: ignore[union-attr]
        raise FieldProblem(f"{_show(value)} is not decimal digits")
    if len(text) != width:  # type: ignore[arg-type]
        if len(text) > width:  # type: ignore[arg-type]
            raise FieldProblem(f"{_show(value)} has {len(text)} digits, more than {width}")  # type: ignore[arg-type]
        text = text.rjust(width, "0")  # type: ignore[union-attr]
    return bytes.fromhex(text)  # type: ignore[arg-type]


def _bcd_decode(data: bytes) -> str:
    return _bcd_digits(data)


# --------------------------------------------------------------------------- date/time


def _valid_date(text: str) -> bool:
    try:
        _dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return True


def _valid_time(text: str) -> bool:
    return int(text[0:2]) < 24 and int(text[2:4]) < 60 and int(text[4:6]) < 60


def _timestamp_kind(width: int, what: str, valid: Callable[[str], bool]):
    """Encode/decode for BCD date-like fields of ``width`` digits; all zeros = unset."""
    zeros = "0" * width

    @lru_cache(maxsize=4096)
    def ok(text: str) -> bool:  # text is ``width`` ASCII digits
        return text == zeros or valid(text)

    def encode(value: object, length: int) -> bytes:
        text = value
        if value.__class__ is int and 0 <= value < 10**width:  # type: ignore[operator]
            text = str(value).rjust(width, "0")
        if text.__class__ is not str or len(text) != width or not (text.isascii() and text.isdigit()) or not ok(text):
            raise FieldProblem(f"{_show(value)} is not {what}")
        return bytes.fromhex(text)

    def decode(data: bytes) -> str:
        text = _bcd_digits(data)
        if not ok(text):
            raise FieldProblem(f"{text} is not {what}")
        return text

    return encode, decode


_date_encode, _date_decode = _timestamp_kind(8, "a date YYYYMMDD", _valid_date)
_time_encode, _time_decode = _timestamp_kind(6, "a time hhmmss", _valid_time)
_datetime_encode, _datetime_decode = _timestamp_kind(
    14, "a date and time YYYYMMDDhhmmss", lambda t: _valid_date(t[:8]) and _valid_time(t[8:])
)


# --------------------------------------------------------------------------- hex


def _hex_encode(value: object, length: int) -> bytes:
    if value.__class__ is str:
        compact = value.replace(" ", "") if " " in value else value  # type: ignore[operator,union-attr]
        if len(compact) != 2 * length or not _HEX.issuperset(compact):
            if not _HEX.issuperset(compact):
                raise FieldProblem(f"{_show(value)} is not hex")
            raise FieldProblem(f"{_show(value)} has {len(compact)} hex digits, expected {2 * length}")
        return bytes.fromhex(compact)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) != length:
            raise FieldProblem(f"{len(data)} bytes, expected {length}")
        return data
    raise FieldProblem(f"{_show(value)} is not a hex string")


def _hex_decode(data: bytes) -> str:
    return data.hex().upper()


# --------------------------------------------------------------------------- text


_PAD_CHARS = b"\x00 "


def _text_value(value: object) -> str:
    if not isinstance(value, str):
        raise FieldProblem(f"{_show(value)} is not text")
    return value


def _ascii_encode(value: object, length: int) -> bytes:
    text = _text_value(value)
    if not text.isascii() or not text.isprintable():
        raise FieldProblem(f"{_show(value)} is not printable ASCII")
    if len(text) > length:
        raise FieldProblem(f"{_show(value)} is {len(text)} characters, longer than {length}")
    return text.encode("ascii").ljust(length, b"\x00")


def _ascii_decode(data: bytes) -> str:
    raw = data.rstrip(_PAD_CHARS)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise FieldProblem(f"{data.hex().upper()} is not ASCII text") from None
    if not text.isprintable():
        raise FieldProblem(f"{data.hex().upper()} is not printable ASCII text")
    return text


def _gbk_encode(value: object, length: int) -> bytes:
    text = _text_value(value)
    if not text.isprintable():
        raise FieldProblem(f"{_show(value)} contains non-printable characters")
    try:
        data = text.encode("gbk")
    except UnicodeEncodeError as exc:
        raise FieldProblem(f"{_show(value)}: {text[exc.start]!r} cannot be encoded in GBK") from None
    if len(data) > length:
        raise FieldProblem(f"{_show(value)} is {len(data)} bytes in GBK, longer than {length}")
    return data.ljust(length, b"\x00")


def _gbk_decode(data: bytes) -> str:
    raw = data.rstrip(_PAD_CHARS)
    try:
        text = raw.decode("gbk")
    except UnicodeDecodeError:
        raise FieldProblem(f"{data.hex().upper()} is not GBK text") from None
    if not text.isprintable():
        raise FieldProblem(f"{data.hex().upper()} is not printable GBK text")
    return text


# --------------------------------------------------------------------------- registry


class Kind:
    """One field kind: name, codec functions, and the default text form."""

    __slots__ = ("name", "encode", "decode", "_default", "fixed_length")

    def __init__(self, name, encode, decode, default, fixed_length=None):
        self.name = name
        self.encode: Callable[[object, int], bytes] = encode
        self.decode: Callable[[bytes], object] = decode
        self._default = default
        self.fixed_length: int | None = fixed_length

    def default(self, length: int) -> object:
        return self._default(length)


KINDS: dict[str, Kind] = {
    "int": Kind("int", _int_encode, _int_decode, lambda n: 0),
    "bcd": Kind("bcd", _bcd_encode, _bcd_decode, lambda n: "0" * (2 * n)),
    "date": Kind("date", _date_encode, _date_decode, lambda n: "00000000", 4),
    "time": Kind("time", _time_encode, _time_decode, lambda n: "000000", 3),
    "datetime": Kind("datetime", _datetime_encode, _datetime_decode, lambda n: "0" * 14, 7),
    "hex": Kind("hex", _hex_encode, _hex_decode, lambda n: "00" * n),
    "ascii": Kind("ascii", _ascii_encode, _ascii_decode, lambda n: ""),
    "gbk": Kind("gbk", _gbk_encode, _gbk_decode, lambda n: ""),
}


# --------------------------------------------------------------------------- construct glue

_INTS = {1: cs.Int8ub, 2: cs.Int16ub, 3: cs.Int24ub, 4: cs.Int32ub, 8: cs.Int64ub}


class FieldAdapter(cs.Adapter):
    """Applies a :class:`Kind` to a sub-construct; problems carry the field name.

    For ``int`` the sub-construct is an ``Int*ub`` and the adapter only checks
    type and range; for every other kind it is ``Bytes(length)``.
    """

    def __init__(self, subcon, kind: Kind, field_name: str, length: int, check=None):
        super().__init__(subcon)
        self.kind = kind
        self.field_name = field_name
        self.length = length
        self.check = check  # extra check of the value to encode, raises FieldProblem
        self._is_int = kind.name == "int"

    def _encode(self, obj, context, path):
        try:
            if self.check is not None:
                self.check(obj)
            if self._is_int:
                return _int_check(obj, self.length)
            return self.kind.encode(obj, self.length)
        except FieldProblem as problem:
            problem.field = self.field_name
            raise

    def _decode(self, obj, context, path):
        try:
            return obj if self._is_int else self.kind.decode(obj)
        except FieldProblem as problem:
            problem.field = self.field_name
            raise

    # Compiled structs call these directly (one call per field instead of the
    # Adapter -> sub-construct chain); the interpreted path above does the same.

    def to_bytes(self, obj) -> bytes:
        """``obj`` as the field's bytes (compiled build)."""
        try:
            if self.check is not None:
                self.check(obj)
            return self.kind.encode(obj, self.length)
        except FieldProblem as problem:
            problem.field = self.field_name
            raise

    def from_bytes(self, data: bytes):
        """The text form of the field's bytes (compiled parse)."""
        try:
            return self.kind.decode(data)
        except FieldProblem as problem:
            problem.field = self.field_name
            raise

    def _emitparse(self, code):
        code.linkedinstances[id(self)] = self
        return f"linkedinstances[{id(self)}].from_bytes(io.read({self.length}))"

    def _emitbuild(self, code):
        code.linkedinstances[id(self)] = self
        return f"(io.write(linkedinstances[{id(self)}].to_bytes(obj)), obj)[1]"


def subcon_for(kind: str, length: int):
    """The raw construct holding a field of ``kind`` and ``length`` bytes."""
    if kind == "int":
        return _INTS.get(length) or cs.BytesInteger(length)
    return cs.Bytes(length)
