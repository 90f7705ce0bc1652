"""The host side of PBOC purse transactions (SPEC §2.1–§2.2): a terminal that derives the
card's purse keys from the masters on its own and checks every MAC the card sends.

Load: INITIALIZE FOR LOAD → check MAC1 with the derived DLK → CREDIT FOR LOAD with MAC2
→ check the TAC with the derived DTK.  Purchase: INITIALIZE FOR PURCHASE → DEBIT with
MAC1 → check MAC2 and the TAC.  The card's keys are found from the profile: the
application's purse keys and the file whose data binds ``@app_serial`` (the
diversification factor, SPEC §2.4).

SM4 (docs/sm4.md): the algorithm is the card's: the algorithm byte of its INITIALIZE answer
(``04`` SM4, ``00``/``01`` DES/3DES) is the cipher of the session key, MACs and TAC; the
profile's key of that type and id must declare the same algorithm (its keys are derived
before INITIALIZE, as for 3DES), and the TAC key is the profile's TAC key of that algorithm.  Which key set is used is the key id sent in INITIALIZE:
``key_id``, by default the id of the profile's first key of the type (an application with a
3DES and an SM4 set uses the set written first unless told otherwise).
"""

from __future__ import annotations

import datetime as _dt
import time as _time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from ..apdu import CommandApdu, ResponseApdu
from ..commands import iso, purse, walk
from ..commands.fmcos import KeyType
from ..commands.purse import PurseKind
from ..crypto import pboc
from ..crypto.cipher import Alg
from ..errors import CardError, CitycardError, InputError, TransportError
from ..keys import KeySource
from ..keys.handles import Key
from ..spec import CardSpec, DFSpec, FileSpec, KeySpec
from ..transport import CardSession
from .identify import CardRefused, identify_for_service
from .txlog import TxRecord


T = TypeVar("T")


class PurseError(CitycardError):
    """A purse transaction failed or the card's cryptogram did not check out."""


class PurseRefused(CardError, PurseError):
    """The card answered a purse step with an unexpected status word (``sw``)."""


@dataclass(frozen=True)
class TxResult:
    kind: str
    amount: int
    balance_before: int
    balance_after: int
    counter: int
    tac: bytes
    recovered: bool = False     # the answer was lost; GET TRANSACTION PROVE settled it
    # what the transaction's record for clearing needs (citycard.terminal.txlog)
    app: str = ""
    card: str = ""
    ttype: int = 0
    terminal: bytes = b""
    ttsn: bytes | None = None
    date: bytes = b""
    time: bytes = b""
    algorithm: int = 0
    key_version: int = 0

    def record(self, source: str = "host") -> TxRecord:
        """This transaction as a terminal-log record (docs/clearing.md); an unload has no TAC
        (its MAC3 is under a session key) and is not a clearing record; a transaction whose
        card went away before proving it (no TAC) is a grey record."""
        if self.kind == "unload":
            raise PurseError("an unload has no TAC: it is not logged for clearing")
        grey = not self.tac
        return TxRecord(self.kind.replace(" ", "-"), self.app, self.card, self.counter, self.balance_before,
                        self.amount, self.ttype, self.terminal.hex().upper(),
                        self.ttsn.hex().upper() if self.ttsn is not None else None, self.date.hex(), self.time.hex(),
                        None if grey else self.tac.hex().upper(),
                        "grey" if grey else "proven" if self.recovered else "ok", source, self.algorithm,
                        key_version=self.key_version)


class PurseCardRefused(PurseError, CardRefused):
    """Not a card of the profile: refused before any key or PIN (issue 17 item 1)."""


class NotCompleted(PurseError):
    """The card lost power before completing the transaction: nothing was charged."""


class CardGone(PurseError):
    """The completing command's answer was lost and the card did not come back to prove it:
    the transaction may or may not have happened (a grey transaction).  ``pending`` is the
    transaction as it would be, without its TAC: logged as a grey record, settled later by
    :meth:`PurseTerminal.prove` when the card is presented again (docs/clearing.md)."""

    def __init__(self, message: str, pending: "TxResult | None" = None) -> None:
        super().__init__(message)
        self.pending = pending


