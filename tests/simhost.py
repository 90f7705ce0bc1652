"""A small host for the simulated card tests (tests/test_sim_*.py).

Everything a test expects is computed here on the host side, from SPEC.md and the
``citycard.crypto`` functions (pinned by the published vectors), never from the card OS.

* :class:`Host` sends raw APDUs to a :class:`SimCard` and checks status words.
* :class:`Recording` is the in-process transport that keeps every exchange.
* :func:`personalized` builds the standard test card: the factory MF with one PBOC
  application (EF0015, EF0016, CAPP file EF0017, EF0018, ED and EP) and a full key set.
"""

from __future__ import annotations

import copy
import random as _random

from citycard import crypto
from citycard.apdu import CommandApdu
from citycard.crypto import pboc
from citycard.sim import CardModel, SimCard
from citycard.sim.transport import SimTransport

H = bytes.fromhex

# ------------------------------------------------------------------ keys and constants
TRANSPORT = b"\xFF" * 16
MK = H("00112233445566778899AABBCCDDEEFF")          # application master key 39/00
DLK = H("3F" * 8 + "1122334455667788")              # load key 3F/00 (ROBUR)
DPK = H("00112233445566778899AABBCCDDEEFF")         # purchase key 3E/00 (DENG)
DPK2 = H("0F1E2D3C4B5A69788796A5B4C3D2E1F0")        # purchase key 3E/01
DUK = H("3D3D3D3D3D3D3D3D0102030405060708")         # unload key 3D/00
DTK = H("34" * 8 + "1122334455667788")              # TAC key 34/00 (ROBUR)
DAMK = H("36" * 16)                                 # line-protection key 36/00
DAMK1 = H("36363636363636360011223344556677")       # line-protection key 36/01
PUK = H("37" * 8 + "0123456789ABCDEF")              # PIN-unblock key 37/00
PRK = H("38" * 8 + "FEDCBA9876543210")              # PIN-reload key 38/00
IAK = H("1122334455667788")                         # internal-auth keys 30/00 and 32/00
PIN = H("123456")

AID = H("A00000000386980701")
PSE = b"1PAY.SYS.DDF01"
MF_FCI = H("6F15840E315041592E5359532E4444463031A503880101")
TERMINAL = H("000000000001")
DATE = H("20261124")
TIME = H("120000")
EF15 = bytes(range(0x10, 0x10 + 30))


class Recording(SimTransport):
    """The simulated card in process; every exchange kept as (command, answer) bytes."""

    def __init__(self, card: SimCard) -> None:
        super().__init__(card)
        self.log: list[tuple[bytes, bytes]] = []

    def transmit(self, apdu: bytes) -> bytes:
        rsp = super().transmit(apdu)
        self.log.append((apdu, rsp))
        return rsp


def sw_of(resp: bytes) -> int:
    return (resp[-2] << 8) | resp[-1]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


class Rng:
    """A deterministic card rng (``SimCard(rng=Rng(seed))``); deep-copies with its state."""

    def __init__(self, seed: int = 1) -> None:
        self._r = _random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._r.randbytes(n)


