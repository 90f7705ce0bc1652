"""Command and response APDUs (ISO/IEC 7816-3 §12.1, 7816-4 §5) and status words.

* :class:`CommandApdu` covers cases 1–4 in short and extended encodings.
  ``ne`` is the number of expected response bytes (``None`` = no Le field);
  in the short form Le ``00`` means 256, in the extended form ``0000`` means 65536.
* :class:`ResponseApdu` is data plus SW1 SW2.
* :func:`describe_sw` gives the meaning of a status word: ISO 7816-4 plus the
  FMCOS / PBOC words of SPEC.md §1.5.
* :class:`ApduError` carries the SW and its meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import CitycardError, InputError
from .hexutil import parse_hex

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

    def with_cla(self, cla: int) -> CommandApdu:
        return replace(self, cla=cla)

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

    @classmethod
    def from_hex(cls, text: str, *, what: str = "APDU") -> CommandApdu:
        return cls.parse(parse_hex(text, what), what=what)

    def __str__(self) -> str:
        return self.hex()


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
        """Return self, or raise :class:`ApduError` when the SW differs."""
        if self.sw != expected:
            raise ApduError(self.sw, command=what)
        return self


class ApduError(CitycardError):
    """A card answered with an unexpected status word."""

    def __init__(self, sw: int, *, command: str = "", expected: int | None = None) -> None:
        self.sw = sw
        self.meaning = describe_sw(sw)
        self.command = command
        self.expected = expected
        where = f"{command}: " if command else ""
        exp = f" (expected {expected:04X})" if expected is not None else ""
        super().__init__(f"{where}card answered {sw:04X}: {self.meaning}{exp}")


# --------------------------------------------------------------------- status words
# ISO/IEC 7816-4 §5.6 table 6, with the FMCOS / PBOC meanings of SPEC.md §1.5 where
# they are more specific (those win where both exist).
STATUS_WORDS: dict[int, str] = {
    0x9000: "success",
    0x6200: "warning: state of non-volatile memory unchanged",
    0x6281: "returned data may be corrupted (FMCOS: checksum warning, also for a never-written file)",
    0x6282: "end of file or record reached before reading Ne bytes",
    0x6283: "selected file deactivated (FMCOS: file or key checksum error)",
    0x6284: "file control information not formatted",
    0x6285: "selected file in termination state",
    0x6300: "verification failed",
    0x6381: "file filled up by the last write",
    0x6400: "execution error: state of non-volatile memory unchanged (FMCOS: state flag unchanged)",
    0x6500: "execution error: state of non-volatile memory changed",
    0x6581: "memory failure (FMCOS: EEPROM write failed)",
    0x6700: "wrong length",
    0x6800: "functions in CLA not supported",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6883: "last command of the chain expected",
    0x6884: "command chaining not supported",
    0x6900: "command not allowed (FMCOS: CLA does not match the file's line-protection requirement)",
    0x6901: "invalid state",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied",
    0x6983: "authentication method blocked (key or PIN locked)",
    0x6984: "reference data not usable",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed (no current EF)",
    0x6987: "expected secure messaging data objects missing",
    0x6988: "incorrect secure messaging data objects",
    0x6A80: "incorrect parameters in the command data field",
    0x6A81: "function not supported, or card/application locked",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory space in the file",
    0x6A85: "Nc inconsistent with TLV structure",
    0x6A86: "incorrect parameters P1-P2",
    0x6A87: "Nc inconsistent with parameters P1-P2",
    0x6A88: "referenced data or key not found",
    0x6A89: "file already exists",
    0x6A8A: "DF name already exists",
    0x6B00: "wrong parameters P1-P2 (offset out of range)",
    0x6D00: "instruction code not supported or invalid",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
    0x9302: "MAC error",
    0x9303: "application permanently locked",
    0x9401: "insufficient balance",
    0x9403: "key index not supported",
    0x9406: "requested MAC/TAC not available",
}


def describe_sw(sw: int) -> str:
    """Meaning of a status word, including the parameterised families."""
    meaning = STATUS_WORDS.get(sw)
    if meaning is not None:
        return meaning
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"{sw2 or 256} more response bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"wrong Le: {sw2 or 256} bytes available (resend with that Le)"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} tries left"
    if sw1 == 0x62 and 0x02 <= sw2 <= 0x80:
        return "warning: triggering by the card"
    if sw1 == 0x64 and 0x02 <= sw2 <= 0x80:
        return "error: triggering by the card"
    if sw1 == 0x67:
        return "wrong length"
    if sw1 == 0x6B:
        return "wrong parameters P1-P2"
    if sw1 == 0x6D:
        return "instruction code not supported or invalid"
    if sw1 == 0x6E:
        return "class not supported"
    if sw1 == 0x6F:
        return "no precise diagnosis"
    if sw1 in (0x90, 0x91):
        return "success (with proprietary information)" if sw1 == 0x90 else "proprietary status"
    return "unknown status word"


# ------------------------------------------------------------------ sensitive commands
# Commands whose data must be masked in transcripts and logs (issue 2, §2):
# WRITE KEY, VERIFY, CHANGE/RELOAD PIN (5E), UNBLOCK PIN (24).
_SENSITIVE_INS = frozenset({0xD4, 0x20, 0x5E, 0x24})


def is_sensitive(cmd: CommandApdu | bytes) -> bool:
    """Whether a command's data carries a key or PIN."""
    if isinstance(cmd, CommandApdu):
        return cmd.sensitive or (cmd.ins in _SENSITIVE_INS and bool(cmd.data))
    return len(cmd) > 5 and cmd[1] in _SENSITIVE_INS
