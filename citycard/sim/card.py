"""The simulated FMCOS-style card OS (SPEC.md §1, §2 and decisions D1–D8).

``SimCard.process(apdu) -> response`` never raises for anything a host can send:
malformed commands get a status word.  The one exception is
:class:`~citycard.sim.nvm.PowerLoss`, raised only when a test arms tearing; the card
is then off until :meth:`SimCard.power_on`, which rolls back an interrupted
transaction.

Handlers are dispatched on INS through one table (the vsmartcard shape); they return
response data or raise :class:`SwError`; one place formats the answer (Le, ``61xx``).
Where SPEC.md leaves the card's behaviour open the choice is marked "Decision" here and
listed in docs/sim.md.
"""

from __future__ import annotations

import hmac
import logging
import os
from contextlib import contextmanager
from typing import Callable, Iterator

from ..apdu import CommandApdu
from ..crypto import cipher as _cipher
from ..crypto import pboc
from ..crypto.mac import mac_alg1, mac_alg3
from ..crypto.secure import decipher, line_mac
from ..errors import InputError
from .fs import (COUNTER_TYPES, DF, EF, FT_BINARY, FT_CYCLIC, FT_DF, FT_FIXED, FT_KEY, FT_PURSE,
                 FT_VARIABLE, KT_DES_DEC, KT_DES_ENC, KT_DES_MAC, KT_EXT_AUTH, KT_INTERNAL, KT_LINE,
                 KT_LOAD, KT_PIN, KT_PIN_RELOAD, KT_PIN_UNBLOCK, KT_PURCHASE, KT_UNLOAD,
                 VALID_KEY_TYPES, BinaryEF, FactorySettings, KeyFile, KeyRecord, PurseEF, RecordEF,
                 factory_mf)
from .nvm import Nvm, PowerLoss

log = logging.getLogger("citycard.sim")


def _atr(historical: bytes) -> bytes:
    body = bytes((0x80 | len(historical), 0x01)) + historical  # T0 (TD1 present), TD1 = T=1
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3B" + body + bytes((tck,))


SIM_ATR = _atr(b"CITYCARD FMCOS")


class SwError(Exception):
    __slots__ = ("sw",)

    def __init__(self, sw: int) -> None:
        self.sw = sw


def _sw(sw: int) -> bytes:
    return bytes((sw >> 8, sw & 0xFF))


