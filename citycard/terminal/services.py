"""Card services after issuance: PINs, blocking a lost card or application (SPEC §1.5, D2, D5).

Keys come from the key sources: the per-card key of the application (PBOC
diversification with the application serial read from the card) is derived here and
used for the MACs; it never leaves this process.  The MAC'd commands go through the
transport stack's line protection (:class:`~citycard.transport.LineProtection`).

Every service first identifies the card (:func:`citycard.terminal.identify.identify_for_service`,
issue 17 item 1): a card that is not of the profile is refused before any key or PIN is sent.
"""

from __future__ import annotations

from ..apdu import CommandApdu
from ..commands import fmcos, iso, walk
from ..commands.fmcos import KeyType
from ..cos import check_line_protection
from ..crypto import pin_reload_mac
from ..errors import CardError, CitycardError
from ..keys import KeySource
from ..keys.handles import Key
from ..profile import pin_to_bytes
from ..spec import CardSpec, DFSpec
from ..transport import CardSession, LineProtection
from .identify import CardRefused, IdentifiedCard, identify_for_service


class ServiceError(CitycardError):
    """A card service could not be carried out (profile, key sources, card)."""


class ServiceRefused(CardError, ServiceError):
    """The card answered a service command with an unexpected status word (``sw``)."""


class ServiceCardRefused(ServiceError, CardRefused):
    """Not a card of the profile: refused before any key or PIN (issue 17 item 1)."""


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
    """The serial ``df``'s keys were diversified with (:func:`citycard.commands.walk.read_serial`)."""
    try:
        return walk.read_serial(session, spec, df)
    except walk.SerialNotReadable as exc:
        raise ServiceError(str(exc)) from None


class CardServices:
    def __init__(self, session: CardSession, spec: CardSpec, keys: KeySource | None = None) -> None:
        self.session, self.spec, self.keys = session, spec, keys
        self._serial: dict[str, str] = {}
        self.card: IdentifiedCard | None = None      # set by the first service (identification)

    def _identify(self, df: DFSpec, *, blocked_ok: bool = False) -> None:
        """Before any key or PIN: the card must be one of the profile holding ``df``."""
        try:
            self.card = identify_for_service(self.session, self.spec, df, blocked_ok=blocked_ok)
        except CardRefused as exc:
            raise ServiceCardRefused(str(exc)) from None

    def _enter(self, df: DFSpec, *, blocked_ok: bool = False) -> None:
        r = walk.select_df(self.session, df)
        if r.sw != 0x9000 and not (blocked_ok and r.sw in (0x6A81, 0x9303)):
            raise ServiceRefused(r.sw, f"SELECT {df.name}")

    def _key(self, df: DFSpec, ktype: int) -> Key:
        k = next((k for k in df.keys if k.ktype == ktype), None)
        if k is None or k.master is None:
            raise ServiceError(f"{df.name} has no key of type {ktype:02X} in the profile")
        if self.keys is None:
            raise ServiceError("this operation needs key sources (--keys)")
        serial = self._serial.get(df.name)
        if serial is None:
            serial = self._serial[df.name] = read_serial(self.session, self.spec, df)
        factor = walk.diversification_factor(serial)
        if k.alg == "sm4":   # a key of a card whose line protection is SM4 (docs/sm4.md)
            return self.keys.derive(k.master[0], k.master[1], factor, alg="sm4")
        value = self.keys.derive(k.master[0], k.master[1], factor)
        return value[:8] if k.length == 8 else value

    @staticmethod
    def _pin_key(df: DFSpec) -> int:
        k = next((k for k in df.keys if k.ktype == KeyType.PIN), None)
        if k is None:
            raise ServiceError(f"{df.name} has no PIN")
        return k.kid

    def _send(self, cmd: CommandApdu, what: str, *, key: Key | None = None, encrypt: bool = False) -> None:
        protect = LineProtection(key, encrypt=encrypt, alg=self.spec.line_alg) if key is not None else None
        r = self.session.send(cmd, protect=protect)
        if r.sw != 0x9000:
            raise ServiceRefused(r.sw, what)

    # ------------------------------------------------------------------ PINs
    def verify_pin(self, df: DFSpec, pin: str) -> None:
        self._identify(df)
        self._enter(df)
        self._send(iso.verify(self._pin_key(df), pin_to_bytes(pin)), "VERIFY")

    def change_pin(self, df: DFSpec, old: str, new: str) -> None:
        self._identify(df)
        self._enter(df)
        self._send(fmcos.change_pin(self._pin_key(df), pin_to_bytes(old), pin_to_bytes(new)), "CHANGE PIN")

    def reload_pin(self, df: DFSpec, new: str) -> None:
        """D2: new PIN ‖ MAC over it with the reload key's left ⊕ right half, IV 0 (on a card whose
        line protection is SM4: the whole SM4 key, docs/sm4.md)."""
        self._identify(df)
        key = self._key(df, KeyType.PIN_RELOAD)   # may read the serial elsewhere: before entering df
        self._enter(df)
        pin = pin_to_bytes(new)
        check_line_protection(self.session.atr, self.spec.line_alg)   # no MAC of the wrong cipher (docs/sm4.md)
        mac = pin_reload_mac(key, pin, self.spec.line_alg)   # type: ignore[arg-type]   # may be a token's handle
        self._send(fmcos.reload_pin(self._pin_key(df), pin, mac), "RELOAD PIN")

    def unblock_pin(self, df: DFSpec, pin: str) -> None:
        """D2: ``84 24 00 <pin id>`` with E(LD‖PIN‖pad) ‖ MAC under the unblock key."""
        self._identify(df)
        key = self._key(df, KeyType.PIN_UNBLOCK)
        self._enter(df)
        self._send(fmcos.unblock_pin(self._pin_key(df), pin_to_bytes(pin)), "PIN UNBLOCK", key=key, encrypt=True)

    # ------------------------------------------------------------------ blocking
    def _damk_command(self, df: DFSpec, cmd: CommandApdu, what: str, *, blocked_ok: bool = False) -> None:
        self._identify(df, blocked_ok=blocked_ok)
        key = self._key(df, KeyType.LINE_PROTECTION)   # reads the serial while the application still answers
        self._enter(df, blocked_ok=blocked_ok)
        self._send(cmd, what, key=key)

    def block_app(self, df: DFSpec, permanent: bool = False) -> None:
        self._damk_command(df, fmcos.app_block(permanent), "APPLICATION BLOCK")

    def unblock_app(self, df: DFSpec) -> None:
        self._damk_command(df, fmcos.app_unblock(), "APPLICATION UNBLOCK", blocked_ok=True)

    def block_card(self) -> None:
        self._damk_command(self.spec.mf, fmcos.card_block(), "CARD BLOCK")
