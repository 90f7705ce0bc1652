"""Profiles: TOML → :class:`~citycard.spec.CardSpec`, with errors that name file, line and key path.

The format is described in docs/profile.md.  Read with the standard library's
``tomllib``; since it keeps no positions, :func:`locate` finds the line of a key path
in the text (table headers, dotted keys and inline tables).
"""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from .errors import CitycardError
from .spec import (AC_NEVER, KEY_TYPES, CardSpec, DFSpec, FileSpec, KeySpec, ac_allows, parse_ac)

MF_NAME = b"1PAY.SYS.DDF01"


class ProfileError(CitycardError):
    """A profile problem: ``file:line: key.path: message``."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None, path: str = "") -> None:
        self.file, self.line, self.path, self.reason = file, line, path, message
        where = file + (f":{line}" if line else "")
        loc = ": ".join(p for p in (where, path) if p)
        super().__init__(f"{loc}: {message}" if loc else message)


# --------------------------------------------------------------------------- locating lines
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r'^\s*((?:[A-Za-z0-9_-]+|"[^"]*")(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"))*)\s*=')


def _split_key(text: str) -> list[str]:
    return [p.strip().strip('"') for p in re.findall(r'"[^"]*"|[^.]+', text)]


def locate(text: str, path: Iterable[str]) -> int | None:
    """1-based line where the key path (or its longest defined prefix) is written."""
    want = [str(p) for p in path]
    best_line, best_len = None, 0
    table: list[str] = []
    for no, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m and "=" not in line.split("]")[0]:
            table = _split_key(m.group(1))
            full = table
        else:
            k = _KEYLINE.match(line)
            if not k:
                continue
            full = table + _split_key(k.group(1))
            # keys of an inline table on this line: {a = 1, b = 2}
            rest = line[k.end():]
            if "{" in rest:
                for inner in re.findall(r"([A-Za-z0-9_-]+)\s*=", rest):
                    cand = full + [inner]
                    if cand == want[: len(cand)] and len(cand) > best_len:
                        best_line, best_len = no, len(cand)
        n = len(full)
        if full == want[:n] and n > best_len:
            best_line, best_len = no, n
    return best_line


# --------------------------------------------------------------------------- schema
_TOP = {"include", "profile", "card", "units", "templates", "mf", "apps"}
_PROFILE = {"name", "title", "cos", "version"}
_CARD = {"transport_key", "serial_prefix", "serial_digits", "validity_years", "rerun"}
_DF = {"fid", "aid", "name", "label", "unit", "space", "create", "erase", "fci_sfi", "dir_sfi", "keyfile",
       "keys", "files", "template", "auth_code"}
_KEYFILE = {"fid", "space", "add"}
_KEY = {"type", "id", "usage", "change", "state", "tries", "version", "algorithm", "master", "factor",
        "value", "length", "write", "protect_change", "export"}
_FILE = {"fid", "kind", "size", "count", "length", "space", "read", "write", "write_protect", "write_key",
         "read_protect", "read_key", "layout", "data", "records", "content", "usage", "tac_key", "detail_sfi"}
_KINDS = {"binary", "fixed", "variable", "cyclic", "ed", "ep"}


class _Ctx:
    """Error construction with file and line."""

    def __init__(self, file: str, text: str) -> None:
        self.file, self.text = file, text
        self.sources: dict[str, tuple[str, str]] = {}   # top-level key path prefix → (file, text)

    def err(self, path: list[Any] | tuple[Any, ...], message: str) -> ProfileError:
        p = [str(x) for x in path]
        file, text = self.file, self.text
        for prefix, (f, t) in self.sources.items():
            if ".".join(p).startswith(prefix):
                file, text = f, t
        return ProfileError(message, file=file, line=locate(text, p), path=".".join(p))


def _check_keys(ctx: _Ctx, table: Any, allowed: set[str], path: list[Any], what: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ctx.err(path, f"expected a table ({what})")
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(sorted(allowed))})"
            raise ctx.err([*path, key], f"unknown key {key!r} in {what}{extra}")
    return table


def _req(ctx: _Ctx, table: dict[str, Any], key: str, path: list[Any], kind: type | tuple[type, ...]) -> Any:
    if key not in table:
        raise ctx.err(path, f"missing {key!r}")
    return _typed(ctx, table[key], [*path, key], kind)


def _typed(ctx: _Ctx, value: Any, path: list[Any], kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind in (int, (int,)):
        raise ctx.err(path, f"expected an integer, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ctx.err(path, f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def _int(ctx: _Ctx, t: dict[str, Any], key: str, path: list[Any], lo: int, hi: int, default: int | None = None) -> int:
    if key not in t:
        if default is None:
            raise ctx.err(path, f"missing {key!r}")
        return default
    v = t[key]
    if isinstance(v, str):
        try:
            v = int(v, 0) if v.lower().startswith("0x") else int(v, 16)
        except ValueError:
            raise ctx.err([*path, key], f"{v!r} is not a number") from None
    v = _typed(ctx, v, [*path, key], int)
    if not lo <= v <= hi:
        raise ctx.err([*path, key], f"{v} is outside {lo}..{hi}")
    return v


def _fid(ctx: _Ctx, t: dict[str, Any], path: list[Any], key: str = "fid") -> int:
    v = _req(ctx, t, key, path, str)
    if not re.fullmatch(r"[0-9A-Fa-f]{4}", v):
        raise ctx.err([*path, key], f"{v!r} is not a file identifier (4 hex digits)")
    return int(v, 16)


def _ac(ctx: _Ctx, t: dict[str, Any], key: str, path: list[Any], default: str) -> int:
    try:
        return parse_ac(t.get(key, default))
    except ValueError as exc:
        raise ctx.err([*path, key], str(exc)) from None


def _hexbytes(ctx: _Ctx, value: Any, path: list[Any]) -> bytes:
    _typed(ctx, value, path, str)
    try:
        return bytes.fromhex(value.replace(" ", ""))
    except ValueError:
        raise ctx.err(path, f"{value!r} is not hex") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------- bindings
def binding_columns(value: Any) -> set[str]:
    """Cardholder columns a binding reads (``"$col"`` or ``{column = ...}``)."""
    if isinstance(value, str) and value.startswith("$"):
        return {value[1:]}
    if isinstance(value, dict):
        if "column" in value:
            return {str(value["column"])}
        out: set[str] = set()
        for v in value.values():
            out |= binding_columns(v)
        return out
    if isinstance(value, list):
        out = set()
        for v in value:
            out |= binding_columns(v)
        return out
    return set()


COMPUTED = {"@app_serial", "@card_serial", "@issue_date", "@expiry_date", "@aid", "@card_number"}


def _check_binding(ctx: _Ctx, value: Any, path: list[Any]) -> None:
    if isinstance(value, str) and value.startswith("@") and value not in COMPUTED:
        raise ctx.err(path, f"unknown computed value {value!r} (known: {', '.join(sorted(COMPUTED))})")
    if isinstance(value, dict):
        if "column" in value:
            extra = set(value) - {"column", "default"}
            if extra:
                raise ctx.err(path, f"a column binding takes only column and default, not {sorted(extra)}")
        else:
            for k, v in value.items():
                _check_binding(ctx, v, [*path, k])
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_binding(ctx, v, [*path, i])


# --------------------------------------------------------------------------- loading
def load_profile(path: str | Path) -> CardSpec:
    """Read and validate a profile file; a name of ``citycard.assets.NAMED_PROFILES`` (``demo``,
    ``pboc-ep``) that is not a file here means the profile shipped in the package."""
    path = Path(path)
    if not path.exists():
        from .assets import named_profile

        path = named_profile(str(path)) or path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError("no such profile", file=str(path)) from None
    except OSError as exc:
        raise ProfileError(exc.strerror or str(exc), file=str(path)) from None
    return parse_profile(text, str(path), base=path.parent)


def _toml(text: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ProfileError(f"TOML syntax: {msg}", file=file, line=line) from None


def parse_profile(text: str, file: str = "<profile>", *, base: Path | None = None) -> CardSpec:
    ctx = _Ctx(file, text)
    data = _toml(text, file)
    _check_keys(ctx, data, _TOP, [], "the profile")
    for i, inc in enumerate(data.get("include", [])):
        _typed(ctx, inc, ["include", i], str)
        ipath = (base or Path(".")) / inc
        try:
            itext = ipath.read_text(encoding="utf-8")
        except OSError:
            raise ctx.err(["include", i], f"cannot read included file {inc!r}") from None
        idata = _toml(itext, str(ipath))
        for k in idata:
            if k not in ("templates", "units"):
                raise ProfileError(f"an included file may define only templates and units, not {k!r}",
                                   file=str(ipath), line=locate(itext, [k]), path=k)
            for name in idata[k]:
                ctx.sources[f"{k}.{name}"] = (str(ipath), itext)
        for k, v in idata.items():
            data[k] = _merge(v, data.get(k, {}))
    return _build(ctx, data)


def _build(ctx: _Ctx, data: dict[str, Any]) -> CardSpec:
    prof = _check_keys(ctx, data.get("profile", {}), _PROFILE, ["profile"], "[profile]")
    cos = prof.get("cos", "fmcos")
    if cos != "fmcos":
        raise ctx.err(["profile", "cos"], f"COS {cos!r} not supported (only \"fmcos\")")
    card = _check_keys(ctx, data.get("card", {}), _CARD, ["card"], "[card]")
    units = data.get("units", {})
    _check_keys(ctx, units, set(units), ["units"], "[units]")
    for u, desc in units.items():
        _typed(ctx, desc, ["units", u], str)
    templates = data.get("templates", {})
    _typed(ctx, templates, ["templates"], dict)

    transport = None
    if "transport_key" in card:
        transport = _master_ref(ctx, card["transport_key"], ["card", "transport_key"], None, units)
    prefix = card.get("serial_prefix", "")
    _typed(ctx, prefix, ["card", "serial_prefix"], str)
    if not prefix.isdigit() and prefix:
        raise ctx.err(["card", "serial_prefix"], f"{prefix!r}: digits only")
    digits = _int(ctx, card, "serial_digits", ["card"], 4, 20, 16)
    if len(prefix) >= digits:
        raise ctx.err(["card", "serial_prefix"], f"prefix of {len(prefix)} digits leaves no room in {digits}")
    rerun = card.get("rerun", "erase")
    if rerun not in ("erase", "refuse"):
        raise ctx.err(["card", "rerun"], f"{rerun!r}: expected \"erase\" or \"refuse\"")

    mf_t = data.get("mf")
    if mf_t is None:
        raise ctx.err([], "missing [mf]")
    mf = _df(ctx, mf_t, ["mf"], "mf", templates, units, is_mf=True)
    apps_t = data.get("apps", {})
    _typed(ctx, apps_t, ["apps"], dict)
    apps = tuple(_df(ctx, t, ["apps", name], name, templates, units, is_mf=False) for name, t in apps_t.items())

    # ----- card-wide checks
    seen_fid: dict[int, str] = {}
    seen_aid: dict[bytes, str] = {}
    for app in apps:
        if app.fid in seen_fid or app.fid in {f.fid for f in mf.files} or app.fid == mf.keyfile_fid:
            raise ctx.err([*_p(app.path), "fid"], f"FID {app.fid:04X} already used in the MF"
                          + (f" by {seen_fid[app.fid]}" if app.fid in seen_fid else ""))
        seen_fid[app.fid] = app.path
        if app.aid in seen_aid:
            raise ctx.err([*_p(app.path), "aid"], f"AID {app.aid.hex().upper()} already used by {seen_aid[app.aid]}")
        seen_aid[app.aid] = app.path
        if app.unit is not None and units and app.unit not in units:
            raise ctx.err([*_p(app.path), "unit"], f"unknown service unit {app.unit!r} (units: {', '.join(units)})")
    total = mf.used_space() + sum(a.space for a in apps)
    if total > mf.space:
        raise ctx.err(["mf", "space"], f"the MF's files and applications need {total} bytes, more than its space {mf.space}")
    columns: set[str] = set()
    for df in (mf, *apps):
        for f in df.files:
            columns |= binding_columns(f.data) | binding_columns(list(f.records))
        for k in df.keys:
            columns |= binding_columns(k.pin) | binding_columns(k.factor)
        columns |= binding_columns(df.auth_code)
    return CardSpec(
        name=str(prof.get("name", Path(ctx.file).stem)), title=str(prof.get("title", "")), source=ctx.file,
        transport_key=transport, serial_prefix=prefix, serial_digits=digits,
        validity_years=_int(ctx, card, "validity_years", ["card"], 1, 99, 10), rerun=rerun,
        mf=mf, apps=apps, columns=tuple(sorted(columns)), units=dict(units))


def _p(path: str) -> list[str]:
    return path.split(".")


def _master_ref(ctx: _Ctx, value: Any, path: list[Any], unit: str | None, units: dict[str, str]) -> tuple[str, str]:
    _typed(ctx, value, path, str)
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


def _df(ctx: _Ctx, t: Any, path: list[Any], name: str, templates: dict[str, Any], units: dict[str, str],
        *, is_mf: bool) -> DFSpec:
    _typed(ctx, t, path, dict)
    if "template" in t:
        tname = _typed(ctx, t["template"], [*path, "template"], str)
        if tname not in templates:
            raise ctx.err([*path, "template"], f"unknown template {tname!r} (templates: {', '.join(templates) or 'none'})")
        _check_keys(ctx, templates[tname], _DF - {"template"}, ["templates", tname], f"template {tname}")
        t = _merge(templates[tname], {k: v for k, v in t.items() if k != "template"})
    _check_keys(ctx, t, _DF, path, "an application (DF)" if not is_mf else "[mf]")
    if is_mf:
        fid = 0x3F00
        for bad in ("aid", "unit", "template"):
            if bad in t:
                raise ctx.err([*path, bad], f"the MF takes no {bad!r}")
        aid = MF_NAME
        if "name" in t:
            aid = _typed(ctx, t["name"], [*path, "name"], str).encode("ascii")
        space = _int(ctx, t, "space", path, 0, 0xFFFF, 0xFFFF)
    else:
        fid = _fid(ctx, t, path)
        if fid in (0x3F00, 0xFFFF, 0x0000):
            raise ctx.err([*path, "fid"], f"FID {fid:04X} is reserved")
        if "aid" in t:
            aid = _hexbytes(ctx, t["aid"], [*path, "aid"])
        elif "name" in t:
            aid = _typed(ctx, t["name"], [*path, "name"], str).encode("ascii")
        else:
            raise ctx.err(path, "missing 'aid' (or 'name')")
        if not 5 <= len(aid) <= 16:
            raise ctx.err([*path, "aid"], f"a DF name is 5..16 bytes, this one {len(aid)}")
        space = _int(ctx, t, "space", path, 32, 0xFFFF)
    unit = t.get("unit")
    if unit is not None:
        _typed(ctx, unit, [*path, "unit"], str)
        if units and unit not in units:
            raise ctx.err([*path, "unit"], f"unknown service unit {unit!r} (units: {', '.join(units)})")
    fci_sfi = _int(ctx, t, "fci_sfi", path, 1, 30, 0) or None
    dir_sfi = _int(ctx, t, "dir_sfi", path, 1, 30, 0) or None
    if fci_sfi and dir_sfi:
        raise ctx.err([*path, "dir_sfi"], "give fci_sfi or dir_sfi, not both (one SFI byte, SPEC §1.2)")
    kf = _check_keys(ctx, t.get("keyfile", {}), _KEYFILE, [*path, "keyfile"], "keyfile")
    kf_fid = _fid(ctx, {"fid": kf.get("fid", "0000")}, [*path, "keyfile"])
    keys = tuple(_key(ctx, kt, [*path, "keys", kname], kname, unit, units)
                 for kname, kt in _typed(ctx, t.get("keys", {}), [*path, "keys"], dict).items())
    # key file space: given, or the keys' need (key length + 8 each) rounded up
    need = sum((k.length if k.ktype != 0x3A else 8) + 8 for k in keys)
    kf_space = _int(ctx, kf, "space", [*path, "keyfile"], 0, 0xFFFF, max(need, 16))
    if need > kf_space:
        raise ctx.err([*path, "keyfile", "space"], f"{len(keys)} keys need {need} bytes, the key file has {kf_space}")
    files = tuple(_file(ctx, ft, [*path, "files", fname], fname)
                  for fname, ft in _typed(ctx, t.get("files", {}), [*path, "files"], dict).items())
    auth_code = t.get("auth_code")
    if auth_code is not None:
        _check_binding(ctx, auth_code, [*path, "auth_code"])
    df = DFSpec(name=name, fid=fid, aid=aid, unit=unit, space=space,
                create_ac=_ac(ctx, t, "create", path, "free"), erase_ac=_ac(ctx, t, "erase", path, "free"),
                fci_sfi=fci_sfi, dir_sfi=dir_sfi, keyfile_fid=kf_fid, keyfile_space=kf_space,
                keyfile_add_ac=_ac(ctx, kf, "add", [*path, "keyfile"], "never"), keys=keys, files=files,
                label=str(t.get("label", name)), auth_code=auth_code, path=".".join(map(str, path)))
    _check_df(ctx, df, path)
    return df


def _key(ctx: _Ctx, t: Any, path: list[Any], name: str, unit: str | None, units: dict[str, str]) -> KeySpec:
    _check_keys(ctx, t, _KEY, path, "a key")
    tname = _req(ctx, t, "type", path, str)
    if tname not in KEY_TYPES:
        raise ctx.err([*path, "type"], f"unknown key type {tname!r} (types: {', '.join(sorted(KEY_TYPES))})")
    kt = KEY_TYPES[tname]
    kid = _int(ctx, t, "id", path, 0, 0xFE, 0)
    if kt in (0x36, 0x37, 0x38, 0x39, 0x3A):
        state = _int(ctx, t, "state", path, 0, 15, 0) if kt in (0x39, 0x3A) else 0x0F
        tries = _int(ctx, t, "tries", path, 1, 15, 3)
        b3 = (state << 4) | state if kt in (0x39, 0x3A) else 0xFF
        b4 = (tries << 4) | tries
        for bad in ("version", "algorithm"):
            if bad in t:
                raise ctx.err([*path, bad], f"a {tname} key has an error counter, not a {bad}")
    else:
        for bad in ("state", "tries"):
            if bad in t:
                raise ctx.err([*path, bad], f"a {tname} key has a version and algorithm, not {bad!r}")
        b3 = _int(ctx, t, "version", path, 0, 255, 0)
        b4 = _int(ctx, t, "algorithm", path, 0, 255, 0)
    usage = _ac(ctx, t, "usage", path, "free")
    change = _ac(ctx, t, "change", path, "never" if kt == 0x3A else "free")
    write = t.get("write", "plain")
    if write not in ("plain", "mac", "cipher"):
        raise ctx.err([*path, "write"], f"{write!r}: expected plain, mac or cipher")
    pc = t.get("protect_change", "none")
    flags = {"none": 0x00, "mac": 0x80, "cipher": 0xC0}
    if pc not in flags:
        raise ctx.err([*path, "protect_change"], f"{pc!r}: expected none, mac or cipher")
    if kt == 0x3A:
        if "master" in t or "factor" in t or "export" in t:
            raise ctx.err(path, "a PIN has a value, not a master key")
        value = t.get("value")
        if value is None:
            raise ctx.err(path, "missing 'value' (the PIN: digits, \"$column\", or {column=..., default=...})")
        _check_binding(ctx, value, [*path, "value"])
        if isinstance(value, (str, int)) and not str(value).startswith(("$", "@")):
            _pin_bytes(ctx, str(value), [*path, "value"])
        if isinstance(value, dict) and "default" in value:
            _pin_bytes(ctx, str(value["default"]), [*path, "value", "default"])
        return KeySpec(name=name, ktype=kt, kid=kid, usage_ac=usage, change_ac=change, b3=b3, b4=b4, length=0,
                       pin=value, write=write, change_flag=flags[pc], path=".".join(map(str, path)))
    if "value" in t:
        raise ctx.err([*path, "value"], "only a PIN takes a value; keys come from their master")
    master = _master_ref(ctx, _req(ctx, t, "master", path, str), [*path, "master"], unit, units)
    factor = t.get("factor", "@app_serial")
    _check_binding(ctx, factor, [*path, "factor"])
    length = _int(ctx, t, "length", path, 8, 16, 16)
    if length not in (8, 16):
        raise ctx.err([*path, "length"], "a key is 8 or 16 bytes")
    export = _typed(ctx, t.get("export", False), [*path, "export"], bool)
    return KeySpec(name=name, ktype=kt, kid=kid, usage_ac=usage, change_ac=change, b3=b3, b4=b4, length=length,
                   master=master, factor=factor, write=write, change_flag=flags[pc],
                   path=".".join(map(str, path)), export=export)


def _pin_bytes(ctx: _Ctx, digits: str, path: list[Any]) -> bytes:
    if not digits.isdigit() or not 4 <= len(digits) <= 12:
        raise ctx.err(path, f"a PIN is 4..12 digits (got {len(digits)} characters)" if digits.isdigit()
                      else "a PIN is digits only")
    return pin_to_bytes(digits)


def pin_to_bytes(digits: str) -> bytes:
    """PIN digits → BCD padded with F (SPEC §1.5: 12345 → 12 34 5F)."""
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def _file(ctx: _Ctx, t: Any, path: list[Any], name: str) -> FileSpec:
    _check_keys(ctx, t, _FILE, path, "a file")
    fid = _fid(ctx, t, path)
    kind = _req(ctx, t, "kind", path, str)
    if kind not in _KINDS:
        raise ctx.err([*path, "kind"], f"unknown file kind {kind!r} (kinds: {', '.join(sorted(_KINDS))})")
    if kind in ("ed", "ep"):
        want = 0x0001 if kind == "ed" else 0x0002
        if fid != want:
            raise ctx.err([*path, "fid"], f"the {kind.upper()} file's FID is fixed at {want:04X} (SPEC §1.2)")
        extra = set(t) - {"fid", "kind", "usage", "tac_key", "detail_sfi"}
        if extra:
            raise ctx.err([*path, sorted(extra)[0]], f"a purse file takes fid, kind, usage, tac_key, detail_sfi")
        return FileSpec(name=name, fid=fid, kind=kind, usage_ac=_ac(ctx, t, "usage", path, "free"),
                        tac_key=_int(ctx, t, "tac_key", path, 0, 0xFE, 0),
                        detail_sfi=_int(ctx, t, "detail_sfi", path, 1, 30, 0x18), path=".".join(map(str, path)))
    size = nrec = reclen = 0
    if kind == "binary":
        size = _int(ctx, t, "size", path, 1, 0x7FFF)
    elif kind == "variable":
        size = _int(ctx, t, "space", path, 2, 0xFFFF)
    else:
        nrec = _int(ctx, t, "count", path, 2, 254)
        reclen = _int(ctx, t, "length", path, 1, 250)
    wp = t.get("write_protect", "none")
    if wp not in ("none", "mac", "cipher"):
        raise ctx.err([*path, "write_protect"], f"{wp!r}: expected none, mac or cipher")
    layout = t.get("layout")
    data = t.get("data", {})
    records = t.get("records", [])
    content = t.get("content")
    if content is not None and content != "dir":
        raise ctx.err([*path, "content"], f"{content!r}: the only generated content is \"dir\" (the PSE directory)")
    _typed(ctx, data, [*path, "data"], dict)
    _typed(ctx, records, [*path, "records"], list)
    _check_binding(ctx, data, [*path, "data"])
    _check_binding(ctx, records, [*path, "records"])
    if layout is not None:
        from . import records as _records
        try:
            lay = _records.get(_typed(ctx, layout, [*path, "layout"], str))
        except CitycardError as exc:
            raise ctx.err([*path, "layout"], str(exc)) from None
        field_names = {f.name for f in lay.fields}
        for rec_i, rec in enumerate([data] + [r for r in records if isinstance(r, dict)]):
            for k in rec:
                if k not in field_names:
                    where = [*path, "data", k] if rec_i == 0 else [*path, "records", rec_i - 1, k]
                    hint = difflib.get_close_matches(k, sorted(field_names), n=1)
                    raise ctx.err(where, f"layout {layout} has no field {k!r}"
                                  + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        lsize = getattr(lay, "size", None)
        if lsize is not None:
            if kind == "binary" and lsize > size:
                raise ctx.err([*path, "size"], f"layout {layout} is {lsize} bytes, the file only {size}")
            if kind in ("fixed", "cyclic") and lsize != reclen:
                raise ctx.err([*path, "length"], f"layout {layout} records are {lsize} bytes, the file's {reclen}")
            if kind == "variable" and lsize > size:
                raise ctx.err([*path, "space"], f"layout {layout} records are {lsize} bytes, the file has {size}")
    elif data:
        raise ctx.err([*path, "data"], "data needs a layout (see citycard/records)")
    for i, rec in enumerate(records):
        if isinstance(rec, str):
            raw = _hexbytes(ctx, rec, [*path, "records", i])
            if kind in ("fixed", "cyclic") and len(raw) != reclen:
                raise ctx.err([*path, "records", i], f"record of {len(raw)} bytes, the file's records are {reclen}")
        elif not isinstance(rec, dict):
            raise ctx.err([*path, "records", i], "a record is a hex string or a table of layout fields")
    if kind in ("fixed", "cyclic") and len(records) > nrec:
        raise ctx.err([*path, "records"], f"{len(records)} records for a file of {nrec}")
    if kind == "binary" and records:
        raise ctx.err([*path, "records"], "a binary file has data, not records")
    return FileSpec(name=name, fid=fid, kind=kind, read_ac=_ac(ctx, t, "read", path, "free"),
                    write_ac=_ac(ctx, t, "write", path, "free"), size=size, nrec=nrec, reclen=reclen,
                    write_protect="plain" if wp == "none" else wp,
                    write_key=_int(ctx, t, "write_key", path, 0, 3, 0),
                    read_protect=bool(_typed(ctx, t.get("read_protect", False), [*path, "read_protect"], bool)),
                    read_key=_int(ctx, t, "read_key", path, 0, 3, 0), layout=layout,
                    data=data if content is None else {"@content": content}, records=tuple(records),
                    path=".".join(map(str, path)))


def _check_df(ctx: _Ctx, df: DFSpec, path: list[Any]) -> None:
    """Cross-checks inside one DF."""
    seen: dict[tuple[int, int], str] = {}
    for k in df.keys:
        slot = (k.ktype, k.kid)
        if slot in seen:
            raise ctx.err(_p(k.path), f"key type {k.ktype:02X} id {k.kid:02X} already used by {seen[slot]}")
        seen[slot] = k.name
    fids: dict[int, str] = {df.keyfile_fid: "the key file"}
    sfis: dict[int, str] = {}
    for f in df.files:
        if f.fid in fids:
            raise ctx.err([*_p(f.path), "fid"], f"FID {f.fid:04X} already used by {fids[f.fid]}")
        fids[f.fid] = f"file {f.name}"
        if f.kind not in ("ed", "ep"):
            if f.sfi in sfis:
                raise ctx.err([*_p(f.path), "fid"], f"SFI {f.sfi:02X} already used by {sfis[f.sfi]}")
            sfis[f.sfi] = f"file {f.name}"
    used = df.used_space()
    if used > df.space:
        raise ctx.err([*path, "space"], f"files and key file need {used} bytes, more than the DF's space {df.space}")
    # achievable security states: 0, and each ext-auth key's / PIN's follow-up state
    states = {0} | {k.follow_up for k in df.keys if k.follow_up is not None}

    def check(ac: int, where: list[Any]) -> None:
        if ac == AC_NEVER or (ac >> 4) < (ac & 0x0F):
            return
        if ac >> 4 == 0:
            return  # MF condition: checked against the MF's own keys only when this is the MF
        if not any(ac_allows(ac, sr, 0) for sr in states):
            raise ctx.err(where, f"access condition {ac:02X} can never be met: no key of this DF sets a security "
                          f"state in it (reachable: {', '.join(str(s) for s in sorted(states))})")

    check(df.create_ac, [*path, "create"])
    check(df.erase_ac, [*path, "erase"])
    check(df.keyfile_add_ac, [*path, "keyfile", "add"])
    for k in df.keys:
        check(k.usage_ac, [*_p(k.path), "usage"])
        check(k.change_ac, [*_p(k.path), "change"])
        if k.write != "plain" and df.master_key() is None:
            raise ctx.err([*_p(k.path), "write"], f"writing under {k.write} needs this DF's master key"
                          " (external-auth id 0)")
        if k.write != "plain" and k is df.master_key():
            raise ctx.err([*_p(k.path), "write"], "the master key is the first key written: it can only be plain")
    line_keys = {k.kid for k in df.keys if k.ktype == 0x36}
    for f in df.files:
        if f.kind in ("ed", "ep"):
            check(f.usage_ac, [*_p(f.path), "usage"])
            if (0x34, f.tac_key) not in seen:
                raise ctx.err([*_p(f.path), "tac_key"], f"no TAC key (type tac) with id {f.tac_key:02X} in this DF")
            detail = next((g for g in df.files if g.kind == "cyclic" and g.sfi == f.detail_sfi), None)
            if detail is None or detail.reclen != 23:
                raise ctx.err([*_p(f.path), "detail_sfi"],
                              f"SFI {f.detail_sfi:02X} must be a cyclic file of 23-byte records (SPEC §2.2)")
            continue
        check(f.read_ac, [*_p(f.path), "read"])
        check(f.write_ac, [*_p(f.path), "write"])
        if f.write_protect != "plain" and f.write_key not in line_keys:
            raise ctx.err([*_p(f.path), "write_key"], f"write protection needs a line-protection key id "
                          f"{f.write_key:02X} in this DF")
        if f.read_protect and f.read_key not in line_keys:
            raise ctx.err([*_p(f.path), "read_key"], f"read protection needs a line-protection key id "
                          f"{f.read_key:02X} in this DF")


# --------------------------------------------------------------------------- checks against data and keys
def check_columns(spec: CardSpec, columns: Iterable[str], source: str) -> None:
    """Every cardholder column a binding reads must be in the data file."""
    have = set(columns)
    for df in spec.dfs():
        for f in df.files:
            for key, value in [*(("data." + k, v) for k, v in f.data.items()),
                               *((f"records.{i}", r) for i, r in enumerate(f.records))]:
                for col in sorted(binding_columns(value)):
                    if col not in have:
                        raise _binding_error(spec, f"{f.path}.{key}", col, have, source)
        for k in df.keys:
            for key, value in (("value", k.pin), ("factor", k.factor)):
                for col in sorted(binding_columns(value)):
                    if col not in have:
                        raise _binding_error(spec, f"{k.path}.{key}", col, have, source)


def _binding_error(spec: CardSpec, path: str, col: str, have: set[str], source: str) -> ProfileError:
    text = Path(spec.source).read_text(encoding="utf-8") if Path(spec.source).exists() else ""
    hint = difflib.get_close_matches(col, sorted(have), n=1)
    return ProfileError(f"binds column {col!r}, which {source} does not have"
                        + (f" (did you mean {hint[0]!r}?)" if hint else f" (columns: {', '.join(sorted(have))})"),
                        file=spec.source, line=locate(text, path.split(".")), path=path)


def check_keys(spec: CardSpec, keys: Any) -> None:
    """Every master the profile derives from must be in the key sources."""
    text = Path(spec.source).read_text(encoding="utf-8") if Path(spec.source).exists() else ""
    for df in spec.dfs():
        for k in df.keys:
            if k.master is not None and not keys.has(*k.master):
                raise ProfileError(f"master key {k.master[0]}/{k.master[1]} is not in the key sources ({keys.name})",
                                   file=spec.source, line=locate(text, [*k.path.split("."), "master"]),
                                   path=f"{k.path}.master")
    if spec.transport_key is not None and not keys.has(*spec.transport_key):
        raise ProfileError(f"transport key {'/'.join(spec.transport_key)} is not in the key sources ({keys.name})",
                           file=spec.source, line=locate(text, ["card", "transport_key"]), path="card.transport_key")


def with_source(spec: CardSpec, source: str) -> CardSpec:
    return replace(spec, source=source)
