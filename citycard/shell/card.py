"""The card as the shell and the script runner see it: a :class:`CardSession` with an
optional profile and key source, the exchanges it makes, and where it is.

:class:`CardContext` knows the profile's applications and files by name, follows which
DF and EF are selected (it watches every SELECT that succeeds, raw ones included),
derives per-card keys from the key source (PBOC diversification with the serial read
from the card, as :mod:`citycard.terminal.services` does) and never lets a key or a PIN
out: keys live in local variables only, PIN commands are marked sensitive so every
display and transcript masks their data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .. import records, tlv
from ..apdu import CommandApdu, ResponseApdu, describe_sw
from ..commands import iso, purse, walk
from ..money import yuan
from ..commands.fmcos import KeyType
from ..commands.purse import PurseKind
from ..crypto import line_mac
from ..errors import CardError, CitycardError, InputError
from ..keys import KeySource
from ..keys.handles import Key
from ..spec import CardSpec, DFSpec, FileSpec, KeySpec
from ..transport import CardSession, LineProtection
from ..transport.transcript import format_command, format_response

if TYPE_CHECKING:   # the cipher library is imported when a key is used (CLI start-up, issue 19)
    from ..crypto.cipher import Alg


class CardContextError(CitycardError):
    """A request the context cannot carry out (unknown name, no profile, no key source)."""


class CardAnswer(CardError):
    """The card answered a step of a convenience with an unexpected status word (``sw``)."""

    def __init__(self, what: str, resp: ResponseApdu) -> None:
        self.what, self.resp = what, resp
        super().__init__(resp.sw, what, message=f"{what}: card answered {resp.sw:04X} ({describe_sw(resp.sw)})")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One command and its answer, as the layers above the T=0 fetching see them."""

    cmd: CommandApdu
    resp: ResponseApdu

    @property
    def command_text(self) -> str:
        """The command in hex, its data masked when sensitive."""
        return format_command(self.cmd)

    @property
    def response_text(self) -> str:
        return format_response(self.resp)


def exchange_lines(ex: Exchange, *, decode: bool = True) -> list[str]:
    """``> command`` / ``< response SW  (meaning)`` and a TLV dump of TLV answers."""
    lines = [f"> {ex.command_text}", f"< {ex.response_text}  ({describe_sw(ex.resp.sw)})"]
    if decode and ex.resp.data and not (ex.cmd.ins == 0x84 and ex.cmd.cla & 0x80 == 0):   # not a challenge
        items = tlv.try_parse(ex.resp.data)
        if items:
            lines += ["    " + line for line in tlv.dump(items).splitlines()]
    return lines


class _Observer:
    """Processor (outermost) handing every exchange to the context."""

    def __init__(self, ctx: CardContext) -> None:
        self.ctx = ctx

    def process(self, cmd: CommandApdu, send: Callable[[CommandApdu], ResponseApdu]) -> ResponseApdu:
        resp = send(cmd)
        self.ctx._observe(Exchange(cmd, resp))
        return resp


def factor_from(binding: Any, serial: str) -> bytes:
    """The diversification factor: the serial for ``@``-bindings, else a constant (digits as
    BCD, hex as bytes); the rightmost 8 bytes (SPEC §2.4)."""
    value = serial if not isinstance(binding, str) or binding.startswith("@") else binding
    return walk.diversification_factor(str(value))


@dataclass
class ReadResult:
    """A file read: raw data (binary) or records, and the decoded fields when a layout fits."""

    file: FileSpec | None
    data: bytes | None = None
    records: list[bytes] = field(default_factory=list)
    decoded: Any = None
    error: str | None = None


