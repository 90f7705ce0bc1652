"""One card's data: the cardholder row, the card number, dates, and binding resolution."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import InputError
from ..spec import CardSpec, DFSpec


@dataclass(frozen=True)
class CardData:
    """What personalizes one card besides the profile and the keys."""

    row: Mapping[str, str]
    card_number: int
    issue_date: _dt.date = field(default_factory=_dt.date.today)
    where: str = ""            # "cardholders.csv row 3", for error messages

    def serial(self, spec: CardSpec) -> str:
        """The card serial: prefix ‖ card number, zero-padded to the profile's digit count."""
        room = spec.serial_digits - len(spec.serial_prefix)
        num = str(self.card_number)
        if len(num) > room:
            raise InputError(f"{self.where}: card number {self.card_number} does not fit in {room} digits "
                             f"after prefix {spec.serial_prefix!r}")
        return spec.serial_prefix + num.zfill(room)


def _add_years(d: _dt.date, years: int) -> _dt.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


class Resolver:
    """Resolves bindings (``$column``, ``{column=, default=}``, ``@computed``, constants)."""

    def __init__(self, spec: CardSpec, data: CardData) -> None:
        self.spec, self.data = spec, data
        self.card_serial = data.serial(spec)
        self.computed: dict[str, Any] = {
            "@card_serial": self.card_serial,
            "@app_serial": self.card_serial,
            "@card_number": data.card_number,
            "@issue_date": data.issue_date.strftime("%Y%m%d"),
            "@expiry_date": _add_years(data.issue_date, spec.validity_years).strftime("%Y%m%d"),
        }

    def value(self, binding: Any, where: str, df: DFSpec | None = None) -> Any:
        if isinstance(binding, str):
            if binding.startswith("$"):
                return self._column(binding[1:], None, where)
            if binding.startswith("@"):
                if binding == "@aid":
                    return (df.aid if df is not None else b"").hex().upper()
                return self.computed[binding]
            return binding
        if isinstance(binding, dict) and "column" in binding:
            return self._column(str(binding["column"]), binding.get("default"), where)
        if isinstance(binding, dict):
            return {k: self.value(v, f"{where}.{k}", df) for k, v in binding.items()}
        return binding

    def _column(self, name: str, default: Any, where: str) -> Any:
        row = self.data.row
        if name not in row:
            raise InputError(f"{self.data.where}: no column {name!r} (needed by {where})")
        v = row[name]
        if (v is None or v == "") and default is not None:
            return default
        if v is None or v == "":
            raise InputError(f"{self.data.where}: column {name!r} is empty (needed by {where})")
        return v

    def factor(self, binding: Any, where: str) -> bytes:
        """A diversification factor: digits → BCD, hex-looking text → bytes; rightmost 8 used."""
        v = str(self.value(binding, where))
        if v.isdigit():
            digits = v.zfill(max(16, len(v) + len(v) % 2))
            return bytes.fromhex(digits)[-8:]
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raw = v.encode("utf-8")
        return raw.rjust(8, b"\x00")[-8:]
