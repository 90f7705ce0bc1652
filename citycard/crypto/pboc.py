"""PBOC ED/EP cryptography as FMCOS implements it (SPEC.md §2.2, §2.4, D6–D8).

* Key diversification (§2.4): DK = E(MK, F) ‖ E(MK, ~F) with F the rightmost 8
  bytes of the factor; multi-level repeats it with the previous DK as key.  For
  SM4 masters the single 16-byte block F ‖ ~F is enciphered (PBOC 3.0 style).
* Session keys: SESLK = E(DLK, random4 ‖ online counter2 ‖ 8000);
  SESPK = E(DPK, random4 ‖ offline counter2 ‖ terminal serial[-2:]).
* MAC1/MAC2/MAC3/TAC: single-DES CBC-MAC, IV 0, padding 80 00.., first 4 bytes,
  with the 8-byte session key; the TAC key is DTK_L ⊕ DTK_R (D6).
* MOHURD / CJ/T 166 (D7): the 9-byte authentication code from ``80 CA 00 00 09``
  is appended to the purchase MAC1 input when the application enables it.

Amounts, balances and counters are ints here; their wire widths are 4 bytes for
amounts and balances, 2 for counters, 3 for an overdraw limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .cipher import Alg, check_key, ecb_encrypt, xor
from .mac import mac_alg1

# Transaction types (SPEC.md §2.1)
TT_ED_LOAD = 0x01
TT_EP_LOAD = 0x02
TT_UNLOAD = 0x03
TT_WITHDRAW = 0x04
TT_ED_PURCHASE = 0x05
TT_EP_PURCHASE = 0x06
TT_OVERDRAW = 0x07
TT_CAPP_PURCHASE = 0x09


def _need(value: bytes, n: int, what: str) -> bytes:
    if len(value) != n:
        raise InputError(f"{what}: {len(value)} bytes, expected {n}")
    return value


def u32(value: int, what: str = "amount") -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise InputError(f"{what} {value} does not fit in 4 bytes")
    return value.to_bytes(4, "big")


def u16(value: int, what: str = "counter") -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise InputError(f"{what} {value} does not fit in 2 bytes")
    return value.to_bytes(2, "big")


# --------------------------------------------------------------- diversification
def diversify_once(master: bytes, factor: bytes, alg: Alg = "des") -> bytes:
    """One level of PBOC diversification with the rightmost 8 bytes of ``factor``."""
    check_key(master, alg, "master key")
    if len(factor) < 8:
        raise InputError(f"diversification factor: {len(factor)} bytes, needs at least 8")
    f = factor[-8:]
    nf = bytes(b ^ 0xFF for b in f)
    if alg == "sm4":
        return ecb_encrypt(master, f + nf, "sm4")
    if len(master) == 8:
        raise InputError("master key: diversification needs a 16-byte key (2-key 3DES)")
    return ecb_encrypt(master, f, alg) + ecb_encrypt(master, nf, alg)


def diversify(master: bytes, factor: bytes, levels: int = 1, alg: Alg = "des") -> bytes:
    """Multi-level diversification.

    With ``levels`` = 1 the rightmost 8 bytes of ``factor`` are used.  With more
    levels ``factor`` holds one 8-byte factor per level, first level first
    (e.g. city code, then card serial), and must be exactly ``8 * levels`` bytes.
    """
    if levels < 1:
        raise InputError(f"levels {levels}: must be at least 1")
    if levels == 1:
        return diversify_once(master, factor, alg)
    if len(factor) != 8 * levels:
        raise InputError(
            f"diversification factor: {len(factor)} bytes, {levels} levels need {8 * levels}"
        )
    key = master
    for i in range(levels):
        key = diversify_once(key, factor[8 * i: 8 * i + 8], alg)
    return key


# ------------------------------------------------------------------- session keys
def _session_key(key: bytes, data8: bytes) -> bytes:
    check_key(key, "des", "purse key")
    if not isinstance(key, (bytes, bytearray)):   # a key handle: the session key stays with its source
        return key.derive_ecb(data8)  # type: ignore[attr-defined,no-any-return]
    return ecb_encrypt(key, data8)


def load_session_key(dlk: bytes, random: bytes, online_counter: int) -> bytes:
    """SESLK (also the unload / overdraw session key with the 3D / 3C key)."""
    return _session_key(dlk, _need(random, 4, "random") + u16(online_counter) + b"\x80\x00")


def purchase_session_key(dpk: bytes, random: bytes, offline_counter: int,
                         terminal_serial: bytes) -> bytes:
    """SESPK: the rightmost 2 bytes of the 4-byte terminal transaction serial."""
    _need(terminal_serial, 4, "terminal serial")
    return _session_key(dpk, _need(random, 4, "random") + u16(offline_counter) + terminal_serial[2:])


def purse_mac(session_key: bytes, data: bytes) -> bytes:
    """The 4-byte MAC of MAC1/MAC2/MAC3/TAC: single-DES CBC-MAC, IV 0, pad 80.."""
    if len(session_key) != 8:
        raise InputError(f"session key: {len(session_key)} bytes, expected 8")
    return mac_alg1(session_key, data)[:4]


def tac_key(dtk: bytes) -> bytes:
    """DTK_L ⊕ DTK_R for a 16-byte TAC key (an 8-byte key is used as is)."""
    if len(dtk) == 8:
        return dtk
    _need(dtk, 16, "TAC key")
    if not isinstance(dtk, (bytes, bytearray)):   # a key handle: folded by its source
        return dtk.xor_halves()  # type: ignore[attr-defined,no-any-return]
    return xor(dtk[:8], dtk[8:])


# -------------------------------------------------------------------------- load
def load_mac1(ses: bytes, balance: int, amount: int, ttype: int, terminal: bytes) -> bytes:
    return purse_mac(ses, u32(balance, "balance") + u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal"))


def load_mac2(ses: bytes, amount: int, ttype: int, terminal: bytes, date: bytes, time: bytes) -> bytes:
    return purse_mac(ses, u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(date, 4, "date") + _need(time, 3, "time"))


def load_tac(dtk: bytes, new_balance: int, online_counter: int, amount: int, ttype: int,
             terminal: bytes, date: bytes, time: bytes) -> bytes:
    return purse_mac(tac_key(dtk), u32(new_balance, "balance") + u16(online_counter) + u32(amount)
                     + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(date, 4, "date") + _need(time, 3, "time"))


# ---------------------------------------------------------------------- purchase
def purchase_mac1(ses: bytes, amount: int, ttype: int, terminal: bytes, date: bytes,
                  time: bytes, auth_code: bytes | None = None) -> bytes:
    data = (u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal")
            + _need(date, 4, "date") + _need(time, 3, "time"))
    if auth_code is not None:
        data += _need(auth_code, 9, "authentication code")
    return purse_mac(ses, data)


def purchase_mac2(ses: bytes, amount: int) -> bytes:
    return purse_mac(ses, u32(amount))


def purchase_tac(dtk: bytes, amount: int, ttype: int, terminal: bytes, terminal_serial: bytes,
                 date: bytes, time: bytes) -> bytes:
    return purse_mac(tac_key(dtk), u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(terminal_serial, 4, "terminal serial")
                     + _need(date, 4, "date") + _need(time, 3, "time"))


# ------------------------------------------------------------------------ unload
def unload_mac3(ses: bytes, new_balance: int, online_counter: int, amount: int, ttype: int,
                terminal: bytes, date: bytes, time: bytes) -> bytes:
    """MAC3 of DEBIT FOR UNLOAD (SPEC.md §2.2): same input shape as the load TAC."""
    return purse_mac(ses, u32(new_balance, "balance") + u16(online_counter) + u32(amount)
                     + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(date, 4, "date") + _need(time, 3, "time"))


# ---------------------------------------------------------------- whole exchanges
@dataclass(frozen=True, slots=True)
class PurseCryptogram:
    session_key: bytes
    mac1: bytes
    mac2: bytes
    tac: bytes


def load_cryptogram(dlk: bytes, dtk: bytes, *, random: bytes, counter: int, balance: int,
                    amount: int, terminal: bytes, date: bytes, time: bytes,
                    ttype: int = TT_EP_LOAD) -> PurseCryptogram:
    """Everything a load computes; ``balance`` is before the load, the TAC covers after."""
    ses = load_session_key(dlk, random, counter)
    return PurseCryptogram(
        ses,
        load_mac1(ses, balance, amount, ttype, terminal),
        load_mac2(ses, amount, ttype, terminal, date, time),
        load_tac(dtk, balance + amount, counter, amount, ttype, terminal, date, time),
    )


def purchase_cryptogram(dpk: bytes, dtk: bytes, *, random: bytes, counter: int,
                        terminal_serial: bytes, amount: int, terminal: bytes, date: bytes,
                        time: bytes, ttype: int = TT_EP_PURCHASE,
                        auth_code: bytes | None = None) -> PurseCryptogram:
    ses = purchase_session_key(dpk, random, counter, terminal_serial)
    return PurseCryptogram(
        ses,
        purchase_mac1(ses, amount, ttype, terminal, date, time, auth_code),
        purchase_mac2(ses, amount),
        purchase_tac(dtk, amount, ttype, terminal, terminal_serial, date, time),
    )
