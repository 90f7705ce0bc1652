"""The ``files`` of a DF: binary and record files, and the ED/EP purse files (SPEC §1.2, §2.2)."""

from __future__ import annotations

import difflib
from typing import Any

from ..errors import CitycardError
from ..spec import FileSpec
from .bindings import check_binding
from .fields import Located, access, check_table, choice, dotted, fid, hexbytes, integer, required, typed

FILE_FIELDS = {"fid", "kind", "size", "count", "length", "space", "read", "write", "write_protect", "write_key",
               "read_protect", "read_key", "layout", "data", "records", "content", "usage", "tac_key", "detail_sfi"}
KINDS = {"binary", "fixed", "variable", "cyclic", "ed", "ep"}
PURSE_KINDS = ("ed", "ep")
_PURSE_FIELDS = {"fid", "kind", "usage", "tac_key", "detail_sfi"}
_PURSE_FIDS = {"ed": 0x0001, "ep": 0x0002}
_FIXED_LENGTH = ("fixed", "cyclic")                 # records of one length: ``count`` × ``length``


def parse_file(ctx: Located, t: Any, path: list[Any], name: str) -> FileSpec:
    """One entry of ``files``."""
    check_table(ctx, t, FILE_FIELDS, path, "a file")
    file_id = fid(ctx, t, path)
    kind = required(ctx, t, "kind", path, str)
    if kind not in KINDS:
        raise ctx.err([*path, "kind"], f"unknown file kind {kind!r} (kinds: {', '.join(sorted(KINDS))})")
    if kind in PURSE_KINDS:
        return _purse_file(ctx, t, path, name, file_id, kind)
    return _data_file(ctx, t, path, name, file_id, kind)


def _purse_file(ctx: Located, t: dict[str, Any], path: list[Any], name: str, file_id: int, kind: str) -> FileSpec:
    """An ED or EP: its FID is fixed, it has a usage condition, a TAC key and a detail file."""
    want = _PURSE_FIDS[kind]
    if file_id != want:
        raise ctx.err([*path, "fid"], f"the {kind.upper()} file's FID is fixed at {want:04X} (SPEC §1.2)")
    extra = set(t) - _PURSE_FIELDS
    if extra:
        raise ctx.err([*path, sorted(extra)[0]], "a purse file takes fid, kind, usage, tac_key, detail_sfi")
    return FileSpec(name=name, fid=file_id, kind=kind, usage_ac=access(ctx, t, "usage", path, "free"),
                    tac_key=integer(ctx, t, "tac_key", path, 0, 0xFE, 0),
                    detail_sfi=integer(ctx, t, "detail_sfi", path, 1, 30, 0x18), path=dotted(path))


def _data_file(ctx: Located, t: dict[str, Any], path: list[Any], name: str, file_id: int, kind: str) -> FileSpec:
    """A binary or record file with its access conditions, protection and contents."""
    size, nrec, reclen = _shape(ctx, t, path, kind)
    wp = choice(ctx, t, "write_protect", path, "none", ("none", "mac", "cipher"), "none, mac or cipher")
    layout, data, records, content = _contents(ctx, t, path)
    if layout is not None:
        _check_layout(ctx, path, layout, kind, data, records, size, reclen)
    elif data:
        raise ctx.err([*path, "data"], "data needs a layout (see citycard/records)")
    _check_records(ctx, path, kind, records, nrec, reclen)
    return FileSpec(name=name, fid=file_id, kind=kind, read_ac=access(ctx, t, "read", path, "free"),
                    write_ac=access(ctx, t, "write", path, "free"), size=size, nrec=nrec, reclen=reclen,
                    write_protect="plain" if wp == "none" else wp,
                    write_key=integer(ctx, t, "write_key", path, 0, 3, 0),
                    read_protect=bool(typed(ctx, t.get("read_protect", False), [*path, "read_protect"], bool)),
                    read_key=integer(ctx, t, "read_key", path, 0, 3, 0), layout=layout,
                    data=data if content is None else {"@content": content}, records=tuple(records),
                    path=dotted(path))


