"""A purse terminal that holds no keys: the card ↔ PSAM purchase (PSAM-SM4.md §2.4).

The PSAM (a second card, in a second reader) holds the purchase master; this software
only carries bytes between the two:

1. PSAM: SELECT MF, read EF0015 (serial) and EF0016 (terminal number), SELECT the ADF
   (``1001``, MZT), read EF0017 (the card key index) and EF0019 (the next TTSN);
2. card: identified as a card of the profile (reads only, as every writing command does),
   SELECT the purse application, read its serial (the diversification factor);
3. MOHURD (the card profile's ``auth_code``): card ``80 CA`` → the code (SPEC D7);
4. card INITIALIZE FOR (CAPP) PURCHASE with the key index and the PSAM's terminal number;
5. (MOHURD: PSAM ``80 CA`` ‖ code, right before:) PSAM INIT SAM FOR PURCHASE → TTSN ‖ MAC1;
   (CAPP: card UPDATE CAPP DATA CACHE);
6. card DEBIT FOR PURCHASE → TAC ‖ MAC2 (a lost answer: GET TRANSACTION PROVE, as the
   host-key terminal does); 7. PSAM CREDIT SAM FOR PURCHASE checks MAC2.

The TAC is checked later by the back office with its keys (``citycard clearing``); each
completed transaction is one record of the terminal log (:mod:`citycard.terminal.txlog`,
docs/clearing.md).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Container, Sequence

from ..apdu import CommandApdu, ResponseApdu
from ..commands import iso, psam, purse, walk
from ..commands.purse import PurseKind
from ..crypto import pboc
from ..errors import CardError, CitycardError, InputError, TransportError
from ..spec import CardSpec
from ..transport import CardSession
from .purse import CardGone, NotCompleted, PurseError, PurseRefused, PurseTerminal, _known_algorithm, _now_bcd
from .txlog import TxRecord

#: the PSAM application (MZT: DF 1001, then the MOHURD name; CSA: 1001)
PSAM_ADF = 0x1001


class PsamError(PurseError):
    """The PSAM refused a step, or its files are not a PSAM's."""


class PsamRefused(CardError, PsamError):
    """The PSAM answered with an unexpected status word (``sw``)."""


class Mac2NotChecked(PsamError):
    """The card was debited (its TAC came back) but the PSAM did not check its MAC2 (refused, or
    its reader failed): the transaction happened and is carried in ``transaction`` to be logged
    (clearing checks its TAC)."""

    def __init__(self, message: str, transaction: "PsamTransaction") -> None:
        super().__init__(message)
        self.transaction = transaction


class CardHotlisted(PurseError):
    """The card is on the terminal's hotlist: no purchase (the caller blocks it, issue 23)."""

    def __init__(self, serial: str) -> None:
        super().__init__(f"card {serial} is on the hotlist: no purchase")
        self.serial = serial


@dataclass(frozen=True, slots=True)
class PsamInfo:
    """What a terminal reads from its PSAM (PSAM-SM4.md §1.1)."""

    serial: str               # EF0015 bytes 0–9, hex
    version: int
    terminal_number: str      # EF0016, 12 BCD digits
    key_index: int            # EF0017 byte 0: the key index sent in the card's 80 50
    issuer_id: str
    next_ttsn: int            # EF0019 (decision 6: the next TTSN)