class CardContext:
    """A card session with names: the profile's applications and files, keys by name."""

    def __init__(self, session: CardSession, spec: CardSpec | None = None, keys: KeySource | None = None,
                 *, on_exchange: Callable[[Exchange], None] | None = None) -> None:
        self.session, self.spec, self.keys = session, spec, keys
        self.on_exchange = on_exchange
        self.exchanges: list[Exchange] = []
        # a card is at the MF after power-on: the current DF of the profile (None: not in it)
        self.df: DFSpec | None = spec.mf if spec is not None else None
        self.ef: FileSpec | None = None
        self.where = "MF"                       # text of the current selection, for prompts
        self._serials: dict[str, str] = {}
        session.add_processor(_Observer(self), outermost=True)

    # ------------------------------------------------------------------ exchanges
    def _observe(self, ex: Exchange) -> None:
        self.exchanges.append(ex)
        self._track(ex)
        if self.on_exchange is not None:
            self.on_exchange(ex)

    def take_exchanges(self) -> list[Exchange]:
        out, self.exchanges = self.exchanges, []
        return out

    def send(self, cmd: CommandApdu | bytes) -> ResponseApdu:
        return self.session.send(cmd)

    def reset(self) -> bytes:
        """Reset the card (warm reset); returns the ATR.  The selection is back at the MF."""
        self.session.transport.reset()
        self._set_df(self.spec.mf if self.spec is not None else None, "MF")
        return self.session.atr

    def _set_df(self, df: DFSpec | None, where: str) -> None:
        self.df, self.ef, self.where = df, None, where

    def _track(self, ex: Exchange) -> None:
        """Follow successful SELECTs (by the context or raw)."""
        cmd, resp = ex.cmd, ex.resp
        if cmd.ins != 0xA4 or cmd.cla & 0xF0 != 0x00 or resp.sw not in (0x9000, 0x6A81, 0x9303):
            return
        data = cmd.data
        if cmd.p1 == 0x04:
            df = self._app_by_aid(data)
            self._set_df(df, df.name if df is not None else data.hex().upper())
            return
        if cmd.p1 != 0x00:
            return
        if not data or data == b"\x3F\x00":
            self._set_df(self.spec.mf if self.spec is not None else None, "MF")
            return
        fid = int.from_bytes(data, "big")
        if self.spec is not None:
            for df in self.spec.apps:
                if df.fid == fid:
                    self._set_df(df, df.name)
                    return
            if self.df is not None:
                for f in self.df.files:
                    if f.fid == fid:
                        self.ef = f
                        self.where = f"{self._df_text()}/{f.name}"
                        return
        if resp.data:                      # a DF answers with its FCI
            self._set_df(None, f"{fid:04X}")
        else:
            self.ef = None
            self.where = f"{self._df_text()}/{fid:04X}"

    def _df_text(self) -> str:
        if self.df is not None:
            return "MF" if self.df.fid == 0x3F00 else self.df.name
        return self.where.split("/")[0]

    def _app_by_aid(self, aid: bytes) -> DFSpec | None:
        if self.spec is None:
            return None
        for df in self.spec.dfs():
            if df.fid == 0x3F00:
                continue
            if df.aid == aid:
                return df
        for df in self.spec.apps:
            if df.aid.startswith(aid):
                return df
        return None

    # ------------------------------------------------------------------ names
    def app_names(self) -> list[str]:
        return ["mf", *(a.name for a in self.spec.apps)] if self.spec is not None else ["mf"]

    def file_names(self, df: DFSpec | None = None) -> list[str]:
        df = df or self.df
        return [f.name for f in df.files] if df is not None else []

    def need_spec(self, what: str) -> CardSpec:
        if self.spec is None:
            raise CardContextError(f"{what} needs a profile (--profile)")
        return self.spec

    def app(self, name: str | None) -> DFSpec:
        """The application called ``name`` (``mf`` for the MF), or the current one."""
        spec = self.need_spec("naming an application")
        if name is None:
            if self.df is None:
                raise CardContextError("no application of the profile is selected; name one")
            return self.df
        if name.lower() == "mf":
            return spec.mf
        df = spec.app(name)
        if df is None:
            known = ", ".join(self.app_names())
            raise CardContextError(f"no application {name!r} in the profile (applications: {known})")
        return df

    def file(self, name: str | None, df: DFSpec | None = None) -> FileSpec:
        """A file of ``df`` (default: the current DF) by name, FID (``0015``) or ``ef0015``."""
        if name is None:
            if self.ef is None:
                raise CardContextError("no file is selected; name one")
            return self.ef
        df = df or self.df
        if df is None:
            raise CardContextError(f"no application of the profile is selected to look for file {name!r} in")
        f = find_file(df, name)
        if f is None:
            known = ", ".join(self.file_names(df)) or "none"
            raise CardContextError(f"no file {name!r} in {df.name} (files: {known})")
        return f

    def key_spec(self, df: DFSpec, name: str | None, *, ktype: int | None = None) -> KeySpec:
        """A key of ``df`` by name; with no name, the first of type ``ktype`` (id 00 first)."""
        if name is not None:
            k = df.key(name)
            if k is None:
                known = ", ".join(k.name for k in df.keys) or "none"
                raise CardContextError(f"no key {name!r} in {df.name} (keys: {known})")
            if ktype is not None and k.ktype != ktype:
                raise CardContextError(f"key {df.name}/{name} is a {KeyType.label_of(k.ktype)} "
                                       f"key, not {KeyType.label_of(ktype)}")
            return k
        cands = sorted((k for k in df.keys if ktype is None or k.ktype == ktype), key=lambda k: k.kid)
        if not cands:
            raise CardContextError(f"{df.name} has no {KeyType.label_of(ktype, 'such')} key in the profile")
        return cands[0]

    # ------------------------------------------------------------------ selecting
    def select_target(self, target: str) -> list[CommandApdu]:
        """The SELECT command(s) for ``target``: ``mf``, an application or file name of the
        profile, ``..`` (the MF), a FID (4 hex digits) or an AID (5 to 16 bytes in hex); a
        ``fid:``/``aid:`` prefix forces the reading."""
        t = target.strip()
        low = t.lower()
        if low in ("mf", "..", "/"):
            return [iso.select_mf()]
        if low.startswith("fid:"):
            return [iso.select_fid(int.from_bytes(_hex(t[4:], "FID", (2,)), "big"))]
        if low.startswith("aid:"):
            return [iso.select_name(_hex(t[4:], "AID", tuple(range(1, 17))))]
        if self.spec is not None:
            df = self.spec.app(t)
            if df is not None:
                return [walk.select_df_command(df)]
            if self.df is not None:
                f = find_file(self.df, t)
                if f is not None:
                    return [iso.select_fid(f.fid)]
            if "/" in t:
                app_name, _, file_name = t.partition("/")
                df = self.app(app_name)
                f = self.file(file_name, df)
                return [walk.select_df_command(df), iso.select_fid(f.fid)]
        compact = "".join(t.split())
        if all(c in "0123456789abcdefABCDEF" for c in compact) and compact:
            if len(compact) == 4:
                return [iso.select_fid(int(compact, 16))]
            if len(compact) % 2 == 0 and 5 <= len(compact) // 2 <= 16:
                return [iso.select_name(bytes.fromhex(compact))]
        if self.spec is None:
            raise CardContextError(f"select {t!r}: without a profile give mf, a FID (4 hex digits) or an AID")
        files = f"; files of {self._df_text()}: {', '.join(self.file_names()) or 'none'}" if self.df else ""
        raise CardContextError(f"select {t!r}: not an application of the profile ({', '.join(self.app_names())})"
                               f"{files}, nor a FID or AID")

    def select(self, target: str) -> ResponseApdu:
        """SELECT ``target``; the answer of the last SELECT (the first failing one stops)."""
        resp = None
        for cmd in self.select_target(target):
            resp = self.send(cmd)
            if resp.sw != 0x9000:
                break
        assert resp is not None
        return resp

    def enter(self, df: DFSpec) -> None:
        """Make ``df`` the current DF unless it is already (a SELECT resets the security state)."""
        if self.df is not df:
            r = self.send(walk.select_df_command(df))
            if r.sw != 0x9000:
                raise CardAnswer(f"SELECT {df.name}", r)

    # ------------------------------------------------------------------ keys
    def need_keys(self, what: str) -> KeySource:
        if self.keys is None:
            raise CardContextError(f"{what} needs a key source (--keys)")
        return self.keys

    def serial(self, df: DFSpec) -> str:
        """The serial ``df``'s keys are diversified with, read from the card once.  Reading it
        may select another DF; the previous DF is selected again afterwards."""
        cached = self._serials.get(df.name)
        if cached is not None:
            return cached
        before, before_ef = self.df, self.ef
        try:
            value = walk.read_serial(self.session, self.need_spec("reading the serial"), df)
        except CitycardError as exc:
            raise CardContextError(str(exc)) from None
        self._serials[df.name] = value
        if before is not None and (self.df is not before or self.ef is not before_ef):
            self.send(walk.select_df_command(before))
            if before_ef is not None:
                self.send(iso.select_fid(before_ef.fid))
        return value

    def card_key(self, df: DFSpec, k: KeySpec) -> Key:
        """The per-card value of key ``k`` of ``df``.  Callers keep it in a local variable."""
        keys = self.need_keys(f"key {df.name}/{k.name}")
        if k.master is None:
            raise CardContextError(f"key {df.name}/{k.name} has no master in the key sources (a PIN?)")
        factor = factor_from(k.factor, self.serial(df)) if _needs_serial(k.factor) else factor_from(k.factor, "")
        try:
            value = keys.derive(k.master[0], k.master[1], factor,
                                **({"alg": k.alg} if k.alg != "des" else {}))   # SM4 keys: docs/sm4.md
        except CitycardError as exc:
            raise CardContextError(str(exc)) from None
        return value[:8] if k.length == 8 else value

    @property
    def line_alg(self) -> Alg:
        """The card's line-protection cipher: the profile's ``[card] line_protection`` (docs/sm4.md)."""
        return self.spec.line_alg if self.spec is not None else "des"

    def prepare_keys(self, df: DFSpec) -> None:
        """Read the serial of ``df`` now (before a script starts) when its keys need it."""
        if any(k.master is not None and _needs_serial(k.factor) for k in df.keys):
            self.serial(df)

    def auth(self, df: DFSpec, key_name: str | None = None) -> ResponseApdu:
        """EXTERNAL AUTHENTICATE in ``df`` with its external-auth key (default: id 00)."""
        k = self.key_spec(df, key_name, ktype=KeyType.EXTERNAL_AUTH)
        key = self.card_key(df, k)
        self.enter(df)
        from ..cos import check_line_protection

        check_line_protection(getattr(self.session, "atr", b""), self.line_alg)   # before any cryptogram
        chal = self.send(iso.get_challenge(4))
        if chal.sw != 0x9000:
            raise CardAnswer("GET CHALLENGE", chal)
        return self.send(iso.external_authenticate(k.kid, walk.external_auth_cryptogram(key, chal.data,
                                                                                         self.line_alg)))

    def verify_pin(self, df: DFSpec | None, pin: str, kid: int | None = None) -> ResponseApdu:
        """VERIFY in ``df`` (entered first) or, with no profile, the current DF with ``kid``."""
        from ..profile import pin_to_bytes

        if not pin.isdigit() or not 2 <= len(pin) <= 12:
            raise CardContextError("a PIN is 2 to 12 digits")
        if df is not None:
            kid = self.key_spec(df, None, ktype=KeyType.PIN).kid
            self.enter(df)
        return self.send(iso.verify(kid or 0, pin_to_bytes(pin)))

    def protected(self, df: DFSpec, key_name: str, cmd: CommandApdu, *, encrypt: bool = False) -> ResponseApdu:
        """``cmd`` with line protection under key ``key_name`` (SPEC §1.6): the stack sends
        GET CHALLENGE first."""
        k = self.key_spec(df, key_name)
        key = self.card_key(df, k)
        try:
            return self.session.send(cmd, protect=LineProtection(key, encrypt=encrypt, alg=self.line_alg))
        except CardError as exc:
            if exc.command != "GET CHALLENGE":
                raise
            raise CardAnswer("GET CHALLENGE", ResponseApdu(b"", exc.sw)) from None

    def mac(self, df: DFSpec, key_name: str, data: bytes, iv: bytes = b"") -> bytes:
        """The line-protection MAC (4 bytes, SPEC §1.6) of ``data`` under key ``key_name``;
        ``iv`` is the challenge (4 or 8 bytes), zeros when empty."""
        k = self.key_spec(df, key_name)
        key = self.card_key(df, k)
        return line_mac(key, iv or bytes(8), data, self.line_alg)

    # ------------------------------------------------------------------ reading
    def read(self, f: FileSpec | None) -> ReadResult:
        """Read a file of the current DF (by SFI) or, with ``None`` and no profile file
        selected, the current EF (binary, to its end)."""
        if f is None:
            r = self.send(iso.read_binary(0, 256))
            if r.sw != 0x9000:
                return ReadResult(None, error=f"{r.sw:04X} {describe_sw(r.sw)}")
            return ReadResult(None, data=r.data)
        if f.kind in ("ed", "ep"):
            r = self.send(purse.get_balance(PurseKind.ED if f.kind == "ed" else PurseKind.EP))
            if r.sw != 0x9000:
                return ReadResult(f, error=f"{r.sw:04X} {describe_sw(r.sw)}")
            fen = int.from_bytes(r.data, "big")
            return ReadResult(f, data=r.data, decoded={"balance": yuan(fen), "fen": fen})
        if f.kind == "binary":
            read = walk.read_file(self.session, f)
            out = read.data
            if not read.ok:
                return ReadResult(f, data=out or None, error=f"{read.sw:04X} {describe_sw(read.sw)}")
            res = ReadResult(f, data=out)
            res.decoded = _decode(f, out, None)
            return res
        return self.read_records(f)

    def read_records(self, f: FileSpec | None) -> ReadResult:
        """Every record of a record file (of the current EF when ``f`` is None) until ``6A83``."""
        limit = walk.record_limit(f) if f is not None else 254
        read = walk.read_records_to_end(self.session, sfi=f.sfi if f is not None else None, limit=limit)
        recs = list(read.records)
        error = None if read.ok else f"{read.sw:04X} {describe_sw(read.sw)}"
        res = ReadResult(f, records=recs, error=error)
        if f is not None and recs:
            res.decoded = _decode(f, None, recs)
        return res

    def balance(self, df: DFSpec | None = None) -> ResponseApdu:
        """GET BALANCE of the purse of ``df`` (default: the current DF; EP when unknown)."""
        df = df or self.df
        kind = PurseKind.EP
        if df is not None:
            file = next((f for f in df.files if f.kind in ("ed", "ep")), None)
            if file is None and self.spec is not None:
                raise CardContextError(f"{df.name} has no purse in the profile")
            if file is not None and file.kind == "ed":
                kind = PurseKind.ED
        return self.send(purse.get_balance(kind))