def _shape(ctx: Located, t: dict[str, Any], path: list[Any], kind: str) -> tuple[int, int, int]:
    """(size, record count, record length): a binary file's size, a variable-record file's
    space, or a fixed/cyclic file's count × length."""
    if kind == "binary":
        return integer(ctx, t, "size", path, 1, 0x7FFF), 0, 0
    if kind == "variable":
        return integer(ctx, t, "space", path, 2, 0xFFFF), 0, 0
    return 0, integer(ctx, t, "count", path, 2, 254), integer(ctx, t, "length", path, 1, 250)


def _contents(ctx: Located, t: dict[str, Any], path: list[Any]) -> tuple[Any, dict[str, Any], list[Any], Any]:
    """(layout, data, records, generated content), types and bindings checked."""
    layout = t.get("layout")
    data = t.get("data", {})
    records = t.get("records", [])
    content = t.get("content")
    if content is not None and content != "dir":
        raise ctx.err([*path, "content"], f"{content!r}: the only generated content is \"dir\" (the PSE directory)")
    typed(ctx, data, [*path, "data"], dict)
    typed(ctx, records, [*path, "records"], list)
    check_binding(ctx, data, [*path, "data"])
    check_binding(ctx, records, [*path, "records"])
    return layout, data, records, content


def _check_layout(ctx: Located, path: list[Any], layout: Any, kind: str, data: dict[str, Any], records: list[Any],
                  size: int, reclen: int) -> None:
    """The layout exists, the data and records name only its fields, and it fits the file."""
    from .. import records as record_layouts
    try:
        lay = record_layouts.get(typed(ctx, layout, [*path, "layout"], str))
    except CitycardError as exc:
        raise ctx.err([*path, "layout"], str(exc)) from None
    _check_field_names(ctx, path, layout, {f.name for f in lay.fields}, data, records)
    _check_layout_fits(ctx, path, layout, getattr(lay, "size", None), kind, size, reclen)


def _check_field_names(ctx: Located, path: list[Any], layout: Any, field_names: set[str], data: dict[str, Any],
                       records: list[Any]) -> None:
    """``data`` and the table records name only fields of the layout (a hint when close)."""
    for rec_i, rec in enumerate([data] + [r for r in records if isinstance(r, dict)]):
        for k in rec:
            if k not in field_names:
                where = [*path, "data", k] if rec_i == 0 else [*path, "records", rec_i - 1, k]
                hint = difflib.get_close_matches(k, sorted(field_names), n=1)
                raise ctx.err(where, f"layout {layout} has no field {k!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _check_layout_fits(ctx: Located, path: list[Any], layout: Any, lsize: int | None, kind: str, size: int,
                       reclen: int) -> None:
    """A layout of fixed size fits the binary file, is the record length, or fits the space."""
    if lsize is None:
        return
    if kind == "binary" and lsize > size:
        raise ctx.err([*path, "size"], f"layout {layout} is {lsize} bytes, the file only {size}")
    if kind in _FIXED_LENGTH and lsize != reclen:
        raise ctx.err([*path, "length"], f"layout {layout} records are {lsize} bytes, the file's {reclen}")
    if kind == "variable" and lsize > size:
        raise ctx.err([*path, "space"], f"layout {layout} records are {lsize} bytes, the file has {size}")


def _check_records(ctx: Located, path: list[Any], kind: str, records: list[Any], nrec: int, reclen: int) -> None:
    """Each record is hex of the file's record length or a table of fields; they fit the file."""
    for i, rec in enumerate(records):
        if isinstance(rec, str):
            raw = hexbytes(ctx, rec, [*path, "records", i])
            if kind in _FIXED_LENGTH and len(raw) != reclen:
                raise ctx.err([*path, "records", i], f"record of {len(raw)} bytes, the file's records are {reclen}")
        elif not isinstance(rec, dict):
            raise ctx.err([*path, "records", i], "a record is a hex string or a table of layout fields")
    if kind in _FIXED_LENGTH and len(records) > nrec:
        raise ctx.err([*path, "records"], f"{len(records)} records for a file of {nrec}")
    if kind == "binary" and records:
        raise ctx.err([*path, "records"], "a binary file has data, not records")
