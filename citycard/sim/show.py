"""A readable tree of a simulated card: file kinds, sizes, ACs, key slots by type and id.

Key values and PINs never appear here.
"""

from __future__ import annotations

from typing import Any

from ..keytypes import is_psam_usage, psam_label
from .card import SimCard
from .fs import (DF, FT_CYCLIC, FT_FIXED, FT_VARIABLE, KEY_TYPE_NAMES, COUNTER_TYPES, BinaryEF, KeyFile,
                 KeyRecord, Node, PurseEF, RecordEF)


def _name(df: DF) -> str:
    n = df.name
    if n and all(0x20 <= b < 0x7F for b in n):
        return f'"{n.decode()}"'
    return n.hex().upper() or "(no name)"


def _key_dict(k: KeyRecord) -> dict[str, Any]:
    if is_psam_usage(k.ktype):   # a PSAM key: its first byte is the usage byte (docs/psam.md)
        return {"type": f"{k.ktype:02X}", "role": psam_label(k.ktype), "id": f"{k.kid:02X}",
                "usage_ac": f"{k.usage_ac:02X}", "change_ac": f"{k.change_ac:02X}", "length": len(k.value),
                "version": f"{k.b3:02X}", "algorithm": f"{k.b4:02X}"}
    d: dict[str, Any] = {"type": f"{k.ktype:02X}", "role": KEY_TYPE_NAMES.get(k.base, "?"), "id": f"{k.kid:02X}",
                         "usage_ac": f"{k.usage_ac:02X}", "change_ac": f"{k.change_ac:02X}",
                         "length": len(k.value)}
    if k.ktype & 0x80:
        d["change_protection"] = "cipher+MAC" if k.ktype & 0x40 else "MAC"
    if k.base in COUNTER_TYPES:
        d["follow_up"] = f"{k.b3:02X}"
        d["tries"] = f"{k.tries_left}/{k.max_tries}"
    else:
        d["version"] = f"{k.b3:02X}"
        d["algorithm"] = f"{k.b4:02X}"
    return d


def tree(card: SimCard) -> dict[str, Any]:
    """The card as a JSON-able tree without any key value."""

    def node(n: Node) -> dict[str, Any]:
        if isinstance(n, DF):
            d: dict[str, Any] = {"kind": "MF" if n.parent is None else "DF", "fid": f"{n.fid:04X}",
                                 "name": n.name.hex().upper(), "space": n.space, "used": n.used(),
                                 "create_ac": f"{n.create_ac:02X}", "erase_ac": f"{n.erase_ac:02X}",
                                 "sfi_byte": f"{n.sfi_byte:02X}"}
            if n.block:
                d["blocked"] = "permanent" if n.block == 2 else "temporary"
            if n.auth_code is not None:
                d["auth_code"] = True
            if n.keyfile is not None:
                kf: KeyFile = n.keyfile
                d["keyfile"] = {"fid": f"{kf.fid:04X}", "space": kf.space, "add_ac": f"{kf.add_ac:02X}",
                                "keys": [_key_dict(k) for k in kf.keys.values()]}
            d["children"] = [node(c) for c in n.children.values()]
            return d
        if isinstance(n, PurseEF):
            return {"kind": "ED" if n.is_ed else "EP", "fid": f"{n.fid:04X}", "usage_ac": f"{n.usage_ac:02X}",
                    "balance_fen": n.balance, "online_counter": n.online, "offline_counter": n.offline,
                    "tac_key_id": f"{n.tac_kid:02X}", "detail_sfi": f"{n.detail_sfi:02X}"}
        base: dict[str, Any] = {"fid": f"{n.fid:04X}", "sfi": f"{n.fid & 0x1F:02X}",  # type: ignore[attr-defined]
                                "type": f"{n.ftype:02X}", "read_ac": f"{n.read_ac:02X}",  # type: ignore[attr-defined]
                                "write_ac": f"{n.write_ac:02X}"}  # type: ignore[attr-defined]
        if isinstance(n, BinaryEF):
            return {"kind": "binary", "size": len(n.data), **base}
        assert isinstance(n, RecordEF)
        kind = {FT_FIXED: "fixed", FT_CYCLIC: "cyclic", FT_VARIABLE: "variable"}[n.kind]
        d = {"kind": kind, **base, "records": len(n.records)}
        if n.kind == FT_VARIABLE:
            d["space"] = n.space
        else:
            d["record_count"], d["record_length"] = n.nrec, n.reclen
        return d

    return {"model": card.model.name, "atr": card.atr.hex().upper(), "card_blocked": card.card_blocked,
            "mf": node(card.mf)}


