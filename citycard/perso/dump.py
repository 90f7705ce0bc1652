"""Read a card back and decode it: every application, file and record (``citycard dump``).

With a profile, each DF and EF of the profile is read and decoded with its record
layout; with key sources too, each application's master key (derived for this card,
whose serial is read from the card) is authenticated first so that files behind an
access condition can be read.  Without a profile: the MF, its PSE directory and the
applications it lists, with their FCIs.
"""

from __future__ import annotations

from typing import Any

from ..apdu import describe_sw
from ..commands import iso, purse, walk
from ..commands.purse import PurseKind
from ..keys import KeySource
from ..spec import CardSpec, DFSpec, FileSpec
from ..tlv import try_parse
from ..transport import CardSession


def _decode(layout_name: str | None, data: Any) -> Any:
    if layout_name is None:
        return None
    from .. import records

    try:
        lay = records.get(layout_name)
        return lay.decode(data)
    except Exception as exc:  # a card whose content does not match its layout
        return {"error": str(exc)}


def _read_binary(session: CardSession, f: FileSpec) -> tuple[bytes | None, int]:
    read = walk.read_file(session, f)
    return (read.data if read.ok else None), read.sw


def _read_records(session: CardSession, f: FileSpec) -> tuple[list[bytes] | None, int]:
    limit = f.nrec if f.kind in ("fixed", "cyclic") else 64
    read = walk.read_records_to_end(session, sfi=f.sfi, limit=limit)
    return (list(read.records) or (None if not read.ok else [])), read.sw


def dump_card(session: CardSession, spec: CardSpec | None = None, keys: KeySource | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"atr": session.atr.hex().upper(), "applications": []}
    if spec is None:
        return _discover(session, out)
    serial = None
    refused = False
    for df in spec.dfs():
        entry: dict[str, Any] = {"name": df.name, "fid": f"{df.fid:04X}", "aid": df.aid.hex().upper(),
                                 "label": df.label, "unit": df.unit, "files": []}
        out["applications"].append(entry)
        r = walk.select_df(session, df)
        entry["sw"] = f"{r.sw:04X}"
        if r.sw != 0x9000:
            entry["error"] = describe_sw(r.sw)
            continue
        entry["fci"] = r.data.hex().upper()
        if keys is not None and serial is not None and not refused:
            entry["authenticated"], sw = _auth_master(session, spec, df, keys, serial)
            if sw is not None and (sw & 0xFFF0 == 0x63C0 or sw == 0x6983):
                refused = True        # never another key on this card (the keys or the card are not the right ones)
                out["keys_refused"] = f"{df.name}: SW {sw:04X}; no further key was tried"
        for f in df.files:
            fe: dict[str, Any] = {"name": f.name, "fid": f"{f.fid:04X}", "kind": f.kind}
            entry["files"].append(fe)
            if f.kind in ("ed", "ep"):
                rb = session.send(purse.get_balance(PurseKind.ED if f.kind == "ed" else PurseKind.EP))
                fe["sw"] = f"{rb.sw:04X}"
                if rb.sw == 0x9000:
                    fe["balance_fen"] = int.from_bytes(rb.data, "big")
                else:
                    fe["error"] = describe_sw(rb.sw)
                continue
            fe["layout"] = f.layout
            if f.kind == "binary":
                data, sw = _read_binary(session, f)
                fe["sw"] = f"{sw:04X}"
                if data is None:
                    fe["error"] = describe_sw(sw)
                    continue
                fe["data"] = data.hex().upper()
                dec = _decode(f.layout, data[: _layout_size(f.layout, len(data))])
                if dec is not None:
                    fe["decoded"] = dec
                    if df.fid == 0x3F00 and serial is None:
                        serial = _find_serial(f, dec)
            else:
                recs, sw = _read_records(session, f)
                fe["sw"] = f"{sw:04X}"
                if recs is None:
                    fe["error"] = describe_sw(sw)
                    continue
                fe["records"] = [r.hex().upper() for r in recs]
                if f.layout is not None:
                    from .. import records
                    lay = records.get(f.layout)
                    if hasattr(lay, "size"):
                        fe["decoded"] = [_decode(f.layout, r) for r in recs]
                    else:
                        fe["decoded"] = _decode(f.layout, recs)
                elif f.data.get("@content") == "dir":
                    fe["decoded"] = [_dir_entry(r) for r in recs]
    out["card_serial"] = serial
    return out


def _layout_size(name: str | None, default: int) -> int:
    if name is None:
        return default
    from .. import records
    return getattr(records.get(name), "size", default)


def _find_serial(f: FileSpec, decoded: Any) -> str | None:
    for field, binding in f.data.items():
        if binding == "@card_serial" and isinstance(decoded, dict):
            return str(decoded.get(field))
    return None


def _auth_master(session: CardSession, spec: CardSpec, df: DFSpec, keys: KeySource,
                 serial: str) -> tuple[bool, int | None]:
    """Whether ``df``'s master authenticates, and the card's SW (None: not tried, e.g. a serial
    that is not one of this profile's, so the card is not identified as ours)."""
    m = df.master_key()
    number = serial[len(spec.serial_prefix):]
    if m is None or m.master is None or not serial.startswith(spec.serial_prefix) or not number.isdigit():
        return False, None
    from .context import CardData, Resolver
    import datetime

    r = Resolver(spec, CardData({}, int(number or 0), datetime.date.today()))
    factor = r.factor(m.factor, m.path)
    key = keys.derive(m.master[0], m.master[1], factor, alg="sm4") if m.alg == "sm4" else \
        keys.derive(m.master[0], m.master[1], factor)
    sw = walk.external_authenticate(session, m.kid, key, spec.line_alg).sw
    return sw == 0x9000, sw


def _dir_entry(rec: bytes) -> dict[str, str]:
    items = try_parse(rec)
    if not items:
        return {"raw": rec.hex().upper()}
    t = items[0]
    aid = t.find(0x4F)
    label = t.find(0x50)
    return {"aid": aid.value.hex().upper() if aid else "",
            "label": label.value.decode("utf-8", "replace") if label else ""}


def _discover(session: CardSession, out: dict[str, Any]) -> dict[str, Any]:
    r = session.send(iso.select_mf())
    mf: dict[str, Any] = {"name": "MF", "fid": "3F00", "sw": f"{r.sw:04X}", "fci": r.data.hex().upper()}
    out["applications"].append(mf)
    if r.sw != 0x9000:
        return out
    fci = try_parse(r.data)
    sfi_t = fci[0].find(0x88) if fci else None
    if sfi_t is None or not sfi_t.value:
        return out
    sfi = sfi_t.value[0]
    entries = [_dir_entry(rec) for rec in walk.read_records_to_end(session, sfi=sfi, limit=31).records]
    mf["directory"] = entries
    for e in entries:
        if not e.get("aid"):
            continue
        rs = session.send(iso.select_name(bytes.fromhex(e["aid"])))
        out["applications"].append({"name": e.get("label", ""), "aid": e["aid"], "sw": f"{rs.sw:04X}",
                                    "fci": rs.data.hex().upper()})
    return out
