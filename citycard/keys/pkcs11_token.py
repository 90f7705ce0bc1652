"""One logged-in PKCS#11 session on one token: opening it (module, slot, login) and the
token calls a key source makes, every one under one lock (batch workers share the source)."""

from __future__ import annotations

import threading
from typing import Any, Callable

from .pkcs11_uri import HsmError, Pkcs11Uri, pykcs11, read_pin

DERIVE_MECHANISM = "CKM_DES3_ECB_ENCRYPT_DATA"


class Token:
    """One logged-in session on one token; every call under one (re-entrant) lock."""

    def __init__(self, lib: Any, session: Any, slot: int, name: str, mechanisms: set[str]) -> None:
        self.lib, self.session, self.slot, self.name = lib, session, slot, name
        self.lock = threading.RLock()
        self.closed = False
        self.mechanisms = mechanisms
        self.can_derive = DERIVE_MECHANISM in mechanisms
        self._dropped: list[Any] = []     # session objects of dropped handles, destroyed at the next call

    def _fail(self, what: str, exc: Exception) -> HsmError:
        return HsmError(f"{self.name}: {what}: {exc}")

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` under the lock; a PKCS#11 error becomes an :class:`HsmError` saying ``what``."""
        P = pykcs11()
        with self.lock:
            if self.closed:
                raise HsmError(f"{self.name}: the key source is closed")
            self._flush()
            try:
                return fn()
            except P.PyKCS11Error as exc:
                raise self._fail(what, exc) from None

    _call = call        # the name before the split (tests count session objects through it)

    def encrypt(self, obj: Any, data: bytes, iv: bytes | None = None, what: str = "encrypt") -> bytes:
        P = pykcs11()
        mech = P.Mechanism(P.CKM_DES3_ECB) if iv is None else P.Mechanism(P.CKM_DES3_CBC, iv)
        return bytes(self.call(what, lambda: self.session.encrypt(obj, data, mech)))

    def decrypt(self, obj: Any, data: bytes, what: str = "decrypt") -> bytes:
        P = pykcs11()
        return bytes(self.call(what, lambda: self.session.decrypt(obj, data, P.Mechanism(P.CKM_DES3_ECB))))

    @staticmethod
    def _session_template(P: Any) -> list[tuple[int, Any]]:
        return [(P.CKA_CLASS, P.CKO_SECRET_KEY), (P.CKA_KEY_TYPE, P.CKK_DES2), (P.CKA_TOKEN, False),
                (P.CKA_PRIVATE, True), (P.CKA_SENSITIVE, True), (P.CKA_EXTRACTABLE, False),
                (P.CKA_ENCRYPT, True), (P.CKA_DECRYPT, True), (P.CKA_DERIVE, True),
                (P.CKA_WRAP, False), (P.CKA_UNWRAP, False)]

    def derive(self, base: Any, data: bytes, what: str = "derive") -> Any:
        """A session DES2 key E(base, data) (16 bytes of data, ECB), sensitive, non-extractable."""
        P = pykcs11()
        if self.can_derive:
            mech = P.KEY_DERIVATION_STRING_DATA_MechanismBase(data, P.CKM_DES3_ECB_ENCRYPT_DATA)
            return self.call(what, lambda: self.session.deriveKey(base, self._session_template(P), mech))
        raw = self.encrypt(base, data, what=what)      # fallback: the key passes through this process
        try:
            return self.create(raw, what=what)
        finally:
            del raw

    def create(self, value: bytes, what: str = "create a key") -> Any:
        P = pykcs11()
        template = self._session_template(P) + [(P.CKA_VALUE, value)]
        return self.call(what, lambda: self.session.createObject(template))

    def destroy(self, obj: Any) -> None:
        """Destroy a session object: at the next token call (a handle's ``__del__`` may run in
        the middle of another call, from any thread)."""
        self._dropped.append(obj)

    def _flush(self) -> None:
        while self._dropped:
            obj = self._dropped.pop()
            try:
                self.session.destroyObject(obj)
            except Exception:
                pass

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self._flush()
            self.closed = True
            try:
                self.session.closeSession()
            except Exception:
                pass
            try:
                self.lib.unload()
            except Exception:
                pass


def open_token(uri: Pkcs11Uri, pin: Callable[[str], str] | str | None = None) -> Token:
    """Load the URI's module, find its token and log in (PIN: :func:`~.pkcs11_uri.read_pin`)."""
    P = pykcs11()
    module = uri.module_path()
    lib = P.PyKCS11Lib()
    try:
        lib.load(module)
    except P.PyKCS11Error as exc:
        raise HsmError(f"{uri.name}: cannot load the PKCS#11 module {module} ({exc})") from None
    try:
        slot = find_slot(lib, uri)
        session = lib.openSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION)
        try:
            mechanisms = {str(m) for m in lib.getMechanismList(slot)}
            _login(P, session, uri, pin)
        except BaseException:
            session.closeSession()
            raise
    except P.PyKCS11Error as exc:
        lib.unload()
        raise HsmError(f"{uri.name}: {exc}") from None
    except BaseException:
        lib.unload()
        raise
    return Token(lib, session, slot, uri.name, mechanisms)


def _login(P: Any, session: Any, uri: Pkcs11Uri, pin: Callable[[str], str] | str | None) -> None:
    try:
        session.login(read_pin(uri, pin))
    except P.PyKCS11Error as exc:
        if exc.value != P.CKR_USER_ALREADY_LOGGED_IN:
            what = "wrong PIN" if exc.value == P.CKR_PIN_INCORRECT else f"login failed ({exc})"
            raise HsmError(f"{uri.name}: {what}") from None


def find_slot(lib: Any, uri: Pkcs11Uri) -> int:
    """The first slot whose token matches the URI's path attributes."""
    slots = lib.getSlotList(tokenPresent=True)
    for slot in slots:
        if uri.slot_id is not None and slot != uri.slot_id:
            continue
        info = lib.getTokenInfo(slot)
        checks = ((uri.token, info.label), (uri.serial, info.serialNumber),
                  (uri.manufacturer, info.manufacturerID), (uri.model, info.model))
        if all(want is None or want == str(have).strip() for want, have in checks):
            return slot
    raise HsmError(f"{uri.name}: no such token ({len(slots)} token(s) present)")
