"""Purse commands of the simulated card: the PBOC ED/EP (load, purchase, unload, balance,
transaction prove), the CAPP data cache and the MOHURD authentication code (SPEC.md §2, D7).

SM4 (docs/sm4.md): a purse key whose algorithm byte is ``04`` (PSAM-SM4 §4.1) makes an SM4
transaction: INITIALIZE answers that byte, the session key, MAC1/MAC2/MAC3 and the TAC are
SM4 (citycard's construction, ``citycard.crypto.pboc``), and the TAC key is a 34 key of
algorithm ``04`` too.  Any other algorithm byte keeps the DES/3DES purse of before."""

from __future__ import annotations

import hmac

from ..apdu import CommandApdu
from ..crypto import pboc
from ..crypto.cipher import Alg
from .core import CardCore, SwError, u
from .fs import (FT_CYCLIC, FT_VARIABLE, KT_INTERNAL, KT_LOAD, KT_OVERDRAW, KT_PURCHASE, KT_UNLOAD, KeyRecord,
                 PurseEF, RecordEF)

_S_LOAD, _S_PURCHASE, _S_CAPP, _S_UNLOAD = "load", "purchase", "capp", "unload"
_S_WITHDRAW, _S_OVERDRAW = "withdraw", "overdraw"

# INITIALIZE P1 → the key type it uses (UM 8.7–8.12; cash withdraw with the purchase key: FMPY)
_INIT_KEY_TYPES = {0x00: KT_LOAD, 0x01: KT_PURCHASE, 0x02: KT_PURCHASE, 0x03: KT_PURCHASE,
                   0x04: KT_OVERDRAW, 0x05: KT_UNLOAD}
_ED_ONLY = frozenset({0x02, 0x04, 0x05})


def key_alg(key: KeyRecord) -> Alg:
    """The cipher family of a purse or TAC key: SM4 for algorithm byte ``04`` (docs/sm4.md),
    DES/3DES for any other (as the simulator always did)."""
    return "sm4" if key.b4 == pboc.ALG_ID_SM4 else "des"


class PurseSession:
    __slots__ = ("kind", "purse", "key", "ses", "amount", "ttype", "terminal", "counter", "capp", "alg")

    def __init__(self, kind: str, purse: PurseEF, key: KeyRecord, ses: bytes, amount: int, ttype: int,
                 terminal: bytes, counter: int) -> None:
        self.kind, self.purse, self.key, self.ses = kind, purse, key, ses
        self.amount, self.ttype, self.terminal, self.counter = amount, ttype, terminal, counter
        self.capp: tuple[RecordEF, int, bool, bytes] | None = None
        self.alg: Alg = key_alg(key)



