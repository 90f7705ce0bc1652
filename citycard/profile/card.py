"""The whole card: ``[profile]``, ``[card]``, ``[units]``, the MF and the applications, and
the checks across them (FIDs and AIDs in the MF, the MF's space, the columns read)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..keytypes import LINE_CIPHER_TYPES, KeyType
from ..spec import FACTORY_TRANSPORT_KEY, FACTORY_TRANSPORT_KEY_SM4, CardSpec, DFSpec, TransportKey
from .bindings import binding_columns
from .dfs import parse_df
from .fields import Located, check_table, choice, hexbytes, integer, split_path, typed
from .keys import master_ref

PROFILE_FIELDS = {"name", "title", "cos", "version", "production"}
CARD_FIELDS = {"transport_key", "serial_prefix", "serial_digits", "validity_years", "rerun", "replacement_wait_days",
               "line_protection"}
#: ``[card] line_protection``: the profile's name → the crypto library's cipher family
_LINE_ALGS = {"3des": "des", "sm4": "sm4"}
TRANSPORT_FIELDS = {"source", "value", "length", "id"}


@dataclass(frozen=True)
class _Serials:
    prefix: str
    digits: int


def build_card(ctx: Located, data: dict[str, Any]) -> CardSpec:
    """The :class:`~citycard.spec.CardSpec` of a profile's tables (includes merged)."""
    prof = check_table(ctx, data.get("profile", {}), PROFILE_FIELDS, ["profile"], "[profile]")
    cos = prof.get("cos", "fmcos")
    if cos != "fmcos":
        raise ctx.err(["profile", "cos"], f"COS {cos!r} not supported (only \"fmcos\")")
    card = check_table(ctx, data.get("card", {}), CARD_FIELDS, ["card"], "[card]")
    units = _units(ctx, data.get("units", {}))
    templates = data.get("templates", {})
    typed(ctx, templates, ["templates"], dict)
    line_alg = _LINE_ALGS[choice(ctx, card, "line_protection", ["card"], "3des", tuple(_LINE_ALGS), "3des or sm4")]
    transport = _transport_key(ctx, card.get("transport_key"), units, line_alg)
    serials = _serials(ctx, card)
    rerun = card.get("rerun", "erase")
    if rerun not in ("erase", "refuse"):
        raise ctx.err(["card", "rerun"], f"{rerun!r}: expected \"erase\" or \"refuse\"")
    mf, apps = _dfs(ctx, data, templates, units, line_alg)
    _check_apps(ctx, mf, apps, units)
    _check_line_keys(ctx, mf, apps, line_alg)
    return CardSpec(
        name=str(prof.get("name", Path(ctx.file).stem)), title=str(prof.get("title", "")), source=ctx.file,
        transport_key=transport, serial_prefix=serials.prefix, serial_digits=serials.digits,
        validity_years=integer(ctx, card, "validity_years", ["card"], 1, 99, 10), rerun=rerun,
        mf=mf, apps=apps, columns=_columns(mf, apps), units=dict(units),
        production=bool(typed(ctx, prof.get("production", False), ["profile", "production"], bool)),
        replacement_wait_days=integer(ctx, card, "replacement_wait_days", ["card"], 0, 365, 0),
        line_alg=line_alg)  # type: ignore[arg-type]


def _check_line_keys(ctx: Located, mf: DFSpec, apps: tuple[DFSpec, ...], line_alg: str) -> None:
    """The master, line-protection and PIN keys (39, 36, 37, 38) have the card's line-protection
    cipher (docs/sm4.md "SM4 line protection"): ``alg = "sm4"`` exactly under
    ``[card] line_protection = "sm4"``."""
    for df in (mf, *apps):
        for k in df.keys:
            if k.ktype not in LINE_CIPHER_TYPES or k.alg == line_alg:
                continue
            path = [*split_path(k.path), "alg"]
            what = f"a {KeyType(k.ktype).label} ({k.ktype:02X}) key"
            if line_alg == "sm4":
                raise ctx.err(path, f"{what} has the card's line-protection cipher: [card] line_protection = "
                              "\"sm4\" needs alg = \"sm4\" here (docs/sm4.md)")
            raise ctx.err(path, f"{what} cannot be SM4 here: its FMCOS record has an error counter in place of "
                          "the algorithm byte, so its cipher is the card's line protection (3DES); say [card] "
                          "line_protection = \"sm4\" for a card whose COS does SM4 (docs/sm4.md)")


