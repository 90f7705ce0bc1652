"""The MF and the applications (DFs): identity, key file, keys and files, and the checks
inside one DF (FIDs, SFIs, space, reachable access conditions; SPEC §1.2, §1.3)."""

from __future__ import annotations

from typing import Any

from ..spec import AC_NEVER, DFSpec, FileSpec, KeySpec, ac_allows, data_room
from .bindings import check_binding
from .fields import Located, access, check_table, dotted, fid, hexbytes, integer, split_path, typed
from .files import PURSE_KINDS, parse_file
from .keys import PIN_TYPE, PURSE_KEY_TYPES, parse_key
from .loading import merge

MF_NAME = b"1PAY.SYS.DDF01"
DF_FIELDS = {"fid", "aid", "name", "label", "unit", "space", "create", "erase", "fci_sfi", "dir_sfi", "keyfile",
             "keys", "files", "template", "auth_code"}
KEYFILE_FIELDS = {"fid", "space", "add"}
_MF_FID = 0x3F00
_RESERVED_FIDS = (0x3F00, 0xFFFF, 0x0000)
_TAC_TYPE = 0x34
_LINE_PROTECTION_TYPE = 0x36


def parse_df(ctx: Located, t: Any, path: list[Any], name: str, templates: dict[str, Any], units: dict[str, str],
             *, is_mf: bool, line_alg: str = "des") -> DFSpec:
    """``[mf]`` or one ``[apps.NAME]`` (after applying its template), checked inside itself
    (``line_alg``: the card's line-protection cipher, ``[card] line_protection``)."""
    typed(ctx, t, path, dict)
    t = _apply_template(ctx, t, path, templates)
    check_table(ctx, t, DF_FIELDS, path, "an application (DF)" if not is_mf else "[mf]")
    file_id, aid, space = _mf_identity(ctx, t, path) if is_mf else _app_identity(ctx, t, path)
    unit = t.get("unit")
    if unit is not None:
        typed(ctx, unit, [*path, "unit"], str)
        if units and unit not in units:
            raise ctx.err([*path, "unit"], f"unknown service unit {unit!r} (units: {', '.join(units)})")
    fci_sfi = integer(ctx, t, "fci_sfi", path, 1, 30, 0) or None
    dir_sfi = integer(ctx, t, "dir_sfi", path, 1, 30, 0) or None
    if fci_sfi and dir_sfi:
        raise ctx.err([*path, "dir_sfi"], "give fci_sfi or dir_sfi, not both (one SFI byte, SPEC §1.2)")
    kf = check_table(ctx, t.get("keyfile", {}), KEYFILE_FIELDS, [*path, "keyfile"], "keyfile")
    kf_fid = fid(ctx, {"fid": kf.get("fid", "0000")}, [*path, "keyfile"])
    keys = tuple(parse_key(ctx, kt, [*path, "keys", kname], kname, unit, units)
                 for kname, kt in typed(ctx, t.get("keys", {}), [*path, "keys"], dict).items())
    kf_space = _keyfile_space(ctx, kf, path, keys)
    files = tuple(parse_file(ctx, ft, [*path, "files", fname], fname)
                  for fname, ft in typed(ctx, t.get("files", {}), [*path, "files"], dict).items())
    auth_code = t.get("auth_code")
    if auth_code is not None:
        check_binding(ctx, auth_code, [*path, "auth_code"])
    df = DFSpec(name=name, fid=file_id, aid=aid, unit=unit, space=space,
                create_ac=access(ctx, t, "create", path, "free"), erase_ac=access(ctx, t, "erase", path, "free"),
                fci_sfi=fci_sfi, dir_sfi=dir_sfi, keyfile_fid=kf_fid, keyfile_space=kf_space,
                keyfile_add_ac=access(ctx, kf, "add", [*path, "keyfile"], "never"), keys=keys, files=files,
                label=str(t.get("label", name)), auth_code=auth_code, path=dotted(path))
    check_df(ctx, df, path, line_alg)
    return df


def _apply_template(ctx: Located, t: dict[str, Any], path: list[Any], templates: dict[str, Any]) -> dict[str, Any]:
    """The DF's table over its template's (``template = "NAME"``), or itself."""
    if "template" not in t:
        return t
    tname = typed(ctx, t["template"], [*path, "template"], str)
    if tname not in templates:
        raise ctx.err([*path, "template"], f"unknown template {tname!r} (templates: {', '.join(templates) or 'none'})")
    check_table(ctx, templates[tname], DF_FIELDS - {"template"}, ["templates", tname], f"template {tname}")
    return merge(templates[tname], {k: v for k, v in t.items() if k != "template"})


