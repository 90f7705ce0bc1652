"""Located errors and typed readers of profile values.

``tomllib`` keeps no positions, so :func:`locate` finds the line of a key path in the text
(table headers, dotted keys and inline tables); :class:`Located` builds every error as
``file:line: key.path: message``, following a key path into the included file that
defined it.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable

from ..errors import CitycardError
from ..spec import parse_ac


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


def dotted(path: list[Any] | tuple[Any, ...]) -> str:
    """A key path as written in messages: ``apps.transit.files.ef15``."""
    return ".".join(map(str, path))


def split_path(path: str) -> list[str]:
    """The parts of a dotted key path (the inverse of :func:`dotted`)."""
    return path.split(".")


class Located:
    """Error construction with file and line (the profile's, or an included file's)."""

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


# --------------------------------------------------------------------------- typed readers
def check_table(ctx: Located, table: Any, allowed: set[str], path: list[Any], what: str) -> dict[str, Any]:
    """``table`` is a table whose keys are all in ``allowed`` (an unknown one gets a hint)."""
    if not isinstance(table, dict):
        raise ctx.err(path, f"expected a table ({what})")
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(sorted(allowed))})"
            raise ctx.err([*path, key], f"unknown key {key!r} in {what}{extra}")
    return table


def required(ctx: Located, table: dict[str, Any], key: str, path: list[Any], kind: type | tuple[type, ...]) -> Any:
    if key not in table:
        raise ctx.err(path, f"missing {key!r}")
    return typed(ctx, table[key], [*path, key], kind)


def typed(ctx: Located, value: Any, path: list[Any], kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind in (int, (int,)):
        raise ctx.err(path, f"expected an integer, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ctx.err(path, f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def integer(ctx: Located, t: dict[str, Any], key: str, path: list[Any], lo: int, hi: int,
            default: int | None = None) -> int:
    """An integer in ``lo..hi`` (a string is hex, or ``0x``-prefixed); ``default`` when absent."""
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
    v = typed(ctx, v, [*path, key], int)
    if not lo <= v <= hi:
        raise ctx.err([*path, key], f"{v} is outside {lo}..{hi}")
    return v


def fid(ctx: Located, t: dict[str, Any], path: list[Any], key: str = "fid") -> int:
    """A file identifier: 4 hex digits."""
    v = required(ctx, t, key, path, str)
    if not re.fullmatch(r"[0-9A-Fa-f]{4}", v):
        raise ctx.err([*path, key], f"{v!r} is not a file identifier (4 hex digits)")
    return int(v, 16)


def access(ctx: Located, t: dict[str, Any], key: str, path: list[Any], default: str) -> int:
    """An access condition byte (the syntax of :func:`citycard.spec.parse_ac`)."""
    try:
        return parse_ac(t.get(key, default))
    except ValueError as exc:
        raise ctx.err([*path, key], str(exc)) from None


def hexbytes(ctx: Located, value: Any, path: list[Any]) -> bytes:
    typed(ctx, value, path, str)
    try:
        return bytes.fromhex(value.replace(" ", ""))
    except ValueError:
        raise ctx.err(path, f"{value!r} is not hex") from None


def choice(ctx: Located, t: dict[str, Any], key: str, path: list[Any], default: str, allowed: tuple[str, ...],
           expected: str) -> str:
    """One of ``allowed`` (``expected`` names them in the message)."""
    value = t.get(key, default)
    if value not in allowed:
        raise ctx.err([*path, key], f"{value!r}: expected {expected}")
    return value
