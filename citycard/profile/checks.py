"""Checks of a loaded profile against a cardholder data file and against key sources."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable

from ..keys.source import KeySource
from ..spec import CardSpec
from .bindings import binding_columns
from .fields import ProfileError, locate


def check_columns(spec: CardSpec, columns: Iterable[str], source: str) -> None:
    """Every cardholder column a binding reads must be in the data file."""
    have = set(columns)
    for df in spec.dfs():
        for f in df.files:
            for key, value in [*(("data." + k, v) for k, v in f.data.items()),
                               *((f"records.{i}", r) for i, r in enumerate(f.records))]:
                _check_bound_columns(spec, f"{f.path}.{key}", value, have, source)
        for k in df.keys:
            for key, value in (("value", k.pin), ("factor", k.factor)):
                _check_bound_columns(spec, f"{k.path}.{key}", value, have, source)


def _check_bound_columns(spec: CardSpec, path: str, value: Any, have: set[str], source: str) -> None:
    for col in sorted(binding_columns(value)):
        if col not in have:
            raise _binding_error(spec, path, col, have, source)


def _source_text(spec: CardSpec) -> str:
    return Path(spec.source).read_text(encoding="utf-8") if Path(spec.source).exists() else ""


def _binding_error(spec: CardSpec, path: str, col: str, have: set[str], source: str) -> ProfileError:
    hint = difflib.get_close_matches(col, sorted(have), n=1)
    return ProfileError(f"binds column {col!r}, which {source} does not have"
                        + (f" (did you mean {hint[0]!r}?)" if hint else f" (columns: {', '.join(sorted(have))})"),
                        file=spec.source, line=locate(_source_text(spec), path.split(".")), path=path)


def check_keys(spec: CardSpec, keys: KeySource) -> None:
    """Every master the profile derives from must be in the key sources."""
    text = _source_text(spec)
    for df in spec.dfs():
        for k in df.keys:
            if k.master is not None and not keys.has(*k.master):
                raise ProfileError(f"master key {k.master[0]}/{k.master[1]} is not in the key sources ({keys.name})",
                                   file=spec.source, line=locate(text, [*k.path.split("."), "master"]),
                                   path=f"{k.path}.master")
    source = spec.transport_key.source
    if source is not None and not keys.has(*source):
        raise ProfileError(f"transport key {'/'.join(source)} is not in the key sources ({keys.name})",
                           file=spec.source, line=locate(text, ["card", "transport_key"]), path="card.transport_key")