def _mf_identity(ctx: Located, t: dict[str, Any], path: list[Any]) -> tuple[int, bytes, int]:
    """The MF: FID 3F00, its name (default 1PAY.SYS.DDF01) and space."""
    for bad in ("aid", "unit", "template"):
        if bad in t:
            raise ctx.err([*path, bad], f"the MF takes no {bad!r}")
    aid = MF_NAME
    if "name" in t:
        aid = typed(ctx, t["name"], [*path, "name"], str).encode("ascii")
    return _MF_FID, aid, integer(ctx, t, "space", path, 0, 0xFFFF, 0xFFFF)


def _app_identity(ctx: Located, t: dict[str, Any], path: list[Any]) -> tuple[int, bytes, int]:
    """An application: its FID, DF name (``aid`` in hex or ``name`` in ASCII) and space."""
    file_id = fid(ctx, t, path)
    if file_id in _RESERVED_FIDS:
        raise ctx.err([*path, "fid"], f"FID {file_id:04X} is reserved")
    if "aid" in t:
        aid = hexbytes(ctx, t["aid"], [*path, "aid"])
    elif "name" in t:
        aid = typed(ctx, t["name"], [*path, "name"], str).encode("ascii")
    else:
        raise ctx.err(path, "missing 'aid' (or 'name')")
    if not 5 <= len(aid) <= 16:
        raise ctx.err([*path, "aid"], f"a DF name is 5..16 bytes, this one {len(aid)}")
    return file_id, aid, integer(ctx, t, "space", path, 32, 0xFFFF)


def _keyfile_space(ctx: Located, kf: dict[str, Any], path: list[Any], keys: tuple[KeySpec, ...]) -> int:
    """The key file's space: given, or the keys' need (key length + 8 each, a PIN 8 + 8)."""
    need = sum((k.length if k.ktype != PIN_TYPE else 8) + 8 for k in keys)
    kf_space = integer(ctx, kf, "space", [*path, "keyfile"], 0, 0xFFFF, max(need, 16))
    if need > kf_space:
        raise ctx.err([*path, "keyfile", "space"], f"{len(keys)} keys need {need} bytes, the key file has {kf_space}")
    return kf_space


# --------------------------------------------------------------------------- checks inside one DF
def check_df(ctx: Located, df: DFSpec, path: list[Any], line_alg: str = "des") -> None:
    """Cross-checks inside one DF."""
    slots = _check_key_slots(ctx, df)
    _check_file_ids(ctx, df)
    used = df.used_space()
    if used > df.space:
        raise ctx.err([*path, "space"], f"files and key file need {used} bytes, more than the DF's space {df.space}")
    reachable = _Reachable(ctx, df)
    reachable.check(df.create_ac, [*path, "create"])
    reachable.check(df.erase_ac, [*path, "erase"])
    reachable.check(df.keyfile_add_ac, [*path, "keyfile", "add"])
    for k in df.keys:
        _check_key(ctx, df, k, reachable)
    line_keys = {k.kid for k in df.keys if k.ktype == _LINE_PROTECTION_TYPE}
    for f in df.files:
        where = split_path(f.path)
        if f.kind in PURSE_KINDS:
            reachable.check(f.usage_ac, [*where, "usage"])
            _check_purse_links(ctx, df, f, slots)
            check_tac_algorithms(ctx, df)
            continue
        reachable.check(f.read_ac, [*where, "read"])
        reachable.check(f.write_ac, [*where, "write"])
        _check_line_protection(ctx, f, line_keys)
        check_record_room(ctx, f, line_alg)


class _Reachable:
    """Access conditions of one DF against the security states its keys can set."""

    def __init__(self, ctx: Located, df: DFSpec) -> None:
        self.ctx = ctx
        # achievable security states: 0, and each ext-auth key's / PIN's follow-up state
        self.states = {0} | {k.follow_up for k in df.keys if k.follow_up is not None}

    def check(self, ac: int, where: list[Any]) -> None:
        if ac == AC_NEVER or (ac >> 4) < (ac & 0x0F):
            return
        if ac >> 4 == 0:
            return  # MF condition: checked against the MF's own keys only when this is the MF
        if not any(ac_allows(ac, sr, 0) for sr in self.states):
            raise self.ctx.err(where, f"access condition {ac:02X} can never be met: no key of this DF sets a "
                               f"security state in it (reachable: {', '.join(str(s) for s in sorted(self.states))})")


def _check_key_slots(ctx: Located, df: DFSpec) -> dict[tuple[int, int], str]:
    """Each (key type, key id) once; the slots and the names of their keys."""
    seen: dict[tuple[int, int], str] = {}
    for k in df.keys:
        slot = (k.ktype, k.kid)
        if slot in seen:
            raise ctx.err(split_path(k.path), f"key type {k.ktype:02X} id {k.kid:02X} already used by {seen[slot]}")
        seen[slot] = k.name
    return seen


