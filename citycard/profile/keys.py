"""The ``keys`` of a DF: key records and PINs (docs/profile.md, SPEC §1.4, §1.5)."""

from __future__ import annotations

from typing import Any

from ..keytypes import LINE_CIPHER_TYPES, PSAM_KEY_NAMES, KeyType
from ..spec import KEY_TYPES, KeySpec
from .bindings import check_binding
from .fields import Located, access, check_table, choice, dotted, integer, required, typed

KEY_FIELDS = {"type", "id", "usage", "change", "state", "tries", "version", "algorithm", "master", "factor",
              "value", "length", "write", "protect_change", "export", "alg", "levels"}
_COUNTER_TYPES = (0x36, 0x37, 0x38, 0x39, 0x3A)     # byte 3/4: follow-up state and error counter
_STATE_TYPES = (0x39, 0x3A)                          # external authentication and PIN set a state
PIN_TYPE = 0x3A
_PROTECT_CHANGE = {"none": 0x00, "mac": 0x80, "cipher": 0xC0}
#: ``alg`` of a key (docs/sm4.md): the profile's name → the crypto library's cipher family
_ALGS = {"3des": "des", "sm4": "sm4"}
#: the algorithm byte an SM4 key is written with (PSAM-SM4 §4.1: ``04``; 3DES keys keep 00)
SM4_ALGORITHM_ID = 0x04
#: the purse keys: overdraw, unload, purchase (DPK), load (DLK); with the TAC key (34) the
#: types that may be SM4 (docs/sm4.md)
PURSE_KEY_TYPES = (0x3C, 0x3D, 0x3E, 0x3F)
_SM4_TYPES = (0x34, *PURSE_KEY_TYPES)


def pin_to_bytes(digits: str) -> bytes:
    """PIN digits → BCD padded with F (SPEC §1.5: 12345 → 12 34 5F)."""
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def pin_bytes(ctx: Located, digits: str, path: list[Any]) -> bytes:
    if not digits.isdigit() or not 4 <= len(digits) <= 12:
        raise ctx.err(path, f"a PIN is 4..12 digits (got {len(digits)} characters)" if digits.isdigit()
                      else "a PIN is digits only")
    return pin_to_bytes(digits)


def master_ref(ctx: Located, value: Any, path: list[Any], unit: str | None, units: dict[str, str]) -> tuple[str, str]:
    """``"unit/role"``, or ``"role"`` of the DF's own unit."""
    typed(ctx, value, path, str)
    if "/" in value:
        u, role = value.split("/", 1)
    elif unit is not None:
        u, role = unit, value
    else:
        raise ctx.err(path, f"{value!r}: write \"unit/role\" (this DF has no unit)")
    if not u or not role:
        raise ctx.err(path, f"{value!r}: write \"unit/role\"")
    if units and u not in units and u != "factory":
        raise ctx.err(path, f"unknown service unit {u!r} (units: {', '.join(units)})")
    return u, role


def parse_key(ctx: Located, t: Any, path: list[Any], name: str, unit: str | None, units: dict[str, str]) -> KeySpec:
    """One entry of ``keys``: a key derived from a master, or a PIN."""
    check_table(ctx, t, KEY_FIELDS, path, "a key")
    tname = required(ctx, t, "type", path, str)
    if tname in PSAM_KEY_NAMES:
        return _psam_key(ctx, t, path, name, unit, units)
    if tname not in KEY_TYPES:
        raise ctx.err([*path, "type"], f"unknown key type {tname!r} (types: "
                      f"{', '.join(sorted([*KEY_TYPES, *PSAM_KEY_NAMES]))})")
    if "levels" in t:
        raise ctx.err([*path, "levels"], "only a PSAM key (type psam-...) has diversification levels")
    kt = KEY_TYPES[tname]
    kid = integer(ctx, t, "id", path, 0, 0xFE, 0)
    alg = _ALGS[choice(ctx, t, "alg", path, "3des", tuple(_ALGS), "3des or sm4")]
    b3, b4 = _bytes_3_4(ctx, t, path, tname, kt)
    if alg == "sm4" and kt not in LINE_CIPHER_TYPES:   # those: by [card] line_protection (card.py)
        b4 = _sm4_algorithm_byte(ctx, t, path, tname, kt)
    elif kt not in _COUNTER_TYPES:
        _check_des_algorithm_byte(ctx, path, b4)
    usage = access(ctx, t, "usage", path, "free")
    change = access(ctx, t, "change", path, "never" if kt == PIN_TYPE else "free")
    write = choice(ctx, t, "write", path, "plain", ("plain", "mac", "cipher"), "plain, mac or cipher")
    protect = choice(ctx, t, "protect_change", path, "none", tuple(_PROTECT_CHANGE), "none, mac or cipher")
    flag = _PROTECT_CHANGE[protect]
    if kt == PIN_TYPE:
        return KeySpec(name=name, ktype=kt, kid=kid, usage_ac=usage, change_ac=change, b3=b3, b4=b4, length=0,
                       pin=_pin_value(ctx, t, path), write=write, change_flag=flag, path=dotted(path))
    master, factor, length, export = _derivation(ctx, t, path, unit, units)
    if alg == "sm4" and length != 16:
        raise ctx.err([*path, "length"], "an SM4 key is 16 bytes")
    if kt == KeyType.PURCHASE and b4 == 0x01 and length == 16:
        # a real FM1208 computes 3DES with a 16-byte key whatever the byte (SPEC §2.2), but a
        # PSAM reads 01 as single DES (PSAMB, SS; docs/psam.md): its MAC1 would never match
        raise ctx.err([*path, "algorithm"], "a 16-byte purchase key with algorithm byte 01: the card would compute "
                      "3DES (SPEC §2.2) and a PSAM single DES (01 = DES: PSAMB); use algorithm 0 for 3DES, or "
                      "length = 8 for DES")
    return KeySpec(name=name, ktype=kt, kid=kid, usage_ac=usage, change_ac=change, b3=b3, b4=b4, length=length,
                   master=master, factor=factor, write=write, change_flag=flag, path=dotted(path), export=export,
                   alg=alg, master_version=t.get("version") == "master")  # type: ignore[arg-type]


