"""Storing a master in a PKCS#11 token (``citycard keys hsm-import``).

Each master becomes a token object of type DES2, sensitive and not extractable (never
readable, never wrappable), with derive and encrypt, no decrypt, wrap or unwrap, not
modifiable; ``CKA_LABEL`` = the source's label template, ``CKA_ID`` = ``v<version>``.  A
master used on cards as it is (``direct``) also gets its two single-DES halves (``CKA_ID``
``v<version>.L`` / ``.R``, encrypt and decrypt), which the retail MAC (ISO 9797-1 algorithm
3) needs.  The KCVs the token computes must match, else nothing is stored.
"""

from __future__ import annotations

from typing import Any

from .. import crypto
from .pkcs11_token import Token
from .pkcs11_uri import HsmError, pykcs11


#: the label of the data object that says what a token's keys are for
PURPOSE_LABEL = "citycard-purpose"
PURPOSES = ("test", "production")


def _purpose_objects(token: Token) -> list[Any]:
    P = pykcs11()
    return token.call("look for the purpose marker", lambda: token.session.findObjects(
        [(P.CKA_CLASS, P.CKO_DATA), (P.CKA_LABEL, PURPOSE_LABEL)]))


def read_purpose(token: Token, source_name: str) -> str | None:
    """The token's purpose marker (``test``, ``production``), None when it has none.  Two
    different markers, or an unknown value, is an error (the token cannot be trusted either way)."""
    P = pykcs11()
    values = set()
    for obj in _purpose_objects(token):
        (value,) = token.call("read the purpose marker", lambda o=obj: token.session.getAttributeValue(
            o, [P.CKA_VALUE], allAsBinary=True))
        values.add(bytes(value or b"").decode("ascii", "replace"))
    if not values:
        return None
    if len(values) > 1 or not values <= set(PURPOSES):
        raise HsmError(f"{source_name}: its {PURPOSE_LABEL!r} objects say {', '.join(sorted(values))}: "
                       f"expected one of {', '.join(PURPOSES)}")
    return values.pop()


def mark_purpose(token: Token, source_name: str, purpose: str) -> None:
    """Create the purpose marker (once: a token already marked so is left as it is; a token
    marked otherwise is an error)."""
    if purpose not in PURPOSES:
        raise HsmError(f"purpose {purpose!r}: expected one of {', '.join(PURPOSES)}")
    current = read_purpose(token, source_name)
    if current == purpose:
        return
    if current is not None:
        raise HsmError(f"{source_name}: the token is marked {current!r}; it cannot take {purpose} keys")
    P = pykcs11()
    token.call("mark the token's purpose", lambda: token.session.createObject([
        (P.CKA_CLASS, P.CKO_DATA), (P.CKA_TOKEN, True), (P.CKA_PRIVATE, True), (P.CKA_MODIFIABLE, False),
        (P.CKA_LABEL, PURPOSE_LABEL), (P.CKA_APPLICATION, "citycard"), (P.CKA_VALUE, purpose.encode("ascii"))]))


def master_template(label: str, value: bytes, ident: str, *, derive: bool, decrypt: bool) -> list[tuple[int, Any]]:
    """The attributes of a master (or of one of its halves) as a token object."""
    P = pykcs11()
    return [(P.CKA_CLASS, P.CKO_SECRET_KEY), (P.CKA_KEY_TYPE, P.CKK_DES2), (P.CKA_TOKEN, True),
            (P.CKA_PRIVATE, True), (P.CKA_LABEL, label), (P.CKA_ID, ident.encode("ascii")),
            (P.CKA_SENSITIVE, True), (P.CKA_EXTRACTABLE, False), (P.CKA_MODIFIABLE, False),
            (P.CKA_ENCRYPT, True), (P.CKA_DECRYPT, decrypt), (P.CKA_DERIVE, derive),
            (P.CKA_WRAP, False), (P.CKA_UNWRAP, False), (P.CKA_SIGN, False), (P.CKA_VERIFY, False),
            (P.CKA_VALUE, value)]


def store_master(token: Token, source_name: str, label: str, unit: str, role: str, key: bytes, version: int,
                 direct: bool) -> None:
    """Create the master's token object(s) and check their KCVs in the token; on any failure
    destroy what was created and raise."""
    made: list[Any] = []
    try:
        made.append(token.call(f"store {unit}/{role}", lambda: token.session.createObject(
            master_template(label, bytes(key), f"v{version}", derive=True, decrypt=False))))
        if direct:
            for tag, half in (("L", key[:8]), ("R", key[8:])):
                made.append(token.call(f"store {unit}/{role} halves", lambda h=half, g=tag: token.session.createObject(
                    master_template(label, bytes(h) * 2, f"v{version}.{g}", derive=False, decrypt=True))))
        if not _kcvs_match(token, made, key, unit, role, direct):
            raise HsmError(f"{source_name}: {unit}/{role}: the KCV computed by the token does not match; "
                           "nothing stored")
    except BaseException:
        for o in made:
            token.destroy(o)
        token.call("discard a failed import", lambda: None)
        raise


def _kcvs_match(token: Token, made: list[Any], key: bytes, unit: str, role: str, direct: bool) -> bool:
    """The token's KCV of the master (and of its halves) equals the one computed here."""
    got = token.encrypt(made[0], bytes(8), what=f"KCV of {unit}/{role}")[:3]
    ok = got == crypto.kcv(bytes(key))
    if direct:
        ok = ok and all(token.encrypt(o, bytes(8))[:3] == crypto.kcv(bytes(h))
                        for o, h in zip(made[1:], (key[:8], key[8:])))
    return ok
