"""Know the card before any key touches it (issue 17 item 1), for the card services.

Before a service uses a key or the cardholder's PIN (EXTERNAL AUTHENTICATE, a MAC'd
command, VERIFY, INITIALIZE FOR LOAD/PURCHASE/UNLOAD), :func:`identify_for_service` shows,
with SELECT and free reads only (no key, no try spent), that the card is one of the
profile: SELECT MF answers, its serial is read freely from the profile's serial files (the
MF's ``@card_serial``, the application's ``@app_serial``: SPEC §2.4) and is a serial of this
profile (its prefix and digit count; both fields hold the same serial, as the planner writes
them), and the application answers SELECT by its AID.  A factory card, another profile's
card or a card whose serial cannot be read is refused (:class:`CardRefused`, exit code 1)
with a message naming the reader and the card; nothing else was sent to it.

:func:`read_serial_field` is the one free read of a serial field: the personalization's own
identification (:func:`citycard.perso.run.identify_card`) uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..commands import iso, walk
from ..errors import CitycardError
from ..spec import CardSpec, DFSpec, FileSpec
from ..transport import CardSession

__all__ = ["CardRefused", "IdentifiedCard", "SerialRead", "free_card_serial", "identify_for_service",
           "is_profile_serial", "read_serial_field"]

_MISSING = (0x6A82,)                       # file not found
_READ_OK = (0x9000, 0x6281)
_BLOCKED = (0x6A81, 0x9303)                # an application blocked (APPLICATION BLOCK), there all the same


class CardRefused(CitycardError):
    """The card in the reader is not a card of the profile: refused before any key or PIN
    was sent to it (the CLI's exit code 1, "card refused")."""


@dataclass(frozen=True)
class SerialRead:
    """A serial field read freely: ``exists`` (the file answered anything but 6A82),
    ``readable`` (the read answered 9000/6281), ``value`` (None when blank, never written or
    all zeros; the raw bytes in hex when the field does not decode), ``decodes`` (in the
    file's layout), ``sw`` (the read's status word)."""

    value: str | None
    exists: bool
    readable: bool
    decodes: bool
    sw: int


def read_serial_field(session: CardSession, f: FileSpec, name: str) -> SerialRead:
    """READ BINARY of ``f`` (by its SFI; its DF selected) and its field ``name`` decoded."""
    from .. import records

    lay = records.get(f.layout or "")
    r = session.send(iso.read_binary(0, lay.size, sfi=f.sfi))
    if r.sw in _MISSING:
        return SerialRead(None, False, False, False, r.sw)
    if r.sw not in _READ_OK:
        return SerialRead(None, True, False, False, r.sw)
    if not r.data.strip(b"\x00") or not r.data.strip(b"\xff"):
        return SerialRead(None, True, True, True, r.sw)
    try:
        value = str(lay.decode(r.data)[name])
    except (CitycardError, ValueError, KeyError):
        return SerialRead(r.data.hex().upper(), True, True, False, r.sw)
    return SerialRead(value if value.strip("0") else None, True, True, True, r.sw)


def free_card_serial(session: CardSession, spec: CardSpec) -> str | None:
    """The card serial of the MF's ``@card_serial`` file read freely (SELECT MF, READ BINARY),
    or None when there is none to read (no such file in the profile or on the card, blank,
    refused): a batch station's identity guard (:class:`citycard.perso.card_sources.PcscSource`)."""
    found = walk.serial_field(spec.mf, "@card_serial")
    if found is None or session.send(iso.select_mf()).sw != 0x9000:
        return None
    read = read_serial_field(session, *found)
    return read.value if read.decodes else None


def is_profile_serial(value: str, spec: CardSpec) -> bool:
    """A card serial the profile issues: its prefix, then digits, its digit count
    (:meth:`citycard.perso.context.CardData.serial`)."""
    return value.isdigit() and len(value) == spec.serial_digits and value.startswith(spec.serial_prefix)


@dataclass(frozen=True)
class IdentifiedCard:
    """A card shown to be of the profile: its serial (read freely), ATR and reader."""

    serial: str
    atr: bytes
    reader: str


def identify_for_service(session: CardSession, spec: CardSpec, df: DFSpec, *,
                         blocked_ok: bool = False) -> IdentifiedCard:
    """Show that the card is a card of ``spec`` holding ``df`` (see the module docstring),
    or raise :class:`CardRefused`.  ``blocked_ok``: an application answering SELECT as blocked
    (6A81, 9303) is there (APPLICATION UNBLOCK).  Leaves ``df`` selected when it answered 9000."""
    reader = getattr(session.transport, "name", "") or "the reader"
    card = f"the card in {reader} (ATR {session.atr.hex().upper() or 'none'})"

    def refuse(why: str) -> CardRefused:
        return CardRefused(f"card refused: {card} is not a card of profile {spec.name!r}: {why}; nothing was "
                           "sent to it with a key or a PIN (check --profile and the card in the reader)")

    r = session.send(iso.select_mf())
    if r.sw != 0x9000:
        raise refuse(f"SELECT MF answered {r.sw:04X}")
    serials: list[str] = []
    found = walk.serial_field(spec.mf, "@card_serial")
    if found is not None:
        serials.append(_serial_of(session, spec, found, "MF", refuse))
    if df.fid != iso.MF_FID:
        r = walk.select_df(session, df)
        if r.sw in _BLOCKED and blocked_ok:
            pass
        elif r.sw != 0x9000:
            raise refuse(f"it has no application {df.name} ({df.aid.hex().upper()}): SELECT answered {r.sw:04X}")
        else:
            found = walk.serial_field(df, "@app_serial")
            if found is not None:
                serials.append(_serial_of(session, spec, found, df.name, refuse))
    if not serials:
        raise refuse("the profile names no serial file readable on it")
    if len(set(serials)) > 1:
        raise refuse(f"its serial files disagree ({' and '.join(serials)})")
    return IdentifiedCard(serials[0], session.atr, reader)


def _serial_of(session: CardSession, spec: CardSpec, found: tuple[FileSpec, str], where: str, refuse) -> str:
    f, name = found
    read = read_serial_field(session, f, name)
    what = f"its {where} serial file {f.fid:04X}"
    if not read.exists:
        raise refuse(f"{what} does not exist (SW {read.sw:04X}): a factory card, or another profile's card")
    if not read.readable:
        raise refuse(f"{what} refuses a free read (SW {read.sw:04X}), which a card of the profile allows")
    if read.value is None:
        raise refuse(f"{what} holds no serial: a card not (fully) personalized")
    if not read.decodes or not is_profile_serial(read.value, spec):
        raise refuse(f"{what} holds {read.value}, not a serial of this profile "
                     f"({spec.serial_prefix}…, {spec.serial_digits} digits)")
    return read.value