def _now_bcd(when: _dt.datetime) -> tuple[bytes, bytes]:
    return bytes.fromhex(when.strftime("%Y%m%d")), bytes.fromhex(when.strftime("%H%M%S"))


class PurseTerminal:
    #: seconds to wait for a card whose completing answer was lost to come back and prove it
    settle_timeout = 20.0

    def __init__(self, session: CardSession, spec: CardSpec, keys: KeySource, app: str | None = None,
                 terminal_id: bytes = b"\x00\x00\x00\x00\x00\x01") -> None:
        self.session, self.spec, self.keys = session, spec, keys
        self.df = self._purse_app(app)
        self.purse = next(f for f in self.df.files if f.kind in ("ed", "ep"))
        self.p2 = PurseKind.ED if self.purse.kind == "ed" else PurseKind.EP
        self.terminal = terminal_id
        self.serial: str | None = None
        self._identified = False

    def identify(self) -> None:
        """Before any key or PIN (issue 17 item 1): the card must be one of the profile holding
        the purse application (:func:`citycard.terminal.identify.identify_for_service`)."""
        if not self._identified:
            try:
                identify_for_service(self.session, self.spec, self.df)
            except CardRefused as exc:
                raise PurseCardRefused(str(exc)) from None
            self._identified = True

    def _purse_app(self, name: str | None) -> DFSpec:
        for df in self.spec.apps:
            if (name is None or df.name == name) and any(f.kind in ("ed", "ep") for f in df.files):
                return df
        raise PurseError(f"the profile has no purse application{f' named {name!r}' if name else ''}")

    # ------------------------------------------------------------------ card access
    def select(self) -> str:
        """SELECT the purse application and read its serial number (the key factor)."""
        r = self.session.send(iso.select_name(self.df.aid))
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, f"SELECT {self.df.name}")
        from .. import records
        found = walk.serial_field(self.df, "@app_serial")
        if found is None:
            raise PurseError(f"no file of {self.df.name} carries the application serial number (@app_serial)")
        f, name = found
        lay = records.get(f.layout or "")
        r = self.session.send(iso.read_binary(0, lay.size, sfi=f.sfi), expect=0x9000,
                              what=f"READ BINARY {f.fid:04X}")
        self.serial = str(lay.decode(r.data)[name])
        return self.serial

    def _key_spec(self, ktype: int, key_id: int | None) -> KeySpec:
        """The profile's key of ``ktype`` with id ``key_id``, or its first key of that type."""
        k = next((k for k in self.df.keys if k.ktype == ktype and (key_id is None or k.kid == key_id)), None)
        if k is None or k.master is None:
            raise PurseError(f"the profile's {self.df.name} has no key of type {ktype:02X}"
                             + (f" and id {key_id:02X}" if key_id is not None else ""))
        return k

    @staticmethod
    def _card_alg(k: KeySpec, card_alg_id: int, what: str) -> Alg:
        """The algorithm the card named in its INITIALIZE answer (docs/sm4.md); a profile key
        ``k`` declaring another algorithm is refused, naming both."""
        alg = _card_alg(card_alg_id, what)
        if k.alg != alg:
            raise PurseError(f"{what}: the card's key {k.kid:02X} has algorithm id {card_alg_id:02X} "
                             f"({_ALG_NAMES[alg]}), but the profile's key {k.name} is {_ALG_NAMES[k.alg]}")
        return alg

    def _tac_key(self, alg: Alg = "des", version: int | None = None) -> Key:
        """The profile's TAC key of the transaction's algorithm: the purse's TAC key id if it
        has that algorithm, else the first TAC key of that algorithm (as the card does).
        ``version``: the card's key version, for a key of ``version = "master"``."""
        tacs = [k for k in self.df.keys if k.ktype == KeyType.TAC and k.alg == alg]
        k = next((k for k in tacs if k.kid == self.purse.tac_key), tacs[0] if tacs else None)
        if k is None or k.master is None:
            raise PurseError(f"no {_ALG_NAMES[alg]} TAC key in the profile")
        return self._derive(k, version)

    def _derive(self, k: KeySpec, version: int | None = None) -> Key:
        """This card's key ``k`` (diversified by the application serial; an 8-byte key is the
        left half, as the planner writes it).  For a key of ``version = "master"`` the master
        of ``version`` (the card's key version from INITIALIZE: key rotation, docs/keys.md)."""
        if self.serial is None:
            self.select()
        assert k.master is not None
        kw: dict[str, Any] = {"alg": k.alg} if k.alg != "des" else {}
        if k.master_version and version is not None:
            kw["version"] = version
        if hasattr(self.keys, "version_in_force") or hasattr(self.keys, "in_force"):   # a key ring / inventory
            kw["serving"] = True      # an issued card: a retired master version still serves (docs/keys.md)
        value = self.keys.derive(k.master[0], k.master[1], walk.diversification_factor(str(self.serial)), **kw)
        return value[:8] if k.length == 8 else value

    def verify_pin(self, pin: str) -> None:
        """For an ED (or a purse whose usage needs the PIN)."""
        self.identify()
        from ..profile import pin_to_bytes
        k = next((k for k in self.df.keys if k.ktype == KeyType.PIN), None)
        if k is None:
            raise PurseError(f"{self.df.name} has no PIN")
        r = self.session.send(iso.verify(k.kid, pin_to_bytes(pin)))
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, "VERIFY")

    # ------------------------------------------------------------------ torn transactions
    def _final(self, cmd: CommandApdu, ttype: int, counter: int, expect: bytes) -> tuple[ResponseApdu | None, bool]:
        """Send the completing command.  If its answer is lost (card pulled, power lost), power
        the card up again and ask GET TRANSACTION PROVE (SPEC §2.1) whether it completed:
        ``expect`` (MAC ‖ TAC the card must prove) settles it; 9406 means it did not happen."""
        try:
            return self.session.send(cmd), False
        except TransportError:
            pass
        r = self.reprove(ttype, counter)
        if r.sw == 0x9406:
            raise NotCompleted("the card lost power before the transaction completed: nothing was charged "
                               "(run it again)")
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, "GET TRANSACTION PROVE")
        if r.data != expect:
            raise PurseError("GET TRANSACTION PROVE: the card's proof does not match this transaction")
        return None, True

    def reprove(self, ttype: int, counter: int) -> ResponseApdu:
        """After the completing command's answer was lost: wait up to :attr:`settle_timeout`
        for **the same card** to answer again (its application serial read freely; another card
        answering ``9406`` would wrongly say "not charged") and ask it GET TRANSACTION PROVE.
        :class:`CardGone` when it does not come back or another card is there: the transaction
        stays grey, never retried."""
        original = self.serial
        t = self.session.transport
        again = getattr(t, "reconnect", None) or t.reset
        deadline = _time.monotonic() + self.settle_timeout
        while True:  # the reader may still show the old card for a moment: retry until it answers
            try:
                again()
                try:
                    now: str | None = self.select()
                except CardError:            # not even of this profile
                    now = None
                if now != original:
                    self.serial = original
                    raise CardGone(f"the card now in the reader is not the card of this transaction ({original}): "
                                   f"it stays a grey transaction; present card {original} to 'purse prove' it, never "
                                   "retry it")
                return self.session.send(purse.get_transaction_prove(ttype, counter))
            except TransportError:
                if _time.monotonic() > deadline:
                    raise CardGone("the card did not come back to settle the transaction (a grey transaction): "
                                   "present it again to 'purse prove' it; never retry it") from None
                _time.sleep(0.1)

    def prove(self, grey: TxRecord) -> TxRecord:
        """Settle a grey transaction of this card (its record from the terminal log): GET
        TRANSACTION PROVE for its counter; the TAC the card gives is checked with the keys and
        the record comes back ``proven`` (to append to the log: clearing then settles the grey
        one).  The card answers ``9406`` when the transaction never happened: :class:`NotCompleted`."""
        from dataclasses import replace

        self.identify()
        serial = self.select()
        if serial != grey.card or grey.app != self.df.name:
            raise PurseError(f"this card is {serial} ({self.df.name}); the grey record is of card {grey.card} "
                             f"({grey.app})")
        r = self.session.send(purse.get_transaction_prove(grey.ttype, grey.counter))
        if r.sw == 0x9406:
            raise NotCompleted(f"card {serial}: the transaction of counter {grey.counter} never completed: "
                               "nothing was charged (the grey record stays grey; it is not money)")
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, "GET TRANSACTION PROVE")
        proof = purse.TransactionProof.parse(r.data)
        alg = pboc.alg_of_id(grey.algorithm) or "des"
        tac_spec = [k for k in self.df.keys if k.ktype == KeyType.TAC and k.alg == alg]
        version = grey.key_version if tac_spec and tac_spec[0].master_version else None
        dtk = self._tac_key(alg, version)
        terminal, date, time = bytes.fromhex(grey.terminal), bytes.fromhex(grey.date), bytes.fromhex(grey.time)
        if grey.kind == "load":
            expect = pboc.load_tac(dtk, grey.balance_after, grey.counter, grey.amount, grey.ttype, terminal, date,
                                   time, alg=alg)
        else:
            expect = pboc.purchase_tac(dtk, grey.amount, grey.ttype, terminal, bytes.fromhex(grey.ttsn or ""), date,
                                       time, alg=alg)
        if proof.tac != expect:
            raise PurseError(f"card {serial}: its proof of counter {grey.counter} is not this transaction's TAC")
        return replace(grey, tac=proof.tac.hex().upper(), status="proven")

    def balance(self) -> int:
        if self.serial is None:
            self.select()
        r = self.session.send(purse.get_balance(self.p2), expect=0x9000, what="GET BALANCE")
        return int.from_bytes(r.data, "big")

    # ------------------------------------------------------------------ transactions
    def load(self, amount: int, *, when: _dt.datetime | None = None, key_id: int | None = None) -> TxResult:
        """``key_id``: the load key the card uses (default: the profile's first load key)."""
        self.identify()
        if self.serial is None:
            self.select()
        spec = self._key_spec(KeyType.LOAD, key_id)
        if not spec.master_version:      # keys first: a key source error comes before the card is asked
            dlk, dtk = self._derive(spec), self._tac_key(spec.alg)
        date, time = _now_bcd(when or _dt.datetime.now())
        r = self.session.send(purse.initialize_for_load(self.p2, spec.kid, amount, self.terminal))
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, "INITIALIZE FOR LOAD")
        init = _parse(purse.LoadInit.parse, r)
        alg = self._card_alg(spec, init.algorithm, "INITIALIZE FOR LOAD")
        if spec.master_version:          # the masters of the card's key version (rotation, docs/keys.md)
            dlk, dtk = self._derive(spec, init.key_version), self._tac_key(alg, init.key_version)
        bal, ctr, random, mac1 = init.balance, init.online_counter, init.random, init.mac1
        ttype = 0x01 if self.p2 == 1 else 0x02
        ses = pboc.load_session_key(dlk, random, ctr, alg)
        if pboc.load_mac1(ses, bal, amount, ttype, self.terminal, alg=alg) != mac1:
            raise PurseError("INITIALIZE FOR LOAD: MAC1 from the card is wrong (not our card, or wrong keys)")
        mac2 = pboc.load_mac2(ses, amount, ttype, self.terminal, date, time, alg=alg)
        tac = pboc.load_tac(dtk, bal + amount, ctr, amount, ttype, self.terminal, date, time, alg=alg)
        try:
            r, recovered = self._final(purse.credit_for_load(date, time, mac2), ttype, ctr, mac2 + tac)
        except CardGone as gone:
            raise CardGone(str(gone), TxResult("load", amount, bal, bal + amount, ctr, b"", False, self.df.name,
                                               str(self.serial), ttype, self.terminal, None, date, time,
                                               init.algorithm, init.key_version)) from None
        if r is not None:
            if r.sw != 0x9000:
                raise PurseRefused(r.sw, "CREDIT FOR LOAD")
            if r.data != tac:
                raise PurseError("CREDIT FOR LOAD: the TAC from the card is wrong")
        return TxResult("load", amount, bal, bal + amount, ctr, tac, recovered, self.df.name, str(self.serial), ttype,
                        self.terminal, None, date, time, init.algorithm, init.key_version)

    def purchase(self, amount: int, *, terminal_serial: int = 1, when: _dt.datetime | None = None,
                 key_id: int | None = None, capp: tuple[int, bytes] | None = None) -> TxResult:
        """A purchase; with ``capp = (tag, record)`` a CAPP purchase (SPEC §2.3) that also
        replaces the record with that tag in the application's CAPP file.  ``key_id``: the
        purchase key the card uses (default: the profile's first purchase key)."""
        self.identify()
        if self.serial is None:
            self.select()
        spec = self._key_spec(KeyType.PURCHASE, key_id)
        if not spec.master_version:
            dpk, dtk = self._derive(spec), self._tac_key(spec.alg)
        date, time = _now_bcd(when or _dt.datetime.now())
        code = None
        if self.df.auth_code is not None:   # D7: read before INITIALIZE (the purse session allows no other command)
            code = self.session.send(purse.get_auth_code(), expect=0x9000, what="GET DATA").data
        if capp is not None and self.p2 != PurseKind.EP:
            raise PurseError("a CAPP purchase is made on an EP")
        init_cmd = purse.initialize_for_capp_purchase if capp is not None else purse.initialize_for_purchase
        r = self.session.send(init_cmd(self.p2, spec.kid, amount, self.terminal))
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, f"INITIALIZE FOR {'CAPP ' if capp else ''}PURCHASE")
        init = _parse(purse.PurchaseInit.parse, r)
        alg = self._card_alg(spec, init.algorithm, f"INITIALIZE FOR {'CAPP ' if capp else ''}PURCHASE")
        if spec.master_version:          # the masters of the card's key version (rotation, docs/keys.md)
            dpk, dtk = self._derive(spec, init.key_version), self._tac_key(alg, init.key_version)
        bal, ctr, random = init.balance, init.offline_counter, init.random
        ttype = pboc.TT_CAPP_PURCHASE if capp is not None else (0x05 if self.p2 == 1 else 0x06)
        if capp is not None:
            tag, record = capp
            capp_file = self._capp_file()
            rc = self.session.send(purse.update_capp_data_cache(tag, capp_file.sfi, record))
            if rc.sw != 0x9000:
                raise PurseRefused(rc.sw, "UPDATE CAPP DATA CACHE")
        serial = pboc.u32(terminal_serial, "terminal serial")
        c = pboc.purchase_cryptogram(dpk, dtk, random=random, counter=ctr, terminal_serial=serial, amount=amount,
                                     terminal=self.terminal, date=date, time=time, ttype=ttype, auth_code=code,
                                     alg=alg)
        try:
            r, recovered = self._final(purse.debit_for_purchase(serial, date, time, c.mac1), ttype, ctr,
                                       c.mac2 + c.tac)
        except CardGone as gone:
            raise CardGone(str(gone), TxResult("capp purchase" if capp else "purchase", amount, bal, bal - amount,
                                               ctr, b"", False, self.df.name, str(self.serial), ttype, self.terminal,
                                               serial, date, time, init.algorithm, init.key_version)) from None
        if r is not None:
            if r.sw != 0x9000:
                raise PurseRefused(r.sw, "DEBIT FOR PURCHASE")
            debit = _parse(purse.DebitResult.parse, r)
            if debit.mac2 != c.mac2:
                raise PurseError("DEBIT FOR PURCHASE: MAC2 from the card is wrong")
            if debit.tac != c.tac:
                raise PurseError("DEBIT FOR PURCHASE: the TAC from the card is wrong")
        return TxResult("capp purchase" if capp else "purchase", amount, bal, bal - amount, ctr, c.tac, recovered,
                        self.df.name, str(self.serial), ttype, self.terminal, serial, date, time, init.algorithm,
                        init.key_version)

    def _capp_file(self) -> FileSpec:
        f = next((f for f in self.df.files if f.kind == "variable" and f.layout == "capp_metro"), None)
        if f is None:
            f = next((f for f in self.df.files if f.kind == "variable"), None)
        if f is None:
            raise PurseError(f"{self.df.name} has no CAPP record file")
        return f

    def unload(self, amount: int, *, when: _dt.datetime | None = None, key_id: int | None = None) -> TxResult:
        """INITIALIZE FOR UNLOAD → MAC1 checked → DEBIT FOR UNLOAD with MAC2 → MAC3 checked."""
        self.identify()
        if self.serial is None:
            self.select()
        if self.p2 != PurseKind.ED:
            # strict host: a real card refuses unload on the EP (SPEC §6 R18, UM 8.10); say so
            # before a purse session is opened
            raise PurseError(f"{self.df.name}: unload (圈提) is an ED command; a real card refuses it on an "
                             "EP (SPEC §6 R18)")
        spec = self._key_spec(KeyType.UNLOAD, key_id)
        dulk = self._derive(spec)
        date, time = _now_bcd(when or _dt.datetime.now())
        r = self.session.send(purse.initialize_for_unload(self.p2, spec.kid, amount, self.terminal))
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, "INITIALIZE FOR UNLOAD")
        init = _parse(purse.LoadInit.parse, r)
        alg = self._card_alg(spec, init.algorithm, "INITIALIZE FOR UNLOAD")
        bal, ctr = init.balance, init.online_counter
        ses = pboc.load_session_key(dulk, init.random, ctr, alg)
        if pboc.load_mac1(ses, bal, amount, pboc.TT_UNLOAD, self.terminal, alg=alg) != init.mac1:
            raise PurseError("INITIALIZE FOR UNLOAD: MAC1 from the card is wrong")
        mac2 = pboc.load_mac2(ses, amount, pboc.TT_UNLOAD, self.terminal, date, time, alg=alg)
        mac3 = pboc.unload_mac3(ses, bal - amount, ctr, amount, pboc.TT_UNLOAD, self.terminal, date, time,
                                alg=alg)
        r2, recovered = self._final(purse.debit_for_unload(date, time, mac2), pboc.TT_UNLOAD, ctr, mac3 + bytes(4))
        if r2 is not None:
            if r2.sw != 0x9000:
                raise PurseRefused(r2.sw, "DEBIT FOR UNLOAD")
            if r2.data != mac3:
                raise PurseError("DEBIT FOR UNLOAD: MAC3 from the card is wrong")
        return TxResult("unload", amount, bal, bal - amount, ctr, mac3, recovered)

    def history(self) -> list[dict[str, Any]]:
        """The transaction-detail records, newest first, decoded (SPEC §2.2)."""
        from .. import records
        if self.serial is None:
            self.select()
        lay = records.get("ef0018")
        read = walk.read_records_to_end(self.session, sfi=self.purse.detail_sfi, limit=255)
        if not read.ok:
            raise PurseRefused(read.sw, f"READ RECORD {len(read.records) + 1}")
        return [lay.decode(rec) for rec in read.records]


