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
* SM4 (``alg="sm4"``, a purse key of algorithm id ``04``; docs/sm4.md, PSAM-SM4 §5.7): no
  public source gives the SM4 purse formulas, so these are citycard's decisions: the session
  key is SM4(K, the same 8 input bytes ‖ ``80 00 00 00 00 00 00 00``) (16 bytes); every MAC
  is the SM4 CBC-MAC, IV 0, padding ``80 00..`` to 16 bytes, left 4 bytes; the TAC key is
  the 16-byte DTK itself (L ⊕ R would give 8 bytes, no SM4 key).  Pinned by an independent
  SM4 written from GB/T 32907 in the tests, not by published purse vectors (none exist).

Amounts, balances and counters are ints here; their wire widths are 4 bytes for
amounts and balances, 2 for counters, 3 for an overdraw limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .cipher import Alg, block_size, check_key, ecb_encrypt, xor
from .mac import mac_alg1, pad

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
def _session_key(key: bytes, data8: bytes, alg: Alg = "des") -> bytes:
    """E(key, data8) for DES/3DES; SM4(key, data8 ‖ 80 00..) for SM4 (docs/sm4.md)."""
    check_key(key, alg, "purse key")
    if alg == "sm4":
        data8 = pad(data8, 2, 16)
    if not isinstance(key, (bytes, bytearray)):   # a key handle: the session key stays with its source
        if alg != "des":
            raise InputError("purse key: an SM4 session key is computed from a key held in this process only "
                             "(the key source gave a handle)")
        return key.derive_ecb(data8)  # type: ignore[attr-defined,no-any-return]
    return ecb_encrypt(key, data8, alg)


def load_session_key(dlk: bytes, random: bytes, online_counter: int, alg: Alg = "des") -> bytes:
    """SESLK (also the unload / overdraw session key with the 3D / 3C key)."""
    return _session_key(dlk, _need(random, 4, "random") + u16(online_counter) + b"\x80\x00", alg)


def purchase_session_key(dpk: bytes, random: bytes, offline_counter: int,
                         terminal_serial: bytes, alg: Alg = "des") -> bytes:
    """SESPK: the rightmost 2 bytes of the 4-byte terminal transaction serial."""
    _need(terminal_serial, 4, "terminal serial")
    return _session_key(dpk, _need(random, 4, "random") + u16(offline_counter) + terminal_serial[2:], alg)


def purse_mac(session_key: bytes, data: bytes, alg: Alg = "des") -> bytes:
    """The 4-byte MAC of MAC1/MAC2/MAC3/TAC: CBC-MAC, IV 0, pad 80.., left 4 bytes; single
    DES with an 8-byte session key, or SM4 with a 16-byte one (``alg="sm4"``)."""
    want = block_size(alg)
    if len(session_key) != want:
        raise InputError(f"session key: {len(session_key)} bytes, expected {want}")
    return mac_alg1(session_key, data, alg=alg)[:4]


def tac_key(dtk: bytes, alg: Alg = "des") -> bytes:
    """DTK_L ⊕ DTK_R for a 16-byte DES TAC key (an 8-byte key is used as is); an SM4 DTK
    is used whole (docs/sm4.md: L ⊕ R would be 8 bytes, no SM4 key)."""
    if alg == "sm4":
        check_key(dtk, "sm4", "TAC key")
        if not isinstance(dtk, (bytes, bytearray)):
            raise InputError("TAC key: an SM4 TAC is computed from a key held in this process only")
        return bytes(dtk)
    if len(dtk) == 8:
        return dtk
    _need(dtk, 16, "TAC key")
    if not isinstance(dtk, (bytes, bytearray)):   # a key handle: folded by its source
        return dtk.xor_halves()  # type: ignore[attr-defined,no-any-return]
    return xor(dtk[:8], dtk[8:])


# -------------------------------------------------------------------------- load
def load_mac1(ses: bytes, balance: int, amount: int, ttype: int, terminal: bytes, *, alg: Alg = "des") -> bytes:
    return purse_mac(ses, u32(balance, "balance") + u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal"),
                     alg)


def load_mac2(ses: bytes, amount: int, ttype: int, terminal: bytes, date: bytes, time: bytes, *,
              alg: Alg = "des") -> bytes:
    return purse_mac(ses, u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(date, 4, "date") + _need(time, 3, "time"), alg)