def _tl(tag: bytes, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return tag + bytes((n,)) + value
    if n < 0x100:
        return tag + b"\x81" + bytes((n,)) + value
    return tag + b"\x82" + n.to_bytes(2, "big") + value


def _u(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _decipher(key: bytes, body: bytes) -> bytes:
    """``LD ‖ data ‖ 80 00..`` enciphered under ``key`` → data; malformed → 6A80."""
    if not body or len(body) % 8:
        raise SwError(0x6A80)
    try:
        return decipher(key, body)
    except InputError:
        raise SwError(0x6A80) from None


SW_OK = b"\x90\x00"

# purse session kinds
_S_LOAD, _S_PURCHASE, _S_CAPP, _S_UNLOAD = "load", "purchase", "capp", "unload"


class PurseSession:
    __slots__ = ("kind", "purse", "key", "ses", "amount", "ttype", "terminal", "counter", "capp")

    def __init__(self, kind: str, purse: PurseEF, key: KeyRecord, ses: bytes, amount: int, ttype: int,
                 terminal: bytes, counter: int) -> None:
        self.kind, self.purse, self.key, self.ses = kind, purse, key, ses
        self.amount, self.ttype, self.terminal, self.counter = amount, ttype, terminal, counter
        self.capp: tuple[RecordEF, int, bool, bytes] | None = None


class SimCard:
    """An FMCOS-style multi-application card with the PBOC ED/EP."""

    def __init__(self, mf: DF | None = None, *, card_blocked: bool = False, atr: bytes = SIM_ATR,
                 rng: Callable[[int], bytes] = os.urandom,
                 factory: FactorySettings = FactorySettings()) -> None:
        self.mf = mf if mf is not None else factory_mf(factory)
        self.card_blocked = card_blocked
        self.atr = atr
        self.rng = rng
        self.nvm = Nvm()
        self.generation = 0           # bumped by every persistent change (image saving)
        self.powered = False
        self._table = self._build_table()
        self._reset_state()

    # ------------------------------------------------------------------ power
    def _reset_state(self) -> None:
        self.df: DF = self.mf
        self.ef: EF | None = None
        self.mf_sr = 0
        self.df_sr = 0
        self.free = self.mf.empty
        self.challenge: bytes | None = None
        self.pending = b""
        self.session: PurseSession | None = None
        self._verified: KeyRecord | None = None   # a key whose MAC this command verified

    def power_on(self) -> None:
        if self.nvm.recover():
            self.generation += 1
            log.info("power-on: interrupted transaction rolled back")
        self.powered = True
        self._reset_state()

    def power_off(self) -> None:
        self.powered = False
        self._reset_state()

    def reset(self) -> None:
        self.power_off()
        self.power_on()

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
        if ne is None or len(data) <= ne:
            return data + SW_OK
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

    def _build_table(self) -> dict[int, tuple[Callable, int]]:
        iso, prop = 0x00, 0x80
        return {
            0xA4: (self._select, iso), 0x84: (self._get_challenge, iso),
            0x82: (self._external_auth, iso), 0x88: (self._internal_auth, iso),
            0xB0: (self._read_binary, iso), 0xD6: (self._update_binary, iso),
            0xB2: (self._read_record, iso), 0xE2: (self._append_record, iso),
            0x20: (self._verify, iso), 0x22: (self._set_auth_code, iso),
            0xE0: (self._create_file, prop), 0x0E: (self._erase_df, prop),
            0xD4: (self._write_key, prop), 0x5E: (self._pin_change_reload, prop),
            0x24: (self._pin_unblock, prop), 0x16: (self._card_block, prop),
            0x1E: (self._app_block, prop), 0x18: (self._app_unblock, prop),
            0x50: (self._initialize, prop), 0x52: (self._credit_for_load, prop),
            0x54: (self._debit, prop), 0x5A: (self._transaction_prove, prop),
            0x5C: (self._get_balance, prop), 0xCA: (self._get_data, prop),
        }

    def _dispatch(self, cmd: CommandApdu, chal: bytes | None, sess: PurseSession | None) -> bytes:
        cla = cmd.cla
        if cla & 0x0B or cla & 0x70:
            raise SwError(0x6E00 if cla & 0x70 or cla & 0x08 else 0x6881)
        if cmd.ins == 0xDC:  # UPDATE RECORD (00/04) or UPDATE CAPP DATA CACHE (80/84)
            if cla & 0x80:
                return self._update_capp_cache(cmd, chal, sess)
            return self._update_record(cmd, chal)
        entry = self._table.get(cmd.ins)
        if entry is None:
            raise SwError(0x6D00)
        handler, cla_class = entry
        if cla & 0x80 != cla_class:
            raise SwError(0x6E00)
        return handler(cmd, chal, sess)

    # ------------------------------------------------------------------ security
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

    def _mac_checked(self, cmd: CommandApdu, chal: bytes | None, key: KeyRecord) -> bytes:
        """Verify the line-protection MAC of ``cmd`` with ``key``; return the data before the MAC.

        A wrong MAC counts against a line-protection key's error counter; when it reaches
        zero the application is locked permanently (SPEC §2.5: three MAC failures → 9303).
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
        if not hmac.compare_digest(line_mac(key.value, chal, header + body), mac):
            if key.base in COUNTER_TYPES:
                with self.nvm.transaction():
                    left = self._count_failure(key)
                    if left == 0 and key.base == KT_LINE and self.df is not self.mf:
                        self.nvm.set(self.df, "block", 2)
                if left == 0 and key.base == KT_LINE:
                    # Decision: the failure that locks the application already answers 9303
                    # (SPEC §2.5 "three MAC failures → 9303"), as APP UNBLOCK does.
                    raise SwError(0x9303)
            raise SwError(0x9302)
        if key.base in COUNTER_TYPES:
            self._verified = key  # counter reset: with the command's writes (_commit) or after it
        return body

    def _line_key(self, kid: int) -> KeyRecord:
        return self._key(KT_LINE, kid)

    # ------------------------------------------------------------------ select
    def _select(self, cmd: CommandApdu, chal, sess) -> bytes:
        p1, data = cmd.p1, cmd.data
        if cmd.p2 & 0xF3:
            raise SwError(0x6A86)
        if p1 == 0x00:
            if not data:
                node = self.mf
            elif len(data) != 2:
                raise SwError(0x6700)
            else:
                fid = _u(data)
                if fid == 0x3F00:
                    node = self.mf
                elif fid == self.df.fid and self.df is not self.mf:
                    node = self.df
                else:
                    node = self.df.children.get(fid)
                    if node is None and self.df.parent is not None:
                        node = self.df.parent.children.get(fid)
                        if node is not None and not isinstance(node, DF):
                            node = None
                    if node is None:
                        raise SwError(0x6A82)
        elif p1 == 0x04:
            if not 1 <= len(data) <= 16:
                raise SwError(0x6700)
            node = self._find_df_by_name(data)
            if node is None:
                raise SwError(0x6A82)
        else:
            raise SwError(0x6A86)
        if isinstance(node, DF):
            self.df, self.ef = node, None
            self.df_sr = self.mf_sr if node is self.mf else 0
            self.free = node.empty
            if node.block:  # D5: current, but no FCI
                raise SwError(0x9303 if node.block == 2 else 0x6A81)
            self._check_app()
            return self._fci(node)
        self._check_app()
        self.ef = node  # type: ignore[assignment]
        return b""

    def _find_df_by_name(self, name: bytes) -> DF | None:
        queue, partial = [self.mf], None
        while queue:
            df = queue.pop(0)
            if df.name == name:
                return df
            if partial is None and df.name.startswith(name):
                partial = df
            queue.extend(c for c in df.children.values() if isinstance(c, DF))
        return partial

    def _fci(self, df: DF) -> bytes:
        prop = b""
        sfi_byte = df.sfi_byte
        if sfi_byte & 0x80:
            ef = df.find_sfi(sfi_byte & 0x1F)
            if isinstance(ef, BinaryEF):
                prop = _tl(b"\x9F\x0C", ef.data)
        elif sfi_byte & 0x1F:
            prop = b"\x88\x01" + bytes((sfi_byte & 0x1F,))
        body = _tl(b"\x84", df.name) + (_tl(b"\xA5", prop) if prop else b"")
        return _tl(b"\x6F", body)

    # ------------------------------------------------------------------ create / erase
    def _create_file(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x80:
            raise SwError(0x6E00)
        df, d = self.df, cmd.data
        self._check_app()
        if not (self.free or self._ac(df.create_ac)):
            raise SwError(0x6982)
        if len(d) < 7:
            raise SwError(0x6700)
        fid = (cmd.p1 << 8) | cmd.p2
        ftype, kind = d[0], d[0] & 0x3F
        if fid in (0x3F00, 0xFFFF) or fid in df.children or (
                df.keyfile is not None and df.keyfile.fid == fid and kind != FT_KEY):
            raise SwError(0x6A86)
        if kind == FT_KEY:
            if ftype != FT_KEY or len(d) != 7:
                raise SwError(0x6A80)
            if df.keyfile is not None:
                raise SwError(0x6A86)
            if df.children:
                raise SwError(0x6985)  # the KEY file must be the first file of a DF
            node = KeyFile(fid, _u(d[1:3]), d[3], d[4], df)
        elif kind == FT_DF:
            if ftype != FT_DF or len(d) < 8 or len(d) == 9:
                raise SwError(0x6A80)
            name = d[8:]
            if df.depth >= 2 or len(name) > 16:
                raise SwError(0x6A80)
            if name and self._find_df_by_name_exact(name):
                raise SwError(0x6A8A)
            node = DF(fid, name, _u(d[1:3]), d[3], d[4], d[5], df)
        elif kind == FT_BINARY:
            size = _u(d[1:3])
            if len(d) != 7 or size == 0:
                raise SwError(0x6A80)
            node = BinaryEF(fid, ftype, size, d[3], d[4], d[6], df)
        elif kind in (FT_FIXED, FT_CYCLIC):
            if len(d) != 7 or d[1] < 2 or d[2] == 0:
                raise SwError(0x6A80)
            node = RecordEF(fid, ftype, d[1], d[2], d[3], d[4], d[6], df)
        elif kind == FT_VARIABLE:
            if len(d) != 7 or _u(d[1:3]) == 0:
                raise SwError(0x6A80)
            node = RecordEF(fid, ftype, d[1], d[2], d[3], d[4], d[6], df)
        elif kind == FT_PURSE:
            if ftype != FT_PURSE or len(d) != 7 or fid not in (0x0001, 0x0002) or d[1:3] != b"\x02\x08":
                raise SwError(0x6A80)
            node = PurseEF(fid, d[3], d[4], d[6], df)
        else:
            raise SwError(0x6A80)
        if node.size > df.free():
            raise SwError(0x6A84)
        if kind == FT_KEY:
            self.nvm.set(df, "keyfile", node)
        else:
            self.nvm.put(df.children, fid, node)
        return b""

    def _find_df_by_name_exact(self, name: bytes) -> bool:
        queue = [self.mf]
        while queue:
            df = queue.pop()
            if df.name == name:
                return True
            queue.extend(c for c in df.children.values() if isinstance(c, DF))
        return False

    def _erase_df(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x80 or cmd.p1 or cmd.p2:
            raise SwError(0x6A86 if cmd.cla == 0x80 else 0x6E00)
        df = self.df
        self._check_app()
        if not (self.free or self._ac(df.erase_ac)):
            raise SwError(0x6982)
        with self.nvm.transaction():
            self.nvm.set(df, "children", {})
            self.nvm.set(df, "keyfile", None)
            self.nvm.set(df, "auth_code", None)
        self.ef = None
        self.free = True
        return b""

    # ------------------------------------------------------------------ keys
    def _master_key(self) -> KeyRecord:
        return self._key(KT_EXT_AUTH, 0)

    def _write_key(self, cmd: CommandApdu, chal, sess) -> bytes:
        df = self.df
        self._check_app()
        kf = df.keyfile
        if kf is None:
            raise SwError(0x6A82)
        p1, kid = cmd.p1, cmd.p2
        if kid == 0xFF:
            raise SwError(0x6A86)
        existing: KeyRecord | None = None
        if p1 != 0x01:
            existing = kf.get(p1 & 0x3F | 0x30, kid)
            if existing is None or existing.ktype != p1:
                raise SwError(0x6A88)
        if cmd.cla & 0x04:
            master = self._master_key()
            body = self._mac_checked(cmd, chal, master)
            must_decipher = existing is not None and existing.ktype & 0x40
            record = self._maybe_decipher(master.value, body, bool(must_decipher))
        else:
            if existing is not None and existing.ktype & 0xC0:
                raise SwError(0x6982)  # flagged keys change only under MAC (D1)
            record = cmd.data
        if len(record) < 6:
            raise SwError(0x6700)
        ktype = record[0]
        base = ktype & 0x3F | 0x30
        if base not in VALID_KEY_TYPES or ktype & 0x30 != 0x30:
            raise SwError(0x6A80)
        value = record[5:]
        if base == KT_PIN:
            if not 2 <= len(value) <= 8:
                raise SwError(0x6700)
        elif len(value) not in (8, 16):
            raise SwError(0x6700)
        if existing is None:  # add
            if not (self.free or self._ac(kf.add_ac)):
                raise SwError(0x6982)
            if kf.get(base, kid) is not None:
                raise SwError(0x6A86)
            key = KeyRecord(ktype, kid, record[1], record[2], record[3], record[4], value)
            if key.size > kf.free():
                raise SwError(0x6A84)
            with self._commit():
                self.nvm.put(kf.keys, (base, kid), key)
            return b""
        # update: same length, same base type, change AC, error counter kept
        if not (self.free or self._ac(existing.change_ac)):
            raise SwError(0x6982)
        if len(record) != 5 + len(existing.value) or base != existing.base:
            raise SwError(0x6700 if base == existing.base else 0x6A80)
        b4 = existing.b4 if base in COUNTER_TYPES else record[4]
        key = KeyRecord(ktype, kid, record[1], record[2], record[3], b4, value)
        with self._commit():
            self.nvm.put(kf.keys, (base, kid), key)
        return b""

    @staticmethod
    def _maybe_decipher(key: bytes, body: bytes, required: bool) -> bytes:
        """Decision (SPEC §1.4): under ``84 D4`` the record is taken as enciphered when the key
        being updated demands it, or when it deciphers to a well-formed ``LD ‖ record ‖ 80..``;
        a plain record (5 + 8/16 bytes, or a PIN) otherwise."""
        if len(body) % 8 == 0 and body:
            try:
                return decipher(key, body)
            except InputError:
                if required:
                    raise SwError(0x6A80) from None
        elif required:
            raise SwError(0x6A80)
        return body

    # ------------------------------------------------------------------ authentication
    def _get_challenge(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        if cmd.data or cmd.ne not in (4, 8):
            raise SwError(0x6700)
        self.challenge = self.rng(cmd.ne)
        return self.challenge

    def _external_auth(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x00:
            raise SwError(0x6E00)
        if cmd.p1:
            raise SwError(0x6A86)
        if len(cmd.data) != 8:
            raise SwError(0x6700)
        key = self._key(KT_EXT_AUTH, cmd.p2)
        if key.locked:
            raise SwError(0x6983)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        if chal is None:
            raise SwError(0x6984)
        expected = _cipher.ecb_encrypt(key.value, chal + bytes(8 - len(chal)))
        if not hmac.compare_digest(expected, cmd.data):
            left = self._count_failure(key)
            raise SwError(0x63C0 | left if left else 0x6983)
        self._count_success(key)
        self._set_sr(key.b3 & 0x0F)
        return b""

    def _internal_auth(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x00:
            raise SwError(0x6E00)
        base = {0: KT_DES_ENC, 1: KT_DES_DEC, 2: KT_DES_MAC}.get(cmd.p1)
        if base is None:
            raise SwError(0x6A86)
        key = self._key(base, cmd.p2)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        data = cmd.data
        if not data:
            raise SwError(0x6700)
        if base == KT_DES_MAC:
            k = key.value
            return (mac_alg1(k, data) if len(k) == 8 else mac_alg3(k, data))[:4]
        if len(data) % 8:
            raise SwError(0x6700)
        fn = _cipher.ecb_encrypt if base == KT_DES_ENC else _cipher.ecb_decrypt
        return fn(key.value, data)

    # ------------------------------------------------------------------ PINs
    def _pin(self, kid: int) -> KeyRecord:
        key = self._key(KT_PIN, kid)
        if key.locked:
            raise SwError(0x6983)
        return key

    @staticmethod
    def _pin_matches(key: KeyRecord, given: bytes) -> bool:
        stored = key.value
        if not given or len(given) > len(stored):
            return False
        return hmac.compare_digest(given + b"\xFF" * (len(stored) - len(given)), stored)

    def _pin_fail(self, key: KeyRecord) -> SwError:
        left = self._count_failure(key)
        return SwError(0x63C0 | left if left else 0x6983)

    def _verify(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x00:
            raise SwError(0x6E00)
        if cmd.p1:
            raise SwError(0x6A86)
        self._check_app()
        if not 1 <= len(cmd.data) <= 8:
            raise SwError(0x6700)
        key = self._pin(cmd.p2)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        if not self._pin_matches(key, cmd.data):
            raise self._pin_fail(key)
        self._count_success(key)
        self._set_sr(key.b3 & 0x0F)
        return b""

    def _pin_change_reload(self, cmd: CommandApdu, chal, sess) -> bytes:
        self._check_app()
        if cmd.p1 == 0x01:  # CHANGE PIN: old ‖ FF ‖ new
            data = self._mac_checked(cmd, chal, self._first_key(KT_LINE)) if cmd.cla & 0x04 else cmd.data
            key = self._pin(cmd.p2)
            sep = data.find(b"\xFF")
            old, new = (data[:sep], data[sep + 1:]) if sep > 0 else (b"", b"")
            if not old or not 2 <= len(new) <= 8:
                raise SwError(0x6A80)
            if not self._pin_matches(key, old):
                raise self._pin_fail(key)
        elif cmd.p1 == 0x00:  # RELOAD PIN: new ‖ MAC under the 38 key, L ⊕ R (D2)
            if cmd.cla != 0x80:
                raise SwError(0x6E00)
            if not 6 <= len(cmd.data) <= 12:
                raise SwError(0x6700)
            new, mac = cmd.data[:-4], cmd.data[-4:]
            rk = self._first_key(KT_PIN_RELOAD)
            if rk.locked:
                raise SwError(0x6983)
            k = rk.value if len(rk.value) == 8 else _cipher.xor(rk.value[:8], rk.value[8:])
            if not hmac.compare_digest(mac_alg1(k, new)[:4], mac):
                self._count_failure(rk)
                raise SwError(0x9302)
            self._verified = rk
            key = self._key(KT_PIN, cmd.p2)
        else:
            raise SwError(0x6A86)
        self._store_pin(key, new)
        return b""

    def _store_pin(self, key: KeyRecord, new: bytes) -> None:
        full = (key.b4 & 0xF0) | (key.b4 >> 4)
        with self._commit():
            self.nvm.put(self.df.keyfile.keys, (KT_PIN, key.kid),  # type: ignore[union-attr]
                         KeyRecord(key.ktype, key.kid, key.usage_ac, key.change_ac, key.b3, full, new))

    def _pin_unblock(self, cmd: CommandApdu, chal, sess) -> bytes:
        """D2: ``84 24 00 <pin id>``, data = E(LD‖PIN‖pad) ‖ MAC under the 37 key.
        Decision: the deciphered PIN becomes the PIN value and the counter is reset."""
        if cmd.cla != 0x84:
            raise SwError(0x6982 if cmd.cla == 0x80 else 0x6E00)
        if cmd.p1:
            raise SwError(0x6A86)
        self._check_app()
        uk = self._first_key(KT_PIN_UNBLOCK)
        body = self._mac_checked(cmd, chal, uk)
        new = _decipher(uk.value, body)
        if not 2 <= len(new) <= 8:
            raise SwError(0x6A80)
        self._store_pin(self._key(KT_PIN, cmd.p2), new)
        return b""

    # ------------------------------------------------------------------ blocking
    def _card_block(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x84:
            raise SwError(0x6982 if cmd.cla == 0x80 else 0x6E00)
        self._mac_checked(cmd, chal, self._first_key(KT_LINE))
        with self._commit():
            self.nvm.set(self, "card_blocked", True)
        return b""

    def _app_block(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x84:
            raise SwError(0x6982 if cmd.cla == 0x80 else 0x6E00)
        if cmd.p1 or cmd.p2 > 1:
            raise SwError(0x6A86)
        self._check_app()
        self._mac_checked(cmd, chal, self._first_key(KT_LINE))
        with self._commit():
            self.nvm.set(self.df, "block", 2 if cmd.p2 else 1)
        return b""

    def _app_unblock(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x84:
            raise SwError(0x6982 if cmd.cla == 0x80 else 0x6E00)
        df = self.df
        if df.block == 2:
            raise SwError(0x9303)
        key = self._first_key(KT_LINE)
        try:
            self._mac_checked(cmd, chal, key)
        except SwError as e:
            if e.sw != 0x9302:
                raise
            with self.nvm.transaction():
                self.nvm.set(df, "unblock_fails", df.unblock_fails + 1)
                if df.unblock_fails >= 3:
                    self.nvm.set(df, "block", 2)
            raise SwError(0x9303 if df.block == 2 else 0x9302) from None
        with self._commit():
            self.nvm.set(df, "block", 0)
            self.nvm.set(df, "unblock_fails", 0)
        return b""

    # ------------------------------------------------------------------ binary files
    def _target_ef(self, sfi: int | None) -> EF:
        self._check_app()
        if sfi is not None:
            ef = self.df.find_sfi(sfi)
            if ef is None:
                raise SwError(0x6A82)
            self.ef = ef
            return ef
        if self.ef is None:
            raise SwError(0x6986)
        return self.ef

    def _read_guard(self, ef: EF, cmd: CommandApdu, chal) -> KeyRecord | None:
        """Read AC and line protection; returns the key for a response MAC, if any."""
        if not self._ac(ef.read_ac):
            raise SwError(0x6982)
        if cmd.cla & 0x04:
            key = self._line_key(ef.read_key_id)
            if self._mac_checked(cmd, chal, key):
                raise SwError(0x6700)
            return key
        if ef.read_protected and not self.free:
            raise SwError(0x6900)
        return None

    def _write_guard(self, ef: EF, cmd: CommandApdu, chal) -> bytes:
        """Write AC and line protection; returns the plain data to write."""
        if not self._ac(ef.write_ac):
            raise SwError(0x6982)
        if cmd.cla & 0x04:
            key = self._line_key(ef.write_key_id)
            body = self._mac_checked(cmd, chal, key)
            if ef.write_enc:
                return _decipher(key.value, body)
            return body
        if ef.ftype & 0xC0 and not self.free:
            raise SwError(0x6900)
        return cmd.data

    @staticmethod
    def _response_mac(key: KeyRecord | None, chal: bytes | None, data: bytes) -> bytes:
        """Decision: a protected read answers data ‖ MAC(data) with the read key, IV = challenge."""
        if key is None or chal is None:
            return data
        return data + line_mac(key.value, chal, data)

    @staticmethod
    def _binary_address(cmd: CommandApdu) -> tuple[int | None, int]:
        if cmd.p1 & 0x80:
            if cmd.p1 & 0x60:
                raise SwError(0x6A86)
            return cmd.p1 & 0x1F, cmd.p2
        return None, (cmd.p1 << 8) | cmd.p2

    def _read_binary(self, cmd: CommandApdu, chal, sess) -> bytes:
        sfi, offset = self._binary_address(cmd)
        ef = self._target_ef(sfi)
        if not isinstance(ef, BinaryEF):
            raise SwError(0x6981)
        key = self._read_guard(ef, cmd, chal)
        size = len(ef.data)
        if offset >= size:
            raise SwError(0x6B00)
        avail = size - offset
        ne = cmd.ne if key is None else (cmd.ne or 256)
        if ne is None:
            ne = 256
        if ne == 256:
            n = min(avail, 256)
        elif ne > avail:
            raise SwError(0x6C00 | avail if avail < 256 else 0x6C00)
        else:
            n = ne
        return self._response_mac(key, chal, ef.data[offset:offset + n])

    def _update_binary(self, cmd: CommandApdu, chal, sess) -> bytes:
        sfi, offset = self._binary_address(cmd)
        ef = self._target_ef(sfi)
        if not isinstance(ef, BinaryEF):
            raise SwError(0x6981)
        data = self._write_guard(ef, cmd, chal)
        if not data:
            raise SwError(0x6700)
        if offset >= len(ef.data):
            raise SwError(0x6B00)
        if offset + len(data) > len(ef.data):
            raise SwError(0x6700)
        with self._commit():
            self.nvm.set(ef, "data", ef.data[:offset] + data + ef.data[offset + len(data):])
        return b""

    # ------------------------------------------------------------------ record files
    def _record_target(self, cmd: CommandApdu) -> tuple[RecordEF, int]:
        """P2 = SFI<<3 | mode; returns the file and the mode bits."""
        sfi = cmd.p2 >> 3
        ef = self._target_ef(sfi if sfi else None)
        if not isinstance(ef, RecordEF):
            raise SwError(0x6981)
        return ef, cmd.p2 & 0x07

    @staticmethod
    def _tagged(ef: RecordEF, tag: int, which: int) -> int:
        """Index of the first (mode 0) or last (mode 1) variable record with ``tag``."""
        idx = [i for i, r in enumerate(ef.records) if r and r[0] == tag]
        if not idx:
            raise SwError(0x6A83)
        return idx[0] if which == 0 else idx[-1]

    def _read_record(self, cmd: CommandApdu, chal, sess) -> bytes:
        ef, mode = self._record_target(cmd)
        key = self._read_guard(ef, cmd, chal)
        if mode == 0x04:
            if cmd.p1 == 0 or cmd.p1 > len(ef.records):
                raise SwError(0x6A83)
            rec = ef.records[cmd.p1 - 1]
        elif mode in (0, 1) and ef.kind == FT_VARIABLE:
            rec = ef.records[self._tagged(ef, cmd.p1, mode)]
        else:
            raise SwError(0x6A86)
        ne = cmd.ne
        if key is None and ne is not None and ne != 256 and ne != len(rec):
            raise SwError(0x6C00 | len(rec) if len(rec) < 256 else 0x6C00)
        return self._response_mac(key, chal, rec)

    def _check_record(self, ef: RecordEF, rec: bytes, old: bytes | None = None) -> None:
        kind = ef.kind
        if len(rec) > 255:  # a record length is one byte (SPEC §1.2)
            raise SwError(0x6700)
        if kind == FT_VARIABLE:
            if len(rec) < 2 or rec[1] != len(rec) - 2:
                raise SwError(0x6A80)
            if old is not None and len(old) != len(rec):
                raise SwError(0x6700)
            if old is None and ef.used() + len(rec) > ef.space:
                raise SwError(0x6A84)
        elif len(rec) != ef.reclen:
            raise SwError(0x6700)

    def _update_record(self, cmd: CommandApdu, chal) -> bytes:
        ef, mode = self._record_target(cmd)
        rec = self._write_guard(ef, cmd, chal)
        if mode == 0x04:
            i = cmd.p1 - 1
            if cmd.p1 == 0 or i >= len(ef.records):
                raise SwError(0x6A83)
        elif mode in (0, 1) and ef.kind == FT_VARIABLE:
            i = self._tagged(ef, cmd.p1, mode)
        else:
            raise SwError(0x6A86)
        self._check_record(ef, rec, ef.records[i])
        with self._commit():
            self.nvm.set(ef, "records", ef.records[:i] + (rec,) + ef.records[i + 1:])
        return b""

    def _append_record(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.p1 or cmd.p2 & 0x07:
            raise SwError(0x6A86)
        ef, _mode = self._record_target(cmd)
        rec = self._write_guard(ef, cmd, chal)
        self._check_record(ef, rec)
        records = self._appended(ef, rec)
        with self._commit():
            self.nvm.set(ef, "records", records)
        return b""

    @staticmethod
    def _appended(ef: RecordEF, rec: bytes) -> tuple[bytes, ...]:
        if ef.kind == FT_CYCLIC:
            return ((rec,) + ef.records)[: ef.nrec]
        if ef.kind == FT_FIXED and len(ef.records) >= ef.nrec:
            raise SwError(0x6A84)
        return ef.records + (rec,)

    # ------------------------------------------------------------------ MOHURD code (D7)
    def _set_auth_code(self, cmd: CommandApdu, chal, sess) -> bytes:
        """``00 22 00 00 09 85 ...`` stores the application's authentication code (CS)."""
        if cmd.cla != 0x00:
            raise SwError(0x6E00)
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        self._check_app()
        if len(cmd.data) != 9 or cmd.data[0] != 0x85:
            raise SwError(0x6A80 if len(cmd.data) == 9 else 0x6700)
        if not (self.free or self._ac(self.df.create_ac)):
            raise SwError(0x6982)
        self.nvm.set(self.df, "auth_code", cmd.data)
        return b""

    def _get_data(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        self._check_app()
        if self.df.auth_code is None:
            raise SwError(0x6A88)
        return self.df.auth_code

    # ------------------------------------------------------------------ purse
    def _purse(self, p2: int) -> PurseEF:
        if p2 not in (1, 2):
            raise SwError(0x6A86)
        self._check_app()
        purse = self.df.children.get(p2)
        if not isinstance(purse, PurseEF):
            raise SwError(0x6A82)
        if not self._ac(purse.usage_ac):
            raise SwError(0x6982)
        return purse

    def _initialize(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.cla != 0x80:
            raise SwError(0x6E00)
        p1 = cmd.p1
        if p1 not in (0x00, 0x01, 0x03, 0x05):
            raise SwError(0x6A86)
        if p1 == 0x03 and cmd.p2 != 0x02:
            raise SwError(0x6A86)
        purse = self._purse(cmd.p2)
        d = cmd.data
        if len(d) != 11:
            raise SwError(0x6700)
        kid, amount, terminal = d[0], _u(d[1:5]), d[5:11]
        base = {0x00: KT_LOAD, 0x01: KT_PURCHASE, 0x03: KT_PURCHASE, 0x05: KT_UNLOAD}[p1]
        kf = self.df.keyfile
        key = kf.get(base, kid) if kf is not None else None
        if key is None:
            raise SwError(0x9403)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        random = self.rng(4)
        ver_alg = bytes((key.b3, key.b4))
        bal = purse.balance.to_bytes(4, "big")
        if p1 == 0x00:  # load
            if purse.balance + amount > 0xFFFFFFFF or amount == 0:
                raise SwError(0x6A80)
            ttype = 0x01 if purse.is_ed else 0x02
            counter = purse.online
            ses = pboc.load_session_key(key.value, random, counter)
            mac1 = pboc.load_mac1(ses, purse.balance, amount, ttype, terminal)
            self.session = PurseSession(_S_LOAD, purse, key, ses, amount, ttype, terminal, counter)
            return bal + counter.to_bytes(2, "big") + ver_alg + random + mac1
        if p1 == 0x05:  # unload
            if amount > purse.balance or amount == 0:
                raise SwError(0x9401)
            counter = purse.online
            ses = pboc.load_session_key(key.value, random, counter)
            mac1 = pboc.load_mac1(ses, purse.balance, amount, pboc.TT_UNLOAD, terminal)
            self.session = PurseSession(_S_UNLOAD, purse, key, ses, amount, pboc.TT_UNLOAD, terminal, counter)
            return bal + counter.to_bytes(2, "big") + ver_alg + random + mac1
        # purchase / CAPP purchase
        if amount > purse.balance + purse.overdraw:
            raise SwError(0x9401)
        kind = _S_CAPP if p1 == 0x03 else _S_PURCHASE
        ttype = pboc.TT_CAPP_PURCHASE if p1 == 0x03 else (0x05 if purse.is_ed else 0x06)
        counter = purse.offline
        # the purchase session key needs the terminal serial of DEBIT: keep the random for now
        self.session = PurseSession(kind, purse, key, random, amount, ttype, terminal, counter)
        return (bal + counter.to_bytes(2, "big") + purse.overdraw.to_bytes(3, "big") + ver_alg + random)

    def _record_transaction(self, purse: PurseEF, counter: int, amount: int, ttype: int,
                            terminal: bytes, date: bytes, time: bytes) -> None:
        """Append the 23-byte record (SPEC §2.2; counter as used in the MACs, D4)."""
        if purse.detail_sfi in (0x00, 0xFF):
            return
        ef = self.df.find_sfi(purse.detail_sfi)
        if not isinstance(ef, RecordEF) or ef.kind != FT_CYCLIC or ef.reclen != 23:
            return
        rec = (counter.to_bytes(2, "big") + purse.overdraw.to_bytes(3, "big") + amount.to_bytes(4, "big")
               + bytes((ttype,)) + terminal + date + time)
        self.nvm.set(ef, "records", self._appended(ef, rec))

    def _tac_key(self, purse: PurseEF) -> KeyRecord:
        kf = self.df.keyfile
        key = kf.get(KT_INTERNAL, purse.tac_kid) if kf is not None else None
        if key is None:
            raise SwError(0x9406)
        return key

    @staticmethod
    def _online_mac2(cmd: CommandApdu, sess: PurseSession | None, kind: str) -> tuple[bytes, bytes, bytes]:
        """CREDIT FOR LOAD / DEBIT FOR UNLOAD data: date ‖ time ‖ MAC2, MAC2 checked (SPEC §2.2)."""
        if sess is None or sess.kind != kind:
            raise SwError(0x6901)
        d = cmd.data
        if len(d) != 11:
            raise SwError(0x6700)
        date, time, mac2 = d[0:4], d[4:7], d[7:11]
        expected = pboc.load_mac2(sess.ses, sess.amount, sess.ttype, sess.terminal, date, time)
        if not hmac.compare_digest(expected, mac2):
            raise SwError(0x9302)
        return date, time, mac2

    def _credit_for_load(self, cmd: CommandApdu, chal, sess: PurseSession | None) -> bytes:
        if cmd.cla != 0x80:
            raise SwError(0x6E00)
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        date, time, mac2 = self._online_mac2(cmd, sess, _S_LOAD)
        purse = sess.purse
        new_balance = purse.balance + sess.amount
        tac = pboc.load_tac(self._tac_key(purse).value, new_balance, sess.counter, sess.amount, sess.ttype,
                            sess.terminal, date, time)
        with self.nvm.transaction():
            self.nvm.set(purse, "balance", new_balance)
            self.nvm.set(purse, "online", (sess.counter + 1) & 0xFFFF)
            self._record_transaction(purse, sess.counter, sess.amount, sess.ttype, sess.terminal, date, time)
            self.nvm.set(purse, "last", (sess.ttype, sess.counter, mac2, tac))
        return tac

    def _update_capp_cache(self, cmd: CommandApdu, chal, sess: PurseSession | None) -> bytes:
        if sess is None or sess.kind != _S_CAPP or sess.capp is not None:
            raise SwError(0x6901)
        sfi, mode = cmd.p2 >> 3, cmd.p2 & 0x07
        ef = self.df.find_sfi(sfi) if sfi else None
        if not isinstance(ef, RecordEF):
            raise SwError(0x6A82)
        rec = self._write_guard(ef, cmd, chal)
        if mode == 0x04:
            i = cmd.p1 - 1
            if cmd.p1 == 0 or i >= len(ef.records):
                raise SwError(0x6A83)
            self._check_record(ef, rec, ef.records[i])
            sess.capp = (ef, i, False, rec)
        elif mode == 0x00:
            idx = [n for n, r in enumerate(ef.records) if r and r[0] == cmd.p1]
            if idx:
                self._check_record(ef, rec, ef.records[idx[0]])
                sess.capp = (ef, idx[0], False, rec)
            elif ef.kind == FT_VARIABLE:  # no record with this tag yet: DEBIT appends it
                self._check_record(ef, rec)
                sess.capp = (ef, len(ef.records), True, rec)
            else:  # Decision: a CAPP update never grows a fixed or cyclic file
                raise SwError(0x6A83)
        else:
            raise SwError(0x6A86)
        self.session = sess
        return b""

    def _debit(self, cmd: CommandApdu, chal, sess: PurseSession | None) -> bytes:
        if cmd.cla != 0x80:
            raise SwError(0x6E00)
        if cmd.p2:
            raise SwError(0x6A86)
        if cmd.p1 == 0x01:
            return self._debit_for_purchase(cmd, sess)
        if cmd.p1 == 0x03:
            return self._debit_for_unload(cmd, sess)
        raise SwError(0x6A86)

    def _debit_for_purchase(self, cmd: CommandApdu, sess: PurseSession | None) -> bytes:
        if sess is None or sess.kind not in (_S_PURCHASE, _S_CAPP):
            raise SwError(0x6901)
        d = cmd.data
        if len(d) != 15:
            raise SwError(0x6700)
        serial, date, time, mac1 = d[0:4], d[4:8], d[8:11], d[11:15]
        ses = pboc.purchase_session_key(sess.key.value, sess.ses, sess.counter, serial)
        expected = pboc.purchase_mac1(ses, sess.amount, sess.ttype, sess.terminal, date, time,
                                      self.df.auth_code)
        if not hmac.compare_digest(expected, mac1):
            raise SwError(0x9302)
        purse = sess.purse
        tac = pboc.purchase_tac(self._tac_key(purse).value, sess.amount, sess.ttype, sess.terminal, serial,
                                date, time)
        mac2 = pboc.purchase_mac2(ses, sess.amount)
        with self.nvm.transaction():
            self.nvm.set(purse, "balance", purse.balance - sess.amount)
            self.nvm.set(purse, "offline", (sess.counter + 1) & 0xFFFF)
            if sess.capp is not None:
                ef, i, append, rec = sess.capp
                new = ef.records + (rec,) if append else ef.records[:i] + (rec,) + ef.records[i + 1:]
                self.nvm.set(ef, "records", new)
            self._record_transaction(purse, sess.counter, sess.amount, sess.ttype, sess.terminal, date, time)
            self.nvm.set(purse, "last", (sess.ttype, sess.counter, mac2, tac))
        return tac + mac2

    def _debit_for_unload(self, cmd: CommandApdu, sess: PurseSession | None) -> bytes:
        date, time, mac2 = self._online_mac2(cmd, sess, _S_UNLOAD)
        purse = sess.purse
        new_balance = purse.balance - sess.amount
        mac3 = pboc.unload_mac3(sess.ses, new_balance, sess.counter, sess.amount, sess.ttype, sess.terminal,
                                date, time)
        with self.nvm.transaction():
            self.nvm.set(purse, "balance", new_balance)
            self.nvm.set(purse, "online", (sess.counter + 1) & 0xFFFF)
            self._record_transaction(purse, sess.counter, sess.amount, sess.ttype, sess.terminal, date, time)
            self.nvm.set(purse, "last", (sess.ttype, sess.counter, mac3, bytes(4)))
        return mac3

    def _get_balance(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.p1:
            raise SwError(0x6A86)
        if cmd.ne not in (4, 256) or cmd.data:
            raise SwError(0x6700)
        return self._purse(cmd.p2).balance.to_bytes(4, "big")

    def _transaction_prove(self, cmd: CommandApdu, chal, sess) -> bytes:
        """``80 5A 00 type 02 counter``: MAC ‖ TAC of the last completed transaction of that
        type and counter (the counter its MACs used, D4), else 9406."""
        if cmd.p1:
            raise SwError(0x6A86)
        if len(cmd.data) != 2:
            raise SwError(0x6700)
        self._check_app()
        counter = _u(cmd.data)
        for fid in (0x0001, 0x0002):
            purse = self.df.children.get(fid)
            if isinstance(purse, PurseEF) and purse.last is not None:
                ttype, ctr, mac, tac = purse.last
                if ttype == cmd.p2 and ctr == counter:
                    return mac + tac
        raise SwError(0x9406)