#: algorithm ids of a purse key whose session keys citycard computes: DES / 3DES (SPEC §2.2, D8)
#: and SM4 (04, PSAM-SM4 §4.1; citycard's construction, docs/sm4.md)
KNOWN_ALGORITHMS = frozenset({0x00, 0x01, pboc.ALG_ID_SM4})
_ALG_NAMES = {"des": "3DES", "sm4": "SM4"}


def _known_algorithm(init: T, what: str) -> T:
    """``init`` (an INITIALIZE answer) if its key's algorithm is one citycard computes
    (:func:`_card_alg`)."""
    _card_alg(getattr(init, "algorithm"), what)
    return init


def _card_alg(algorithm: int, what: str) -> Alg:
    """The cipher family of the card's algorithm id.  Strict host (SPEC §6.6): a key of
    algorithm id 02/03 gave non-DES MAC1s on a real FM1208 (DENG) and no public source says which algorithm it is, so such a purse is refused with a
    plain message instead of a "wrong MAC1" that would blame the keys."""
    alg = pboc.alg_of_id(algorithm)
    if alg is None:
        raise PurseError(f"{what}: the card's key has algorithm id {algorithm:02X}; citycard computes DES/3DES "
                         "(ids 00, 01) and SM4 (04) purse keys only, and no public source says what this card "
                         f"does for {algorithm:02X} (SPEC §6.6)")
    return alg


def _parse(parser: Callable[[bytes], T], r: ResponseApdu) -> T:
    """A purse answer parsed; a short answer is a :class:`PurseError` naming the command."""
    try:
        return parser(r.data)
    except InputError as exc:
        raise PurseError(str(exc)) from None
