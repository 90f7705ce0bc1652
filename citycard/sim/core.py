"""The OS core of the simulated card: power, the dispatch table, response formatting,
security state, error counters, line-protection MAC checks and the commit of a command's
writes (SPEC.md §1.1, §1.6).

``process(apdu) -> response`` never raises for anything a host can send: malformed
commands get a status word.  The one exception is :class:`~citycard.sim.nvm.PowerLoss`,
raised only when a test arms tearing; the card is then off until ``power_on``, which
rolls back an interrupted transaction.

Handlers (in ``files.py``, ``security.py``, ``purse.py``) are found through one table,
:attr:`CardCore.COMMANDS` (INS → the CLAs each handler accepts: the vsmartcard shape, with
the CLA rules in the table rather than in the handlers); they return response data or
raise :class:`SwError`; one place formats the answer (Le, ``61xx``).
"""

from __future__ import annotations

import hmac
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, Mapping

from ..apdu import CommandApdu
from ..crypto.cipher import Alg, block_size
from ..crypto.secure import decipher, line_mac
from ..errors import InputError
from .fs import COUNTER_TYPES, DF, EF, KT_LINE, KeyRecord
from .nvm import Nvm, PowerLoss

if TYPE_CHECKING:
    from .models import CardModel
    from .purse import PurseSession

log = logging.getLogger("citycard.sim")

SW_OK = b"\x90\x00"

# CLA sets for the dispatch table
ISO = frozenset({0x00, 0x04})            # ISO command, plain or with line protection
PROPRIETARY = frozenset({0x80, 0x84})    # FMCOS / PBOC command, plain or protected
ISO_PLAIN = frozenset({0x00})
PROPRIETARY_PLAIN = frozenset({0x80})
PROTECTED_ONLY = frozenset({0x84})       # MAC required (blocking, PIN UNBLOCK)


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the dispatch table: the handler method of an INS (and P1, when the INS is
    two commands told apart by P1) for the CLAs in ``clas``; any other CLA answers
    ``refused``'s SW for it, else ``6E00``; a P1 no row names answers ``6A86``."""

    handler: str
    clas: frozenset[int]
    refused: tuple[tuple[int, int], ...] = ()
    p1: int | None = None


class SwError(Exception):
    """A handler's answer when it is a status word only."""

    __slots__ = ("sw",)

    def __init__(self, sw: int) -> None:
        self.sw = sw


def _sw(sw: int) -> bytes:
    return bytes((sw >> 8, sw & 0xFF))


def tl(tag: bytes, value: bytes) -> bytes:
    """BER-TLV with a definite length."""
    n = len(value)
    if n < 0x80:
        return tag + bytes((n,)) + value
    if n < 0x100:
        return tag + b"\x81" + bytes((n,)) + value
    return tag + b"\x82" + n.to_bytes(2, "big") + value


def u(b: bytes) -> int:
    return int.from_bytes(b, "big")


def decipher_or_6a80(key: bytes, body: bytes, alg: Alg = "des") -> bytes:
    """``LD ‖ data ‖ 80 00..`` enciphered under ``key`` (DES/3DES, or SM4 on a card whose line
    protection is SM4: docs/sm4.md) → data; malformed → 6A80."""
    if not body or len(body) % block_size(alg):
        raise SwError(0x6A80)
    try:
        return decipher(key, body, alg)
    except InputError:
        raise SwError(0x6A80) from None


