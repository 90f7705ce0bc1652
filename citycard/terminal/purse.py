"""The host side of PBOC purse transactions (SPEC §2.1–§2.2): a terminal that derives the
card's purse keys from the masters on its own and checks every MAC the card sends.

Load: INITIALIZE FOR LOAD → check MAC1 with the derived DLK → CREDIT FOR LOAD with MAC2
→ check the TAC with the derived DTK.  Purchase: INITIALIZE FOR PURCHASE → DEBIT with
MAC1 → check MAC2 and the TAC.  The card's keys are found from the profile: the
application's purse keys and the file whose data binds ``@app_serial`` (the
diversification factor, SPEC §2.4).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from ..apdu import ApduError, CommandApdu
from ..crypto import pboc
from ..errors import CitycardError
from ..spec import CardSpec, DFSpec
from ..transport import CardSession


class PurseError(CitycardError):
    """A purse transaction failed or the card's cryptogram did not check out."""


@dataclass(frozen=True)
class TxResult:
    kind: str
    amount: int
    balance_before: int
    balance_after: int
    counter: int
    tac: bytes


def _now_bcd(when: _dt.datetime) -> tuple[bytes, bytes]:
    return bytes.fromhex(when.strftime("%Y%m%d")), bytes.fromhex(when.strftime("%H%M%S"))


