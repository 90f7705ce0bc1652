"""Security commands of the simulated card: key records, authentication, PINs and
blocking (SPEC.md §1.4, §1.5)."""

from __future__ import annotations

import hmac

from ..apdu import CommandApdu
from ..crypto import cipher as _cipher
from ..crypto.cipher import Alg, block_size
from ..crypto.mac import mac_alg1, mac_alg3
from ..crypto.secure import auth_cryptogram, decipher, pin_reload_mac
from ..errors import InputError
from ..keytypes import LINE_CIPHER_TYPES
from .core import CardCore, SwError, decipher_or_6a80
from .fs import (COUNTER_TYPES, KT_DES_DEC, KT_DES_ENC, KT_DES_MAC, KT_EXT_AUTH, KT_LINE, KT_PIN,
                 KT_PIN_RELOAD, KT_PIN_UNBLOCK, VALID_KEY_TYPES, KeyRecord)




class SecurityCommands(CardCore):
    """WRITE KEY, GET CHALLENGE, EXTERNAL/INTERNAL AUTHENTICATE, VERIFY, CHANGE/RELOAD PIN,
    PIN UNBLOCK, CARD BLOCK, APPLICATION BLOCK/UNBLOCK."""

    # ------------------------------------------------------------------ keys
    def _master_key(self) -> KeyRecord:
        return self._key(KT_EXT_AUTH, 0)

    def _write_key(self, cmd: CommandApdu, chal, sess) -> bytes:
        df = self.df
        self._check_app()
        kf = df.keyfile
        if kf is None:
            raise SwError(0x6A82)
        p1, kid = cmd.p1, cmd.p2
        if kid == 0xFF:
            raise SwError(0x6A86)
        existing: KeyRecord | None = None
        if p1 != 0x01:
            existing = kf.get(p1 & 0x3F | 0x30, kid)
            # P1 = the stored type byte, or its unflagged form (39 for a stored F9: SPEC §6 R17)
            if existing is None or p1 not in (existing.ktype, existing.base):
                raise SwError(0x6A88)
        if cmd.cla & 0x04:
            master = self._master_key()
            body = self._mac_checked(cmd, chal, master)
            must_decipher = existing is not None and existing.ktype & 0x40
            record = self._maybe_decipher(master.value, body, bool(must_decipher), self.line_alg)
            if (existing is None and record is not body and record[:1]
                    and record[0] & 0xC0 != 0xC0 and not self.model.enciphered_add_any_type):
                # R4 (UM 7.12): new keys only in plaintext or plaintext+MAC; an enciphered add is
                # known to work only for key types with both flags set (CIPHK: F9).  The card
                # takes the ciphertext as a plain record.
                record = body
        else:
            if existing is not None and existing.ktype & 0xC0:
                raise SwError(0x6982)  # flagged keys change only under MAC (D1)
            record = cmd.data
        if len(record) < 6:
            raise SwError(0x6700)
        ktype = record[0]
        base = ktype & 0x3F | 0x30
        if base not in VALID_KEY_TYPES or ktype & 0x30 != 0x30:
            raise SwError(0x6A80)
        value = record[5:]
        if base == KT_PIN:
            if not 2 <= len(value) <= 8:
                raise SwError(0x6700)
        elif len(value) not in (8, 16):
            raise SwError(0x6700)
        elif self.line_alg == "sm4" and base in LINE_CIPHER_TYPES and len(value) != 16:
            raise SwError(0x6700)   # an SM4 card's master, line-protection and PIN keys are SM4 keys
        if existing is None:  # add
            if not (self.free or self._ac(kf.add_ac)):
                raise SwError(0x6982)
            replaced = kf.get(base, kid)
            # DENG p.2: a *plaintext* add over an existing key replaced it; nothing shows it for a
            # MAC'd or enciphered add, so those keep the refusal
            if replaced is not None and (cmd.cla & 0x04 or not self.model.add_replaces_existing):
                raise SwError(0x6A86)
            key = KeyRecord(ktype, kid, record[1], record[2], record[3], record[4], value)
            if key.size > kf.free() + (replaced.size if replaced is not None else 0):
                raise SwError(0x6A84)
            with self._commit():
                self.nvm.put(kf.keys, (base, kid), key)
            return b""
        # update: same length, same base type, change AC, error counter kept
        if not (self.free or self._ac(existing.change_ac)):
            raise SwError(0x6982)
        if len(record) != 5 + len(existing.value) or base != existing.base:
            raise SwError(0x6700 if base == existing.base else 0x6A80)
        b4 = existing.b4 if base in COUNTER_TYPES else record[4]
        key = KeyRecord(ktype, kid, record[1], record[2], record[3], b4, value)
        with self._commit():
            self.nvm.put(kf.keys, (base, kid), key)
        return b""

    @staticmethod
    def _maybe_decipher(key: bytes, body: bytes, required: bool, alg: Alg = "des") -> bytes:
        """Decision (SPEC §1.4): under ``84 D4`` the record is taken as enciphered when the key
        being updated demands it, or when it deciphers to a well-formed ``LD ‖ record ‖ 80..``;
        a plain record (5 + 8/16 bytes, or a PIN) otherwise.  On an SM4 card the ciphertext is
        SM4-ECB (TY's ``84 D4 .. 24`` ‖ 32 bytes ‖ MAC: PSAM-SM4 §4.1; docs/sm4.md)."""
        if len(body) % block_size(alg) == 0 and body:
            try:
                return decipher(key, body, alg)
            except InputError:
                if required:
                    raise SwError(0x6A80) from None
        elif required:
            raise SwError(0x6A80)
        return body

    # ------------------------------------------------------------------ authentication
    def _get_challenge(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        if cmd.data or cmd.ne not in (4, 8):
            raise SwError(0x6700)
        self.challenge = self.rng(cmd.ne)
        return self.challenge

    def _external_auth(self, cmd: CommandApdu, chal, sess) -> bytes:
        """``00 82 00 kid 08 E_K(challenge ‖ 00..)`` (SPEC §1.5); on an SM4 card ``10`` and the
        16-byte SM4 cryptogram (docs/sm4.md).  The length is checked before the key: a
        cryptogram of the other cipher answers 6700 and spends no try."""
        if cmd.p1:
            raise SwError(0x6A86)
        if len(cmd.data) != block_size(self.line_alg):
            raise SwError(0x6700)
        key = self._key(KT_EXT_AUTH, cmd.p2)
        if key.locked:
            raise SwError(0x6983)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        if chal is None:
            raise SwError(0x6984)
        expected = auth_cryptogram(key.value, chal, self.line_alg)
        if not hmac.compare_digest(expected, cmd.data):
            # R12 (UM 7.10): the failure that uses the last try answers 63C0; only the next 6983
            raise SwError(0x63C0 | self._count_failure(key))
        self._count_success(key)
        self._set_sr(key.b3 & 0x0F)
        return b""

    def _internal_auth(self, cmd: CommandApdu, chal, sess) -> bytes:
        base = {0: KT_DES_ENC, 1: KT_DES_DEC, 2: KT_DES_MAC}.get(cmd.p1)
        if base is None:
            raise SwError(0x6A86)
        key = self._key(base, cmd.p2)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        data = cmd.data
        if not data:
            raise SwError(0x6700)
        if base == KT_DES_MAC:
            k = key.value
            return (mac_alg1(k, data) if len(k) == 8 else mac_alg3(k, data))[:4]
        if len(data) % 8:
            raise SwError(0x6700)
        fn = _cipher.ecb_encrypt if base == KT_DES_ENC else _cipher.ecb_decrypt
        return fn(key.value, data)

    # ------------------------------------------------------------------ PINs
    def _pin(self, kid: int) -> KeyRecord:
        key = self._key(KT_PIN, kid)
        if key.locked:
            raise SwError(0x6983)
        return key

    @staticmethod
    def _pin_matches(key: KeyRecord, given: bytes) -> bool:
        stored = key.value
        if not given or len(given) > len(stored):
            return False
        return hmac.compare_digest(given + b"\xFF" * (len(stored) - len(given)), stored)

    def _pin_fail(self, key: KeyRecord) -> SwError:
        return SwError(0x63C0 | self._count_failure(key))   # 63C0 on the last try (R12)

    def _verify(self, cmd: CommandApdu, chal, sess) -> bytes:
        """``00 20 00 kid PIN``, or ``04 20 00 kid`` with the PIN enciphered and MAC'd under the
        DF's line-protection key (SPEC §6.4, UM 7.10.3; FMPY)."""
        if cmd.p1:
            raise SwError(0x6A86)
        self._check_app()
        given = cmd.data
        if cmd.cla & 0x04:
            lk = self._first_key(KT_LINE)
            body = self._mac_checked(cmd, chal, lk)
            given = decipher_or_6a80(lk.value, body, self.line_alg) if body else b""
        if not 1 <= len(given) <= 8:
            raise SwError(0x6700)
        key = self._pin(cmd.p2)
        if not self._ac(key.usage_ac):
            raise SwError(0x6982)
        if not self._pin_matches(key, given):
            raise self._pin_fail(key)
        self._count_success(key)
        self._set_sr(key.b3 & 0x0F)
        self.pin_verified = True
        return b""

    def _pin_change(self, cmd: CommandApdu, chal, sess) -> bytes:
        """CHANGE PIN ``80 5E 01 P2 old ‖ FF ‖ new`` (``84``: MAC from the DF's 36 key)."""
        self._check_app()
        data = self._mac_checked(cmd, chal, self._first_key(KT_LINE)) if cmd.cla & 0x04 else cmd.data
        # the PIN id cannot be chosen: PIN 00 is changed (UM 8.6 note; SPEC §1.5)
        key = self._pin(0x00)
        sep = data.find(b"\xFF")
        old, new = (data[:sep], data[sep + 1:]) if sep > 0 else (b"", b"")
        if not old or not 2 <= len(new) <= 8:
            raise SwError(0x6A80)
        if not self._pin_matches(key, old):
            raise self._pin_fail(key)
        self._store_pin(key, new)
        return b""

    def _pin_reload(self, cmd: CommandApdu, chal, sess) -> bytes:
        """RELOAD PIN ``80 5E 00 kid new ‖ MAC`` under the 38 key, L ⊕ R (D2; UM 8.5); on an SM4
        card the whole SM4 key (docs/sm4.md)."""
        self._check_app()
        if not 6 <= len(cmd.data) <= 12:
            raise SwError(0x6700)
        new, mac = cmd.data[:-4], cmd.data[-4:]
        rk = self._first_key(KT_PIN_RELOAD)
        if rk.locked:
            raise SwError(0x6983)
        if not hmac.compare_digest(pin_reload_mac(rk.value, new, self.line_alg), mac):
            self._count_failure(rk)
            raise SwError(0x9302)
        self._verified = rk
        self._store_pin(self._key(KT_PIN, cmd.p2), new)
        return b""

    def _store_pin(self, key: KeyRecord, new: bytes) -> None:
        full = (key.b4 & 0xF0) | (key.b4 >> 4)
        with self._commit():
            self.nvm.put(self.df.keyfile.keys, (KT_PIN, key.kid),  # type: ignore[union-attr]
                         KeyRecord(key.ktype, key.kid, key.usage_ac, key.change_ac, key.b3, full, new))

    def _pin_unblock(self, cmd: CommandApdu, chal, sess) -> bytes:
        """D2: ``84 24 P1 P2``, data = E(LD‖PIN‖pad) ‖ MAC under the 37 key.  The PIN id cannot
        be chosen: PIN 00 is unblocked whatever P1/P2 say (SPEC §6 R16; UM 8.4 example
        ``84 24 00 01``).  A wrong MAC answers 6988 (R15).  Decision: the deciphered PIN becomes
        the PIN value and the counter is reset."""
        self._check_app()
        uk = self._first_key(KT_PIN_UNBLOCK)
        body = self._mac_checked(cmd, chal, uk, bad_mac=0x6988)
        new = decipher_or_6a80(uk.value, body, self.line_alg)
        if not 2 <= len(new) <= 8:
            raise SwError(0x6A80)
        self._store_pin(self._key(KT_PIN, 0x00), new)
        return b""

    # ------------------------------------------------------------------ blocking
    def _card_block(self, cmd: CommandApdu, chal, sess) -> bytes:
        """``84 16 00 00 04 MAC``: the MAC is the card issuer's, made with the MF's line-protection
        key whatever DF is current (UM 8.1: "MAC（由线路保护密钥生成）" for a command that blocks
        every application; issue 18 point 6: an application's DAMK must not block the card)."""
        if chal is None:
            raise SwError(0x6984)
        kf = self.mf.keyfile
        key = next((k for (b, _), k in kf.keys.items() if b == KT_LINE), None) if kf is not None else None
        if key is None:
            raise SwError(0x6A88)
        self._mac_checked(cmd, chal, key, owner=self.mf, bad_mac=0x6988)
        with self._commit():
            self.nvm.set(self, "card_blocked", True)
        return b""

    def _app_block(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.p1 or cmd.p2 > 1:
            raise SwError(0x6A86)
        self._check_app()
        self._mac_checked(cmd, chal, self._first_key(KT_LINE), bad_mac=0x6988)   # R15
        with self._commit():
            self.nvm.set(self.df, "block", 2 if cmd.p2 else 1)
        return b""

    def _app_unblock(self, cmd: CommandApdu, chal, sess) -> bytes:
        df = self.df
        if df.block == 2:
            raise SwError(0x9303)
        key = self._first_key(KT_LINE)
        try:
            self._mac_checked(cmd, chal, key, bad_mac=0x6988)   # R15
        except SwError as e:
            if e.sw != 0x6988:
                raise
            # UM 8.2: three failed unblocks lock the application permanently
            with self.nvm.transaction():
                self.nvm.set(df, "unblock_fails", df.unblock_fails + 1)
                if df.unblock_fails >= 3:
                    self.nvm.set(df, "block", 2)
            raise SwError(0x9303 if df.block == 2 else 0x6988) from None
        with self._commit():
            self.nvm.set(df, "block", 0)
            self.nvm.set(df, "unblock_fails", 0)
        return b""