def _transport_key(ctx: Located, t: Any, units: dict[str, str], line_alg: str = "des") -> TransportKey:
    """``[card] transport_key``: absent (the blank FM1208's 8×FF, id 00: SPEC §6 R1; 16×FF on a
    card with SM4 line protection), a key-source entry ``"unit/role"`` (the card's key is 8
    bytes: the entry's left half; 16 bytes on an SM4 card), or a table
    ``{ source = "unit/role" | value = "hex", length = 8 | 16, id = 0 }`` (16 on an SM4 card)."""
    path = ["card", "transport_key"]
    sm4 = line_alg == "sm4"
    if t is None:
        return FACTORY_TRANSPORT_KEY_SM4 if sm4 else FACTORY_TRANSPORT_KEY
    if isinstance(t, str):
        return TransportKey(source=master_ref(ctx, t, path, None, units), value=None, length=16 if sm4 else 8)
    check_table(ctx, t, TRANSPORT_FIELDS, path, "transport_key")
    if ("source" in t) == ("value" in t):
        raise ctx.err(path, "give source = \"unit/role\" (a key-source entry) or value = \"hex\", one of them")
    kid = integer(ctx, t, "id", path, 0, 0xFE, 0)
    if "source" in t:
        length = integer(ctx, t, "length", path, 8, 16, 16 if sm4 else 8)
        if length not in (8, 16):
            raise ctx.err([*path, "length"], "a transport key is 8 or 16 bytes (SPEC §6 R1)")
        if sm4 and length != 16:
            raise ctx.err([*path, "length"], "an SM4 card's transport key is a 16-byte SM4 key (docs/sm4.md)")
        return TransportKey(source=master_ref(ctx, t["source"], [*path, "source"], None, units), value=None,
                            length=length, kid=kid)
    value = hexbytes(ctx, t["value"], [*path, "value"])
    if len(value) not in (8, 16):
        raise ctx.err([*path, "value"], f"a transport key is 8 or 16 bytes, this one {len(value)} (SPEC §6 R1)")
    length = integer(ctx, t, "length", path, 8, 16, len(value))
    if sm4 and len(value) != 16:
        raise ctx.err([*path, "value"], "an SM4 card's transport key is a 16-byte SM4 key (docs/sm4.md)")
    if length != len(value):
        # strict host: the card's key is `length` bytes; this value cannot authenticate it
        raise ctx.err([*path, "length"], f"the card's transport key is {length} bytes but the value given is "
                      f"{len(value)} (SPEC §6 R1)")
    return TransportKey(source=None, value=value, length=length, kid=kid)


def _units(ctx: Located, units: Any) -> dict[str, str]:
    """``[units]``: service unit → description."""
    check_table(ctx, units, set(units), ["units"], "[units]")
    for u, desc in units.items():
        typed(ctx, desc, ["units", u], str)
    return units


def _serials(ctx: Located, card: dict[str, Any]) -> _Serials:
    """Card serials: a digit prefix, leaving room in the number of digits."""
    prefix = card.get("serial_prefix", "")
    typed(ctx, prefix, ["card", "serial_prefix"], str)
    if not prefix.isdigit() and prefix:
        raise ctx.err(["card", "serial_prefix"], f"{prefix!r}: digits only")
    digits = integer(ctx, card, "serial_digits", ["card"], 4, 20, 16)
    if len(prefix) >= digits:
        raise ctx.err(["card", "serial_prefix"], f"prefix of {len(prefix)} digits leaves no room in {digits}")
    return _Serials(prefix, digits)


def _dfs(ctx: Located, data: dict[str, Any], templates: dict[str, Any],
         units: dict[str, str], line_alg: str = "des") -> tuple[DFSpec, tuple[DFSpec, ...]]:
    """The MF and the applications, in profile order."""
    mf_t = data.get("mf")
    if mf_t is None:
        raise ctx.err([], "missing [mf]")
    mf = parse_df(ctx, mf_t, ["mf"], "mf", templates, units, is_mf=True, line_alg=line_alg)
    apps_t = data.get("apps", {})
    typed(ctx, apps_t, ["apps"], dict)
    apps = tuple(parse_df(ctx, t, ["apps", name], name, templates, units, is_mf=False, line_alg=line_alg)
                 for name, t in apps_t.items())
    return mf, apps


def _check_apps(ctx: Located, mf: DFSpec, apps: tuple[DFSpec, ...], units: dict[str, str]) -> None:
    """Card-wide: FIDs and AIDs unique in the MF, units known, everything fits the MF."""
    seen_fid: dict[int, str] = {}
    seen_aid: dict[bytes, str] = {}
    mf_fids = {f.fid for f in mf.files}
    for app in apps:
        where = split_path(app.path)
        if app.fid in seen_fid or app.fid in mf_fids or app.fid == mf.keyfile_fid:
            raise ctx.err([*where, "fid"], f"FID {app.fid:04X} already used in the MF"
                          + (f" by {seen_fid[app.fid]}" if app.fid in seen_fid else ""))
        seen_fid[app.fid] = app.path
        if app.aid in seen_aid:
            raise ctx.err([*where, "aid"], f"AID {app.aid.hex().upper()} already used by {seen_aid[app.aid]}")
        seen_aid[app.aid] = app.path
        if app.unit is not None and units and app.unit not in units:
            raise ctx.err([*where, "unit"], f"unknown service unit {app.unit!r} (units: {', '.join(units)})")
    total = mf.used_space() + sum(a.space for a in apps)
    if total > mf.space:
        raise ctx.err(["mf", "space"], f"the MF's files and applications need {total} bytes, more than its space {mf.space}")


def _columns(mf: DFSpec, apps: tuple[DFSpec, ...]) -> tuple[str, ...]:
    """Every cardholder column the card's bindings read, sorted."""
    columns: set[str] = set()
    for df in (mf, *apps):
        for f in df.files:
            columns |= binding_columns(f.data) | binding_columns(list(f.records))
        for k in df.keys:
            columns |= binding_columns(k.pin) | binding_columns(k.factor)
        columns |= binding_columns(df.auth_code)
    return tuple(sorted(columns))
