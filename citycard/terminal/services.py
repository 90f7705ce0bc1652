"""Card services after issuance: PINs, blocking a lost card or application (SPEC §1.5, D2, D5).

Keys come from the key sources: the per-card key of the application (PBOC
diversification with the application serial read from the card) is derived here and
used for the MACs; it never leaves this process.
"""

from __future__ import annotations

from typing import Any

from ..apdu import ApduError, CommandApdu, ResponseApdu
from ..crypto import encipher, mac_alg1, protect, tac_key
from ..errors import CitycardError
from ..profile import pin_to_bytes
from ..spec import CardSpec, DFSpec
from ..transport import CardSession


class ServiceError(CitycardError):
    pass


def find_app(spec: CardSpec, name: str | None, *, need: int | None = None) -> DFSpec:
    """The application named ``name`` (``mf`` for the MF), or the first one holding a key of type ``need``."""
    if name == "mf":
        return spec.mf
    for df in spec.apps:
        if name is not None and df.name == name:
            return df
        if name is None and need is not None and any(k.ktype == need for k in df.keys):
            return df
    known = ", ".join(["mf", *(a.name for a in spec.apps)])
    raise ServiceError(f"no application {name!r} in the profile (applications: {known})" if name
                       else f"no application of the profile has a key of type {need:02X}")


def read_serial(session: CardSession, spec: CardSpec, df: DFSpec) -> str:
    """The serial the card's keys were diversified with: the field bound to ``@app_serial``
    in ``df``, else ``@card_serial`` in the MF (readable even when ``df`` is blocked)."""
    from .. import records

    for where, binding in ((df, "@app_serial"), (spec.mf, "@card_serial"), (df, "@card_serial")):
        for f in where.files:
            if f.kind != "binary" or f.layout is None:
                continue
            fields = [k for k, v in f.data.items() if v == binding]
            if not fields:
                continue
            if select(session, where).sw != 0x9000:
                continue
            lay = records.get(f.layout)
            r = session.send(CommandApdu(0x00, 0xB0, 0x80 | f.sfi, 0x00, ne=lay.size))
            if r.sw != 0x9000:
                continue
            return str(lay.decode(r.data)[fields[0]])
    raise ServiceError(f"cannot read the serial of {df.name} (no readable file carries it)")


def factor_of(serial: str) -> bytes:
    return bytes.fromhex(serial.zfill(max(16, len(serial) + len(serial) % 2)))[-8:]


def select(session: CardSession, df: DFSpec) -> ResponseApdu:
    if df.fid == 0x3F00:
        return session.send(CommandApdu(0x00, 0xA4, 0x00, 0x00, b"\x3F\x00"))
    return session.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, df.aid))


class CardServices:
    def __init__(self, session: CardSession, spec: CardSpec, keys: Any = None) -> None:
        self.session, self.spec, self.keys = session, spec, keys
        self._serial: dict[str, str] = {}

    def _enter(self, df: DFSpec, *, blocked_ok: bool = False) -> None:
        r = select(self.session, df)
        if r.sw != 0x9000 and not (blocked_ok and r.sw in (0x6A81, 0x9303)):
            raise ServiceError(f"SELECT {df.name}: {ApduError(r.sw)}")

    def _key(self, df: DFSpec, ktype: int) -> bytes:
        k = next((k for k in df.keys if k.ktype == ktype), None)
        if k is None or k.master is None:
            raise ServiceError(f"{df.name} has no key of type {ktype:02X} in the profile")
        if self.keys is None:
            raise ServiceError("this operation needs key sources (--keys)")
        serial = self._serial.get(df.name)
        if serial is None:
            serial = self._serial[df.name] = read_serial(self.session, self.spec, df)
        value = self.keys.derive(k.master[0], k.master[1], factor_of(serial))
        return value[:8] if k.length == 8 else value

    @staticmethod
    def _pin_key(df: DFSpec) -> int:
        k = next((k for k in df.keys if k.ktype == 0x3A), None)
        if k is None:
            raise ServiceError(f"{df.name} has no PIN")
        return k.kid

    def _check(self, r: ResponseApdu, what: str) -> None:
        if r.sw != 0x9000:
            raise ServiceError(f"{what}: {ApduError(r.sw)}")

    # ------------------------------------------------------------------ PINs
    def verify_pin(self, df: DFSpec, pin: str) -> None:
        self._enter(df)
        r = self.session.send(CommandApdu(0x00, 0x20, 0x00, self._pin_key(df), pin_to_bytes(pin), sensitive=True))
        self._check(r, "VERIFY")

    def change_pin(self, df: DFSpec, old: str, new: str) -> None:
        self._enter(df)
        data = pin_to_bytes(old) + b"\xFF" + pin_to_bytes(new)
        r = self.session.send(CommandApdu(0x80, 0x5E, 0x01, self._pin_key(df), data, sensitive=True))
        self._check(r, "CHANGE PIN")

    def reload_pin(self, df: DFSpec, new: str) -> None:
        """D2: new PIN ‖ MAC over it with the reload key's left ⊕ right half, IV 0."""
        key = self._key(df, 0x38)       # may read the serial elsewhere: before entering df
        self._enter(df)
        k8 = tac_key(key)               # left ⊕ right (a key handle folds it in its source)
        pin = pin_to_bytes(new)
        r = self.session.send(CommandApdu(0x80, 0x5E, 0x00, self._pin_key(df), pin + mac_alg1(k8, pin)[:4],
                                          sensitive=True))
        self._check(r, "RELOAD PIN")

    def unblock_pin(self, df: DFSpec, pin: str) -> None:
        """D2: ``84 24 00 <pin id>`` with E(LD‖PIN‖pad) ‖ MAC under the unblock key."""
        key = self._key(df, 0x37)
        self._enter(df)
        body = encipher(key, pin_to_bytes(pin))
        chal = self.session.get_challenge(4)
        cmd = CommandApdu(0x84, 0x24, 0x00, self._pin_key(df), body, sensitive=True)
        r = self.session.send(protect(CommandApdu(0x80, 0x24, 0x00, cmd.p2, body, sensitive=True), key, chal))
        self._check(r, "PIN UNBLOCK")

    # ------------------------------------------------------------------ blocking
    def _damk_command(self, df: DFSpec, ins: int, p2: int, what: str, *, blocked_ok: bool = False) -> None:
        key = self._key(df, 0x36)        # reads the serial while the application still answers
        self._enter(df, blocked_ok=blocked_ok)
        chal = self.session.get_challenge(4)
        r = self.session.send(protect(CommandApdu(0x80, ins, 0x00, p2), key, chal))
        self._check(r, what)

    def block_app(self, df: DFSpec, permanent: bool = False) -> None:
        self._damk_command(df, 0x1E, 0x01 if permanent else 0x00, "APPLICATION BLOCK")

    def unblock_app(self, df: DFSpec) -> None:
        self._damk_command(df, 0x18, 0x00, "APPLICATION UNBLOCK", blocked_ok=True)

    def block_card(self) -> None:
        self._damk_command(self.spec.mf, 0x16, 0x00, "CARD BLOCK")