class Host:
    def __init__(self, card: SimCard | None = None) -> None:
        self.card = card if card is not None else SimCard(rng=Rng())

    # -------------------------------------------------------------- raw exchange
    def send(self, apdu: bytes | str) -> tuple[bytes, int]:
        raw = h(apdu) if isinstance(apdu, str) else bytes(apdu)
        resp = self.card.process(raw)
        assert isinstance(resp, bytes) and len(resp) >= 2
        return resp[:-2], sw_of(resp)

    def tx(self, apdu: bytes | str | CommandApdu, sw: int = 0x9000) -> bytes:
        if isinstance(apdu, CommandApdu):
            apdu = apdu.encode()
        data, got = self.send(apdu)
        assert got == sw, f"{apdu if isinstance(apdu, str) else apdu.hex().upper()}: SW {got:04X}, expected {sw:04X}"
        return data

    def sw(self, apdu: bytes | str | CommandApdu) -> int:
        if isinstance(apdu, CommandApdu):
            apdu = apdu.encode()
        return self.send(apdu)[1]

    # -------------------------------------------------------------- helpers
    def challenge(self, n: int = 4) -> bytes:
        c = self.tx(bytes((0, 0x84, 0, 0, n)))
        assert len(c) == n
        return c

    def ext_auth(self, key: bytes, kid: int = 0, n: int = 4, sw: int = 0x9000) -> None:
        chal = self.challenge(n)
        cryptogram = crypto.ecb_encrypt(key, chal + bytes(8 - n))
        self.tx(bytes((0x00, 0x82, 0x00, kid, 0x08)) + cryptogram, sw)

    def protected(self, cla: int, ins: int, p1: int, p2: int, data: bytes, key: bytes, *,
                  encrypt: bool = False, ne: int | None = None, sw: int = 0x9000,
                  n: int = 4) -> bytes:
        """GET CHALLENGE, then the command with line protection (SPEC §1.6)."""
        chal = self.challenge(n)
        cmd = crypto.protect(CommandApdu(cla, ins, p1, p2, data, ne), key, chal, encrypt=encrypt)
        return self.tx(cmd, sw)

    def select_mf(self) -> bytes:
        return self.tx("00A40000023F00")

    def select_fid(self, fid: int, sw: int = 0x9000) -> bytes:
        return self.tx(bytes((0, 0xA4, 0, 0, 2)) + fid.to_bytes(2, "big"), sw)

    def select_name(self, name: bytes, sw: int = 0x9000) -> bytes:
        return self.tx(bytes((0, 0xA4, 4, 0, len(name))) + name, sw)

    def create(self, fid: int, body: bytes, sw: int = 0x9000) -> None:
        self.tx(bytes((0x80, 0xE0)) + fid.to_bytes(2, "big") + bytes((len(body),)) + body, sw)

    def add_key(self, ktype: int, kid: int, usage: int, change: int, b3: int, b4: int, value: bytes,
                sw: int = 0x9000) -> None:
        rec = bytes((ktype, usage, change, b3, b4)) + value
        self.tx(bytes((0x80, 0xD4, 0x01, kid, len(rec))) + rec, sw)

    def verify(self, pin: bytes = PIN, kid: int = 0, sw: int = 0x9000) -> None:
        self.tx(bytes((0, 0x20, 0, kid, len(pin))) + pin, sw)

    def balance(self, p2: int = 2) -> int:
        return int.from_bytes(self.tx(bytes((0x80, 0x5C, 0x00, p2, 0x04))), "big")

    # -------------------------------------------------------------- purse exchanges
    def init_load(self, amount: int, *, p2: int = 2, kid: int = 0, terminal: bytes = TERMINAL) -> dict:
        r = self.tx(bytes((0x80, 0x50, 0x00, p2, 0x0B, kid)) + amount.to_bytes(4, "big") + terminal + b"\x10")
        assert len(r) == 16
        return dict(balance=int.from_bytes(r[0:4], "big"), counter=int.from_bytes(r[4:6], "big"),
                    version=r[6], alg=r[7], random=r[8:12], mac1=r[12:16])

    def load(self, amount: int, *, p2: int = 2, key: bytes = DLK, dtk: bytes = DTK,
             date: bytes = DATE, time: bytes = TIME) -> dict:
        """A whole load; checks MAC1 and the TAC; returns the INIT fields and the exchange."""
        i = self.init_load(amount, p2=p2)
        ttype = pboc.TT_ED_LOAD if p2 == 1 else pboc.TT_EP_LOAD
        cg = pboc.load_cryptogram(key, dtk, random=i["random"], counter=i["counter"], balance=i["balance"],
                                  amount=amount, terminal=TERMINAL, date=date, time=time, ttype=ttype)
        assert i["mac1"] == cg.mac1
        tac = self.tx(b"\x80\x52\x00\x00\x0B" + date + time + cg.mac2 + b"\x04")
        assert tac == cg.tac
        return dict(i, mac2=cg.mac2, tac=tac, ttype=ttype)

    def init_purchase(self, amount: int, *, p1: int = 1, p2: int = 2, kid: int = 0,
                      terminal: bytes = TERMINAL, sw: int = 0x9000) -> dict:
        r = self.tx(bytes((0x80, 0x50, p1, p2, 0x0B, kid)) + amount.to_bytes(4, "big") + terminal + b"\x0F",
                    sw)
        if sw != 0x9000:
            return {}
        assert len(r) == 15
        return dict(balance=int.from_bytes(r[0:4], "big"), counter=int.from_bytes(r[4:6], "big"),
                    overdraw=int.from_bytes(r[6:9], "big"), version=r[9], alg=r[10], random=r[11:15])

    def purchase_cg(self, i: dict, amount: int, *, key: bytes = DPK, ttype: int = pboc.TT_EP_PURCHASE,
                    serial: bytes = H("00000007"), date: bytes = DATE, time: bytes = TIME,
                    auth_code: bytes | None = None) -> pboc.PurseCryptogram:
        return pboc.purchase_cryptogram(key, DTK, random=i["random"], counter=i["counter"],
                                        terminal_serial=serial, amount=amount, terminal=TERMINAL,
                                        date=date, time=time, ttype=ttype, auth_code=auth_code)

    def debit(self, cg: pboc.PurseCryptogram, *, serial: bytes = H("00000007"), date: bytes = DATE,
              time: bytes = TIME, mac1: bytes | None = None, sw: int = 0x9000) -> bytes:
        return self.tx(b"\x80\x54\x01\x00\x0F" + serial + date + time + (mac1 or cg.mac1) + b"\x08", sw)

    def purchase(self, amount: int, *, p2: int = 2, date: bytes = DATE, time: bytes = TIME) -> dict:
        i = self.init_purchase(amount, p2=p2)
        ttype = pboc.TT_ED_PURCHASE if p2 == 1 else pboc.TT_EP_PURCHASE
        cg = self.purchase_cg(i, amount, ttype=ttype, date=date, time=time)
        out = self.debit(cg, date=date, time=time)
        assert out == cg.tac + cg.mac2
        return dict(i, mac2=cg.mac2, tac=cg.tac, ttype=ttype)

    def prove(self, ttype: int, counter: int, sw: int = 0x9000) -> bytes:
        return self.tx(bytes((0x80, 0x5A, 0x00, ttype, 0x02)) + counter.to_bytes(2, "big") + b"\x08", sw)

    def detail(self, n: int, sw: int = 0x9000) -> bytes:
        return self.tx(bytes((0x00, 0xB2, n, (0x18 << 3) | 4, 0x00)), sw)


