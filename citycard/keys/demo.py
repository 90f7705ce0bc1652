"""The demo key file: clear master keys in TOML, for tests and the demo only.

``profiles/demo-keys.toml`` holds the demo profile's TEST KEYS (published in this
repository; never use them for real cards).  Format: one table per service unit,
``role = "32 hex digits"``.  The encrypted keystore of ``citycard.keys.keystore``
replaces this file for real use.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .. import crypto
from ..errors import InputError
from . import KeyError_


class DemoKeyFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: no such key file") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: {exc}") from None
        self._keys: dict[tuple[str, str], bytes] = {}
        for unit, roles in data.items():
            if not isinstance(roles, dict):
                raise InputError(f"{path}: {unit}: expected a table of role = \"hex key\"")
            for role, value in roles.items():
                where = f"{path}: {unit}.{role}"
                if not isinstance(value, str):
                    raise InputError(f"{where}: expected 32 hex digits")
                try:
                    key = bytes.fromhex(value)
                except ValueError:
                    raise InputError(f"{where}: not hex") from None
                if len(key) != 16:
                    raise InputError(f"{where}: {len(key)} bytes, expected 16 (32 hex digits)")
                self._keys[(unit, role)] = key

    def entries(self) -> set[tuple[str, str]]:
        return set(self._keys)

    def _master(self, unit: str, role: str) -> bytes:
        key = self._keys.get((unit, role))
        if key is None:
            raise KeyError_(f"{self.name} holds no key {unit}/{role}")
        return key

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1) -> bytes:
        master = self._master(unit, role)
        if factor is None:
            return master
        return crypto.diversify(master, factor, levels)

    def kcv(self, unit: str, role: str) -> bytes:
        return crypto.kcv(self._master(unit, role))