class CardCore:
    """State and OS services shared by the command families.  :class:`~citycard.sim.card.SimCard`
    combines it with the handlers and fills :attr:`COMMANDS`."""

    COMMANDS: ClassVar[Mapping[int, tuple[Route, ...]]] = {}

    model: CardModel
    mf: DF
    card_blocked: bool
    atr: bytes
    rng: Callable[[int], bytes]
    nvm: Nvm
    generation: int
    powered: bool
    _routes: dict[int, tuple[tuple[Route, Callable[..., bytes]], ...]]

    # ------------------------------------------------------------------ power
    def _reset_state(self) -> None:
        self.df: DF = self.mf
        self.ef: EF | None = None
        self.mf_sr = 0
        self.df_sr = 0
        self.free = self.mf.keyfile is None   # R5: free until the DF holds a KEY file
        self.challenge: bytes | None = None
        self.pending = b""
        self.session: PurseSession | None = None
        self.pin_verified = False   # a VERIFY succeeded in the current DF (load_requires_pin)
        self.warning = 0        # a warning SW (6281) for the data this command returns
        self.trailer = 0        # bytes after the data Le counts (a protected read's MAC, R14)
        self._verified: KeyRecord | None = None   # a key whose MAC this command verified

    def power_on(self) -> bytes:
        """Power the card up (rolling back a torn transaction); returns the ATR."""
        if self.nvm.recover():
            self.generation += 1
            log.info("power-on: interrupted transaction rolled back")
        self.powered = True
        self._reset_state()
        return self.atr

    def power_off(self) -> None:
        self.powered = False
        self._reset_state()

    def reset(self) -> bytes:
        """Power cycle: every transient state is lost; returns the ATR."""
        self.power_off()
        return self.power_on()

    # ------------------------------------------------------------------ dispatch
    def process(self, raw: bytes) -> bytes:
        if not self.powered:
            self.power_on()
        chal, self.challenge = self.challenge, None
        sess, self.session = self.session, None
        if self.card_blocked:  # CARD BLOCK: every command, whatever it is, answers 6A81 (§1.5)
            self.pending = b""
            return b"\x6A\x81"
        steps = self.nvm.steps
        try:
            try:
                cmd = CommandApdu.parse(raw)
            except InputError:
                return b"\x67\x00"
            if cmd.ins == 0xC0 and cmd.cla & 0xF0 == 0:
                self.challenge, self.session = chal, sess   # GET RESPONSE keeps both alive
                return self._get_response(cmd)
            self.pending = b""
            self.warning = self.trailer = 0
            try:
                data = self._dispatch(cmd, chal, sess)
            except SwError:
                if self._verified is not None:
                    self._reset_verified()
                raise
            if self._verified is not None:
                self._reset_verified()
            return self._format(cmd, data)
        except SwError as e:
            return _sw(e.sw)
        except PowerLoss:
            self.powered = False
            self._verified = None
            self.generation += 1
            raise
        except Exception:  # a bug in the card: never let it reach the reader
            self._verified = None
            log.exception("card OS error on %s", raw[:4].hex().upper())
            return b"\x6F\x00"
        finally:
            if self.nvm.steps != steps:
                self.generation += 1

    def _format(self, cmd: CommandApdu, data: bytes) -> bytes:
        ne = cmd.ne
        trailer, self.trailer = self.trailer, 0
        warning, self.warning = self.warning, 0
        if ne is None or len(data) <= ne + trailer:
            return data + (_sw(warning) if warning else SW_OK)
        self.pending = data[ne:]
        return data[:ne] + bytes((0x61, min(len(self.pending), 256) & 0xFF))

    def _get_response(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 or cmd.p2:
            return b"\x6A\x86"
        if not self.pending:
            return b"\x69\x85"
        ne = cmd.ne or 256
        out, self.pending = self.pending[:ne], self.pending[ne:]
        if self.pending:
            return out + bytes((0x61, min(len(self.pending), 256) & 0xFF))
        return out + SW_OK

    def _dispatch(self, cmd: CommandApdu, chal: bytes | None, sess: PurseSession | None) -> bytes:
        """Find the handler of (INS, CLA) in :attr:`COMMANDS`; the table alone says which CLAs
        a command accepts and what any other CLA answers."""
        cla = cmd.cla
        if cla & 0x0B or cla & 0x70:  # secure-messaging bits we do not speak / logical channels
            raise SwError(0x6E00 if cla & 0x70 or cla & 0x08 else 0x6881)
        routes = self._routes.get(cmd.ins)
        if routes is None:
            raise SwError(0x6D00)
        limit = self.model.max_data
        if limit is not None and len(cmd.data) > limit:   # R7: Lc <= 239 on an FM1208 (UM)
            raise SwError(0x6700)
        first: Route | None = None
        for route, handler in routes:
            if route.p1 is not None and route.p1 != cmd.p1:
                continue
            if cla in route.clas:
                return handler(cmd, chal, sess)
            first = first or route
        if first is None:
            raise SwError(0x6A86)
        raise SwError(dict(first.refused).get(cla, 0x6E00))

    def _bind_routes(self) -> None:
        """:attr:`COMMANDS` with the handlers bound once (the dispatch runs per APDU)."""
        self._routes = {ins: tuple((r, getattr(self, r.handler)) for r in routes)
                        for ins, routes in self.COMMANDS.items()}

    # ------------------------------------------------------------------ security
    @property
    def line_alg(self) -> Alg:
        """The cipher of this card's line protection, for the whole card (docs/sm4.md "SM4 line
        protection"): its model's."""
        return self.model.line_alg

    def _ac(self, ac: int) -> bool:
        """Access condition byte XY (SPEC §1.1)."""
        if self.free:
            return True
        x, y = ac >> 4, ac & 0x0F
        if x == 0:
            return self.mf_sr >= y
        if x < y:
            return False
        return y <= self.df_sr <= x

    def _need(self, ac: int) -> None:
        if not self._ac(ac):
            raise SwError(0x6982)

    def _set_sr(self, value: int) -> None:
        self.df_sr = value
        if self.df is self.mf:
            self.mf_sr = value

    def _check_app(self) -> None:
        """D5: file and purse commands in a blocked application answer 6A81 / 9303."""
        node: DF | None = self.df
        while node is not None:
            if node.block:
                raise SwError(0x9303 if node.block == 2 else 0x6A81)
            node = node.parent

    def _key(self, base: int, kid: int, df: DF | None = None) -> KeyRecord:
        kf = (df or self.df).keyfile
        key = kf.get(base, kid) if kf is not None else None
        if key is None:
            raise SwError(0x6A88)
        return key

    def _first_key(self, base: int) -> KeyRecord:
        kf = self.df.keyfile
        if kf is not None:
            for (b, _kid), key in kf.keys.items():
                if b == base:
                    return key
        raise SwError(0x6A88)

    def _count_failure(self, key: KeyRecord) -> int:
        """Decrement a key's error counter; return the tries left."""
        left = max(key.tries_left - 1, 0)
        self.nvm.set(key, "b4", (key.b4 & 0xF0) | left)
        return left

    def _count_success(self, key: KeyRecord) -> None:
        full = (key.b4 & 0xF0) | (key.b4 >> 4)
        if key.b4 != full:
            self.nvm.set(key, "b4", full)

    def _reset_verified(self) -> None:
        key, self._verified = self._verified, None
        if key is not None:
            self._count_success(key)

    @contextmanager
    def _commit(self) -> Iterator[None]:
        """One transaction for a command's writes and the error-counter reset of the key whose
        MAC it verified, so that a tear leaves neither without the other."""
        with self.nvm.transaction():
            self._reset_verified()
            yield

    def _mac_checked(self, cmd: CommandApdu, chal: bytes | None, key: KeyRecord, *,
                     owner: DF | None = None, bad_mac: int = 0x9302) -> bytes:
        """Verify the line-protection MAC of ``cmd`` with ``key``; return the data before the MAC.

        A wrong MAC answers ``bad_mac`` (``9302``; ``6988`` for the blocking commands and PIN
        UNBLOCK, SPEC §6 R15) and counts against a line-protection key's error counter; when it
        reaches zero the DF holding the key (``owner``, default the current DF) is locked
        permanently (UM appendix A on EF0015: "three MAC failures → 9303").
        """
        if chal is None:
            raise SwError(0x6984)
        if len(cmd.data) < 4:
            raise SwError(0x6987)
        if len(cmd.data) > 255:  # Lc+4 is one byte of the MAC input: short APDUs only
            raise SwError(0x6700)
        if key.locked:
            raise SwError(0x9303 if key.base == KT_LINE else 0x6983)
        body, mac = cmd.data[:-4], cmd.data[-4:]
        header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)))
        if not hmac.compare_digest(line_mac(key.value, chal, header + body, self.line_alg), mac):
            if key.base in COUNTER_TYPES:
                df = owner if owner is not None else self.df
                with self.nvm.transaction():
                    left = self._count_failure(key)
                    if left == 0 and key.base == KT_LINE and df is not self.mf:
                        self.nvm.set(df, "block", 2)
                if left == 0 and key.base == KT_LINE:
                    # Decision: the failure that locks the application already answers 9303
                    # (UM appendix A: "three MAC failures → 9303"), as APP UNBLOCK does.
                    raise SwError(0x9303)
            raise SwError(bad_mac)
        if key.base in COUNTER_TYPES:
            self._verified = key  # counter reset: with the command's writes (_commit) or after it
        return body

    def _line_key(self, kid: int) -> KeyRecord:
        return self._key(KT_LINE, kid)
