"""The key inventory of a PKCS#11 token (docs/keys.md, "Key inventory"): the state and dates of
each master version, kept in one token data object (``CKO_DATA`` labelled
``citycard-inventory``, private, its value the JSON ``{"unit/role/vN": {"state", "activation",
"expiry"}}``), so a token's masters follow the same rules as a keystore's.  A master absent
from it is active with no dates.  Only someone logged in to the token (its user PIN) reads or
changes it, as only a keystore's passphrase holder changes a keystore's inventory."""

from __future__ import annotations

import json
from typing import Any

from .inventory import Lifecycle, check_date, check_state
from .pkcs11_token import Token
from .pkcs11_uri import HsmError, pykcs11

INVENTORY_LABEL = "citycard-inventory"
Versions = dict[tuple[str, str, int], Lifecycle]


def _objects(token: Token) -> list[Any]:
    P = pykcs11()
    return token.call("look for the key inventory", lambda: token.session.findObjects(
        [(P.CKA_CLASS, P.CKO_DATA), (P.CKA_LABEL, INVENTORY_LABEL)]))


def read_inventory(token: Token, source_name: str) -> Versions:
    """The token's inventory (empty when it has none); a damaged one is an error."""
    P = pykcs11()
    objs = _objects(token)
    if not objs:
        return {}
    if len(objs) > 1:
        raise HsmError(f"{source_name}: two {INVENTORY_LABEL!r} objects: the key inventory is ambiguous")
    (value,) = token.call("read the key inventory", lambda: token.session.getAttributeValue(
        objs[0], [P.CKA_VALUE], allAsBinary=True))
    try:
        doc = json.loads(bytes(value or b"").decode("utf-8"))
        out: Versions = {}
        for name, life in doc.items():
            unit, role, v = name.rsplit("/", 2)
            if not v.startswith("v"):
                raise ValueError(name)
            out[(unit, role, int(v[1:]))] = Lifecycle(check_state(life.get("state", "active")),
                                                      check_date(life.get("activation"), "activation"),
                                                      check_date(life.get("expiry"), "expiry"))
        return out
    except (ValueError, AttributeError, TypeError, UnicodeDecodeError) as exc:
        raise HsmError(f"{source_name}: the {INVENTORY_LABEL!r} object is damaged ({exc.__class__.__name__})") from None


def write_inventory(token: Token, source_name: str, versions: Versions) -> None:
    """Replace the token's inventory object (the new one first, then the old ones go)."""
    P = pykcs11()
    old = _objects(token)
    doc = {f"{u}/{r}/v{v}": life.as_dict() for (u, r, v), life in sorted(versions.items())}
    token.call("write the key inventory", lambda: token.session.createObject([
        (P.CKA_CLASS, P.CKO_DATA), (P.CKA_TOKEN, True), (P.CKA_PRIVATE, True), (P.CKA_MODIFIABLE, True),
        (P.CKA_LABEL, INVENTORY_LABEL), (P.CKA_APPLICATION, "citycard"),
        (P.CKA_VALUE, json.dumps(doc, sort_keys=True).encode("utf-8"))]))
    for o in old:
        token.call("replace the key inventory", lambda o=o: token.session.destroyObject(o))
