"""BER-TLV data objects (ISO/IEC 7816-4 clause 5.2, EMV Book 3 Annex B).

Tags are plain ints holding the raw tag bytes, big-endian: ``0x6F``, ``0x9F0C``,
``0xBF0C``, ``0xDF8101``.  The first tag byte tells everything about the tag:

* b6 (``0x20``) set means *constructed*: the value is itself a sequence of TLVs;
* the low five bits all set (``0x1F``) mean more tag bytes follow; each
  following byte with b8 (``0x80``) set announces yet another one.

Lengths are the short form (``00``-``7F``) or the long forms ``81 xx``,
``82 xxxx``, ``83 xxxxxx`` and ``84 xxxxxxxx``.  The indefinite form ``80`` and
anything from ``85`` up are rejected.  Long forms that are longer than needed
(``81 05``) are accepted when parsing; :meth:`Tlv.encode` always writes the
shortest form.

Between data objects ISO 7816-4 allows ``00`` and ``FF`` padding bytes; they are
skipped by :func:`parse` unless ``allow_padding=False``.  Consequently ``00``
and ``FF`` are never valid first tag bytes.

Everything here is pure and allocation-light: it runs on every response APDU
the CLI shows.  The names of tags shown by :func:`dump` are in
:mod:`citycard.tlv_tags` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable, Sequence

from citycard.errors import InputError
from citycard.tlv_tags import CONTEXT_TAG_NAMES, TAG_NAMES, tag_name

__all__ = [
    "MAX_DEPTH",
    "MAX_TAG_BYTES",
    "TAG_NAMES",
    "CONTEXT_TAG_NAMES",
    "Tlv",
    "TlvError",
    "build",
    "dump",
    "encode_length",
    "encode_tag",
    "find",
    "parse",
    "parse_one",
    "tag_name",
    "try_parse",
]

#: Longest tag accepted, in bytes (ISO 7816-4 uses up to three, EMV up to two).
MAX_TAG_BYTES = 4
#: Deepest nesting of constructed data objects accepted by the parser.  Real
#: card data stays below five; the limit keeps hostile input from recursing.
MAX_DEPTH = 32

_LONG_LENGTH_MAX = 0xFFFFFFFF  # the 84 form
_PRINTABLE = bytes(range(0x20, 0x7F))
_BYTES_LIKE = (bytes, bytearray, memoryview)


class TlvError(InputError):
    """Malformed BER-TLV data, or a tag/length/value that cannot be encoded.

    ``offset`` is the absolute byte offset of the offending data object in the
    data handed to the parser (``None`` for encoding errors).  The message
    names it too: ``"TLV at byte 5: length 0x20 runs past the end ..."``.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


# --------------------------------------------------------------------------
# Encoding


def _tag_hex(tag: int) -> str:
    width = (tag.bit_length() + 7) >> 3
    return f"{tag:0{2 * max(width, 1)}X}"


def _first_tag_byte(tag: int) -> int:
    return tag >> ((tag.bit_length() - 1) & ~7) if tag > 0 else 0


def encode_tag(tag: int) -> bytes:
    """The tag bytes of ``tag`` (``0x9F0C`` -> ``b"\\x9f\\x0c"``), checked for BER form."""
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise TlvError(f"tag must be an int, not {type(tag).__name__}")
    if tag == 0:
        raise TlvError("tag 00 is not a BER-TLV tag (00 is padding)")
    if tag < 0:
        raise TlvError(f"tag {tag:#x} is not a BER-TLV tag (negative)")
    width = (tag.bit_length() + 7) >> 3
    if width > MAX_TAG_BYTES:
        raise TlvError(f"tag 0x{tag:X} is longer than {MAX_TAG_BYTES} bytes")
    raw = tag.to_bytes(width, "big")
    first = raw[0]
    name = raw.hex().upper()
    if first == 0xFF:
        raise TlvError(f"tag {name} is not a BER-TLV tag (FF is padding)")
    if first & 0x1F != 0x1F:
        if width != 1:
            raise TlvError(
                f"tag {name} is not a BER-TLV tag: first byte {first:02X} makes a one-byte tag"
            )
        return raw
    if width == 1:
        raise TlvError(f"tag {name} is incomplete: first byte {first:02X} announces more tag bytes")
    for b in raw[1:-1]:
        if not b & 0x80:
            raise TlvError(f"tag {name} is not a BER-TLV tag: byte {b:02X} ends the tag early")
    if raw[-1] & 0x80:
        raise TlvError(f"tag {name} is incomplete: last byte {raw[-1]:02X} announces another byte")
    return raw