def _check_file_ids(ctx: Located, df: DFSpec) -> None:
    """Each FID once (the key file's included), each SFI of a non-purse file once."""
    fids: dict[int, str] = {df.keyfile_fid: "the key file"}
    sfis: dict[int, str] = {}
    for f in df.files:
        if f.fid in fids:
            raise ctx.err([*split_path(f.path), "fid"], f"FID {f.fid:04X} already used by {fids[f.fid]}")
        fids[f.fid] = f"file {f.name}"
        if f.kind not in PURSE_KINDS:
            if f.sfi in sfis:
                raise ctx.err([*split_path(f.path), "fid"], f"SFI {f.sfi:02X} already used by {sfis[f.sfi]}")
            sfis[f.sfi] = f"file {f.name}"


def _check_key(ctx: Located, df: DFSpec, k: KeySpec, reachable: _Reachable) -> None:
    """A key's conditions can be met; a protected WRITE KEY has the DF's master key to use."""
    where = split_path(k.path)
    reachable.check(k.usage_ac, [*where, "usage"])
    reachable.check(k.change_ac, [*where, "change"])
    if k.write != "plain" and df.master_key() is None:
        raise ctx.err([*where, "write"], f"writing under {k.write} needs this DF's master key"
                      " (external-auth id 0)")
    if k.write != "plain" and k is df.master_key():
        raise ctx.err([*where, "write"], "the master key is the first key written: it can only be plain")
    if k.write == "cipher" and k.change_flag != 0xC0:
        # strict host (SPEC §6 R4, UM 7.12): new keys go plain or plain+MAC; an enciphered add is
        # documented only for key types with both change flags set (CIPHK: F9)
        raise ctx.err([*where, "write"], f"a real card takes no enciphered add of key type {k.type_byte:02X}: "
                      "new keys go plain or with a MAC (SPEC §6 R4, UM 7.12); write = \"mac\", or flag the type "
                      "with protect_change = \"cipher\" (CIPHK)")


def check_tac_algorithms(ctx: Located, df: DFSpec) -> None:
    """Each algorithm of the DF's purse keys (3DES, SM4: docs/sm4.md) has a TAC key of that
    algorithm: a purse transaction's TAC is made with a TAC key of its own algorithm."""
    tacs = {k.alg for k in df.keys if k.ktype == _TAC_TYPE}
    for k in df.keys:
        if k.ktype in PURSE_KEY_TYPES and k.alg not in tacs:
            raise ctx.err([*split_path(k.path), "alg"], f"no {'SM4' if k.alg == 'sm4' else '3DES'} TAC key "
                          "(type tac) in this DF for this purse key (docs/sm4.md)")


def _check_purse_links(ctx: Located, df: DFSpec, f: FileSpec, slots: dict[tuple[int, int], str]) -> None:
    """A purse file's TAC key and its detail file (cyclic, 23-byte records, SPEC §2.2) exist."""
    if (_TAC_TYPE, f.tac_key) not in slots:
        raise ctx.err([*split_path(f.path), "tac_key"], f"no TAC key (type tac) with id {f.tac_key:02X} in this DF")
    detail = next((g for g in df.files if g.kind == "cyclic" and g.sfi == f.detail_sfi), None)
    if detail is None or detail.reclen != 23:
        raise ctx.err([*split_path(f.path), "detail_sfi"],
                      f"SFI {f.detail_sfi:02X} must be a cyclic file of 23-byte records (SPEC §2.2)")


def check_record_room(ctx: Located, f: FileSpec, line_alg: str = "des") -> None:
    """A record is written by one APPEND RECORD, which cannot be split: it must fit Lc ≤ 239
    with its line protection (strict host, SPEC §6 R7; ``line_alg``: the card's cipher, an
    SM4 ciphertext is padded to 16 bytes)."""
    room = data_room(f.write_protect, line_alg)
    if f.kind in ("fixed", "cyclic") and f.reclen > room:
        raise ctx.err([*split_path(f.path), "length"], f"a record of {f.reclen} bytes cannot be written in one "
                      f"command: an FM1208 takes at most {room} data bytes"
                      + (f" with {f.write_protect} protection" if f.write_protect != "plain" else "")
                      + " (Lc ≤ 239, SPEC §6 R7)")


def _check_line_protection(ctx: Located, f: FileSpec, line_keys: set[int]) -> None:
    """A protected read or write names a line-protection key of the DF."""
    if f.write_protect != "plain" and f.write_key not in line_keys:
        raise ctx.err([*split_path(f.path), "write_key"], f"write protection needs a line-protection key id "
                      f"{f.write_key:02X} in this DF")
    if f.read_protect and f.read_key not in line_keys:
        raise ctx.err([*split_path(f.path), "read_key"], f"read protection needs a line-protection key id "
                      f"{f.read_key:02X} in this DF")
