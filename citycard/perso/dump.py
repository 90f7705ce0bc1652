"""Read a card back and decode it: every application, file and record (``citycard dump``).

With a profile, each DF and EF of the profile is read and decoded with its record
layout; with key sources too, each application's master key (derived for this card,
whose serial is read from the card) is authenticated first so that files behind an
access condition can be read.  Without a profile: the MF, its PSE directory and the
applications it lists, with their FCIs.
"""

from __future__ import annotations

from typing import Any

from ..apdu import CommandApdu, describe_sw
from ..crypto import ecb_encrypt
from ..spec import CardSpec, DFSpec, FileSpec
from ..tlv import try_parse
from ..transport import CardSession


def _select(session: CardSession, df: DFSpec) -> Any:
    if df.fid == 0x3F00:
        return session.send(CommandApdu(0x00, 0xA4, 0x00, 0x00, b"\x3F\x00"))
    return session.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, df.aid))


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
    out = b""
    off = 0
    while off < f.size:
        want = min(f.size - off, 256)
        cmd = (CommandApdu(0x00, 0xB0, 0x80 | f.sfi, 0x00, ne=want) if off == 0
               else CommandApdu(0x00, 0xB0, off >> 8, off & 0xFF, ne=want))
        r = session.send(cmd)
        if r.sw != 0x9000:
            return None, r.sw
        out += r.data
        off += len(r.data) or want
    return out, 0x9000


def _read_records(session: CardSession, f: FileSpec) -> tuple[list[bytes] | None, int]:
    recs: list[bytes] = []
    limit = f.nrec if f.kind in ("fixed", "cyclic") else 64
    for i in range(1, limit + 1):
        r = session.send(CommandApdu(0x00, 0xB2, i, (f.sfi << 3) | 0x04))
        if r.sw == 0x6A83:
            break
        if r.sw != 0x9000:
            return (recs or None), r.sw
        recs.append(r.data)
    return recs, 0x9000


def dump_card(session: CardSession, spec: CardSpec | None = None, keys: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"atr": session.atr.hex().upper(), "applications": []}
    if spec is None:
        return _discover(session, out)
    serial = None
    for df in spec.dfs():
        entry: dict[str, Any] = {"name": df.name, "fid": f"{df.fid:04X}", "aid": df.aid.hex().upper(),
                                 "label": df.label, "unit": df.unit, "files": []}
        out["applications"].append(entry)
        r = _select(session, df)
        entry["sw"] = f"{r.sw:04X}"
        if r.sw != 0x9000:
            entry["error"] = describe_sw(r.sw)
            continue
        entry["fci"] = r.data.hex().upper()
        if keys is not None and serial is not None:
            entry["authenticated"] = _auth_master(session, spec, df, keys, serial)
        for f in df.files:
            fe: dict[str, Any] = {"name": f.name, "fid": f"{f.fid:04X}", "kind": f.kind}
            entry["files"].append(fe)
            if f.kind in ("ed", "ep"):
                rb = session.send(CommandApdu(0x80, 0x5C, 0x00, 0x01 if f.kind == "ed" else 0x02, ne=4))
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


def _auth_master(session: CardSession, spec: CardSpec, df: DFSpec, keys: Any, serial: str) -> bool:
    m = df.master_key()
    if m is None or m.master is None:
        return False
    from .context import CardData, Resolver
    import datetime

    r = Resolver(spec, CardData({}, int(serial[len(spec.serial_prefix):] or 0), datetime.date.today()))
    key = keys.derive(m.master[0], m.master[1], r.factor(m.factor, m.path))
    chal = session.get_challenge(4)
    resp = session.send(CommandApdu(0x00, 0x82, 0x00, m.kid, ecb_encrypt(key, chal + bytes(4))))
    return resp.sw == 0x9000


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
    r = session.send(CommandApdu(0x00, 0xA4, 0x00, 0x00, b"\x3F\x00"))
    mf: dict[str, Any] = {"name": "MF", "fid": "3F00", "sw": f"{r.sw:04X}", "fci": r.data.hex().upper()}
    out["applications"].append(mf)
    if r.sw != 0x9000:
        return out
    fci = try_parse(r.data)
    sfi_t = fci[0].find(0x88) if fci else None
    if sfi_t is None or not sfi_t.value:
        return out
    sfi = sfi_t.value[0]
    entries = []
    for i in range(1, 32):
        rr = session.send(CommandApdu(0x00, 0xB2, i, (sfi << 3) | 0x04))
        if rr.sw != 0x9000:
            break
        entries.append(_dir_entry(rr.data))
    mf["directory"] = entries
    for e in entries:
        if not e.get("aid"):
            continue
        rs = session.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex(e["aid"])))
        out["applications"].append({"name": e.get("label", ""), "aid": e["aid"], "sw": f"{rs.sw:04X}",
                                    "fci": rs.data.hex().upper()})
    return out