class PurseTerminal:
    def __init__(self, session: CardSession, spec: CardSpec, keys: Any, app: str | None = None,
                 terminal_id: bytes = b"\x00\x00\x00\x00\x00\x01") -> None:
        self.session, self.spec, self.keys = session, spec, keys
        self.df = self._purse_app(app)
        self.purse = next(f for f in self.df.files if f.kind in ("ed", "ep"))
        self.p2 = 0x01 if self.purse.kind == "ed" else 0x02
        self.terminal = terminal_id
        self.serial: str | None = None

    def _purse_app(self, name: str | None) -> DFSpec:
        for df in self.spec.apps:
            if (name is None or df.name == name) and any(f.kind in ("ed", "ep") for f in df.files):
                return df
        raise PurseError(f"the profile has no purse application{f' named {name!r}' if name else ''}")

    # ------------------------------------------------------------------ card access
    def select(self) -> str:
        """SELECT the purse application and read its serial number (the key factor)."""
        self.session.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, self.df.aid), expect=0x9000,
                          what=f"SELECT {self.df.name}")
        from .. import records
        for f in self.df.files:
            if f.layout is None or f.kind != "binary":
                continue
            fields = [k for k, v in f.data.items() if v == "@app_serial"]
            if not fields:
                continue
            lay = records.get(f.layout)
            r = self.session.send(CommandApdu(0x00, 0xB0, 0x80 | f.sfi, 0x00, ne=lay.size), expect=0x9000,
                                  what=f"READ BINARY {f.fid:04X}")
            self.serial = str(lay.decode(r.data)[fields[0]])
            return self.serial
        raise PurseError(f"no file of {self.df.name} carries the application serial number (@app_serial)")

    def _key(self, ktype: int) -> bytes:
        k = next((k for k in self.df.keys if k.ktype == ktype), None)
        if k is None or k.master is None:
            raise PurseError(f"the profile's {self.df.name} has no key of type {ktype:02X}")
        if self.serial is None:
            self.select()
        digits = str(self.serial)
        factor = bytes.fromhex(digits.zfill(max(16, len(digits) + len(digits) % 2)))[-8:]
        return self.keys.derive(k.master[0], k.master[1], factor)

    def _tac_key(self) -> bytes:
        k = next((k for k in self.df.keys if k.ktype == 0x34 and k.kid == self.purse.tac_key), None)
        if k is None or k.master is None:
            raise PurseError("no TAC key in the profile")
        self._key(0x34)
        digits = str(self.serial)
        factor = bytes.fromhex(digits.zfill(max(16, len(digits) + len(digits) % 2)))[-8:]
        return self.keys.derive(k.master[0], k.master[1], factor)

    def balance(self) -> int:
        r = self.session.send(CommandApdu(0x80, 0x5C, 0x00, self.p2, ne=4), expect=0x9000, what="GET BALANCE")
        return int.from_bytes(r.data, "big")

    # ------------------------------------------------------------------ transactions
    def load(self, amount: int, *, when: _dt.datetime | None = None, key_id: int = 0) -> TxResult:
        if self.serial is None:
            self.select()
        dlk, dtk = self._key(0x3F), self._tac_key()
        date, time = _now_bcd(when or _dt.datetime.now())
        r = self.session.send(CommandApdu(0x80, 0x50, 0x00, self.p2, bytes((key_id,)) + pboc.u32(amount)
                                          + self.terminal, ne=0x10))
        if r.sw != 0x9000:
            raise PurseError(f"INITIALIZE FOR LOAD: {ApduError(r.sw)}")
        bal, ctr = int.from_bytes(r.data[0:4], "big"), int.from_bytes(r.data[4:6], "big")
        random, mac1 = r.data[8:12], r.data[12:16]
        ttype = 0x01 if self.p2 == 1 else 0x02
        ses = pboc.load_session_key(dlk, random, ctr)
        if pboc.load_mac1(ses, bal, amount, ttype, self.terminal) != mac1:
            raise PurseError("INITIALIZE FOR LOAD: MAC1 from the card is wrong (not our card, or wrong keys)")
        mac2 = pboc.load_mac2(ses, amount, ttype, self.terminal, date, time)
        r = self.session.send(CommandApdu(0x80, 0x52, 0x00, 0x00, date + time + mac2, ne=4))
        if r.sw != 0x9000:
            raise PurseError(f"CREDIT FOR LOAD: {ApduError(r.sw)}")
        if pboc.load_tac(dtk, bal + amount, ctr, amount, ttype, self.terminal, date, time) != r.data:
            raise PurseError("CREDIT FOR LOAD: the TAC from the card is wrong")
        return TxResult("load", amount, bal, bal + amount, ctr, r.data)

    def purchase(self, amount: int, *, terminal_serial: int = 1, when: _dt.datetime | None = None,
                 key_id: int = 0) -> TxResult:
        if self.serial is None:
            self.select()
        dpk, dtk = self._key(0x3E), self._tac_key()
        date, time = _now_bcd(when or _dt.datetime.now())
        r = self.session.send(CommandApdu(0x80, 0x50, 0x01, self.p2, bytes((key_id,)) + pboc.u32(amount)
                                          + self.terminal, ne=0x0F))
        if r.sw != 0x9000:
            raise PurseError(f"INITIALIZE FOR PURCHASE: {ApduError(r.sw)}")
        bal, ctr = int.from_bytes(r.data[0:4], "big"), int.from_bytes(r.data[4:6], "big")
        random = r.data[11:15]
        ttype = 0x05 if self.p2 == 1 else 0x06
        serial = pboc.u32(terminal_serial, "terminal serial")
        code = None
        if self.df.auth_code is not None:
            code = self.session.send(CommandApdu(0x80, 0xCA, 0x00, 0x00, ne=9), expect=0x9000, what="GET DATA").data
        c = pboc.purchase_cryptogram(dpk, dtk, random=random, counter=ctr, terminal_serial=serial, amount=amount,
                                     terminal=self.terminal, date=date, time=time, ttype=ttype, auth_code=code)
        r = self.session.send(CommandApdu(0x80, 0x54, 0x01, 0x00, serial + date + time + c.mac1, ne=8))
        if r.sw != 0x9000:
            raise PurseError(f"DEBIT FOR PURCHASE: {ApduError(r.sw)}")
        if r.data[4:8] != c.mac2:
            raise PurseError("DEBIT FOR PURCHASE: MAC2 from the card is wrong")
        if r.data[0:4] != c.tac:
            raise PurseError("DEBIT FOR PURCHASE: the TAC from the card is wrong")
        return TxResult("purchase", amount, bal, bal - amount, ctr, c.tac)
