"""Bindings: where a file's data, a PIN or a diversification factor comes from.

A value is literal, ``"$column"`` / ``{column = ..., default = ...}`` (a cardholder
column of the data file) or ``"@name"`` (a value computed per card, :data:`COMPUTED`).
"""

from __future__ import annotations

from typing import Any

from .fields import Located

COMPUTED = {"@app_serial", "@card_serial", "@issue_date", "@expiry_date", "@aid", "@card_number"}


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


def check_binding(ctx: Located, value: Any, path: list[Any]) -> None:
    """Computed values are known ones; a column binding has only ``column`` and ``default``."""
    if isinstance(value, str) and value.startswith("@") and value not in COMPUTED:
        raise ctx.err(path, f"unknown computed value {value!r} (known: {', '.join(sorted(COMPUTED))})")
    if isinstance(value, dict):
        if "column" in value:
            extra = set(value) - {"column", "default"}
            if extra:
                raise ctx.err(path, f"a column binding takes only column and default, not {sorted(extra)}")
        else:
            for k, v in value.items():
                check_binding(ctx, v, [*path, k])
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_binding(ctx, v, [*path, i])