def load_tac(dtk: bytes, new_balance: int, online_counter: int, amount: int, ttype: int,
             terminal: bytes, date: bytes, time: bytes, *, alg: Alg = "des") -> bytes:
    return purse_mac(tac_key(dtk, alg), u32(new_balance, "balance") + u16(online_counter) + u32(amount)
                     + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(date, 4, "date") + _need(time, 3, "time"), alg)


# ---------------------------------------------------------------------- purchase
def purchase_mac1(ses: bytes, amount: int, ttype: int, terminal: bytes, date: bytes,
                  time: bytes, auth_code: bytes | None = None, *, alg: Alg = "des") -> bytes:
    data = (u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal")
            + _need(date, 4, "date") + _need(time, 3, "time"))
    if auth_code is not None:
        data += _need(auth_code, 9, "authentication code")
    return purse_mac(ses, data, alg)


def purchase_mac2(ses: bytes, amount: int, *, alg: Alg = "des") -> bytes:
    return purse_mac(ses, u32(amount), alg)


def purchase_tac(dtk: bytes, amount: int, ttype: int, terminal: bytes, terminal_serial: bytes,
                 date: bytes, time: bytes, *, alg: Alg = "des") -> bytes:
    return purse_mac(tac_key(dtk, alg), u32(amount) + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(terminal_serial, 4, "terminal serial")
                     + _need(date, 4, "date") + _need(time, 3, "time"), alg)


# ------------------------------------------------------------------------ unload
def unload_mac3(ses: bytes, new_balance: int, online_counter: int, amount: int, ttype: int,
                terminal: bytes, date: bytes, time: bytes, *, alg: Alg = "des") -> bytes:
    """MAC3 of DEBIT FOR UNLOAD (SPEC.md §2.2): same input shape as the load TAC."""
    return purse_mac(ses, u32(new_balance, "balance") + u16(online_counter) + u32(amount)
                     + bytes((ttype,)) + _need(terminal, 6, "terminal")
                     + _need(date, 4, "date") + _need(time, 3, "time"), alg)


# ---------------------------------------------------------------- whole exchanges
@dataclass(frozen=True, slots=True)
class PurseCryptogram:
    session_key: bytes
    mac1: bytes
    mac2: bytes
    tac: bytes


def load_cryptogram(dlk: bytes, dtk: bytes, *, random: bytes, counter: int, balance: int,
                    amount: int, terminal: bytes, date: bytes, time: bytes,
                    ttype: int = TT_EP_LOAD, alg: Alg = "des") -> PurseCryptogram:
    """Everything a load computes; ``balance`` is before the load, the TAC covers after."""
    ses = load_session_key(dlk, random, counter, alg)
    return PurseCryptogram(
        ses,
        load_mac1(ses, balance, amount, ttype, terminal, alg=alg),
        load_mac2(ses, amount, ttype, terminal, date, time, alg=alg),
        load_tac(dtk, balance + amount, counter, amount, ttype, terminal, date, time, alg=alg),
    )


def purchase_cryptogram(dpk: bytes, dtk: bytes, *, random: bytes, counter: int,
                        terminal_serial: bytes, amount: int, terminal: bytes, date: bytes,
                        time: bytes, ttype: int = TT_EP_PURCHASE,
                        auth_code: bytes | None = None, alg: Alg = "des") -> PurseCryptogram:
    ses = purchase_session_key(dpk, random, counter, terminal_serial, alg)
    return PurseCryptogram(
        ses,
        purchase_mac1(ses, amount, ttype, terminal, date, time, auth_code, alg=alg),
        purchase_mac2(ses, amount, alg=alg),
        purchase_tac(dtk, amount, ttype, terminal, terminal_serial, date, time, alg=alg),
    )


# ------------------------------------------------------------------ algorithm ids
#: the algorithm byte of a purse or TAC key record (byte 4, SPEC §1.4) for SM4 keys
#: (PSAM-SM4 §4.1: TY writes ``04`` for its SM4 key set); 00/01 are DES/3DES (SPEC §2.2, D8)
ALG_ID_SM4 = 0x04
DES_ALG_IDS = frozenset({0x00, 0x01})


def alg_of_id(alg_id: int) -> Alg | None:
    """The cipher family of a key's algorithm byte: ``des`` (00, 01), ``sm4`` (04), else None."""
    if alg_id in DES_ALG_IDS:
        return "des"
    if alg_id == ALG_ID_SM4:
        return "sm4"
    return None