def encode_length(n: int) -> bytes:
    """BER length field: short form below 128, else ``81``/``82``/``83``/``84`` + big-endian."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TlvError(f"length must be an int, not {type(n).__name__}")
    if n < 0:
        raise TlvError(f"length {n} is negative")
    if n < 0x80:
        return bytes((n,))
    if n > _LONG_LENGTH_MAX:
        raise TlvError(f"length 0x{n:X} does not fit the 84 form (4 length bytes)")
    width = (n.bit_length() + 7) >> 3
    return bytes((0x80 | width,)) + n.to_bytes(width, "big")


# --------------------------------------------------------------------------
# The data object


@dataclass(frozen=True, slots=True, repr=False)
class Tlv:
    """One BER-TLV data object: its tag (raw tag bytes as an int) and value bytes.

    For a constructed tag, :attr:`children` are the nested data objects of the
    value.  They are parsed once: eagerly by :func:`parse`/:func:`build`, on
    first access for objects made directly with ``Tlv(tag, value)``.
    Equality and hashing look at ``tag`` and ``value`` only.
    """

    tag: int
    value: bytes
    _children: tuple[Tlv, ...] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        encode_tag(self.tag)  # validates
        value = self.value
        if type(value) is not bytes:
            if not isinstance(value, _BYTES_LIKE):
                raise TlvError(f"TLV value must be bytes, not {type(value).__name__}")
            object.__setattr__(self, "value", bytes(value))

    def __repr__(self) -> str:
        return f"Tlv(tag=0x{_tag_hex(self.tag)}, value=bytes.fromhex('{self.value.hex().upper()}'))"

    @property
    def constructed(self) -> bool:
        """True when b6 of the first tag byte is set: the value holds nested TLVs."""
        return bool(_first_tag_byte(self.tag) & 0x20)

    @property
    def children(self) -> tuple[Tlv, ...]:
        """Nested data objects of a constructed tag (``()`` for a primitive one).

        Raises :class:`TlvError` when a constructed value is not valid BER-TLV;
        offsets in that message count from the start of the value.
        """
        kids = self._children
        if kids is None:
            if self.constructed:
                value = self.value
                name = _tag_hex(self.tag)
                where, container = f" of the {name} value", f"the {name} value"
                kids = tuple(_parse_seq(value, 0, len(value), 1, True, where, container))
            else:
                kids = ()
            object.__setattr__(self, "_children", kids)
        return kids

    def encode(self) -> bytes:
        """Tag, shortest length field, value."""
        return encode_tag(self.tag) + encode_length(len(self.value)) + self.value

    def find(self, tag: int) -> Tlv | None:
        """First descendant with ``tag`` in depth-first (document) order, else None.

        The object itself is not considered, only what is nested in it.
        """
        return find(self.children, tag)


def _make(tag: int, value: bytes, children: tuple[Tlv, ...]) -> Tlv:
    """A Tlv from already validated parts, skipping ``__init__`` checks."""
    obj = object.__new__(Tlv)
    object.__setattr__(obj, "tag", tag)
    object.__setattr__(obj, "value", value)
    object.__setattr__(obj, "_children", children)
    return obj


def find(tlvs: Iterable[Tlv], tag: int) -> Tlv | None:
    """First data object with ``tag`` among ``tlvs`` and their descendants.

    Depth-first, in document order: a match nested in an earlier object wins
    over a later sibling.
    """
    stack = list(tlvs)
    stack.reverse()
    while stack:
        t = stack.pop()
        if t.tag == tag:
            return t
        if t.constructed:
            kids = t.children
            if kids:
                stack.extend(reversed(kids))
    return None


def build(tag: int, value: bytes | bytearray | memoryview | Iterable[Tlv]) -> Tlv:
    """A data object from a tag and either its value bytes or its children.

    Children are only accepted for a constructed tag; their encodings are
    concatenated (constructed children made directly with ``Tlv(...)`` are
    checked to hold valid BER-TLV first).  Value bytes given for a
    constructed tag must themselves be valid BER-TLV (padding allowed), or
    :class:`TlvError` is raised.
    """
    encode_tag(tag)
    if isinstance(value, _BYTES_LIKE):
        raw = bytes(value)
        kids: tuple[Tlv, ...] = ()
        if _first_tag_byte(tag) & 0x20:
            name = _tag_hex(tag)
            kids = tuple(
                _parse_seq(raw, 0, len(raw), 1, True, f" of the {name} value", f"the {name} value")
            )
        return _make(tag, raw, kids)
    if isinstance(value, str):
        raise TlvError(f"TLV value must be bytes or TLVs, not str (tag {_tag_hex(tag)})")
    kids = tuple(value)
    for k in kids:
        if not isinstance(k, Tlv):
            raise TlvError(
                f"children of tag {_tag_hex(tag)} must be Tlv objects, not {type(k).__name__}"
            )
        if k.constructed:
            k.children  # validates a directly made Tlv's value (parsed once, cached)
    if not _first_tag_byte(tag) & 0x20:
        raise TlvError(f"tag {_tag_hex(tag)} is primitive: give its value as bytes, not TLVs")
    return _make(tag, b"".join([k.encode() for k in kids]), kids)


# --------------------------------------------------------------------------
# Parsing


def _parse_seq(
    data: bytes,
    pos: int,
    end: int,
    depth: int,
    allow_padding: bool,
    where: str,
    container: str,
) -> list[Tlv]:
    """Parse data[pos:end] as a sequence of TLVs; offsets in errors are absolute.

    ``where`` qualifies the offset in messages (``""`` or ``" of the A5 value"``),
    ``container`` names what ``end`` is the end of (``"the data"``).
    """
    out: list[Tlv] = []
    while pos < end:
        first = data[pos]
        if first == 0x00 or first == 0xFF:
            if allow_padding:
                pos += 1
                continue
            raise TlvError(
                f"TLV at byte {pos}{where}: {first:02X} is padding, not a tag "
                "(padding not allowed here)",
                pos,
            )
        if depth > MAX_DEPTH:
            raise TlvError(
                f"TLV at byte {pos}{where}: nested deeper than {MAX_DEPTH} levels", pos
            )
        tlv, pos = _parse_at(data, pos, end, depth, allow_padding, where, container)
        out.append(tlv)
    return out


def _parse_at(
    data: bytes,
    pos: int,
    end: int,
    depth: int,
    allow_padding: bool,
    where: str,
    container: str,
) -> tuple[Tlv, int]:
    """Parse the one TLV whose tag starts at data[pos] (not a padding byte).

    Returns it and the offset just past it.
    """
    start = pos
    tag, pos = _read_tag(data, start, end, where, container)
    n, pos = _read_length(data, start, pos, end, tag, where, container)
    vend = pos + n
    if data[start] & 0x20:
        kids = tuple(
            _parse_seq(
                data, pos, vend, depth + 1, allow_padding, where, f"the {_tag_hex(tag)} value"
            )
        )
    else:
        kids = ()
    return _make(tag, data[pos:vend], kids), vend


def _read_tag(data: bytes, start: int, end: int, where: str, container: str) -> tuple[int, int]:
    """The tag starting at data[start] and the offset just past it."""
    first = data[start]
    pos = start + 1
    tag = first
    if first & 0x1F == 0x1F:
        while True:
            if pos >= end:
                raise TlvError(
                    f"TLV at byte {start}{where}: tag continues past the end of {container}",
                    start,
                )
            b = data[pos]
            pos += 1
            tag = (tag << 8) | b
            if not b & 0x80:
                break
            if pos - start >= MAX_TAG_BYTES:
                raise TlvError(
                    f"TLV at byte {start}{where}: tag {data[start:pos].hex().upper()}... "
                    f"is longer than {MAX_TAG_BYTES} bytes",
                    start,
                )
    return tag, pos


def _read_length(
    data: bytes, start: int, pos: int, end: int, tag: int, where: str, container: str
) -> tuple[int, int]:
    """The length field at data[pos] (of the TLV at ``start``): the value's length, checked
    to fit before ``end``, and the offset of the value."""
    if pos >= end:
        raise TlvError(
            f"TLV at byte {start}{where}: tag {_tag_hex(tag)} has no length "
            f"before the end of {container}",
            start,
        )
    n = data[pos]
    pos += 1
    if n & 0x80:
        width = n & 0x7F
        if width == 0:
            raise TlvError(
                f"TLV at byte {start}{where}: indefinite length (80) not supported", start
            )
        if width > 4:
            raise TlvError(
                f"TLV at byte {start}{where}: length form {n:02X} not supported", start
            )
        if pos + width > end:
            raise TlvError(
                f"TLV at byte {start}{where}: length field {n:02X} needs {width} more "
                f"bytes, {end - pos} left in {container}",
                start,
            )
        n = int.from_bytes(data[pos : pos + width], "big")
        pos += width
    if n > end - pos:
        raise TlvError(
            f"TLV at byte {start}{where}: length 0x{n:02X} runs past the end of "
            f"{container} ({end - pos} bytes left)",
            start,
        )
    return n, pos


def _as_bytes(data: object) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, _BYTES_LIKE):
        return bytes(data)
    raise TypeError(f"TLV data must be bytes, not {type(data).__name__}")


def parse(data: bytes, *, allow_padding: bool = True) -> list[Tlv]:
    """All top-level data objects in ``data``, with nested ones parsed too.

    ``00``/``FF`` bytes before, between and after data objects (also inside
    constructed values) are skipped when ``allow_padding``, else rejected.
    Empty or padding-only data gives ``[]``.  Raises :class:`TlvError`.
    """
    raw = _as_bytes(data)
    return _parse_seq(raw, 0, len(raw), 1, allow_padding, "", "the data")


def parse_one(data: bytes) -> Tlv:
    """Exactly one data object starting at byte 0 and filling ``data``.

    No padding is allowed around it (padding inside a constructed value is).
    """
    raw = _as_bytes(data)
    if not raw:
        raise TlvError("TLV at byte 0: no data", 0)
    first = raw[0]
    if first == 0x00 or first == 0xFF:
        raise TlvError(f"TLV at byte 0: {first:02X} is padding, not a tag", 0)
    tlv, end = _parse_at(raw, 0, len(raw), 1, True, "", "the data")
    if end != len(raw):
        extra = len(raw) - end
        raise TlvError(
            f"TLV at byte {end}: {extra} unexpected byte{'s' if extra != 1 else ''} "
            f"after the {_tag_hex(tlv.tag)} data object",
            end,
        )
    return tlv


def try_parse(data: bytes) -> list[Tlv] | None:
    """The data objects in ``data`` if it is entirely well-formed BER-TLV, else None.

    Meant for deciding whether a response is worth a TLV dump, so it is strict:
    every byte must be consumed, every constructed value must parse fully, and
    at least one data object must be present (empty or padding-only data gives
    None).  Padding between objects is tolerated.  Never raises TlvError.
    """
    try:
        result = parse(data)
    except TlvError:
        return None
    return result or None


# --------------------------------------------------------------------------
# Dump


def _hex_length(n: int) -> str:
    s = f"{n:X}"
    return s if not len(s) & 1 else "0" + s


def _dump_into(
    lines: list[str], tlvs: Iterable[Tlv], depth: int, parent: int | None, indent: str
) -> None:
    pad = indent * depth
    for t in tlvs:
        tag = t.tag
        value = t.value
        name = tag_name(tag, parent)
        head = f"{pad}{_tag_hex(tag)} ({name}) " if name else f"{pad}{_tag_hex(tag)} "
        head += _hex_length(len(value))
        if t.constructed:
            lines.append(head)
            _dump_into(lines, t.children, depth + 1, tag, indent)
            continue
        if value:
            head += " " + value.hex().upper()
            if len(value) >= 2 and not value.translate(None, _PRINTABLE):
                text = value.decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
                head += f' "{text}"'
        lines.append(head)


def dump(data: bytes | Sequence[Tlv], indent: str = "  ") -> str:
    """A readable listing, one line per data object, nested ones indented.

    ``6F (FCI template) 15`` for a constructed object; a primitive one also
    shows its value in hex and, when all of it is printable ASCII and at least
    two bytes long, quoted text.  Lengths are hex.  No trailing newline.
    Bytes are parsed with :func:`parse` first (raising :class:`TlvError`).
    """
    tlvs = parse(data) if isinstance(data, _BYTES_LIKE) else data
    lines: list[str] = []
    _dump_into(lines, tlvs, 0, None, indent)
    return "\n".join(lines)
