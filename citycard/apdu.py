"""Command and response APDUs (ISO/IEC 7816-3 §12.1, 7816-4 §5) and status words.

* :class:`CommandApdu` covers cases 1–4 in short and extended encodings.
  ``ne`` is the number of expected response bytes (``None`` = no Le field);
  in the short form Le ``00`` means 256, in the extended form ``0000`` means 65536.
* :class:`ResponseApdu` is data plus SW1 SW2.
* :func:`describe_sw` (from :mod:`citycard.sw`, with :class:`StatusWord`) gives the
  meaning of a status word: ISO 7816-4 plus the FMCOS / PBOC words of SPEC.md §1.5.
* :class:`~citycard.errors.CardError` carries an unexpected SW and its meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import CardError, CitycardError, InputError
from .sw import STATUS_WORDS, StatusWord, describe_sw

__all__ = ["CommandApdu", "ResponseApdu", "CardError", "StatusWord", "STATUS_WORDS", "describe_sw",
           "is_sensitive", "SwPattern"]

SHORT_MAX_NC = 255
SHORT_MAX_NE = 256
EXT_MAX_NC = 65535
EXT_MAX_NE = 65536


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command APDU.  ``sensitive`` marks data that must never be logged."""

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    ne: int | None = None
    extended: bool = False
    sensitive: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if (self.cla | self.ins | self.p1 | self.p2) & ~0xFF:
            for name in ("cla", "ins", "p1", "p2"):
                v = getattr(self, name)
                if not 0 <= v <= 0xFF:
                    raise InputError(f"APDU {name.upper()} 0x{v:X} is not a byte")
        if len(self.data) > EXT_MAX_NC:
            raise InputError(f"APDU data of {len(self.data)} bytes exceeds 65535")
        ne = self.ne
        if ne is not None and not 1 <= ne <= EXT_MAX_NE:
            raise InputError(f"APDU Ne {ne} outside 1..65536")

    # ------------------------------------------------------------------ encoding
    @property
    def is_extended(self) -> bool:
        """Whether :meth:`encode` uses the extended length form."""
        return (
            self.extended
            or len(self.data) > SHORT_MAX_NC
            or (self.ne is not None and self.ne > SHORT_MAX_NE)
        )

    @property
    def case(self) -> int:
        """ISO 7816-3 case: 1 (no data, no Le), 2 (Le), 3 (data), 4 (data and Le)."""
        return (1, 2, 3, 4)[(2 if self.data else 0) + (1 if self.ne is not None else 0)]

    def encode(self) -> bytes:
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        nc, ne = len(self.data), self.ne
        if not self.is_extended:
            out = header
            if nc:
                out += bytes((nc,)) + self.data
            if ne is not None:
                out += bytes((ne & 0xFF,))  # 256 -> 00
            return out
        out = header
        if nc:
            out += b"\x00" + nc.to_bytes(2, "big") + self.data
            if ne is not None:
                out += (ne & 0xFFFF).to_bytes(2, "big")  # 65536 -> 0000
        elif ne is not None:
            out += b"\x00" + (ne & 0xFFFF).to_bytes(2, "big")
        return out

    __bytes__ = encode

    def hex(self) -> str:
        return self.encode().hex().upper()

    # ------------------------------------------------------------------ variants
    def with_ne(self, ne: int | None) -> CommandApdu:
        return replace(self, ne=ne)

    # ------------------------------------------------------------------ decoding
    @classmethod
    def parse(cls, raw: bytes, *, what: str = "APDU") -> CommandApdu:
        """Decode an encoded command APDU (cases 1–4, short or extended)."""
        n = len(raw)
        if n < 4:
            raise InputError(f"{what}: {n} bytes, a command APDU needs at least 4 (CLA INS P1 P2)")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2)
        b4 = raw[4]
        if n == 5:  # case 2S
            return cls(cla, ins, p1, p2, ne=b4 or 256)
        if b4:  # short case 3 or 4
            if n == 5 + b4:
                return cls(cla, ins, p1, p2, bytes(raw[5:]))
            if n == 6 + b4:
                return cls(cla, ins, p1, p2, bytes(raw[5:-1]), ne=raw[-1] or 256)
            raise InputError(
                f"{what}: byte 5 (Lc) is 0x{b4:02X} but {n - 5} bytes follow the header"
                f" (expected {b4} or {b4 + 1})"
            )
        # b4 == 00: extended
        if n == 7:  # case 2E
            return cls._ext(cla, ins, p1, p2, b"", int.from_bytes(raw[5:7], "big") or 65536)
        if n < 7:
            raise InputError(f"{what}: byte 5 is 00 (extended length) but only {n} bytes in all")
        nc = int.from_bytes(raw[5:7], "big")
        if nc == 0:
            raise InputError(f"{what}: bytes 6-7 (extended Lc) are 0000")
        if n == 7 + nc:
            return cls._ext(cla, ins, p1, p2, raw[7:], None)
        if n == 9 + nc:
            return cls._ext(cla, ins, p1, p2, raw[7:-2], int.from_bytes(raw[-2:], "big") or 65536)
        raise InputError(
            f"{what}: extended Lc is {nc} but {n - 7} bytes follow it (expected {nc} or {nc + 2})"
        )

    @classmethod
    def _ext(cls, cla: int, ins: int, p1: int, p2: int, data: bytes, ne: int | None) -> CommandApdu:
        """An extended-form command; ``extended`` is set only where the short form would fit."""
        cmd = cls(cla, ins, p1, p2, bytes(data), ne)
        return cmd if cmd.is_extended else replace(cmd, extended=True)

    def __str__(self) -> str:
        """The hex of the command; a sensitive command's data (a key, a PIN) is masked, so a
        command in a log line, an exception or a traceback never shows it (:func:`is_sensitive`)."""
        if is_sensitive(self):
            return f"{self.encode()[:4].hex().upper()} <{len(self.data)} bytes masked>"
        return self.hex()

    def __repr__(self) -> str:
        data = f"<{len(self.data)} bytes masked>" if is_sensitive(self) else self.data.hex().upper()
        return (f"CommandApdu(cla=0x{self.cla:02X}, ins=0x{self.ins:02X}, p1=0x{self.p1:02X}, p2=0x{self.p2:02X}, "
                f"data={data}, ne={self.ne})")


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    data: bytes
    sw: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise CitycardError(f"response of {len(raw)} bytes has no status word")
        return cls(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    @property
    def meaning(self) -> str:
        return describe_sw(self.sw)

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    __bytes__ = encode

    def check(self, expected: int = 0x9000, *, what: str = "") -> ResponseApdu:
        """Return self, or raise :class:`~citycard.errors.CardError` when the SW differs."""
        if self.sw != expected:
            raise CardError(self.sw, what)
        return self


# ------------------------------------------------------------------ sensitive commands
# Commands whose data must be masked in transcripts and logs (issue 2, §2):
# WRITE KEY, VERIFY, CHANGE/RELOAD PIN (5E), UNBLOCK PIN (24).
_SENSITIVE_INS = frozenset({0xD4, 0x20, 0x5E, 0x24})


def is_sensitive(cmd: CommandApdu | bytes) -> bool:
    """Whether a command's data carries a key or PIN."""
    if isinstance(cmd, CommandApdu):
        return cmd.sensitive or (cmd.ins in _SENSITIVE_INS and bool(cmd.data))
    return len(cmd) > 5 and cmd[1] in _SENSITIVE_INS


@dataclass(frozen=True, slots=True)
class SwPattern:
    """An expected status word; ``X`` matches any nibble."""

    text: str
    value: int
    mask: int

    @classmethod
    def parse(cls, text: str, what: str = "") -> SwPattern:
        """``what`` names where the pattern came from in an error (e.g. "APDU 2")."""
        t = text.strip().upper()
        if len(t) != 4 or any(c not in "0123456789ABCDEFX" for c in t):
            raise InputError(f"{what + ': ' if what else ''}expected SW {text!r} must be 4 hex digits, X for any "
                             "nibble (e.g. 9000, 61XX)")
        value = int(t.replace("X", "0"), 16)
        mask = int("".join("0" if c == "X" else "F" for c in t), 16)
        return cls(t, value, mask)

    def matches(self, sw: int) -> bool:
        return sw & self.mask == self.value

    def __str__(self) -> str:
        return self.text
