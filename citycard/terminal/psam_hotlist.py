"""A hotlisted card blocked by a terminal that holds no keys (PSAM-SM4.md §3.2, MZT): the
PSAM's application-maintenance master, diversified by the card serial, MACs the card's
APPLICATION BLOCK.

1. card: SELECT the purse application, read its serial; GET CHALLENGE 4 → R;
2. PSAM: INIT FOR DESCRYPT ``80 1A 25 01`` ‖ serial factor (usage ``25``: maintenance, one
   level, the compiled MZT helper's P1 for every flow; decision 5d of docs/psam.md);
3. PSAM: CIPHER DATA ``80 FA 05 00 10`` R ‖ 00000000 ‖ ``841E00000480 0000`` → MAC;
4. card: ``84 1E 00 P2 04`` MAC (P2 ``00`` temporary, ``01`` permanent).

A card whose line protection is SM4 (the profile's ``[card] line_protection = "sm4"``,
docs/sm4.md): the PSAM's SM4 maintenance master, index ``41`` (algorithm byte 04), and the
CIPHER DATA input with a 16-byte IV and 16-byte padding; the PSAM answers the SM4 MAC.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from ..commands import fmcos, psam, walk
from ..spec import CardSpec
from ..transport import CardSession
from .psam_purchase import Psam, PsamError, PsamRefused, wrong_length
from .purse import PurseError, PurseRefused, PurseTerminal
from .txlog import TxRecord

MAINTENANCE_USAGE = 0x25     # maintenance, one level (MZT)
MAINTENANCE_INDEX = 0x01
#: the index of the SM4 maintenance master (decision, docs/sm4.md: TY numbers its SM4 keys 41,
#: PSAM-SM4 §4.1; profiles/psam-sm4.toml)
SM4_MAINTENANCE_INDEX = 0x41
_DEFAULT_INDEX = {"des": MAINTENANCE_INDEX, "sm4": SM4_MAINTENANCE_INDEX}


@dataclass(frozen=True, slots=True)
class BlockResult:
    card_serial: str
    application: str
    permanent: bool
    terminal_number: str
    psam_serial: str = ""
    date: str = ""            # YYYYMMDD
    time: str = ""            # HHMMSS

    def record(self) -> TxRecord:
        """The block as a terminal-log event (kind ``block``, no money, no TAC) that clearing
        files and the card register learns from (docs/clearing.md, docs/lifecycle.md)."""
        return TxRecord("block", self.application, self.card_serial, 0, 0, 0, 0, self.terminal_number.upper(), None,
                        self.date, self.time, None, "ok", "psam", 0, self.psam_serial or None)


def block_application(card: CardSession, psam_session: CardSession, spec: CardSpec, app: str | None = None, *,
                      permanent: bool = False, usage: int = MAINTENANCE_USAGE,
                      index: int | None = None) -> BlockResult:
    """Block the card's purse application with a MAC the PSAM computes (no key here).
    ``index``: the PSAM's maintenance master, by default :data:`MAINTENANCE_INDEX` (3DES line
    protection) or :data:`SM4_MAINTENANCE_INDEX` (SM4, docs/sm4.md)."""
    from ..cos import check_line_protection

    alg = spec.line_alg
    if index is None:
        index = _DEFAULT_INDEX[alg]
    sam = Psam(psam_session)
    info = sam.open()
    term = PurseTerminal(card, spec, None, app)  # type: ignore[arg-type]   # selection and serial only
    term.identify()               # a card of the profile before any MAC'd command (issue 17 item 1)
    serial = term.select()
    check_line_protection(card.atr, alg)     # no MAC of the other cipher reaches the card's DAMK
    challenge = card.get_challenge(4)
    if len(challenge) != 4:
        raise PurseError(wrong_length("GET CHALLENGE", "card", challenge, 4))
    r = psam_session.send(psam.init_for_descrypt(usage, index, [walk.diversification_factor(serial)]))
    if r.sw != 0x9000:   # e.g. 6A88: this PSAM has no maintenance master at that index (no SM4 one at 41)
        cipher = f" ({'SM4' if alg == 'sm4' else '3DES'} line protection)" if index == _DEFAULT_INDEX[alg] else ""
        raise PsamRefused(r.sw, f"PSAM INIT FOR DESCRYPT with the maintenance master at index {index:02X}{cipher}")
    block = fmcos.app_block(permanent)
    r = psam_session.send(psam.cipher_data(psam.CipherMode.MAC_ONLY, psam.line_mac_input(block, challenge, alg)))
    if r.sw != 0x9000:
        raise PsamRefused(r.sw, "PSAM CIPHER DATA")
    if len(r.data) != 4:
        raise PsamError(wrong_length("PSAM CIPHER DATA", "PSAM", r.data, 4, "the MAC"))
    r = card.send(psam.with_line_mac(block, r.data))
    if r.sw != 0x9000:
        raise PurseRefused(r.sw, "APPLICATION BLOCK")
    now = _dt.datetime.now()
    return BlockResult(serial, term.df.name, permanent, info.terminal_number, info.serial, now.strftime("%Y%m%d"),
                       now.strftime("%H%M%S"))