# ---------------------------------------------------------------------- helpers
def _needs_serial(binding: Any) -> bool:
    return not isinstance(binding, str) or binding.startswith("@")


def _hex(text: str, what: str, lengths: tuple[int, ...]) -> bytes:
    from ..hexutil import parse_hex

    return parse_hex(text, what, length=lengths)


def find_file(df: DFSpec, name: str) -> FileSpec | None:
    """A file of ``df`` by profile name, FID (``0015``) or ``ef0015``, case-insensitive."""
    low = name.lower()
    for f in df.files:
        if f.name.lower() == low:
            return f
    for f in df.files:
        fid = f"{f.fid:04x}"
        if low in (fid, "ef" + fid):
            return f
    return None


def _decode(f: FileSpec, data: bytes | None, recs: list[bytes] | None) -> Any:
    """Fields of a file's content by its layout; ``{"error": ...}`` when it does not fit."""
    if f.layout is None:
        return None
    try:
        lay = records.get(f.layout)
        if data is not None:
            size = getattr(lay, "size", len(data))
            return lay.decode(data[:size])
        assert recs is not None
        if hasattr(lay, "size"):
            return [lay.decode(r[: lay.size]) for r in recs]
        return lay.decode(recs)
    except (InputError, CitycardError) as exc:
        return {"error": str(exc)}


def decoded_lines(decoded: Any, indent: str = "    ") -> list[str]:
    """Readable ``name: value`` lines of a decoded file (a dict, or a list of record dicts)."""
    if decoded is None:
        return []
    if isinstance(decoded, list):
        out: list[str] = []
        for i, rec in enumerate(decoded, 1):
            out.append(f"{indent}record {i}:")
            out += decoded_lines(rec, indent + "  ")
        return out
    if isinstance(decoded, dict):
        width = max((len(str(k)) for k in decoded), default=0)
        return [f"{indent}{str(k).ljust(width)}  {v}" for k, v in decoded.items()]
    return [f"{indent}{decoded}"]