def _protection(n: Node) -> str:
    out = []
    ft = n.ftype
    if ft & 0x40:
        out.append(f"write cipher+MAC (key 36/{3 - (n.b7 & 3):02X})")  # type: ignore[attr-defined]
    elif ft & 0x80:
        out.append(f"write MAC (key 36/{3 - (n.b7 & 3):02X})")  # type: ignore[attr-defined]
    if not n.b7 & 0x80:  # type: ignore[attr-defined]
        out.append(f"read MAC (key 36/{3 - ((n.b7 >> 2) & 3):02X})")  # type: ignore[attr-defined]
    return (", " + ", ".join(out)) if out else ""


def lines(card: SimCard) -> list[str]:
    out = [f"card model {card.model.name}, ATR {card.atr.hex().upper()}"
           + ("  [CARD BLOCKED]" if card.card_blocked else "")]

    def walk(n: Node, depth: int) -> None:
        pad = "  " * depth
        if isinstance(n, DF):
            label = "MF" if n.parent is None else "DF"
            extra = ""
            if n.sfi_byte & 0x80:
                extra = f", FCI from SFI {n.sfi_byte & 0x1F:02X}"
            if n.block:
                extra += ", BLOCKED " + ("permanently" if n.block == 2 else "temporarily")
            if n.auth_code is not None:
                extra += ", auth code set"
            out.append(f"{pad}{label} {n.fid:04X} {_name(n)}  space {n.space} (used {n.used()}), "
                       f"create {n.create_ac:02X}, erase {n.erase_ac:02X}{extra}")
            if n.keyfile is not None:
                kf = n.keyfile
                out.append(f"{pad}  KEY FILE {kf.fid:04X}  space {kf.space} (free {kf.free()}), add {kf.add_ac:02X}, "
                           f"{len(kf.keys)} key(s)")
                for k in kf.keys.values():
                    kd = _key_dict(k)
                    tail = (f"follow-up {kd['follow_up']}, tries {kd['tries']}" if "tries" in kd
                            else f"version {kd['version']}, algorithm {kd['algorithm']}")
                    prot = f", change needs {kd['change_protection']}" if "change_protection" in kd else ""
                    out.append(f"{pad}    key {kd['type']} {kd['role']} id {kd['id']}: usage {kd['usage_ac']}, "
                               f"change {kd['change_ac']}, {tail}, {kd['length']} bytes{prot}")
            for c in n.children.values():
                walk(c, depth + 1)
            return
        if isinstance(n, PurseEF):
            out.append(f"{pad}{'ED' if n.is_ed else 'EP'} {n.fid:04X}  balance {n.balance} fen, online counter "
                       f"{n.online}, offline counter {n.offline}, usage {n.usage_ac:02X}, TAC key 34/{n.tac_kid:02X}, "
                       f"detail SFI {n.detail_sfi:02X}")
            return
        acs = f"read {n.read_ac:02X}, write {n.write_ac:02X}{_protection(n)}"  # type: ignore[attr-defined]
        if isinstance(n, BinaryEF):
            out.append(f"{pad}EF {n.fid:04X} binary {len(n.data)} bytes, {acs}")
        elif isinstance(n, RecordEF):
            if n.kind == FT_VARIABLE:
                shape = f"variable (TLV) space {n.space}, {len(n.records)} record(s)"
            else:
                kind = "cyclic" if n.kind == FT_CYCLIC else "fixed"
                shape = f"{kind} {n.nrec}x{n.reclen}, {len(n.records)} written"
            out.append(f"{pad}EF {n.fid:04X} {shape}, {acs}")

    walk(card.mf, 0)
    return out
