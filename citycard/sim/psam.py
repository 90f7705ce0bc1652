"""The simulated PSAM (PSAM-SM4.md §1–§2): the FMCOS core of the simulated card with the
terminal-side purse commands instead of the card's purse.

* INIT SAM FOR PURCHASE ``80 70``: the card's DPK diversified from the purchase master by
  the factors, SESPK, MAC1 over the PSAM's own terminal number (EF0016), and a fresh TTSN;
* CREDIT SAM FOR PURCHASE ``80 72``: the card's MAC2 checked;
* MOHURD AUTHENTICATION MESSAGE ``80 CA``: the card's code joins the next MAC1 (SPEC D7);
* INIT FOR DESCRYPT ``80 1A`` / CIPHER DATA ``80 FA``: MACs and encryption under a
  diversified temporary key (the MAC of an APPLICATION BLOCK for a hotlisted card, §3.2).

PSAM keys are added with the FMCOS WRITE KEY (``80 D4 01 index`` plain, or ``84 D4`` with
the DF master's MAC) whose record's first byte is the PSAM **key usage byte** (levels in
b8–b6, type in b5–b1: PSAM-SM4.md §1.2) instead of an FMCOS key type: usage ‖ use AC ‖
change AC ‖ version ‖ algorithm ‖ key.  The index (P2) of a purchase key is the key version
the card names in its INITIALIZE answer (PSAMB); its algorithm byte (``00`` 3DES, ``01`` DES,
``04`` SM4: PSAMB, PSAM-SM4.md §4.1) must be the family of the card's INITIALIZE algorithm
byte, and an SM4 purchase master makes the SM4 purse's DPK, SESPK, MAC1 and MAC2
(docs/sm4.md, docs/psam.md "SM4 PSAM").  The TTSN lives in EF0019 of the ADF and is
written through the transactional NVM before MAC1 leaves the PSAM, so it never repeats, not
even over power loss (docs/psam.md lists every decision).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from ..apdu import CommandApdu
from ..crypto import pboc
from ..crypto.cipher import Alg, block_size, cbc_mac_last, ecb_decrypt, ecb_encrypt
from ..crypto.mac import pad
from ..keytypes import is_psam_usage as is_psam_key
from .card import CARD_CLASSES, SimCard
from .core import PROPRIETARY, PROPRIETARY_PLAIN, CardCore, Route, SwError, u
from .fs import DF, BinaryEF, KeyRecord
from .purse import key_alg   # the cipher family by the algorithm byte (04: SM4; PSAM-SM4.md §4.1)

# key usage types (b5–b1 of the usage byte, KSY list; PSAM-SM4.md §1.2)
U_PURCHASE = 0x02
U_MAINTENANCE = 0x05
U_MAC = 0x06
U_ENCRYPT = 0x07
U_MAC_ENCRYPT = 0x08
PSAM_KEY_TYPES = frozenset(range(0x00, 0x10))   # KSY 00–0F; 10–1F would collide with FMCOS types
MAC_TYPES = frozenset({U_MAINTENANCE, U_MAC, U_MAC_ENCRYPT})
ENCRYPT_TYPES = frozenset({U_ENCRYPT, U_MAC_ENCRYPT})

FID_TERMINAL = 0x0016   # MF: terminal number, 6 B BCD
FID_TTSN = 0x0019       # ADF: TTSN, 4 B
TTSN_MAX = 0xFFFFFFFF


# CIPHER DATA P1 (KSY): encryption, or the MAC's place in a chain
_ENC_LAST, _ENC_MORE = 0x00, 0x02
_MAC_LAST, _MAC_NEXT, _MAC_ONLY, _MAC_FIRST = 0x01, 0x03, 0x05, 0x07
_MAC_MODES = frozenset({_MAC_LAST, _MAC_NEXT, _MAC_ONLY, _MAC_FIRST})


def diversified(master: bytes, factors: bytes, alg: Alg = "des") -> bytes:
    """The key ``master`` diversified by ``factors`` (8 bytes each, lowest level first, as
    the terminal sends them: PSAM-SM4.md §2.2).  Decision 2 (docs/psam.md): the last factor
    is applied first, DK = DIV(…DIV(MK, f_n)…, f_1), i.e. PBOC's "city first, then card".
    ``alg="sm4"``: each level is SM4(K, F ‖ ¬F) (docs/sm4.md item 4)."""
    n = len(factors) // 8
    if n == 0:
        return master
    top_first = b"".join(factors[8 * i: 8 * i + 8] for i in reversed(range(n)))
    return pboc.diversify(master, top_first, n, alg)


def pad_last(data: bytes, block: int = 8) -> bytes:
    """Decision 1 (docs/psam.md, PSAM-SM4.md §2.1 inferred): an incomplete last block is
    padded with ``80 00..``; an aligned one gets nothing (MZT/KSD/SUM pre-pad, CSA does not).
    ``block`` 16 for an SM4 key (docs/sm4.md)."""
    return pad(data, 2, block) if len(data) % block else data


@dataclass(slots=True)
class SamPurchase:
    """A purchase between INIT SAM FOR PURCHASE and CREDIT SAM FOR PURCHASE (transient)."""

    session_key: bytes
    amount: int
    alg: Alg = "des"


@dataclass(slots=True)
class SamTempKey:
    """The temporary key of INIT FOR DESCRYPT and the CBC state of an open MAC chain."""

    usage: int
    key: bytes = field(repr=False)      # the diversified key: never shown
    chain: bytes | None = None
    alg: Alg = "des"


class PsamCommands(CardCore):
    """The PSAM transaction commands (PSAM-SM4.md §2.1)."""

    sam_purchase: SamPurchase | None
    sam_temp: SamTempKey | None
    sam_code: bytes | None
    sam_code_in_hand: bytes | None

    def _reset_state(self) -> None:
        super()._reset_state()
        self.sam_purchase = None
        self.sam_temp = None
        self.sam_code = None      # MOHURD code the last command gave, for the next MAC1
        self.sam_code_in_hand = None

    def _dispatch(self, cmd: CommandApdu, chal, sess) -> bytes:
        """Decision (docs/psam.md "MOHURD code"): the code of AUTHENTICATION MESSAGE lives for
        the next command only (as the card's challenge and purse session, GET RESPONSE aside):
        INIT SAM FOR PURCHASE takes it whatever its outcome; any other command, a reset or a
        power-off discards it, so an abandoned purchase's code never joins a later MAC1."""
        self.sam_code_in_hand, self.sam_code = self.sam_code, None
        try:
            return super()._dispatch(cmd, chal, sess)  # type: ignore[misc,no-any-return]
        finally:
            self.sam_code_in_hand = None

    # ------------------------------------------------------------------ keys
    def _write_key(self, cmd: CommandApdu, chal, sess) -> bytes:
        """WRITE KEY: an FMCOS record goes to the card's WRITE KEY; a record whose first byte
        is a PSAM usage byte is added here (plain ``80 D4 01`` or ``84 D4 01`` with the DF
        master's MAC).  Decision: a PSAM key is added or replaced, never updated in place."""
        body = cmd.data[:-4] if cmd.cla & 0x04 and len(cmd.data) > 4 else cmd.data
        if cmd.p1 != 0x01 or not body or not is_psam_key(body[0]):
            return super()._write_key(cmd, chal, sess)  # type: ignore[misc,no-any-return]
        self._check_app()
        kf = self.df.keyfile
        if kf is None:
            raise SwError(0x6A82)
        if cmd.cla & 0x04:
            body = self._mac_checked(cmd, chal, self._key(0x39, 0))
        if len(body) not in (5 + 8, 5 + 16) or (body[4] == pboc.ALG_ID_SM4 and len(body) != 5 + 16):
            raise SwError(0x6700)   # an SM4 key is 16 bytes
        if body[0] & 0x1F not in PSAM_KEY_TYPES:
            raise SwError(0x6A80)
        if not (self.free or self._ac(kf.add_ac)):
            raise SwError(0x6982)
        key = KeyRecord(body[0], cmd.p2, body[1], body[2], body[3], body[4], bytes(body[5:]))
        replaced = kf.get(key.base, key.kid)
        if key.size > kf.free() + (replaced.size if replaced is not None else 0):
            raise SwError(0x6A84)
        with self._commit():
            self.nvm.put(kf.keys, (key.base, key.kid), key)
        return b""

    def _psam_key(self, match, missing: int) -> KeyRecord:
        kf = self.df.keyfile
        for key in (kf.keys.values() if kf is not None else ()):
            if is_psam_key(key.ktype) and match(key):
                if not self._ac(key.usage_ac):
                    raise SwError(0x6982)
                return key
        raise SwError(missing)

    # ------------------------------------------------------------------ files
    def _binary(self, df: DF, fid: int, size: int) -> BinaryEF:
        ef = df.children.get(fid)
        if not isinstance(ef, BinaryEF) or len(ef.data) < size:
            raise SwError(0x6985)   # Decision: a PSAM without its terminal number / TTSN file
        return ef

    # ------------------------------------------------------------------ purchase
    def _sam_auth_message(self, cmd: CommandApdu, chal, sess) -> bytes:
        """MOHURD ``80 CA 00 00 09`` ‖ the card's code (JSB).  Decision: any ``85 ...`` code is
        taken (no source says what the PSAM checks; ``6300`` for anything else) and joins the
        MAC1 of the next command if that is INIT SAM FOR PURCHASE (:meth:`_dispatch`)."""
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        if len(cmd.data) != 9:
            raise SwError(0x6700)
        if cmd.data[0] != 0x85:
            raise SwError(0x6300)
        self.sam_code = bytes(cmd.data)
        return b""

    def _sam_purchase_init(self, cmd: CommandApdu, chal, sess) -> bytes:
        """INIT SAM FOR PURCHASE (PSAM-SM4.md §2.1, §2.3): data = random 4 ‖ counter 2 ‖ amount 4
        ‖ type 1 ‖ date 4 ‖ time 3 ‖ key version 1 ‖ algorithm 1 ‖ n×8 factors → TTSN ‖ MAC1."""
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        d = cmd.data
        n, rest = divmod(len(d) - 20, 8)
        if len(d) < 28 or rest or n > 3:
            raise SwError(0x6700)
        self._check_app()
        random, counter, amount, ttype = d[0:4], u(d[4:6]), u(d[6:10]), d[10]
        date, time, version, algorithm, factors = d[11:15], d[15:18], d[18], d[19], d[20:]
        # PSAMB: the purchase key is the one of the card's key version; 9403 when none
        key = self._psam_key(lambda k: k.ktype & 0x1F == U_PURCHASE and k.kid == version, 0x9403)
        if key.ktype >> 5 != n:
            raise SwError(0x6700)   # Decision: as many factors as the usage byte's levels
        alg = pboc.alg_of_id(algorithm)   # PSAMB: 00 3DES, 01 DES; 04 SM4 (docs/sm4.md item 5)
        if alg is None or alg != key_alg(key):
            raise SwError(0x6A80)   # Decision (docs/psam.md): the card's algorithm must be the key's
        terminal = self._binary(self.mf, FID_TERMINAL, 6).data[:6]
        ttsn_ef = self._binary(self.df, FID_TTSN, 4)
        number = u(ttsn_ef.data[:4])   # decision 6: EF0019 holds the next TTSN; returned, then incremented
        if number == TTSN_MAX:
            raise SwError(0x9402)   # Decision: the TTSN never wraps (as the card's counters)
        ttsn = number.to_bytes(4, "big")
        dpk = diversified(key.value, factors, alg)
        if algorithm == 0x01:
            dpk = dpk[:8]            # Decision: a DES card key is the left half (as the planner writes it)
        ses = pboc.purchase_session_key(dpk, random, counter, ttsn, alg)
        code = self.sam_code_in_hand   # the previous command's, if it was AUTHENTICATION MESSAGE
        mac1 = pboc.purchase_mac1(ses, amount, ttype, terminal, date, time, code, alg=alg)
        with self.nvm.transaction():   # the TTSN is spent before MAC1 leaves the PSAM
            self.nvm.set(ttsn_ef, "data", (number + 1).to_bytes(4, "big") + ttsn_ef.data[4:])
            if not ttsn_ef.written:
                self.nvm.set(ttsn_ef, "written", True)
        self.sam_purchase = SamPurchase(ses, amount, alg)
        return ttsn + mac1

    def _sam_purchase_credit(self, cmd: CommandApdu, chal, sess) -> bytes:
        """CREDIT SAM FOR PURCHASE: the card's MAC2 = MAC(SESPK, amount) → ``9000``; a wrong
        one ``9302`` (Decision: the card's "MAC error" SW).  One check per INIT."""
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        if len(cmd.data) != 4:
            raise SwError(0x6700)
        purchase, self.sam_purchase = self.sam_purchase, None
        if purchase is None:
            raise SwError(0x6901)
        if not hmac.compare_digest(pboc.purchase_mac2(purchase.session_key, purchase.amount, alg=purchase.alg),
                                   cmd.data):
            raise SwError(0x9302)
        return b""

    # ------------------------------------------------------------------ MAC / encryption
    def _init_for_descrypt(self, cmd: CommandApdu, chal, sess) -> bytes:
        """INIT FOR DESCRYPT ``80 1A usage index`` [8n factors]: the key of that usage byte
        and index, diversified by the factors, becomes the temporary key."""
        d = cmd.data
        if len(d) % 8 or len(d) > 24:
            raise SwError(0x6700)
        self._check_app()
        key = self._psam_key(lambda k: k.ktype == cmd.p1 and k.kid == cmd.p2, 0x6A88)
        if key.ktype >> 5 != len(d) // 8:
            raise SwError(0x6700)
        if key.ktype & 0x1F not in MAC_TYPES | ENCRYPT_TYPES:
            raise SwError(0x6985)
        # an SM4 key (algorithm byte 04) serves the cards whose line protection is SM4: SM4
        # diversification, then SM4 CIPHER DATA (docs/sm4.md "SM4 line protection")
        alg = key_alg(key)
        self.sam_temp = SamTempKey(key.ktype & 0x1F, diversified(key.value, d, alg), alg=alg)
        return b""

    def _cipher_data(self, cmd: CommandApdu, chal, sess) -> bytes:
        """CIPHER DATA ``80 FA P1 00`` (KSY): P1 00/02 encrypt (last / more), 05 MAC of one
        part, 07/03/01 first/next/last part of a MAC chain; a chain's first part starts with
        the 8-byte IV.  MAC: ISO 9797-1 alg. 3 for a 16-byte key (alg. 1 for 8), 4 bytes, as
        the card's line MAC (CSB vector); encryption: (3)DES-ECB.  Padding: :func:`pad_last`.
        An SM4 temporary key (docs/sm4.md): 16-byte blocks, a 16-byte IV (the card's challenge
        ‖ zeros, as the card's SM4 line MAC), SM4-CBC-MAC left 4 bytes, SM4-ECB."""
        if cmd.p2:
            raise SwError(0x6A86)
        mode, d, temp = cmd.p1, bytes(cmd.data), self.sam_temp
        if mode not in _MAC_MODES and mode not in (_ENC_LAST, _ENC_MORE):
            raise SwError(0x6A86)
        if temp is None:
            raise SwError(0x6985)
        final = mode in (_ENC_LAST, _MAC_LAST, _MAC_ONLY)
        bs = block_size(temp.alg)
        if not d or (not final and len(d) % bs):
            raise SwError(0x6700)
        if mode in (_ENC_LAST, _ENC_MORE):
            if temp.usage not in ENCRYPT_TYPES:
                raise SwError(0x6985)
            return ecb_encrypt(temp.key, pad_last(d, bs), temp.alg)
        if temp.usage not in MAC_TYPES:
            raise SwError(0x6985)
        if mode in (_MAC_ONLY, _MAC_FIRST):
            if len(d) < bs + (1 if final else bs):
                raise SwError(0x6700)
            state, d = d[:bs], d[bs:]
        elif temp.chain is None:
            raise SwError(0x6985)   # a next/last part without a first
        else:
            state = temp.chain
        if temp.alg == "sm4":
            state = cbc_mac_last(temp.key, pad_last(d, bs) if final else d, state, "sm4")
            temp.chain = None if final else state
            return state[:4] if final else b""
        left = temp.key[:8]
        state = cbc_mac_last(left, pad_last(d) if final else d, state)
        if not final:
            temp.chain = state
            return b""
        temp.chain = None
        if len(temp.key) == 16:   # ISO 9797-1 alg. 3: the last block through K_R⁻¹, K_L
            state = ecb_encrypt(left, ecb_decrypt(temp.key[8:], state))
        return state[:4]


_NOT_ON_A_PSAM = (0x50, 0x52, 0x54, 0x58, 0x5A, 0x5C)   # the card's purse: a PSAM has none


class SimPsam(PsamCommands, SimCard):
    """A simulated PSAM: the FMCOS file system, keys and security of :class:`SimCard` with
    the PSAM commands (model ``psam``)."""

    COMMANDS = {
        **{ins: routes for ins, routes in SimCard.COMMANDS.items() if ins not in _NOT_ON_A_PSAM},
        0x70: (Route("_sam_purchase_init", PROPRIETARY_PLAIN),),
        0x72: (Route("_sam_purchase_credit", PROPRIETARY_PLAIN),),
        0xCA: (Route("_sam_auth_message", PROPRIETARY_PLAIN),),
        0x1A: (Route("_init_for_descrypt", PROPRIETARY_PLAIN),),
        0xFA: (Route("_cipher_data", PROPRIETARY_PLAIN),),
        0xD4: (Route("_write_key", PROPRIETARY),),
    }


CARD_CLASSES["psam"] = SimPsam