@dataclass(frozen=True, slots=True)
class PsamTransaction:
    """One completed purchase: the terminal log record (docs/psam.md)."""

    card_serial: str
    card_counter: int         # the offline counter of the card's INITIALIZE (the MACs')
    amount_fen: int
    balance_before_fen: int
    balance_after_fen: int
    transaction_type: int     # 06 EP purchase, 05 ED purchase, 09 CAPP
    terminal_number: str
    psam_serial: str
    ttsn: int
    date: str                 # YYYYMMDD
    time: str                 # HHMMSS
    key_version: int
    algorithm: int
    tac: str
    recovered: bool = False   # the card's answer was lost; GET TRANSACTION PROVE settled it
    app: str = ""             # the profile's purse application (the service unit in clearing)

    def record(self) -> TxRecord:
        """The terminal-log record clearing imports (docs/clearing.md); without a TAC (the card
        went away before proving its DEBIT) a grey record."""
        grey = not self.tac
        return TxRecord("capp-purchase" if self.transaction_type == pboc.TT_CAPP_PURCHASE else "purchase", self.app,
                        self.card_serial, self.card_counter, self.balance_before_fen, self.amount_fen,
                        self.transaction_type, self.terminal_number.upper(), f"{self.ttsn:08X}", self.date, self.time,
                        None if grey else self.tac, "grey" if grey else "proven" if self.recovered else "ok", "psam",
                        self.algorithm, self.psam_serial, self.key_version)


def wrong_length(command: str, who: str, data: bytes, size: int, layout: str = "") -> str:
    """One line for an answer of the wrong length: the command, who answered, the expected
    size and the first answer byte (1-based) at fault (README "Exit codes": a card failure)."""
    n = len(data)
    at = f"answer byte {n + 1} missing" if n < size else f"answer byte {size + 1} is extra"
    return f"{command}: the {who} answered {n} bytes, expected {size}{f' ({layout})' if layout else ''}: {at}"


def _init_refusal(sw: int, algorithm: int) -> str | None:
    """One line for the INIT SAM FOR PURCHASE refusals citycard's PSAM defines (docs/psam.md)."""
    if sw == 0x9403:
        return "INIT SAM FOR PURCHASE: the PSAM has no purchase key of the card's key version (9403)"
    if sw == 0x6A80:
        name = {0x00: "3DES", 0x01: "DES", pboc.ALG_ID_SM4: "SM4"}.get(algorithm, "unknown")
        return (f"INIT SAM FOR PURCHASE: the PSAM's purchase key of the card's key version is not of the card's "
                f"algorithm ({algorithm:02X}, {name}; 6A80): use the PSAM of that key set (docs/psam.md)")
    return None


class Psam:
    """The PSAM in its reader: its files and the two purchase commands."""

    def __init__(self, session: CardSession, adf: int = PSAM_ADF) -> None:
        self.session, self.adf = session, adf
        self.info: PsamInfo | None = None

    def _read(self, cmd: CommandApdu, what: str, size: int) -> bytes:
        r = self.session.send(cmd)
        if r.sw != 0x9000:
            raise PsamRefused(r.sw, f"PSAM READ BINARY {what}")
        if len(r.data) != size:
            raise PsamError(wrong_length(f"PSAM READ BINARY {what}", "PSAM", r.data, size))
        return r.data

    def open(self) -> PsamInfo:
        """SELECT MF, read EF0015/EF0016, SELECT the ADF, read EF0017/EF0019."""
        r = self.session.send(iso.select_mf())
        if r.sw != 0x9000:
            raise PsamRefused(r.sw, "PSAM SELECT MF")
        ef15 = self._read(psam.read_serial(), "EF0015", psam.SERIAL_SIZE)
        terminal = self._read(psam.read_terminal_number(), "EF0016", psam.TERMINAL_SIZE)
        r = self.session.send(iso.select_fid(self.adf))
        if r.sw != 0x9000:
            raise PsamRefused(r.sw, f"PSAM SELECT {self.adf:04X}")
        issuer = psam.IssuerInfo.parse(self._read(psam.read_issuer_info(), "EF0017", psam.ISSUER_SIZE))
        ttsn = self._read(psam.read_ttsn(), "EF0019", psam.TTSN_SIZE)
        self.info = PsamInfo(ef15[:10].hex().upper(), ef15[10], terminal.hex().upper(), issuer.key_index,
                             issuer.issuer_id.hex().upper(), int.from_bytes(ttsn, "big"))
        return self.info

    def authentication_message(self, code: bytes) -> None:
        r = self.session.send(psam.authentication_message(code))
        if r.sw != 0x9000:
            raise PsamRefused(r.sw, "PSAM AUTHENTICATION MESSAGE")

    def init_for_purchase(self, **kw: Any) -> psam.SamPurchaseInit:
        r = self.session.send(psam.init_sam_for_purchase(**kw))
        if r.sw != 0x9000:
            raise PsamRefused(r.sw, "INIT SAM FOR PURCHASE", message=_init_refusal(r.sw, kw.get("algorithm", -1)))
        if len(r.data) != 8:     # a card failure, not bad input (exit 1)
            raise PsamError(wrong_length("INIT SAM FOR PURCHASE", "PSAM", r.data, 8, "TTSN 4, MAC1 4"))
        return psam.SamPurchaseInit.parse(r.data)

    def credit_for_purchase(self, mac2: bytes) -> None:
        r = self.session.send(psam.credit_sam_for_purchase(mac2))
        if r.sw != 0x9000:
            raise PsamRefused(r.sw, "CREDIT SAM FOR PURCHASE", message="CREDIT SAM FOR PURCHASE: the PSAM refused "
                              f"the card's MAC2 (SW {r.sw:04X}): the card's purse was debited but its MAC2 does "
                              "not check out; keep the record for the back office")


