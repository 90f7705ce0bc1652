"""PBOC ED/EP purse commands (SPEC.md §2.1–§2.3, UM §8.7–8.14), MOHURD GET DATA (D7):
builders and frozen parsers of the answers.

The MACs and TACs are computed by :mod:`citycard.crypto.pboc`; these functions only place
the bytes.  ``purse`` is :class:`PurseKind` (P2 ``01`` ED, ``02`` EP).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ..apdu import CommandApdu
from ..errors import InputError


class PurseKind(IntEnum):
    """P2 of the purse commands: the passbook (ED) or the purse (EP)."""

    ED = 0x01
    EP = 0x02


class InitKind(IntEnum):
    """P1 of INITIALIZE (``80 50``)."""

    LOAD = 0x00
    PURCHASE = 0x01
    CASH_WITHDRAW = 0x02
    CAPP_PURCHASE = 0x03
    UPDATE_OVERDRAW = 0x04
    UNLOAD = 0x05


def _purse(purse: int) -> int:
    if purse != 0x01 and purse != 0x02:
        raise InputError(f"purse P2 0x{purse:X}: 01 (ED) or 02 (EP)")
    return int(purse)


def _fixed(value: bytes, length: int, what: str) -> bytes:
    if len(value) != length:
        raise InputError(f"{what}: {len(value)} bytes, expected {length}")
    return bytes(value)


def _amount(amount: int) -> bytes:
    if not 0 <= amount <= 0xFFFFFFFF:
        raise InputError(f"amount {amount} does not fit in 4 bytes")
    return amount.to_bytes(4, "big")


def _key_id(key_id: int) -> bytes:
    if not 0 <= key_id <= 0xFF:
        raise InputError(f"key id 0x{key_id:X} is not a byte")
    return bytes((key_id,))


def _initialize(kind: InitKind, purse: int, key_id: int, amount: int, terminal: bytes, ne: int) -> CommandApdu:
    data = _key_id(key_id) + _amount(amount) + _fixed(terminal, 6, "terminal id")
    return CommandApdu(0x80, 0x50, int(kind), _purse(purse), data, ne=ne)


# ---------------------------------------------------------------------- INITIALIZE
def initialize_for_load(purse: int, key_id: int, amount: int, terminal: bytes) -> CommandApdu:
    """``80 50 00 P2 0B kid amount(4) terminal(6) 10``; answer :class:`LoadInit`."""
    return _initialize(InitKind.LOAD, purse, key_id, amount, terminal, 0x10)


def initialize_for_purchase(purse: int, key_id: int, amount: int, terminal: bytes) -> CommandApdu:
    """``80 50 01 P2 0B kid amount terminal 0F``; answer :class:`PurchaseInit`."""
    return _initialize(InitKind.PURCHASE, purse, key_id, amount, terminal, 0x0F)


def initialize_for_capp_purchase(purse: int, key_id: int, amount: int, terminal: bytes) -> CommandApdu:
    """``80 50 03 P2 0B ... 0F`` (SPEC §2.3; P2 ``02``, the EP); answer :class:`PurchaseInit`."""
    return _initialize(InitKind.CAPP_PURCHASE, purse, key_id, amount, terminal, 0x0F)


def initialize_for_cash_withdraw(purse: int, key_id: int, amount: int, terminal: bytes) -> CommandApdu:
    """``80 50 02 P2 0B ... 0F`` (SPEC §2.1, §6.4); answer :class:`PurchaseInit`."""
    return _initialize(InitKind.CASH_WITHDRAW, purse, key_id, amount, terminal, 0x0F)


def initialize_for_unload(purse: int, key_id: int, amount: int, terminal: bytes) -> CommandApdu:
    """``80 50 05 P2 0B ... 10`` (ED only on a real card, R18); answer :class:`LoadInit`."""
    return _initialize(InitKind.UNLOAD, purse, key_id, amount, terminal, 0x10)


def initialize_for_update_overdraw(purse: int, key_id: int, new_limit: int, terminal: bytes) -> CommandApdu:
    """``80 50 04 P2 0B kid limit(4) terminal 10`` (SPEC §6.4, FMPY); answer as for a load."""
    return _initialize(InitKind.UPDATE_OVERDRAW, purse, key_id, new_limit, terminal, 0x10)


# ---------------------------------------------------------------------- completing commands
def credit_for_load(date: bytes, time: bytes, mac2: bytes) -> CommandApdu:
    """CREDIT FOR LOAD ``80 52 00 00 0B date(4) time(3) MAC2(4) 04``; answer: the TAC."""
    return CommandApdu(0x80, 0x52, 0x00, 0x00, _fixed(date, 4, "date") + _fixed(time, 3, "time")
                       + _fixed(mac2, 4, "MAC2"), ne=4)


def debit_for_purchase(terminal_serial: bytes, date: bytes, time: bytes, mac1: bytes) -> CommandApdu:
    """DEBIT FOR PURCHASE / CAPP / WITHDRAW ``80 54 01 00 0F serial(4) date time MAC1 08``;
    answer :class:`DebitResult`."""
    return CommandApdu(0x80, 0x54, 0x01, 0x00, _fixed(terminal_serial, 4, "terminal serial")
                       + _fixed(date, 4, "date") + _fixed(time, 3, "time") + _fixed(mac1, 4, "MAC1"), ne=8)


def debit_for_unload(date: bytes, time: bytes, mac2: bytes) -> CommandApdu:
    """DEBIT FOR UNLOAD ``80 54 03 00 0B date time MAC2 04``; answer: MAC3."""
    return CommandApdu(0x80, 0x54, 0x03, 0x00, _fixed(date, 4, "date") + _fixed(time, 3, "time")
                       + _fixed(mac2, 4, "MAC2"), ne=4)


def update_overdraw_limit(new_limit: int, date: bytes, time: bytes, mac2: bytes) -> CommandApdu:
    """UPDATE OVERDRAW LIMIT ``80 58 00 00 0E limit(3) date time MAC2``; answer: the TAC."""
    if not 0 <= new_limit <= 0xFFFFFF:
        raise InputError(f"overdraw limit {new_limit} does not fit in 3 bytes")
    return CommandApdu(0x80, 0x58, 0x00, 0x00, new_limit.to_bytes(3, "big") + _fixed(date, 4, "date")
                       + _fixed(time, 3, "time") + _fixed(mac2, 4, "MAC2"), ne=4)


def get_balance(purse: int) -> CommandApdu:
    """GET BALANCE ``80 5C 00 P2 04`` (the ED needs a verified PIN)."""
    return CommandApdu(0x80, 0x5C, 0x00, _purse(purse), ne=4)


def get_transaction_prove(transaction_type: int, counter: int) -> CommandApdu:
    """GET TRANSACTION PROVE ``80 5A 00 type 02 counter(2) 08``: MAC/TAC of a completed
    transaction after a tear; ``9406`` when it did not complete (SPEC §2.1)."""
    if not 0 <= counter <= 0xFFFF:
        raise InputError(f"counter {counter} outside 0..65535")
    return CommandApdu(0x80, 0x5A, 0x00, transaction_type, counter.to_bytes(2, "big"), ne=8)


def update_capp_data_cache(tag: int, sfi: int, record: bytes) -> CommandApdu:
    """UPDATE CAPP DATA CACHE ``80 DC tag SFI<<3|000 Lc record``: the record whose tag is
    ``tag`` in EF ``sfi``, cached until the DEBIT (SPEC §2.3; CS ``80DC02B830...``)."""
    if not 0 <= sfi <= 0x1F:
        raise InputError(f"SFI 0x{sfi:X} is not 5 bits")
    return CommandApdu(0x80, 0xDC, tag, sfi << 3, bytes(record))


def get_auth_code() -> CommandApdu:
    """MOHURD GET DATA ``80 CA 00 00 09``: the 9-byte authentication code ``85 ...`` (D7)."""
    return CommandApdu(0x80, 0xCA, 0x00, 0x00, ne=9)


def put_auth_code(code: bytes) -> CommandApdu:
    """Write the authentication code ``00 22 00 00 09 85 ‖ 8 bytes`` (CS, on a Huada card; D7)."""
    return CommandApdu(0x00, 0x22, 0x00, 0x00, _fixed(code, 9, "authentication code"))


# ---------------------------------------------------------------------- answers
def _need(data: bytes, length: int, what: str) -> bytes:
    if len(data) != length:
        raise InputError(f"{what}: the card answered {len(data)} bytes, expected {length}")
    return data


@dataclass(frozen=True, slots=True)
class LoadInit:
    """Answer of INITIALIZE FOR LOAD / UNLOAD / UPDATE OVERDRAW (16 bytes, SPEC §2.1)."""

    balance: int
    online_counter: int
    key_version: int
    algorithm: int
    random: bytes
    mac1: bytes

    @classmethod
    def parse(cls, data: bytes) -> LoadInit:
        d = _need(data, 16, "INITIALIZE FOR LOAD")
        return cls(int.from_bytes(d[0:4], "big"), int.from_bytes(d[4:6], "big"), d[6], d[7], d[8:12], d[12:16])


@dataclass(frozen=True, slots=True)
class PurchaseInit:
    """Answer of INITIALIZE FOR PURCHASE / CAPP / CASH WITHDRAW (15 bytes, SPEC §2.1)."""

    balance: int
    offline_counter: int
    overdraw_limit: int
    key_version: int
    algorithm: int
    random: bytes

    @classmethod
    def parse(cls, data: bytes) -> PurchaseInit:
        d = _need(data, 15, "INITIALIZE FOR PURCHASE")
        return cls(int.from_bytes(d[0:4], "big"), int.from_bytes(d[4:6], "big"), int.from_bytes(d[6:9], "big"),
                   d[9], d[10], d[11:15])


@dataclass(frozen=True, slots=True)
class DebitResult:
    """Answer of DEBIT FOR PURCHASE: TAC ‖ MAC2 (SPEC §2.1)."""

    tac: bytes
    mac2: bytes

    @classmethod
    def parse(cls, data: bytes) -> DebitResult:
        d = _need(data, 8, "DEBIT FOR PURCHASE")
        return cls(d[0:4], d[4:8])


@dataclass(frozen=True, slots=True)
class TransactionProof:
    """Answer of GET TRANSACTION PROVE: MAC (MAC2, or MAC3 for an unload) ‖ TAC."""

    mac: bytes
    tac: bytes

    @classmethod
    def parse(cls, data: bytes) -> TransactionProof:
        d = _need(data, 8, "GET TRANSACTION PROVE")
        return cls(d[0:4], d[4:8])


def parse_balance(data: bytes) -> int:
    """GET BALANCE's answer: the balance in fen (4 bytes, big-endian)."""
    return int.from_bytes(_need(data, 4, "GET BALANCE"), "big")
