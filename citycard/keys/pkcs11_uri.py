"""``pkcs11:`` URIs (RFC 7512) of a key source, the token PIN, and loading PyKCS11.

The attributes a URI may hold are described in :mod:`citycard.keys.pkcs11`.  Errors name
the token, never a PIN or the value of a query attribute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from .source import KeyError_, PKCS11_PREFIX

MODULE_ENV = "CITYCARD_PKCS11_MODULE"
PIN_ENV = "CITYCARD_HSM_PIN"
DEFAULT_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
DEFAULT_LABELS = "{unit}/{role}"
_PATH_ATTRS = {"token", "serial", "manufacturer", "model", "slot-id"}
_QUERY_ATTRS = {"module-path", "pin-source", "labels"}


class HsmError(KeyError_):
    """A PKCS#11 token problem; names the token, never a PIN or a key."""


def pykcs11() -> Any:
    """The PyKCS11 module (an optional dependency: ``citycard[hsm]``)."""
    try:
        import PyKCS11  # noqa: F401
    except ImportError:
        raise HsmError("pkcs11: key sources need the PyKCS11 package (pip install 'citycard[hsm]')") from None
    return PyKCS11


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    slot_id: int | None = None
    module: str | None = None
    pin_source: str | None = None
    labels: str = DEFAULT_LABELS

    @property
    def name(self) -> str:
        """How messages name the source: the token, never the query (PIN source, module)."""
        parts = [f"{k}={v}" for k, v in (("token", self.token), ("serial", self.serial),
                                         ("slot-id", self.slot_id)) if v is not None]
        return PKCS11_PREFIX + (";".join(parts) or "(first token)")

    def module_path(self) -> str:
        if self.module:
            return self.module
        env = os.environ.get(MODULE_ENV)
        if env:
            return env
        for m in DEFAULT_MODULES:
            if Path(m).exists():
                return m
        raise HsmError(f"{self.name}: no PKCS#11 module: give module-path=... in the URI or set {MODULE_ENV}")


def parse_uri(text: str) -> Pkcs11Uri:
    """An RFC 7512 ``pkcs11:`` URI (see :mod:`citycard.keys.pkcs11`).  Errors never echo values."""
    if not text.startswith(PKCS11_PREFIX):
        raise HsmError("not a pkcs11: URI")
    body = text[len(PKCS11_PREFIX):]
    path, _, query = body.partition("?")
    found: dict[str, str] = {}
    for part, allowed, sep in ((path, _PATH_ATTRS, ";"), (query, _QUERY_ATTRS, "&")):
        for item in filter(None, part.split(sep)):
            key, value = _attribute(item, allowed, "path" if sep == ";" else "query")
            if key in found:
                raise HsmError(f"pkcs11: URI: attribute {key!r} given twice")
            found[key] = value
    slot: int | None = None
    if "slot-id" in found:
        if not found["slot-id"].isdigit():
            raise HsmError("pkcs11: URI: slot-id must be a number")
        slot = int(found["slot-id"])
    labels = found.get("labels", DEFAULT_LABELS)
    if labels.count("{unit}") != 1 or labels.count("{role}") != 1:
        raise HsmError("pkcs11: URI: labels= must hold {unit} and {role} once each")
    return Pkcs11Uri(found.get("token"), found.get("serial"), found.get("manufacturer"), found.get("model"), slot,
                     found.get("module-path"), found.get("pin-source"), labels)


def _attribute(item: str, allowed: set[str], where: str) -> tuple[str, str]:
    """One ``key=value`` of the URI's path or query, the key checked, the value unquoted."""
    key, eq, value = item.partition("=")
    key = key.strip().lower()
    if key == "pin-value":
        raise HsmError("pkcs11: URI: pin-value is refused (a PIN in a command line shows in process lists "
                       "and shell history): use pin-source=env:NAME or pin-source=file:PATH, or set "
                       f"{PIN_ENV}")
    if key in ("object", "id", "type"):
        raise HsmError(f"pkcs11: URI: {key}= names one object; a key source uses every key of the token "
                       "labelled by its template (labels=..., default {unit}/{role})")
    if key not in allowed:
        raise HsmError(f"pkcs11: URI: unknown {where} attribute {key!r} (known: "
                       f"{', '.join(sorted(allowed))})")
    if not eq:
        raise HsmError(f"pkcs11: URI: attribute {key!r} has no value")
    return key, unquote(value)


def read_pin(uri: Pkcs11Uri, fallback: Callable[[str], str] | str | None) -> str:
    """The token PIN: from the URI's ``pin-source``, else ``$CITYCARD_HSM_PIN``, else
    ``fallback`` (a prompt given the token's name, or the PIN)."""
    if uri.pin_source:
        return _pin_from_source(uri, uri.pin_source)
    env = os.environ.get(PIN_ENV)
    if env:
        return env
    if fallback is not None:
        return fallback(uri.name) if callable(fallback) else fallback
    raise HsmError(f"{uri.name}: no PIN: give pin-source=env:NAME or pin-source=file:PATH in the URI, or set {PIN_ENV}")


def _pin_from_source(uri: Pkcs11Uri, src: str) -> str:
    """``env:NAME``, or the first line of ``file:PATH`` / ``file://PATH`` / ``PATH``."""
    if src.startswith("env:"):
        var = src[4:]
        value = os.environ.get(var)
        if not value:
            raise HsmError(f"{uri.name}: pin-source env:{var}: the variable is not set")
        return value
    path = src[len("file://"):] if src.startswith("file://") else src[5:] if src.startswith("file:") else src
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except OSError as exc:
        raise HsmError(f"{uri.name}: pin-source {path}: cannot read it ({exc.strerror})") from None
    if not line:
        raise HsmError(f"{uri.name}: pin-source {path}: the first line is empty")
    return line
