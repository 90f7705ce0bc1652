"""Line protection (secure messaging) of a command, FMCOS style (SPEC.md §1.4, §1.6, D6).

* The protected command sets CLA b3 (``00``→``04``, ``80``→``84``).
* MAC input: ``CLA INS P1 P2 (Lc+4) ‖ data`` padded with ``80 00..`` (always).
  IV = 4-byte challenge ‖ ``00000000`` (an 8-byte challenge is used as is).
  An 8-byte key gives ISO 9797-1 algorithm 1 (DES), a 16-byte key algorithm 3
  (retail MAC); the MAC is the leftmost 4 bytes.
* Enciphered data: ``LD ‖ data ‖ 80 00..`` ECB-enciphered with the same key
  (DES or 3DES by key length).  The ``80`` is always added, as for the MAC.
* ``alg="sm4"`` (a card whose COS does SM4 line protection, docs/sm4.md): the same with
  16-byte blocks and keys, SM4-CBC-MAC (IV = challenge ‖ zeros to 16) and SM4-ECB (TY's
  ``sm4_cal_mac`` and SM4 key load, PSAM-SM4 §4.1).

The two cryptograms of the security keys that are no line protection are here as well:
EXTERNAL AUTHENTICATE (:func:`auth_cryptogram`) and RELOAD PIN (:func:`pin_reload_mac`).
"""

from __future__ import annotations

import hmac

from ..apdu import CommandApdu
from ..errors import InputError
from .cipher import Alg, check_key, ecb_decrypt, ecb_encrypt
from .mac import mac_alg1, mac_alg3, pad, unpad2


def _iv(challenge: bytes, bs: int) -> bytes:
    if len(challenge) not in (4, 8, 16) or len(challenge) > bs:
        raise InputError(f"challenge: {len(challenge)} bytes, expected 4 or {bs}")
    return challenge + bytes(bs - len(challenge))


def line_mac(key: bytes, challenge: bytes, data: bytes, alg: Alg = "des") -> bytes:
    """The 4-byte line-protection MAC of ``data`` (D6)."""
    check_key(key, alg, "line-protection key")
    if alg == "sm4":
        return mac_alg1(key, data, iv=_iv(challenge, 16), alg="sm4")[:4]
    iv = _iv(challenge, 8)
    if len(key) == 8:
        return mac_alg1(key, data, iv=iv)[:4]
    if len(key) == 16:
        return mac_alg3(key, data, iv=iv)[:4]
    raise InputError("line-protection key: 24-byte keys are not used by FMCOS")


def encipher(key: bytes, data: bytes, alg: Alg = "des") -> bytes:
    """``E(LD ‖ data ‖ 80 00..)`` in ECB."""
    if len(data) > 255:
        raise InputError(f"data of {len(data)} bytes is too long to encipher (LD is one byte)")
    bs = 16 if alg == "sm4" else 8
    return ecb_encrypt(key, pad(bytes((len(data),)) + data, 2, bs), alg)


def decipher(key: bytes, ciphertext: bytes, alg: Alg = "des") -> bytes:
    """Inverse of :func:`encipher`; raises :class:`InputError` on bad LD or padding."""
    plain = ecb_decrypt(key, ciphertext, alg)
    ld = plain[0]
    body = unpad2(plain[1:])
    if ld != len(body):
        raise InputError(f"deciphered LD {ld} does not match {len(body)} data bytes")
    return body


def protect(cmd: CommandApdu, key: bytes, challenge: bytes, *, encrypt: bool = False,
            alg: Alg = "des") -> CommandApdu:
    """The line-protected form of ``cmd``: CLA|04, data enciphered if asked, MAC appended."""
    data = encipher(key, cmd.data, alg) if encrypt and cmd.data else cmd.data
    lc = len(data) + 4
    if lc > 255:
        raise InputError(f"protected command data of {lc} bytes exceeds a short APDU")
    cla = cmd.cla | 0x04
    mac = line_mac(key, challenge, bytes((cla, cmd.ins, cmd.p1, cmd.p2, lc)) + data, alg)
    return CommandApdu(cla, cmd.ins, cmd.p1, cmd.p2, data + mac, cmd.ne, sensitive=cmd.sensitive)


def check_protected(cmd: CommandApdu, key: bytes, challenge: bytes, alg: Alg = "des") -> bytes:
    """Card side: verify the MAC of a protected command; return its (still enciphered) data.

    Raises :class:`InputError` when the command is too short or the MAC is wrong.
    """
    if len(cmd.data) < 4:
        raise InputError("protected command carries no MAC")
    body, mac = cmd.data[:-4], cmd.data[-4:]
    header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2, len(cmd.data)))
    if not hmac.compare_digest(line_mac(key, challenge, header + body, alg), mac):
        raise InputError("line-protection MAC mismatch")
    return body


def auth_cryptogram(key: bytes, challenge: bytes, alg: Alg = "des") -> bytes:
    """The EXTERNAL AUTHENTICATE cryptogram: ``E_K(challenge ‖ 00..)`` over one block, all of
    it (SPEC §1.5: 8 bytes, DES or 3DES by key length).  SM4 (docs/sm4.md, decision "EXTERNAL
    AUTHENTICATE with an SM4 master"): SM4(K, challenge ‖ zeros to 16), the 16 bytes sent."""
    bs = 16 if alg == "sm4" else 8
    if len(challenge) not in (4, 8):
        raise InputError(f"challenge: {len(challenge)} bytes, expected 4 or 8")
    return ecb_encrypt(key, challenge + bytes(bs - len(challenge)), alg)


def pin_reload_mac(key: bytes, pin: bytes, alg: Alg = "des") -> bytes:
    """The MAC of RELOAD PIN ``80 5E 00 kid PIN ‖ MAC`` over the new PIN, IV zero (SPEC §1.5,
    D2; FMPY): DES with the reload key's left ⊕ right half (an 8-byte key as it is).  SM4
    (docs/sm4.md): the whole 16-byte key, SM4-CBC-MAC with ``80`` padding to 16, left 4 bytes
    (L ⊕ R would be 8 bytes, no SM4 key: as the SM4 TAC key, docs/sm4.md item 3)."""
    from .pboc import tac_key    # the same fold as the TAC key's (a token's key handle folds it itself)

    return mac_alg1(tac_key(key, alg), pin, alg=alg)[:4]
