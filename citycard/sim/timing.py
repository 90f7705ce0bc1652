"""A card-time model for the simulated card: how long a real card would take per APDU.

The simulator answers in microseconds; a real FM1208 spends milliseconds per command on
the wire, in its CPU and writing EEPROM.  This module computes that time from the bytes
actually exchanged, so that benchmarks can *account* modelled card time without
sleeping (:class:`TimedCard` with no ``sleep``: a :class:`ModelledClock` sums it) and
served or batch simulated cards can *sleep* it so the host sees real card time
(``citycard sim serve --timing PRESET``, ``citycard batch run --sims N --timing PRESET``).

Per APDU: wire time (characters × etu per character, frame overhead and turnaround
gaps, for the preset's protocol), plus the preset's processing time, plus its EEPROM
write time when the command changed the card's persistent state (the simulator knows:
every persistent change bumps ``SimCard.generation``, see ``nvm.py``).  The figures and
their sources (or the assumption, where no source gives one) are in docs/sim.md,
"Card time model".

Protocols (ISO/IEC 7816-3, ISO/IEC 14443-4):

* ``T=0``: the 5-byte header, the procedure byte (ACK) before any data in either
  direction, the data, SW1 SW2 (SW1 is itself the procedure byte when no data moves);
  a case-4 command whose answer carries data takes a GET RESPONSE exchange
  (header, ACK, data, SW).  A character is 12 etu at the default guard time (start bit,
  8 data bits, parity, 2 etu guard); characters in opposite directions are at least
  16 etu apart, so each change of direction adds 4 etu.
* ``T=1``: an I-block of prologue (NAD, PCB, LEN: 3 bytes) ‖ INF ‖ epilogue (LRC: 1 byte)
  each way, chained in INF pieces of at most the information field size with an R-block
  (4 bytes) from the receiver after every piece but the last; 12 etu per character;
  blocks in opposite directions are at least 22 etu apart (BGT), i.e. 10 etu added per
  change of direction.
* ``14443-4`` (contactless, type A): an I-block of PCB (1 byte) ‖ INF ‖ CRC_A (2 bytes),
  9 bit durations per byte (8 data bits and odd parity) plus start and end of frame,
  chained like T=1 with 3-byte R(ACK) blocks; each change of direction waits the
  frame delay time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..apdu import CommandApdu
from ..errors import InputError

__all__ = ["TimingPreset", "ApduTiming", "ModelledClock", "TimedCard", "PRESETS", "get_preset",
           "apdu_timing", "activation_time", "command_family", "unwrap"]

T0, T1, ISO14443_4 = "T=0", "T=1", "14443-4"

#: ISO 7816-3 contact clock for the contact presets: 3.5712 MHz, F = 372 (9600 bps at D = 1,
#: 115,200 bps at D = 12: 31 clock cycles per etu)
CONTACT_CLOCK_HZ = 3_571_200
#: ISO 14443 carrier frequency fc
FC_HZ = 13_560_000


@dataclass(frozen=True, slots=True)
class TimingPreset:
    """How long a card takes per APDU: protocol, bit rate and the card's own times.

    ``bit_rate``: bits per second on the wire (1 etu = 1/bit_rate s).
    ``etu_per_char``: etu per byte on the wire (12 for ISO 7816-3 at the default guard time,
    9 for ISO 14443 type A).  ``frame_etu``: etu per frame around the bytes (start and end
    of frame, 14443).  ``turnaround_etu`` / ``turnaround_s``: added at every change of
    direction.  ``max_inf``: the longest INF of one block (IFSC/IFSD, FSC/FSD) before
    chaining.  ``processing_s``: the card's time per command; ``eeprom_write_s``: added to
    a command that changed the card's persistent state.  ``initial_bit_rate``: the rate of
    the ATR (contact) before PPS.
    """

    name: str
    description: str
    protocol: str
    bit_rate: float
    etu_per_char: float
    processing_s: float
    eeprom_write_s: float
    turnaround_etu: float = 0.0
    turnaround_s: float = 0.0
    frame_etu: float = 0.0
    max_inf: int = 254
    initial_bit_rate: float | None = None
    activation_s: float = 0.0

    def __post_init__(self) -> None:
        if self.protocol not in (T0, T1, ISO14443_4):
            raise InputError(f"timing preset {self.name}: protocol {self.protocol!r} is not T=0, T=1 or 14443-4")
        if self.bit_rate <= 0 or self.etu_per_char <= 0 or self.max_inf < 1:
            raise InputError(f"timing preset {self.name}: bit rate, etu per character and INF size must be positive")

    @property
    def etu_s(self) -> float:
        return 1.0 / self.bit_rate


# Assumptions (no FM1208 datasheet figure found; docs/sim.md "Card time model"):
_PROCESSING_S = 0.001      # per command: the card's CPU (parse, file system, DES/3DES)
_EEPROM_WRITE_S = 0.0025   # per writing command: one EEPROM page erase+write, 2–3 ms class

PRESETS: dict[str, TimingPreset] = {p.name: p for p in (
    TimingPreset("contact-9600", "ISO 7816-3 T=0 at 9,600 bps (F=372, D=1, 3.5712 MHz)", T0,
                 bit_rate=CONTACT_CLOCK_HZ / 372, etu_per_char=12, turnaround_etu=4,
                 processing_s=_PROCESSING_S, eeprom_write_s=_EEPROM_WRITE_S, initial_bit_rate=CONTACT_CLOCK_HZ / 372),
    TimingPreset("contact-115200", "ISO 7816-3 T=0 at 115,200 bps (F=372, D=12, 3.5712 MHz)", T0,
                 bit_rate=CONTACT_CLOCK_HZ / 31, etu_per_char=12, turnaround_etu=4,
                 processing_s=_PROCESSING_S, eeprom_write_s=_EEPROM_WRITE_S, initial_bit_rate=CONTACT_CLOCK_HZ / 372),
    TimingPreset("contact-9600-t1", "ISO 7816-3 T=1 at 9,600 bps, IFSC 254", T1,
                 bit_rate=CONTACT_CLOCK_HZ / 372, etu_per_char=12, turnaround_etu=10, max_inf=254,
                 processing_s=_PROCESSING_S, eeprom_write_s=_EEPROM_WRITE_S, initial_bit_rate=CONTACT_CLOCK_HZ / 372),
    TimingPreset("contact-115200-t1", "ISO 7816-3 T=1 at 115,200 bps, IFSC 254", T1,
                 bit_rate=CONTACT_CLOCK_HZ / 31, etu_per_char=12, turnaround_etu=10, max_inf=254,
                 processing_s=_PROCESSING_S, eeprom_write_s=_EEPROM_WRITE_S, initial_bit_rate=CONTACT_CLOCK_HZ / 372),
    TimingPreset("contactless-106", "ISO 14443-4 type A at 106 kbit/s (fc/128), FSC 256", ISO14443_4,
                 bit_rate=FC_HZ / 128, etu_per_char=9, frame_etu=2, turnaround_s=1172 / FC_HZ, max_inf=253,
                 processing_s=_PROCESSING_S, eeprom_write_s=_EEPROM_WRITE_S, activation_s=0.005),
    TimingPreset("contactless-424", "ISO 14443-4 type A at 424 kbit/s (fc/32), FSC 256", ISO14443_4,
                 bit_rate=FC_HZ / 32, etu_per_char=9, frame_etu=2, turnaround_s=1172 / FC_HZ, max_inf=253,
                 processing_s=_PROCESSING_S, eeprom_write_s=_EEPROM_WRITE_S, activation_s=0.005),
)}


def get_preset(preset: str | TimingPreset) -> TimingPreset:
    """A preset by name (one of :data:`PRESETS`) or as given."""
    if isinstance(preset, TimingPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise InputError(f"unknown timing preset {preset!r}; known: {', '.join(PRESETS)}") from None


@dataclass(frozen=True, slots=True)
class ApduTiming:
    """The modelled time of one APDU (seconds) and the characters it put on the wire."""

    chars_to_card: int
    chars_from_card: int
    wire_s: float
    processing_s: float
    eeprom_s: float
    exchanges: int = 1          # 2 when T=0 needed a GET RESPONSE

    @property
    def total_s(self) -> float:
        return self.wire_s + self.processing_s + self.eeprom_s


def _lc(command: bytes) -> int:
    """Lc of a command: the bytes of command data the card receives (0 for a malformed one,
    which the card answers with an SW and no data moves).  Short forms are read from the
    bytes; anything else goes through :meth:`CommandApdu.parse`."""
    n = len(command)
    if n <= 5:
        return 0
    lc = command[4]
    if lc and n in (5 + lc, 6 + lc):
        return lc
    try:
        return len(CommandApdu.parse(command).data)
    except InputError:
        return 0


def _t0(preset: TimingPreset, command: bytes, response: bytes) -> tuple[int, int, int, int]:
    """(characters to the card, from the card, changes of direction, exchanges) under T=0.

    The exchange as stretches of characters, each sent by the other side than the one
    before: header (CLA INS P1 P2 P3, P3 = 00 for case 1) → [ACK → command data] → SW1 SW2
    (case 1 and 3; SW1 is the procedure byte), or header → ACK ‖ data ‖ SW (case 2), or for
    case 4 with response data: … → 61xx → GET RESPONSE header → ACK ‖ data ‖ SW."""
    lc = _lc(command)
    data = len(response) - 2 if len(response) >= 2 else 0
    if not lc:      # header → SW, or header → ACK ‖ data ‖ SW
        return 5, (3 + data if data else 2), 2, 1
    if not data:    # header → ACK → data → SW
        return 5 + lc, 3, 4, 1
    # header → ACK → data → 61xx → GET RESPONSE header → ACK ‖ data ‖ SW
    return 10 + lc, 6 + data, 6, 2


def _blocks(preset: TimingPreset, inf: int) -> tuple[int, int]:
    """(number of I-blocks, bytes of them all) for ``inf`` bytes of INF."""
    n = max(1, math.ceil(inf / preset.max_inf))
    overhead = 4 if preset.protocol == T1 else 3   # NAD PCB LEN ‖ LRC  /  PCB ‖ CRC_A
    return n, inf + n * overhead


def _block(preset: TimingPreset, command: bytes, response: bytes) -> tuple[int, int, int, int]:
    """(characters to the card, from the card, changes of direction, frames) under a block
    protocol (T=1, ISO 14443-4): I-blocks each way, an R-block acknowledging every
    chained piece."""
    r_block = 4 if preset.protocol == T1 else 3
    n_cmd, to_card = _blocks(preset, len(command))
    n_rsp, from_card = _blocks(preset, len(response))
    from_card += (n_cmd - 1) * r_block     # the card acknowledges each chained piece
    to_card += (n_rsp - 1) * r_block       # and so does the reader
    frames = 2 * n_cmd - 1 + 2 * n_rsp - 1
    return to_card, from_card, frames, frames


def apdu_timing(preset: str | TimingPreset, command: bytes, response: bytes, *, wrote: bool) -> ApduTiming:
    """The modelled time of ``command`` answered by ``response`` (data ‖ SW1 SW2);
    ``wrote``: the command changed the card's persistent state (EEPROM write)."""
    p = get_preset(preset)
    if p.protocol == T0:
        to_card, from_card, turns, exchanges = _t0(p, command, response)
        frames = 0
    else:
        to_card, from_card, turns, frames = _block(p, command, response)
        exchanges = 1
    etu = (to_card + from_card) * p.etu_per_char + frames * p.frame_etu + turns * p.turnaround_etu
    wire = etu * p.etu_s + turns * p.turnaround_s
    return ApduTiming(to_card, from_card, wire, p.processing_s, p.eeprom_write_s if wrote else 0.0, exchanges)


