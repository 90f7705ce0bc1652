"""The demo key file: clear master keys in TOML, for tests and the demo only.

``profiles/demo-keys.toml`` holds the demo profile's TEST KEYS (published in this
repository; never use them for real cards); it ships inside the package
(:func:`default_demo_key_file`, ``citycard.assets``).  Format: one table per service unit,
``role = "32 hex digits"``.  The encrypted keystore of ``citycard.keys.keystore``
replaces this file for real use.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Iterator

from .. import crypto
from ..errors import InputError
from .source import KeyError_


def default_demo_key_file() -> Path:
    """The demo key file (TEST KEYS) of the installed package: ``profiles/demo-keys.toml``."""
    from ..assets import DEMO_KEYS, asset_path

    return asset_path(DEMO_KEYS)


class DemoKeyFile:
    #: the clear demo key file always holds published TEST KEYS (issue 17 item 5)
    test_keys = True
    production = False

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

    def __repr__(self) -> str:
        return f"<DemoKeyFile {self.name!r} keys={len(self._keys)}>"

    def masters(self) -> Iterator[tuple[tuple[str, str], bytes]]:
        """Every ((unit, role), master) of the file: for writing them into a keystore."""
        yield from self._keys.items()

    def _check_version(self, unit: str, role: str, version: int | None) -> None:
        if version not in (None, 1):
            raise KeyError_(f"{self.name} holds only version 1 of {unit}/{role}, not {version}")

    def derive(self, unit: str, role: str, factor: bytes | None, levels: int = 1, *,
               version: int | None = None, alg: crypto.Alg = "des") -> bytes:
        """``alg``: the cipher family of the profile's key (a clear 16-byte master serves 2-key
        3DES and SM4 alike; docs/sm4.md)."""
        master = self._master(unit, role)
        self._check_version(unit, role, version)
        if factor is None:
            return master
        return crypto.diversify(master, factor, levels, alg)

    def kcv(self, unit: str, role: str, *, version: int | None = None) -> bytes:
        master = self._master(unit, role)
        self._check_version(unit, role, version)
        return crypto.kcv(master)