def _sm4_algorithm_byte(ctx: Located, t: dict[str, Any], path: list[Any], tname: str, kt: int) -> int:
    """The algorithm byte of an SM4 key: ``04`` (PSAM-SM4 §4.1).  Decision (docs/sm4.md): the
    purse keys and the TAC key can be SM4: their record has an algorithm byte, which INITIALIZE
    returns.  An FMCOS record of a type with an error counter (master, line protection, PIN
    keys) has no algorithm byte, so the card could not know such a key is SM4."""
    if kt not in _SM4_TYPES:
        why = ("its FMCOS record has an error counter in place of the algorithm byte" if kt in _COUNTER_TYPES
               else "citycard's SM4 covers the purse")
        raise ctx.err([*path, "alg"], f"a {tname} key cannot be SM4 here: {why} (docs/sm4.md); SM4 is for the "
                      "load, purchase, unload, overdraw and TAC keys, and on a card with [card] line_protection = "
                      "\"sm4\" for its master, DAMK and PIN unblock/reload keys")
    return _sm4_byte(ctx, t, path)


def _sm4_byte(ctx: Located, t: dict[str, Any], path: list[Any]) -> int:
    """``04``, the algorithm byte of an SM4 key (PSAM-SM4 §4.1), refusing another one given."""
    given = t.get("algorithm")
    if given is not None and given != SM4_ALGORITHM_ID:
        raise ctx.err([*path, "algorithm"], f"an SM4 key has algorithm byte {SM4_ALGORITHM_ID:02X} (PSAM-SM4 §4.1), "
                      f"not {given!r}: leave 'algorithm' out")
    return SM4_ALGORITHM_ID


def _check_des_algorithm_byte(ctx: Located, path: list[Any], b4: int) -> None:
    """A 3DES/DES key's algorithm byte: ``00`` or ``01`` (on real FM1208 cards both give
    DES/3DES session keys by key length, SPEC §2.2, D8).  ``04`` is an SM4 key's byte
    (docs/sm4.md item 5); ``02``/``03`` gave non-DES MAC1s on a real FM1208 and no source says
    which cipher they select (SPEC §6.6: refuse, do not invent a cipher); other values are
    not known to any source."""
    if b4 in (0, 1):
        return
    if b4 == SM4_ALGORITHM_ID:
        raise ctx.err([*path, "algorithm"], f"algorithm byte {b4:02X} marks an SM4 key: write alg = \"sm4\" "
                      "and leave 'algorithm' out (docs/sm4.md)")
    raise ctx.err([*path, "algorithm"], f"algorithm byte {b4:02X}: a 3DES/DES key has 00 or 01 (SPEC §2.2; "
                  "02/03 gave non-DES MACs on a real FM1208 and no source says which cipher they select: "
                  "SPEC §6.6)")


def _bytes_3_4(ctx: Located, t: dict[str, Any], path: list[Any], tname: str, kt: int) -> tuple[int, int]:
    """Bytes 3 and 4 of the key record: follow-up state and error counter, or version and
    algorithm (SPEC §1.4)."""
    if kt in _COUNTER_TYPES:
        state = integer(ctx, t, "state", path, 0, 15, 0) if kt in _STATE_TYPES else 0x0F
        tries = integer(ctx, t, "tries", path, 1, 15, 3)
        for bad in ("version", "algorithm"):
            if bad in t:
                raise ctx.err([*path, bad], f"a {tname} key has an error counter, not a {bad}")
        return ((state << 4) | state if kt in _STATE_TYPES else 0xFF), (tries << 4) | tries
    for bad in ("state", "tries"):
        if bad in t:
            raise ctx.err([*path, bad], f"a {tname} key has a version and algorithm, not {bad!r}")
    version = 0 if t.get("version") == "master" else integer(ctx, t, "version", path, 0, 255, 0)
    return version, integer(ctx, t, "algorithm", path, 0, 255, 0)