def activation_time(preset: str | TimingPreset, atr: bytes) -> float:
    """Power-on: the ATR at the initial rate and, above it, a PPS exchange (4 characters
    each way) at the initial rate (contact); the preset's activation time (contactless:
    REQA, anticollision, SELECT, RATS/ATS)."""
    p = get_preset(preset)
    if p.initial_bit_rate is None:
        return p.activation_s
    chars = len(atr) + (8 if p.bit_rate != p.initial_bit_rate else 0)
    return p.activation_s + chars * p.etu_per_char / p.initial_bit_rate


# --------------------------------------------------------------------------- command families
_FAMILIES = {
    0xA4: "SELECT", 0x84: "GET CHALLENGE", 0x82: "EXTERNAL AUTHENTICATE", 0x88: "INTERNAL AUTHENTICATE",
    0x20: "VERIFY", 0xB0: "READ BINARY", 0xD6: "UPDATE BINARY", 0xB2: "READ RECORD", 0xE2: "APPEND RECORD",
    0xDC: "UPDATE RECORD", 0x22: "SET AUTH CODE", 0xE0: "CREATE FILE", 0x0E: "ERASE DF", 0xD4: "WRITE KEY",
    0x5E: "CHANGE/RELOAD PIN", 0x24: "PIN UNBLOCK", 0x16: "CARD BLOCK", 0x1E: "APPLICATION BLOCK",
    0x18: "APPLICATION UNBLOCK", 0x50: "INITIALIZE", 0x52: "CREDIT FOR LOAD", 0x54: "DEBIT",
    0x5A: "GET TRANSACTION PROVE", 0x5C: "GET BALANCE", 0x58: "UPDATE OVERDRAW LIMIT", 0xCA: "GET DATA",
    0xC0: "GET RESPONSE",
}


