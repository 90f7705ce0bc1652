"""The card image: the whole persistent state of a :class:`SimCard` as JSON (never pickle).

Written atomically (temporary file in the same folder, fsync, rename, fsync of the
folder), so a crash leaves either the old image or the new one.  The image of a
simulated card holds its key values, as a real card's EEPROM does: treat image files
as secret test data, never commit them; ``citycard sim show`` never prints a key.

Format (version 1; "model" names the card model, absent in older images = ``fm1208-16ff``)::

    {"format": "citycard-sim-image", "version": 1, "model": "fm1208", "atr": "3B8E...", "card_blocked": false,
     "mf": {"type": "DF", "fid": "3F00", "name": "...", ..., "keyfile": {...}, "children": [...]}}
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CitycardError
from ..fsutil import atomic_write
from .card import SimCard
from .fs import FT_FIXED, DF, BinaryEF, KeyFile, KeyRecord, Node, PurseEF, RecordEF
from .models import LEGACY_MODEL, MODELS

FORMAT = "citycard-sim-image"
VERSION = 1


class ImageError(CitycardError):
    """A card image that cannot be read; the message names the file and key path."""


# ---------------------------------------------------------------------- encode
def _h(b: bytes) -> str:
    return b.hex().upper()


def _x(n: int, width: int = 2) -> str:
    return f"{n:0{width}X}"


def _key(k: KeyRecord) -> dict[str, Any]:
    return {"type": _x(k.ktype), "id": _x(k.kid), "usage_ac": _x(k.usage_ac), "change_ac": _x(k.change_ac),
            "b3": _x(k.b3), "b4": _x(k.b4), "value": _h(k.value)}


def _node(n: Node) -> dict[str, Any]:
    if isinstance(n, DF):
        d: dict[str, Any] = {"type": "DF", "fid": _x(n.fid, 4), "name": _h(n.name), "space": n.space,
                             "create_ac": _x(n.create_ac), "erase_ac": _x(n.erase_ac),
                             "sfi_byte": _x(n.sfi_byte), "auth_code": _h(n.auth_code) if n.auth_code else None,
                             "block": n.block, "unblock_fails": n.unblock_fails}
        if n.keyfile is not None:
            kf = n.keyfile
            d["keyfile"] = {"fid": _x(kf.fid, 4), "space": kf.space, "df_sfi": _x(kf.df_sfi),
                            "add_ac": _x(kf.add_ac), "keys": [_key(k) for k in kf.keys.values()]}
        d["children"] = [_node(c) for c in n.children.values()]
        return d
    if isinstance(n, PurseEF):
        return {"type": "purse", "fid": _x(n.fid, 4), "usage_ac": _x(n.usage_ac), "tac_kid": _x(n.tac_kid),
                "detail_sfi": _x(n.detail_sfi), "balance": n.balance, "online": n.online,
                "offline": n.offline, "overdraw": n.overdraw,
                "last": None if n.last is None else [_x(n.last[0]), n.last[1], _h(n.last[2]), _h(n.last[3])]}
    base = {"fid": _x(n.fid, 4), "ftype": _x(n.ftype), "read_ac": _x(n.read_ac),  # type: ignore[attr-defined]
            "write_ac": _x(n.write_ac), "b7": _x(n.b7)}  # type: ignore[attr-defined]
    if isinstance(n, BinaryEF):
        return {"type": "binary", **base, "data": _h(n.data), "written": n.written}
    if isinstance(n, RecordEF):
        d = {"type": "records", **base, "nrec": n.nrec, "reclen": n.reclen,
             "records": [_h(r) for r in n.records]}
        if n.kind == FT_FIXED:
            d["appended"] = n.appended
        return d
    raise TypeError(f"cannot encode {type(n).__name__}")


def to_dict(card: SimCard) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "model": card.model.name, "atr": _h(card.atr),
            "card_blocked": card.card_blocked, "mf": _node(card.mf)}


# ---------------------------------------------------------------------- decode
class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> ImageError:
        return ImageError(f"{self.source}: {path}: {message}")

    def get(self, d: Any, key: str, path: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(d, dict):
            raise self.fail(path, "expected an object")
        if key not in d:
            raise self.fail(f"{path}.{key}", "missing")
        v = d[key]
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(f"{path}.{key}", f"expected {names}, got {type(v).__name__}")
        return v

    def hexv(self, d: Any, key: str, path: str, nbytes: int | None = None) -> bytes:
        v = self.get(d, key, path, str)
        try:
            b = bytes.fromhex(v)
        except ValueError:
            # a key or PIN value never goes into a message (it is one mistyped character from a key)
            shown = "the value" if key == "value" else repr(v)
            raise self.fail(f"{path}.{key}", f"{shown} is not hex") from None
        if nbytes is not None and len(b) != nbytes:
            raise self.fail(f"{path}.{key}", f"expected {nbytes} bytes, got {len(b)}")
        return b

    def num(self, d: Any, key: str, path: str, nbytes: int = 1) -> int:
        return int.from_bytes(self.hexv(d, key, path, nbytes), "big")

    def intv(self, d: Any, key: str, path: str, lo: int = 0, hi: int = 0xFFFFFFFF) -> int:
        v = self.get(d, key, path, int)
        if not lo <= v <= hi:
            raise self.fail(f"{path}.{key}", f"{v} outside {lo}..{hi}")
        return v

    def node(self, d: Any, path: str, parent: DF | None) -> Node:
        t = self.get(d, "type", path, str)
        fid = self.num(d, "fid", path, 2)
        if t == "DF":
            df = DF(fid, self.hexv(d, "name", path), self.intv(d, "space", path, 0, 0xFFFF),
                    self.num(d, "create_ac", path), self.num(d, "erase_ac", path), self.num(d, "sfi_byte", path),
                    parent)
            code = d.get("auth_code")
            df.auth_code = None if code is None else self.hexv(d, "auth_code", path, 9)
            df.block = self.intv(d, "block", path, 0, 2)
            df.unblock_fails = self.intv(d, "unblock_fails", path, 0, 255)
            if d.get("keyfile") is not None:
                kp = f"{path}.keyfile"
                k = d["keyfile"]
                kf = KeyFile(self.num(k, "fid", kp, 2), self.intv(k, "space", kp, 0, 0xFFFF),
                             self.num(k, "df_sfi", kp), self.num(k, "add_ac", kp), df)
                for i, kd in enumerate(self.get(k, "keys", kp, list)):
                    p = f"{kp}.keys[{i}]"
                    rec = KeyRecord(self.num(kd, "type", p), self.num(kd, "id", p), self.num(kd, "usage_ac", p),
                                    self.num(kd, "change_ac", p), self.num(kd, "b3", p), self.num(kd, "b4", p),
                                    self.hexv(kd, "value", p))
                    if len(rec.value) not in ((2, 3, 4, 5, 6, 7, 8) if rec.base == 0x3A else (8, 16)):
                        raise self.fail(f"{p}.value", f"a key of {len(rec.value)} bytes (keys: 8 or 16; PINs: 2..8)")
                    kf.keys[(rec.base, rec.kid)] = rec
                df.keyfile = kf
            for i, cd in enumerate(self.get(d, "children", path, list)):
                child = self.node(cd, f"{path}.children[{i}]", df)
                df.children[child.fid] = child
            return df
        if parent is None:
            raise self.fail(path, "the root must be a DF")
        if t == "purse":
            p = PurseEF(fid, self.num(d, "usage_ac", path), self.num(d, "tac_kid", path),
                        self.num(d, "detail_sfi", path), parent)
            p.balance = self.intv(d, "balance", path)
            p.online = self.intv(d, "online", path, 0, 0xFFFF)
            p.offline = self.intv(d, "offline", path, 0, 0xFFFF)
            p.overdraw = self.intv(d, "overdraw", path, 0, 0xFFFFFF)
            last = d.get("last")
            if last is not None:
                if not (isinstance(last, list) and len(last) == 4):
                    raise self.fail(f"{path}.last", "expected [type, counter, mac, tac]")
                try:
                    p.last = (int(last[0], 16), int(last[1]), bytes.fromhex(last[2]), bytes.fromhex(last[3]))
                except (TypeError, ValueError):
                    raise self.fail(f"{path}.last", "malformed") from None
            return p
        ftype, rac, wac, b7 = (self.num(d, "ftype", path), self.num(d, "read_ac", path),
                               self.num(d, "write_ac", path), self.num(d, "b7", path))
        if t == "binary":
            ef = BinaryEF(fid, ftype, 1, rac, wac, b7, parent)
            ef.data = self.hexv(d, "data", path)
            # older images did not record it: take their files as written (no 6281)
            ef.written = self.get(d, "written", path, bool) if "written" in d else True
            return ef
        if t == "records":
            rf = RecordEF(fid, ftype, self.intv(d, "nrec", path, 0, 255), self.intv(d, "reclen", path, 0, 255),
                          rac, wac, b7, parent)
            recs = self.get(d, "records", path, list)
            rf.records = tuple(self.hexv({"r": r}, "r", f"{path}.records[{i}]") for i, r in enumerate(recs))
            if rf.kind == FT_FIXED:
                # R21: all records exist; older images held only the appended ones
                rf.appended = self.intv(d, "appended", path, 0, rf.nrec) if "appended" in d \
                    else min(len(rf.records), rf.nrec)
                rf.records = (rf.records + (bytes(rf.reclen),) * rf.nrec)[:max(rf.nrec, len(rf.records))]
            return rf
        raise self.fail(f"{path}.type", f"unknown file type {t!r}")


def from_dict(data: Any, source: str = "image") -> SimCard:
    r = _Reader(source)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ImageError(f"{source}: not a citycard card image (format must be {FORMAT!r})")
    version = data.get("version")
    if version != VERSION:
        raise ImageError(f"{source}: image format version {version!r} not supported (this citycard reads {VERSION})")
    mf = r.node(data.get("mf"), "mf", None)
    if not isinstance(mf, DF) or mf.fid != 0x3F00:
        raise r.fail("mf", "the root must be the MF (DF 3F00)")
    atr = r.hexv(data, "atr", "")
    blocked = r.get(data, "card_blocked", "", bool)
    # images written before card models existed were all legacy cards
    name = r.get(data, "model", "", str) if "model" in data else LEGACY_MODEL
    if name not in MODELS:
        raise r.fail("model", f"unknown card model {name!r} (known: {', '.join(sorted(MODELS))})")
    return SimCard(mf, card_blocked=blocked, atr=atr, model=name)


# ---------------------------------------------------------------------- files
def save(card: SimCard, path: str | os.PathLike[str]) -> None:
    """Write the image atomically, readable by its owner only (it holds the card's keys)."""
    atomic_write(path, json.dumps(to_dict(card), indent=1).encode("utf-8"), 0o600)


class ImageLock:
    """An exclusive advisory lock (``fcntl.flock``) on ``<image>.lock`` beside a card image:
    one writer per image (a ``sim serve`` or a ``--sim`` run), so that two cannot lose each
    other's updates (issue 18 point 5).  Readers (``sim show``) do not lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(f"{os.fspath(path)}.lock")
        self.image = os.fspath(path)
        self._fd: int | None = None

    def acquire(self) -> "ImageLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ImageError(f"{self.image}: the card image is in use by another writer "
                             f"(a `citycard sim serve` or a --sim run); stop it first") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> "ImageLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_held: dict[str, ImageLock] = {}


def release(path: str | os.PathLike[str]) -> None:
    """Drop the lock :func:`load` took with ``lock=True`` (else it lasts until the process ends)."""
    held = _held.pop(os.path.realpath(path), None)
    if held is not None:
        held.release()


def load(path: str | os.PathLike[str], *, lock: bool = False) -> SimCard:
    """The card of the image at ``path``.  ``lock=True``: this process becomes the image's only
    writer (:class:`ImageLock`) until :func:`release` or its end; a second writer gets one
    clear :class:`ImageError` line."""
    if lock:
        key = os.path.realpath(path)
        if key not in _held:
            _held[key] = ImageLock(path).acquire()
    try:
        return _load(path)
    except BaseException:
        if lock:
            release(path)
        raise


def _load(path: str | os.PathLike[str]) -> SimCard:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such card image (make one with `citycard sim new {path}`)") from None
    except OSError as exc:
        raise ImageError(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImageError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    return from_dict(data, str(path))