class PsamPurchaseTerminal:
    """Purchases on the card of ``card`` through the PSAM of ``psam``; ``spec`` is the card's
    profile (its purse application, serial file, MOHURD code, CAPP file), never its keys."""

    def __init__(self, card: CardSession, psam_session: CardSession, spec: CardSpec, app: str | None = None,
                 *, factors: Callable[[bytes], Sequence[bytes]] | None = None) -> None:
        self.psam = Psam(psam_session)
        # the card side (selection, serial, purse file) is the host terminal's, without keys
        self.card = PurseTerminal(card, spec, None, app)  # type: ignore[arg-type]
        self.factors = factors or (lambda f: (f,))   # the card serial factor: 1 level (usage 22)

    def purchase(self, amount: int, *, when: _dt.datetime | None = None,
                 capp: tuple[int, bytes] | None = None, hotlist: Container[str] | None = None) -> PsamTransaction:
        """``hotlist``: the terminal's hotlist (:class:`citycard.lifecycle.TerminalHotlist`): a
        card on it is refused with :class:`CardHotlisted` before its purse is touched."""
        info = self.psam.info or self.psam.open()
        term = self.card
        term.terminal = bytes.fromhex(info.terminal_number)   # MAC1 covers the PSAM's EF0016 (§2.3)
        term.identify()           # a card of the profile, before the purse session (issue 17 item 1)
        serial = term.select()
        if hotlist is not None and serial in hotlist:
            raise CardHotlisted(serial)
        session = term.session
        date, time = _now_bcd(when or _dt.datetime.now())
        code: bytes | None = None
        if term.df.auth_code is not None:   # MOHURD (SPEC D7, MZT): the card's code, for the PSAM
            code = session.send(purse.get_auth_code(), expect=0x9000, what="GET DATA").data
            if len(code) != 9:   # SPEC D7: the 9-byte MOHURD code
                raise PurseError(wrong_length("GET DATA (MOHURD code)", "card", code, 9))
        if capp is not None and term.p2 != PurseKind.EP:
            raise PurseError("a CAPP purchase is made on an EP")
        name = f"INITIALIZE FOR {'CAPP ' if capp else ''}PURCHASE"
        init_cmd = purse.initialize_for_capp_purchase if capp is not None else purse.initialize_for_purchase
        r = session.send(init_cmd(term.p2, info.key_index, amount, term.terminal))
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, name)
        try:
            init = _known_algorithm(purse.PurchaseInit.parse(r.data), name)
        except InputError as exc:
            raise PurseError(str(exc)) from None
        ttype = pboc.TT_CAPP_PURCHASE if capp is not None else (0x05 if term.p2 == PurseKind.ED else 0x06)
        factor = walk.diversification_factor(serial)
        if code is not None:   # right before INIT SAM: the PSAM keeps a code for its next command only
            self.psam.authentication_message(code)   # (docs/psam.md "MOHURD code")
        sam = self.psam.init_for_purchase(
            random=init.random, counter=init.offline_counter, amount=amount, transaction_type=ttype, date=date,
            time=time, key_version=init.key_version, algorithm=init.algorithm, factors=self.factors(factor))
        if capp is not None:
            tag, record = capp
            rc = session.send(purse.update_capp_data_cache(tag, term._capp_file().sfi, record))
            if rc.sw != 0x9000:
                raise PurseRefused(rc.sw, "UPDATE CAPP DATA CACHE")
        def transaction(tac: str, recovered: bool) -> PsamTransaction:
            return PsamTransaction(
                card_serial=serial, card_counter=init.offline_counter, amount_fen=amount,
                balance_before_fen=init.balance, balance_after_fen=init.balance - amount, transaction_type=ttype,
                terminal_number=info.terminal_number, psam_serial=info.serial, ttsn=sam.ttsn_number,
                date=date.hex(), time=time.hex(), key_version=init.key_version, algorithm=init.algorithm,
                tac=tac, recovered=recovered, app=term.df.name)

        try:
            debit, recovered = self._debit(purse.debit_for_purchase(sam.ttsn, date, time, sam.mac1), ttype,
                                           init.offline_counter)
        except CardGone as gone:      # the card may have been debited: a grey record (docs/clearing.md)
            raise CardGone(str(gone), transaction("", False)) from None     # type: ignore[arg-type]
        tx = transaction(debit.tac.hex().upper(), recovered)
        try:
            self.psam.credit_for_purchase(debit.mac2)
        except CitycardError as exc:  # the card was debited: the transaction stands and is logged
            raise Mac2NotChecked(f"card {serial} was debited {amount / 100:.2f} yuan (TAC {tx.tac}), but the PSAM "
                                 f"did not check its MAC2 ({exc}); the transaction is logged for clearing, which "
                                 "checks its TAC", tx) from None
        return tx

    def _debit(self, cmd: CommandApdu, ttype: int, counter: int) -> tuple[purse.DebitResult, bool]:
        """DEBIT FOR PURCHASE; a lost answer is settled with GET TRANSACTION PROVE on the INIT
        counter (decision 3, SPEC D4, as :class:`~citycard.terminal.purse.PurseTerminal`): its
        MAC2 ‖ TAC then go to the PSAM like a normal answer; ``9406``: nothing was charged."""
        session = self.card.session
        try:
            r = session.send(cmd)
        except TransportError:
            return self._settle(ttype, counter), True
        if r.sw == 0x9302:
            raise PurseRefused(r.sw, "DEBIT FOR PURCHASE", message="DEBIT FOR PURCHASE: the card refused the PSAM's "
                               "MAC1 (9302): this PSAM does not hold the card's purchase master; nothing was charged")
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, "DEBIT FOR PURCHASE")
        try:
            return purse.DebitResult.parse(r.data), False
        except InputError as exc:
            raise PurseError(str(exc)) from None

    def _settle(self, ttype: int, counter: int) -> purse.DebitResult:
        """The lost DEBIT answer asked of the same card again (the host terminal's
        :meth:`~citycard.terminal.purse.PurseTerminal.reprove`: :class:`CardGone` when it does not
        come back or another card is there)."""
        r: ResponseApdu = self.card.reprove(ttype, counter)
        if r.sw == 0x9406:
            raise NotCompleted("the card lost power before the transaction completed: nothing was charged "
                               "(run it again)")
        if r.sw != 0x9000:
            raise PurseRefused(r.sw, "GET TRANSACTION PROVE")
        try:
            proof = purse.TransactionProof.parse(r.data)
        except InputError as exc:
            raise PurseError(f"GET TRANSACTION PROVE: {exc}") from None
        return purse.DebitResult(proof.tac, proof.mac)


def append_log(path: str | Path, tx: PsamTransaction) -> None:
    """Append ``tx`` to the terminal log ``path`` as clearing imports it (docs/clearing.md)."""
    from .txlog import append_record

    try:
        append_record(path, tx.record())
    except OSError as exc:
        raise InputError(f"--log {path}: {exc.strerror}") from None