def command_family(command: bytes) -> str:
    """A readable name for the command's INS (``INS xx`` when unknown)."""
    if len(command) < 2:
        return "malformed"
    return _FAMILIES.get(command[1], f"INS {command[1]:02X}")


@dataclass
class FamilyTotals:
    """Modelled time of one command family."""

    count: int = 0
    writes: int = 0
    wire_s: float = 0.0
    processing_s: float = 0.0
    eeprom_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.wire_s + self.processing_s + self.eeprom_s


@dataclass
class ModelledClock:
    """Modelled card time, summed (nothing sleeps): total, APDUs, and per command family."""

    seconds: float = 0.0
    apdus: int = 0
    activation_s: float = 0.0
    families: dict[str, FamilyTotals] = field(default_factory=dict)

    def add(self, command: bytes, timing: ApduTiming) -> None:
        self.seconds += timing.total_s
        self.apdus += 1
        fam = self.families.get(name := command_family(command))
        if fam is None:
            fam = self.families[name] = FamilyTotals()
        fam.count += 1
        fam.writes += timing.eeprom_s > 0
        fam.wire_s += timing.wire_s
        fam.processing_s += timing.processing_s
        fam.eeprom_s += timing.eeprom_s

    def add_activation(self, seconds: float) -> None:
        self.seconds += seconds
        self.activation_s += seconds

    def merge(self, others: Iterable[ModelledClock]) -> None:
        for o in others:
            self.seconds += o.seconds
            self.apdus += o.apdus
            self.activation_s += o.activation_s
            for name, f in o.families.items():
                mine = self.families.setdefault(name, FamilyTotals())
                mine.count += f.count
                mine.writes += f.writes
                mine.wire_s += f.wire_s
                mine.processing_s += f.processing_s
                mine.eeprom_s += f.eeprom_s


