"""Reading a profile's TOML: syntax errors with their line, ``include`` files (templates
and units only) merged under the profile's own tables."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

from .fields import Located, ProfileError, check_table, locate, typed

TOP_FIELDS = {"include", "profile", "card", "units", "templates", "mf", "apps"}
_INCLUDABLE = ("templates", "units")


def load_toml(text: str, file: str) -> dict[str, Any]:
    """The TOML document; a syntax error names its file and line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ProfileError(f"TOML syntax: {msg}", file=file, line=line) from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, tables merged key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_document(text: str, file: str, base: Path | None) -> tuple[Located, dict[str, Any]]:
    """The profile's tables with its included files merged in, and the error locator that
    knows which file defined which template or unit."""
    ctx = Located(file, text)
    data = load_toml(text, file)
    check_table(ctx, data, TOP_FIELDS, [], "the profile")
    for i, inc in enumerate(data.get("include", [])):
        typed(ctx, inc, ["include", i], str)
        _include(ctx, data, base or Path("."), inc, i)
    return ctx, data


def _include(ctx: Located, data: dict[str, Any], base: Path, inc: str, i: int) -> None:
    ipath = base / inc
    try:
        itext = ipath.read_text(encoding="utf-8")
    except OSError:
        raise ctx.err(["include", i], f"cannot read included file {inc!r}") from None
    idata = load_toml(itext, str(ipath))
    for k in idata:
        if k not in _INCLUDABLE:
            raise ProfileError(f"an included file may define only templates and units, not {k!r}",
                               file=str(ipath), line=locate(itext, [k]), path=k)
        for name in idata[k]:
            ctx.sources[f"{k}.{name}"] = (str(ipath), itext)
    for k, v in idata.items():
        data[k] = merge(v, data.get(k, {}))
