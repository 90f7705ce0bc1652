"""File commands of the simulated card: SELECT and the FCI, CREATE FILE, ERASE DF,
binary files and record files (SPEC.md §1.2, §1.3, §1.5, §1.6)."""

from __future__ import annotations

from ..apdu import CommandApdu
from ..crypto.cipher import block_size
from ..crypto.secure import encipher, line_mac
from .core import CardCore, SwError, decipher_or_6a80, tl, u
from .fs import (DF, EF, FT_BINARY, FT_CYCLIC, FT_DF, FT_FIXED, FT_KEY, FT_PURSE, FT_VARIABLE, BinaryEF, KeyFile,
                 KeyRecord, Node, PurseEF, RecordEF)


class FileCommands(CardCore):
    """SELECT, CREATE FILE, ERASE DF, READ/UPDATE BINARY, READ/UPDATE/APPEND RECORD."""

    # ------------------------------------------------------------------ select
    def _select(self, cmd: CommandApdu, chal, sess) -> bytes:
        p1, data = cmd.p1, cmd.data
        if cmd.p2 & 0xF3:
            raise SwError(0x6A86)
        if p1 == 0x00:
            if not data:
                node = self.mf
            elif len(data) != 2:
                raise SwError(0x6700)
            else:
                fid = u(data)
                if fid == 0x3F00:
                    node = self.mf
                elif fid == self.df.fid and self.df is not self.mf:
                    node = self.df
                else:
                    node = self.df.children.get(fid)
                    if node is None and self.df.parent is not None:
                        node = self.df.parent.children.get(fid)
                        if node is not None and not isinstance(node, DF):
                            node = None
                    if node is None:
                        raise SwError(0x6A82)
        elif p1 == 0x04:
            if not 1 <= len(data) <= 16:
                raise SwError(0x6700)
            node = self._find_df_by_name(data)
            if node is None:
                raise SwError(0x6A82)
        else:
            raise SwError(0x6A86)
        if isinstance(node, DF):
            self.df, self.ef = node, None
            self.df_sr = self.mf_sr if node is self.mf else 0
            self.free = node.keyfile is None   # R5: free until the DF holds a KEY file
            self.pin_verified = False
            if node.block:  # D5: current, but no FCI
                raise SwError(0x9303 if node.block == 2 else 0x6A81)
            self._check_app()
            return self._fci(node)
        self._check_app()
        self.ef = node  # type: ignore[assignment]
        return b""

    def _find_df_by_name(self, name: bytes) -> DF | None:
        queue, partial = [self.mf], None
        while queue:
            df = queue.pop(0)
            if df.name == name:
                return df
            if partial is None and df.name.startswith(name):
                partial = df
            queue.extend(c for c in df.children.values() if isinstance(c, DF))
        return partial

    def _fci(self, df: DF) -> bytes:
        prop = b""
        sfi_byte = df.sfi_byte
        if sfi_byte & 0x80:
            ef = df.find_sfi(sfi_byte & 0x1F)
            if isinstance(ef, BinaryEF):
                # R10: FM1208 puts the application version 9F08 before 9F0C (BLOG16, CAPT)
                version = self.model.fci_app_version
                prop = (b"\x9F\x08\x01" + bytes((version,)) if version is not None else b"") \
                    + tl(b"\x9F\x0C", ef.data)
        elif sfi_byte & 0x1F:
            prop = b"\x88\x01" + bytes((sfi_byte & 0x1F,))
        body = tl(b"\x84", df.name) + (tl(b"\xA5", prop) if prop else b"")
        return tl(b"\x6F", body)

    # ------------------------------------------------------------------ create / erase
    def _create_file(self, cmd: CommandApdu, chal, sess) -> bytes:
        df, d = self.df, cmd.data
        self._check_app()
        if not (self.free or self._ac(df.create_ac)):
            raise SwError(0x6982)
        if len(d) < 7:
            raise SwError(0x6700)
        fid = (cmd.p1 << 8) | cmd.p2
        ftype, kind = d[0], d[0] & 0x3F
        if fid == 0x3F00 and kind == FT_DF and df is self.mf and self.mf.empty:
            return self._recreate_mf(d)
        if fid in (0x3F00, 0xFFFF) or fid in df.children or (
                df.keyfile is not None and df.keyfile.fid == fid and kind != FT_KEY):
            raise SwError(0x6A86)
        if kind == FT_KEY:
            if ftype != FT_KEY or len(d) != 7:
                raise SwError(0x6A80)
            if df.keyfile is not None:
                raise SwError(0x6A86)
            if df.children:
                raise SwError(0x6985)  # the KEY file must be the first file of a DF
            node = KeyFile(fid, u(d[1:3]), d[3], d[4], df)
        elif kind == FT_DF:
            if ftype != FT_DF or len(d) < 8 or len(d) == 9:
                raise SwError(0x6A80)
            name = d[8:]
            if df.depth >= 2 or len(name) > 16:
                raise SwError(0x6A80)
            if name and self._find_df_by_name_exact(name):
                raise SwError(0x6A8A)
            node = DF(fid, name, u(d[1:3]), d[3], d[4], d[5], df)
        elif kind == FT_BINARY:
            size = u(d[1:3])
            if len(d) != 7 or size == 0:
                raise SwError(0x6A80)
            node = BinaryEF(fid, ftype, size, d[3], d[4], d[6], df)
        elif kind in (FT_FIXED, FT_CYCLIC):
            if len(d) != 7 or d[1] < 2 or d[2] == 0:
                raise SwError(0x6A80)
            node = RecordEF(fid, ftype, d[1], d[2], d[3], d[4], d[6], df)
        elif kind == FT_VARIABLE:
            if len(d) != 7 or u(d[1:3]) == 0:
                raise SwError(0x6A80)
            node = RecordEF(fid, ftype, d[1], d[2], d[3], d[4], d[6], df)
        elif kind == FT_PURSE:
            if ftype != FT_PURSE or len(d) != 7 or fid not in (0x0001, 0x0002) or d[1:3] != b"\x02\x08":
                raise SwError(0x6A80)
            node = PurseEF(fid, d[3], d[4], d[6], df)
        else:
            raise SwError(0x6A80)
        self._check_space(df, node)
        if kind == FT_KEY:
            self.nvm.set(df, "keyfile", node)
        else:
            self.nvm.put(df.children, fid, node)
        return b""

    def _check_space(self, df: DF, node: Node) -> None:
        """6A84 when ``node`` does not fit: in ``df``'s declared space when the card model
        enforces DF space, else only in the card's EEPROM (SPEC §6 R9: a real card took a
        1500-byte EF in a DF of space 036F, BLOG16)."""
        if self.model.enforce_df_space:
            if node.size > df.free():
                raise SwError(0x6A84)
            return
        if not isinstance(node, DF) and self._card_used() + node.size > self.model.eeprom_bytes:
            raise SwError(0x6A84)

    def _card_used(self) -> int:
        """EEPROM taken by the card's files: every EF and KEY file (DFs count by their files)."""
        total, queue = 0, [self.mf]
        while queue:
            df = queue.pop()
            if df.keyfile is not None:
                total += df.keyfile.size
            for child in df.children.values():
                if isinstance(child, DF):
                    queue.append(child)
                else:
                    total += child.size
        return total

    def _recreate_mf(self, d: bytes) -> bytes:
        """CREATE MF in an erased MF (``80 E0 3F 00 .. 38 ...``) is accepted and sets the MF's
        header (SPEC §6 R3; BLOG16 ``80E03F000D38FFFFF0F001FFFFFFFFFFFFFF`` → 9000).  Decision:
        a name of all FF (as BLOG16 sends) keeps the MF's name; BLOG16's card still answers
        SELECT 3F00 with ``84 0E 1PAY.SYS.DDF01``."""
        if d[0] != FT_DF or len(d) < 8 or len(d) == 9 or len(d) > 8 + 16:
            raise SwError(0x6A80)
        mf, name = self.mf, d[8:]
        with self.nvm.transaction():
            self.nvm.set(mf, "space", u(d[1:3]))
            self.nvm.set(mf, "create_ac", d[3])
            self.nvm.set(mf, "erase_ac", d[4])
            self.nvm.set(mf, "sfi_byte", d[5])
            if name and name != b"\xFF" * len(name):
                self.nvm.set(mf, "name", name)
        return b""

    def _find_df_by_name_exact(self, name: bytes) -> bool:
        queue = [self.mf]
        while queue:
            df = queue.pop()
            if df.name == name:
                return True
            queue.extend(c for c in df.children.values() if isinstance(c, DF))
        return False

    def _erase_df(self, cmd: CommandApdu, chal, sess) -> bytes:
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        df = self.df
        self._check_app()
        if not (self.free or self._ac(df.erase_ac)):
            raise SwError(0x6982)
        with self.nvm.transaction():
            self.nvm.set(df, "children", {})
            self.nvm.set(df, "keyfile", None)
            self.nvm.set(df, "auth_code", None)
        self.ef = None
        self.free = True
        return b""

    # ------------------------------------------------------------------ binary files
    def _target_ef(self, sfi: int | None) -> EF:
        self._check_app()
        if sfi is not None:
            ef = self.df.find_sfi(sfi)
            if ef is None:
                raise SwError(0x6A82)
            self.ef = ef
            return ef
        if self.ef is None:
            raise SwError(0x6986)
        return self.ef

    def _read_guard(self, ef: EF, cmd: CommandApdu, chal) -> KeyRecord | None:
        """Read AC and line protection; returns the key for a response MAC, if any.

        A protected read carries ``MAC`` (``04 B0 .. 04 MAC``) or, for an enciphered file, may
        carry ``E(Le ‖ 80 00..) ‖ MAC`` (UM 7.5 example 3); the enciphered Le is not used (the
        command's Le or the end of the file bounds the read)."""
        if not self._ac(ef.read_ac):
            raise SwError(0x6982)
        if cmd.cla & 0x04:
            key = self._line_key(ef.read_key_id)
            body = self._mac_checked(cmd, chal, key)
            if body and not (ef.write_enc and len(body) % block_size(self.line_alg) == 0):
                raise SwError(0x6700)
            return key
        if ef.read_protected and not self.free:
            raise SwError(0x6900)
        return None

    def _write_guard(self, ef: EF, cmd: CommandApdu, chal) -> bytes:
        """Write AC and line protection; returns the plain data to write."""
        if not self._ac(ef.write_ac):
            raise SwError(0x6982)
        if cmd.cla & 0x04:
            key = self._line_key(ef.write_key_id)
            body = self._mac_checked(cmd, chal, key)
            if ef.write_enc:
                return decipher_or_6a80(key.value, body, self.line_alg)
            return body
        if ef.ftype & 0xC0 and not self.free:
            raise SwError(0x6900)
        return cmd.data

    def _response_mac(self, ef: EF, key: KeyRecord | None, chal: bytes | None, data: bytes) -> bytes:
        """A protected read answers data ‖ MAC(data) with the read key, IV = the challenge; an
        enciphered file answers E(LD ‖ data ‖ pad) ‖ MAC(ciphertext) (SPEC §6 R14; UM 7.5
        examples 2 and 3; FMPY checks the MAC over what precedes it).  Le counts the data:
        the rest is a trailer after it (R14)."""
        if key is None or chal is None:
            return data
        alg = self.line_alg           # SM4 on an fmcos-sm4 card (docs/sm4.md)
        body = encipher(key.value, data, alg) if ef.write_enc else data
        out = body + line_mac(key.value, chal, body, alg)
        self.trailer = len(out) - len(data)
        return out

    @staticmethod
    def _binary_address(cmd: CommandApdu) -> tuple[int | None, int]:
        if cmd.p1 & 0x80:
            if cmd.p1 & 0x60:
                raise SwError(0x6A86)
            return cmd.p1 & 0x1F, cmd.p2
        return None, (cmd.p1 << 8) | cmd.p2

    def _read_binary(self, cmd: CommandApdu, chal, sess) -> bytes:
        sfi, offset = self._binary_address(cmd)
        ef = self._target_ef(sfi)
        if not isinstance(ef, BinaryEF):
            raise SwError(0x6981)
        key = self._read_guard(ef, cmd, chal)
        size = len(ef.data)
        if offset >= size:
            raise SwError(0x6B00)
        avail = size - offset
        ne = cmd.ne if key is None else (cmd.ne or 256)
        if ne is None:
            ne = 256
        if ne == 256:   # Le 00: to the end of the file, at most 239 bytes on an FM1208 (R7, UM)
            n = min(avail, self.model.max_data or 256)
        elif ne > avail:
            raise SwError(0x6C00 | avail if avail < 256 else 0x6C00)
        else:
            n = ne
        if not ef.written:
            self.warning = 0x6281   # never written: data with the checksum warning (R13, UM 7.5)
        return self._response_mac(ef, key, chal, ef.data[offset:offset + n])

    def _update_binary(self, cmd: CommandApdu, chal, sess) -> bytes:
        sfi, offset = self._binary_address(cmd)
        ef = self._target_ef(sfi)
        if not isinstance(ef, BinaryEF):
            raise SwError(0x6981)
        data = self._write_guard(ef, cmd, chal)
        if not data:
            raise SwError(0x6700)
        if offset >= len(ef.data):
            raise SwError(0x6B00)
        if offset + len(data) > len(ef.data):
            raise SwError(0x6700)
        with self._commit():
            self.nvm.set(ef, "data", ef.data[:offset] + data + ef.data[offset + len(data):])
            if not ef.written:
                self.nvm.set(ef, "written", True)
        return b""

    # ------------------------------------------------------------------ record files
    def _record_target(self, cmd: CommandApdu) -> tuple[RecordEF, int]:
        """P2 = SFI<<3 | mode; returns the file and the mode bits."""
        sfi = cmd.p2 >> 3
        ef = self._target_ef(sfi if sfi else None)
        if not isinstance(ef, RecordEF):
            raise SwError(0x6981)
        return ef, cmd.p2 & 0x07

    @staticmethod
    def _tagged(ef: RecordEF, tag: int, which: int) -> int:
        """Index of the first (mode 0) or last (mode 1) variable record with ``tag``."""
        idx = [i for i, r in enumerate(ef.records) if r and r[0] == tag]
        if not idx:
            raise SwError(0x6A83)
        return idx[0] if which == 0 else idx[-1]

    def _read_record(self, cmd: CommandApdu, chal, sess) -> bytes:
        ef, mode = self._record_target(cmd)
        key = self._read_guard(ef, cmd, chal)
        if mode == 0x04:
            if cmd.p1 == 0 or cmd.p1 > len(ef.records):
                raise SwError(0x6A83)
            rec = ef.records[cmd.p1 - 1]
        elif mode in (0, 1) and ef.kind == FT_VARIABLE:
            rec = ef.records[self._tagged(ef, cmd.p1, mode)]
        else:
            raise SwError(0x6A86)
        ne = cmd.ne
        if key is None and ne is not None and ne != 256 and ne != len(rec):
            raise SwError(0x6C00 | len(rec) if len(rec) < 256 else 0x6C00)
        return self._response_mac(ef, key, chal, rec)

    def _check_record(self, ef: RecordEF, rec: bytes, old: bytes | None = None) -> None:
        kind = ef.kind
        if len(rec) > 255:  # a record length is one byte (SPEC §1.2)
            raise SwError(0x6700)
        if kind == FT_VARIABLE:
            if len(rec) < 2 or rec[1] != len(rec) - 2:
                raise SwError(0x6A80)
            if old is not None and len(old) != len(rec):
                raise SwError(0x6700)
            if old is None and ef.used() + len(rec) > ef.space:
                raise SwError(0x6A84)
        elif len(rec) != ef.reclen:
            raise SwError(0x6700)

    def _update_record(self, cmd: CommandApdu, chal, sess) -> bytes:
        """UPDATE RECORD by number (mode 100) or tag (000 first, 001 last; variable files).
        SPEC §6 R22 (FMPY, LAB, UM): on a variable-record file, record number len+1 (record 1
        of an empty file) creates the record; mode 010 creates a new record on a variable file
        and appends (as the newest) on a cyclic one."""
        ef, mode = self._record_target(cmd)
        rec = self._write_guard(ef, cmd, chal)
        if mode == 0x02 and ef.kind in (FT_VARIABLE, FT_CYCLIC):
            return self._append_checked(ef, rec)
        if mode == 0x04:
            i = cmd.p1 - 1
            if ef.kind == FT_VARIABLE and cmd.p1 == len(ef.records) + 1:
                return self._append_checked(ef, rec)
            if cmd.p1 == 0 or i >= len(ef.records):
                raise SwError(0x6A83)
        elif mode in (0, 1) and ef.kind == FT_VARIABLE:
            i = self._tagged(ef, cmd.p1, mode)
        else:
            raise SwError(0x6A86)
        self._check_record(ef, rec, ef.records[i])
        with self._commit():
            self.nvm.set(ef, "records", ef.records[:i] + (rec,) + ef.records[i + 1:])
        return b""

    def _append_record(self, cmd: CommandApdu, chal, sess) -> bytes:
        """APPEND RECORD, P2 = SFI<<3 | 000 or | 100 (SPEC §6 R20: UM table 7.6, FMPY, BLOG16)."""
        if cmd.p1 or cmd.p2 & 0x07 not in (0x00, 0x04):
            raise SwError(0x6A86)
        ef, _mode = self._record_target(cmd)
        rec = self._write_guard(ef, cmd, chal)
        return self._append_checked(ef, rec)

    def _append_checked(self, ef: RecordEF, rec: bytes) -> bytes:
        self._check_record(ef, rec)
        records = self._appended(ef, rec)
        with self._commit():
            self.nvm.set(ef, "records", records)
            if ef.kind == FT_FIXED:
                self.nvm.set(ef, "appended", ef.appended + 1)
        return b""

    @staticmethod
    def _appended(ef: RecordEF, rec: bytes) -> tuple[bytes, ...]:
        """The records after appending ``rec``: a cyclic file's newest is record 1; a fixed
        file (all records exist, R21) gets the next record not yet appended."""
        if ef.kind == FT_CYCLIC:
            return ((rec,) + ef.records)[: ef.nrec]
        if ef.kind == FT_FIXED:
            i = ef.appended
            if i >= ef.nrec:
                raise SwError(0x6A84)
            return ef.records[:i] + (rec,) + ef.records[i + 1:]
        return ef.records + (rec,)