def _is_get_response(apdu: bytes) -> bool:
    """``00 C0 00 00 Le`` (ISO/IEC 7816-4 GET RESPONSE, basic channel or logical channels 1–3)."""
    return len(apdu) == 5 and apdu[0] & 0xFC == 0 and apdu[1] == 0xC0 and apdu[2] == 0 and apdu[3] == 0


def unwrap(card: object) -> object:
    """The simulated card under a :class:`TimedCard` (or the object itself)."""
    while isinstance(card, TimedCard):
        card = card.card
    return card


def _generation(card: object) -> int:
    """The persistent-change count of the card (a dispenser holds its current card)."""
    obj = card
    while not hasattr(obj, "generation") and hasattr(obj, "card"):
        obj = obj.card  # type: ignore[attr-defined]
    return getattr(obj, "generation", 0)


class TimedCard:
    """A simulated card (anything with ``atr``, ``power_on``, ``power_off``, ``reset``,
    ``process``) that accounts the modelled card time of every APDU on :attr:`clock` and,
    with ``sleep``, sleeps it (``sleep(seconds × scale)``) so a host sees real card time.

    ``TimedCard(card, "contact-115200")`` accounts only (benchmarks);
    ``TimedCard(card, preset, sleep=time.sleep)`` behaves like a real card's speed: every
    APDU's answer is held back for its modelled time.

    ``t0_get_response`` (T=0 presets): who fetches the answer of a command that carries data
    (case 3 and 4) and is answered with data.  ``"reader"`` (default): the reader sends GET
    RESPONSE itself and hands the host data ‖ ``9000``, as many PC/SC readers do; the card
    answers so and the GET RESPONSE exchange is charged with the command.  ``"host"``: the
    card's T=0 answer reaches the host as on the wire: ``61xx`` (ISO/IEC 7816-3:2006 clause
    12.2: the TPDU of a case-3/4 command is answered with SW only; ISO/IEC 7816-4 5.1.3:
    ``61xx`` = done, xx bytes available; a contact FMCOS card answers SELECT ``610F``:
    tests/data/traces/codetd_fmsh_erase.trace), and the data only to a GET RESPONSE
    (``00 C0 00 00 xx``) sent next, charged as its own exchange (wire time only: the card's
    work was charged with the command).  A host that does not need the data sends no GET
    RESPONSE and is charged nothing for it.

    ``max_lag`` (seconds, default 0: every APDU sleeps its own time before it answers) lets
    the card answer up to ``max_lag`` ahead of its modelled timeline and sleep the time owed
    in one piece once the debt reaches ``max_lag``, and at power-off or reset (the card is
    then exactly as late as the model says).  The timeline stays the real card's: the card
    is busy for the modelled time of every APDU, every byte and write charged, and the host's
    time between two APDUs passes in real time on top of it, never hidden under card time.  What changes is only how often the host process wakes up: a
    sleeper woken ~180 times per card runs its Python cold after each wake-up (on this
    project's 2-core machine ~0.2 ms of extra CPU per wake-up, 4× the per-card CPU of the
    host; docs/performance.md, "Timed readers"), which is the simulation's cost, not the
    host's: a reader's host waits for one answer in one blocking call however long the card
    takes.  Only where the card's session ends in this process (a batch's simulated reader,
    :mod:`citycard.sim.batch_readers`), never for a card served to another process.
    """

    def __init__(self, card: object, preset: str | TimingPreset, *,
                 sleep: Callable[[float], None] | None = None, scale: float = 1.0, max_lag: float = 0.0,
                 t0_get_response: str = "reader") -> None:
        if scale < 0:
            raise InputError(f"timing scale {scale} is negative")
        if max_lag < 0:
            raise InputError(f"timing lag {max_lag} is negative")
        if t0_get_response not in ("reader", "host"):
            raise InputError(f"t0_get_response {t0_get_response!r} is not 'reader' or 'host'")
        self.card = card
        self.preset = get_preset(preset)
        self.sleep = sleep
        self.scale = scale
        self.max_lag = max_lag
        self.clock = ModelledClock()
        self.owed = 0.0         # (max_lag > 0) modelled seconds answered ahead and not slept yet
        self.host_fetches = t0_get_response == "host" and self.preset.protocol == T0
        self.held = b""         # (host_fetches) the answer's data ‖ SW waiting for GET RESPONSE

    @property
    def atr(self) -> bytes:
        return self.card.atr  # type: ignore[attr-defined]

    def _spend(self, seconds: float) -> None:
        if self.sleep is None or seconds <= 0:
            return
        if not self.max_lag:
            self.sleep(seconds * self.scale)
            return
        # the host's time between two APDUs passes in real time either way: what the card
        # owes is only its own modelled time, answered early
        self.owed += seconds * self.scale
        if self.owed >= self.max_lag:
            self.settle()

    def settle(self) -> None:
        """Sleep the modelled time answered ahead (``max_lag``): the card is then as late as
        the model says."""
        owed, self.owed = self.owed, 0.0
        if owed > 0 and self.sleep is not None:
            self.sleep(owed)

    def power_on(self) -> bytes | None:
        atr = self.card.power_on()  # type: ignore[attr-defined]
        t = activation_time(self.preset, self.card.atr)  # type: ignore[attr-defined]
        self.clock.add_activation(t)
        self._spend(t)
        return atr

    def power_off(self) -> None:
        self.settle()
        self.held = b""
        self.card.power_off()  # type: ignore[attr-defined]

    def reset(self) -> bytes | None:
        self.settle()
        self.held = b""
        atr = self.card.reset()  # type: ignore[attr-defined]
        t = activation_time(self.preset, self.card.atr)  # type: ignore[attr-defined]
        self.clock.add_activation(t)
        self._spend(t)
        return atr

    def process(self, apdu: bytes) -> bytes:
        held, self.held = self.held, b""
        if held and _is_get_response(apdu):
            return self._get_response(apdu, held)
        before = _generation(self.card)
        response = self.card.process(apdu)  # type: ignore[attr-defined]
        wrote = _generation(self.card) != before
        if self.host_fetches and len(response) > 2 and response[-2:] == b"\x90\x00" and _lc(apdu):
            # T=0 case 3/4 answered with data: the wire carries 61xx; the data waits for GET RESPONSE
            self.held = response
            response = bytes((0x61, (len(response) - 2) & 0xFF))
        t = apdu_timing(self.preset, apdu, response, wrote=wrote)
        self.clock.add(apdu, t)
        self._spend(t.total_s)
        return response

    def _get_response(self, apdu: bytes, held: bytes) -> bytes:
        """GET RESPONSE of the held answer (``host_fetches``): Le bytes of it (``00``: 256),
        ``61xx`` while more is left; charged as a case-2 exchange on the wire."""
        data, sw = held[:-2], held[-2:]
        ne = apdu[4] or 256
        if ne < len(data):
            self.held = data[ne:] + sw
            rest = len(data) - ne
            response = data[:ne] + bytes((0x61, rest & 0xFF))
        else:
            response = data + sw
        t = apdu_timing(self.preset, apdu, response, wrote=False)
        t = ApduTiming(t.chars_to_card, t.chars_from_card, t.wire_s, 0.0, 0.0, t.exchanges)
        self.clock.add(apdu, t)
        self._spend(t.total_s)
        return response

    def __getattr__(self, name: str) -> object:
        # anything else (nvm, model, mf, generation, …) is the card's
        if name == "card":
            raise AttributeError(name)
        return getattr(self.card, name)