class PurseCommands(CardCore):
    """INITIALIZE, CREDIT FOR LOAD, DEBIT, GET BALANCE, GET TRANSACTION PROVE,
    UPDATE CAPP DATA CACHE, and the MOHURD code (00 22 / 80 CA)."""

    # ------------------------------------------------------------------ MOHURD code (D7)
    def _set_auth_code(self, cmd: CommandApdu, chal, sess) -> bytes:
        """``00 22 00 00 09 85 ...`` stores the application's authentication code (CS)."""
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
        """INITIALIZE FOR ... (``80 50 P1 P2``): P1 00 load, 01 purchase, 02 cash withdraw (ED),
        03 CAPP purchase (EP), 04 update overdraw limit (ED), 05 unload (ED) (SPEC §2.1, §6.4;
        UM 8.7–8.12).  A counter at FFFF refuses with 9402 (it never wraps; docs/sim.md)."""
        p1 = cmd.p1
        if p1 not in _INIT_KEY_TYPES:
            raise SwError(0x6A86)
        if p1 in _ED_ONLY and cmd.p2 != 0x01:   # R18: unload on the ED only; UM 8.11/8.12
            raise SwError(0x6A86)
        if p1 == 0x03 and cmd.p2 != 0x02:
            raise SwError(0x6A86)
        purse = self._purse(cmd.p2)
        d = cmd.data
        if p1 == 0x04:
            if len(d) != 7:
                raise SwError(0x6700)
            kid, amount, terminal = d[0], 0, d[1:7]
        else:
            if len(d) != 11:
                raise SwError(0x6700)
            kid, amount, terminal = d[0], u(d[1:5]), d[5:11]
        kf = self.df.keyfile
        key = kf.get(_INIT_KEY_TYPES[p1], kid) if kf is not None else None
        if key is None:
            raise SwError(0x9403)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        online = p1 in (0x00, 0x04, 0x05)
        counter = purse.online if online else purse.offline
        if counter == 0xFFFF:
            raise SwError(0x9402)   # "transaction counter reached its maximum" (RECHARGE SW list)
        if p1 == 0x00 and self.model.load_requires_pin and not self.pin_verified:
            raise SwError(0x6982)   # ROBUR's card: a load needs the PIN first (SPEC §6.6)
        if p1 == 0x00 and (amount == 0 or purse.balance + amount > self.model.max_balance):
            raise SwError(0x6A80 if amount == 0 else 0x6985)   # 6985: UM 8.7.1.5
        if p1 == 0x05 and (amount > purse.balance or amount == 0):
            raise SwError(0x9401)
        if not online and amount > purse.balance:   # the ED balance includes the overdraw limit
            raise SwError(0x9401)
        random = self.rng(4)
        ver_alg = bytes((key.b3, key.b4))
        bal = purse.balance.to_bytes(4, "big")
        ctr = counter.to_bytes(2, "big")
        alg = key_alg(key)
        if online:
            ses = pboc.load_session_key(key.value, random, counter, alg)
            if p1 == 0x04:   # MAC1 over balance ‖ old limit(3) ‖ 07 ‖ terminal (UM 8.12.1.4)
                limit = purse.overdraw.to_bytes(3, "big")
                mac1 = pboc.purse_mac(ses, bal + limit + bytes((pboc.TT_OVERDRAW,)) + terminal, alg)
                self.session = PurseSession(_S_OVERDRAW, purse, key, ses, 0, pboc.TT_OVERDRAW, terminal, counter)
                return bal + ctr + limit + ver_alg + random + mac1
            kind, ttype = (_S_LOAD, 0x01 if purse.is_ed else 0x02) if p1 == 0x00 else (_S_UNLOAD, pboc.TT_UNLOAD)
            mac1 = pboc.load_mac1(ses, purse.balance, amount, ttype, terminal, alg=alg)
            self.session = PurseSession(kind, purse, key, ses, amount, ttype, terminal, counter)
            return bal + ctr + ver_alg + random + mac1
        # purchase, CAPP purchase, cash withdraw: a 0-fen amount is accepted (docs/sim.md)
        if p1 == 0x03:
            kind, ttype = _S_CAPP, pboc.TT_CAPP_PURCHASE
        elif p1 == 0x02:
            kind, ttype = _S_WITHDRAW, pboc.TT_WITHDRAW
        else:
            kind, ttype = _S_PURCHASE, (0x05 if purse.is_ed else 0x06)
        # the purchase session key needs the terminal serial of DEBIT: keep the random for now
        self.session = PurseSession(kind, purse, key, random, amount, ttype, terminal, counter)
        return bal + ctr + purse.overdraw.to_bytes(3, "big") + ver_alg + random

    def _update_overdraw_limit(self, cmd: CommandApdu, chal, sess: PurseSession | None) -> bytes:
        """``80 58 00 00 0E`` new limit(3) ‖ date ‖ time ‖ MAC2 → TAC (SPEC §6.4, UM 8.12.2).

        MAC2 = MAC(session key, new limit ‖ 07 ‖ terminal ‖ date ‖ time); TAC over new balance ‖
        online counter ‖ new limit ‖ 07 ‖ terminal ‖ date ‖ time with the TAC key's L⊕R, as
        for the other TACs (FMPY, tested on an FM1208; UM says "DTK directly").  The ED
        balance includes the overdraw limit: the new balance is balance − old + new limit
        (FMPY: old balance + new limit from limit 0); below zero → 9401."""
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        if sess is None or sess.kind != _S_OVERDRAW:
            raise SwError(0x6901)
        d = cmd.data
        if len(d) != 14:
            raise SwError(0x6700)
        limit, date, time, mac2 = d[0:3], d[3:7], d[7:10], d[10:14]
        tail = limit + bytes((pboc.TT_OVERDRAW,)) + sess.terminal + date + time
        if not hmac.compare_digest(pboc.purse_mac(sess.ses, tail, sess.alg), mac2):
            raise SwError(0x9302)
        purse = sess.purse
        new_limit = u(limit)
        new_balance = purse.balance - purse.overdraw + new_limit
        if new_balance < 0 or new_balance > 0xFFFFFFFF:
            raise SwError(0x9401)
        tac = pboc.purse_mac(pboc.tac_key(self._tac_key(purse, sess.alg).value, sess.alg),
                             new_balance.to_bytes(4, "big") + sess.counter.to_bytes(2, "big") + tail, sess.alg)
        with self.nvm.transaction():
            self.nvm.set(purse, "balance", new_balance)
            self.nvm.set(purse, "overdraw", new_limit)
            self.nvm.set(purse, "online", sess.counter + 1)
            # Decision: the record's amount field holds the new limit (UM table 8.30 names no value)
            self._record_transaction(purse, sess.counter, new_limit, pboc.TT_OVERDRAW, sess.terminal, date, time)
            self.nvm.set(purse, "last", (pboc.TT_OVERDRAW, sess.counter, mac2, tac))
        return tac

    def _record_transaction(self, purse: PurseEF, counter: int, amount: int, ttype: int,
                            terminal: bytes, date: bytes, time: bytes) -> None:
        """Append the 23-byte record (SPEC §2.2).  It stores the counter after the increment
        (SPEC §6 R11: ROBUR's card shows 0001 after a load at 0000; replaces D4)."""
        if purse.detail_sfi in (0x00, 0xFF):
            return
        ef = self.df.find_sfi(purse.detail_sfi)
        if not isinstance(ef, RecordEF) or ef.kind != FT_CYCLIC or ef.reclen != 23:
            return
        rec = ((counter + 1).to_bytes(2, "big") + purse.overdraw.to_bytes(3, "big") + amount.to_bytes(4, "big")
               + bytes((ttype,)) + terminal + date + time)
        self.nvm.set(ef, "records", self._appended(ef, rec))

    def _tac_key(self, purse: PurseEF, alg: Alg = "des") -> KeyRecord:
        """The TAC key: the 34 key whose id is byte 5 of the ED/EP file (D3), else the DF's
        first 34 key.  Decision: real scripts put 00 ("reserved", BLOG16) or F0/0F (LAB) in
        that byte and still transact, so a byte naming no 34 key falls back to the DF's.
        Decision (docs/sm4.md): the TAC key has the transaction's algorithm: an SM4 purse key
        makes its TAC with an SM4 34 key, a DES one with a DES 34 key (dual sets side by side,
        one byte 5 for both), the named key first, else the DF's first of that algorithm."""
        kf = self.df.keyfile
        key = kf.get(KT_INTERNAL, purse.tac_kid) if kf is not None else None
        if key is not None and key_alg(key) != alg:
            key = None
        if key is None and kf is not None:
            key = next((k for (b, _), k in kf.keys.items() if b == KT_INTERNAL and key_alg(k) == alg), None)
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
        expected = pboc.load_mac2(sess.ses, sess.amount, sess.ttype, sess.terminal, date, time, alg=sess.alg)
        if not hmac.compare_digest(expected, mac2):
            raise SwError(0x9302)
        return date, time, mac2

    def _credit_for_load(self, cmd: CommandApdu, chal, sess: PurseSession | None) -> bytes:
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        date, time, mac2 = self._online_mac2(cmd, sess, _S_LOAD)
        purse = sess.purse
        new_balance = purse.balance + sess.amount
        tac = pboc.load_tac(self._tac_key(purse, sess.alg).value, new_balance, sess.counter, sess.amount,
                            sess.ttype, sess.terminal, date, time, alg=sess.alg)
        with self.nvm.transaction():
            self.nvm.set(purse, "balance", new_balance)
            self.nvm.set(purse, "online", sess.counter + 1)
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
        if cmd.p2:
            raise SwError(0x6A86)
        if cmd.p1 == 0x01:
            return self._debit_for_purchase(cmd, sess)
        if cmd.p1 == 0x03:
            return self._debit_for_unload(cmd, sess)
        raise SwError(0x6A86)

    def _debit_for_purchase(self, cmd: CommandApdu, sess: PurseSession | None) -> bytes:
        if sess is None or sess.kind not in (_S_PURCHASE, _S_CAPP, _S_WITHDRAW):
            raise SwError(0x6901)
        d = cmd.data
        if len(d) != 15:
            raise SwError(0x6700)
        serial, date, time, mac1 = d[0:4], d[4:8], d[8:11], d[11:15]
        ses = pboc.purchase_session_key(sess.key.value, sess.ses, sess.counter, serial, sess.alg)
        expected = pboc.purchase_mac1(ses, sess.amount, sess.ttype, sess.terminal, date, time,
                                      self.df.auth_code, alg=sess.alg)
        if not hmac.compare_digest(expected, mac1):
            raise SwError(0x9302)
        purse = sess.purse
        tac = pboc.purchase_tac(self._tac_key(purse, sess.alg).value, sess.amount, sess.ttype, sess.terminal,
                                serial, date, time, alg=sess.alg)
        mac2 = pboc.purchase_mac2(ses, sess.amount, alg=sess.alg)
        with self.nvm.transaction():
            self.nvm.set(purse, "balance", purse.balance - sess.amount)
            self.nvm.set(purse, "offline", sess.counter + 1)
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
                                date, time, alg=sess.alg)
        with self.nvm.transaction():
            self.nvm.set(purse, "balance", new_balance)
            self.nvm.set(purse, "online", sess.counter + 1)
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
        counter = u(cmd.data)
        for fid in (0x0001, 0x0002):
            purse = self.df.children.get(fid)
            if isinstance(purse, PurseEF) and purse.last is not None:
                ttype, ctr, mac, tac = purse.last
                if ttype == cmd.p2 and ctr == counter:
                    return mac + tac
        raise SwError(0x9406)