def _pin_value(ctx: Located, t: dict[str, Any], path: list[Any]) -> Any:
    """A PIN's value binding, its literal digits (and default) checked."""
    if "master" in t or "factor" in t or "export" in t:
        raise ctx.err(path, "a PIN has a value, not a master key")
    value = t.get("value")
    if value is None:
        raise ctx.err(path, "missing 'value' (the PIN: digits, \"$column\", or {column=..., default=...})")
    check_binding(ctx, value, [*path, "value"])
    if isinstance(value, (str, int)) and not str(value).startswith(("$", "@")):
        pin_bytes(ctx, str(value), [*path, "value"])
    if isinstance(value, dict) and "default" in value:
        pin_bytes(ctx, str(value["default"]), [*path, "value", "default"])
    return value


def _derivation(ctx: Located, t: dict[str, Any], path: list[Any], unit: str | None,
                units: dict[str, str]) -> tuple[tuple[str, str], Any, int, bool]:
    """Master, factor binding, length and export flag of a key derived from a master."""
    if "value" in t:
        raise ctx.err([*path, "value"], "only a PIN takes a value; keys come from their master")
    master = master_ref(ctx, required(ctx, t, "master", path, str), [*path, "master"], unit, units)
    factor = t.get("factor", "@app_serial")
    check_binding(ctx, factor, [*path, "factor"])
    length = integer(ctx, t, "length", path, 8, 16, 16)
    if length not in (8, 16):
        raise ctx.err([*path, "length"], "a key is 8 or 16 bytes")
    export = typed(ctx, t.get("export", False), [*path, "export"], bool)
    return master, factor, length, export


def _psam_key(ctx: Located, t: dict[str, Any], path: list[Any], name: str, unit: str | None,
              units: dict[str, str]) -> KeySpec:
    """A PSAM key (docs/psam.md): the master itself (a PSAM diversifies the cards' keys from
    it, so it takes no ``factor``), its usage byte = ``levels`` in b8–b6 ‖ the type
    (PSAM-SM4.md §1.2), ``id`` = its index (for a purchase master: the card key version it
    serves, PSAMB), then version and algorithm (``00`` 3DES; ``alg = "sm4"``: ``04``, an SM4
    purchase master)."""
    usage = PSAM_KEY_NAMES[str(t["type"])]
    for bad in ("factor", "state", "tries", "value", "protect_change"):
        if bad in t:
            raise ctx.err([*path, bad], f"a PSAM key takes no {bad!r} (it is the master itself: docs/psam.md)")
    levels = integer(ctx, t, "levels", path, 0, 3, 1)
    kid = integer(ctx, t, "id", path, 0, 0xFE, 1)
    write = choice(ctx, t, "write", path, "plain", ("plain", "mac"), "plain or mac (a PSAM key record is never "
                   "enciphered: SPEC §6 R4)")
    master = master_ref(ctx, required(ctx, t, "master", path, str), [*path, "master"], unit, units)
    length = integer(ctx, t, "length", path, 16, 16, 16)
    alg = _ALGS[choice(ctx, t, "alg", path, "3des", tuple(_ALGS), "3des or sm4")]
    if alg == "sm4":   # an SM4 purchase master: algorithm byte 04 in its record (docs/psam.md, docs/sm4.md)
        # an SM4 maintenance master: the MAC of APPLICATION BLOCK for a card whose line
        # protection is SM4 (docs/sm4.md "SM4 line protection")
        if usage not in (PSAM_KEY_NAMES["psam-purchase"], PSAM_KEY_NAMES["psam-maintenance"]):
            raise ctx.err([*path, "alg"], "only a psam-purchase or psam-maintenance key can be SM4 here (the "
                          "purchase of an SM4 purse; the APPLICATION BLOCK of a card with SM4 line protection: "
                          "docs/sm4.md)")
        b4 = _sm4_byte(ctx, t, path)
    else:
        b4 = integer(ctx, t, "algorithm", path, 0, 1, 0)
    return KeySpec(name=name, ktype=usage.usage_byte(levels), kid=kid, usage_ac=access(ctx, t, "usage", path, "free"),
                   change_ac=access(ctx, t, "change", path, "never"),
                   b3=integer(ctx, t, "version", path, 0, 255, kid), b4=b4,
                   length=length, master=master, factor=None, write=write, path=dotted(path),
                   export=typed(ctx, t.get("export", False), [*path, "export"], bool),
                   alg=alg)  # type: ignore[arg-type]