# ------------------------------------------------------------------ the standard card
APP_KEYS = [
    # type, id, usage, change, b3, b4, value
    (0x39, 0x00, 0xF0, 0xAA, 0xAA, 0x33, MK),
    (0x3A, 0x00, 0xF0, 0xEF, 0x01, 0x33, PIN),
    (0x3F, 0x00, 0xF0, 0xAA, 0x01, 0x00, DLK),
    (0x3E, 0x00, 0xF0, 0xAA, 0x01, 0x00, DPK),
    (0x3E, 0x01, 0xF0, 0xAA, 0x02, 0x01, DPK2),
    (0x3D, 0x00, 0xF0, 0xAA, 0x01, 0x00, DUK),
    (0x34, 0x00, 0xF0, 0xAA, 0x01, 0x00, DTK),
    (0x36, 0x00, 0xF0, 0xAA, 0xFF, 0x33, DAMK),
    (0x36, 0x01, 0xF0, 0xAA, 0xFF, 0x33, DAMK1),
    (0x37, 0x00, 0xF0, 0xAA, 0xFF, 0x33, PUK),
    (0x38, 0x00, 0xF0, 0xAA, 0xFF, 0x33, PRK),
    (0x30, 0x00, 0xF0, 0xAA, 0x00, 0x00, IAK),
    (0x32, 0x00, 0xF0, 0xAA, 0x00, 0x00, IAK),
]

APP_FILES = [
    (0x0015, H("A8001EF0F0FFFF")),   # issuer data, MAC'd writes with 36/00
    (0x0016, H("280027F0F0FFFF")),   # holder data, free
    (0x0017, H("2C0150F0F0FFFF")),   # CAPP data, variable TLV records
    (0x0018, H("2E0A17F0EFFFFF")),   # transaction details (SPEC §1.2 script)
    (0x0002, H("2F0208F000FF18")),   # EP (SPEC §1.2 script)
    (0x0001, H("2F0208F100FF18")),   # ED: usage AC F1 = after the PIN
]


def personalized(*, seed: int = 1, ef15: bytes = EF15, model: "str | CardModel | None" = None) -> SimCard:
    """The factory card plus application 3F01 (AID A00000000386980701), ACs in force; ``model``:
    a card model or its name (default the real-card ``fm1208``)."""
    host = Host(SimCard(rng=Rng(seed)) if model is None else SimCard(rng=Rng(seed), model=model))
    host.select_mf()
    host.ext_auth(TRANSPORT)
    host.tx("80E03F011138" + "0600" + "AAAA95FFFF" + AID.hex())
    host.select_name(AID)
    host.tx("80E00000073F020095AAFFFF")
    for k in APP_KEYS:
        host.add_key(*k)
    for fid, body in APP_FILES:
        host.create(fid, body)
    host.tx(b"\x00\xD6\x95\x00\x1E" + ef15)
    host.card.reset()
    return host.card


_TEMPLATES: dict[tuple[int, str | None], SimCard] = {}


def fresh(seed: int = 1, model: str | None = None) -> Host:
    """A Host on a deep copy of the (cached) personalized card, powered on, MF current."""
    if (seed, model) not in _TEMPLATES:
        _TEMPLATES[(seed, model)] = personalized(seed=seed, model=model)
    card = copy.deepcopy(_TEMPLATES[(seed, model)])
    card.reset()
    return Host(card)


def app(seed: int = 1, model: str | None = None) -> Host:
    """:func:`fresh` with the application selected."""
    host = fresh(seed, model)
    host.select_name(AID)
    return host
