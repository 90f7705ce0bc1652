"""The script language: parsing and static checks (docs/script.md).

One statement per line, ``#`` comments, ``set NAME = VALUE`` and ``${NAME}`` (or a byte
slice ``${NAME[0:4]}``), raw APDUs with an expected SW (``=9000``, ``X`` wildcards), a
response pattern (``-> 6F..84 0E * 9000``) and a capture (``=> NAME``), the conveniences
``select``, ``auth``, ``verify-pin``, ``mac``, ``protect``, ``serial``, ``reset``,
``expect``/``assert`` and ``echo``, and the ``> command`` / ``< response`` lines of a
citycard transcript (so a transcript replays as a script).

:func:`parse` reads the whole text first, so a syntax error stops a script before it
touches a card; :func:`check` then finds variables used before being set and statements
that need a profile or a key source the run does not have.  Both raise
:class:`ScriptError` (``FILE:LINE: message``).  A card answering otherwise than the
script expects is a :class:`ScriptFailure`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..apdu import CommandApdu
from ..errors import CitycardError, InputError
from ..hexutil import parse_hex
from .pattern import ResponsePattern, SwPattern, volatile_bytes

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(rf"^{NAME}$")
VAR_RE = re.compile(rf"\$\{{({NAME})(?:\[(-?\d*):(-?\d*)\])?\}}")
_CAPTURE_RE = re.compile(rf"=>\s*({NAME})\s*$")
_SW_RE = re.compile(r"(?:^|(?<=[\s0-9A-Fa-f}]))=\s*([0-9A-Fa-fXx]{4})\s*$")
_MASKED_RE = re.compile(r"<(\d+) bytes masked>")
_EXPECT_RE = re.compile(r"\s(==|!=|~)\s")
TRANSCRIPT_HEADER = "# citycard transcript:"
RECORD_HEADER = "# citycard script transcript:"
AUTO_VARS = ("SW", "DATA")


class ScriptError(CitycardError):
    """A script that cannot run as written (exit code 2): ``FILE:LINE: message``."""

    def __init__(self, message: str, file: str = "", line: int | None = None) -> None:
        self.file, self.line, self.reason = file, line, message
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(where + message)


class ScriptFailure(CitycardError):
    """The card did not answer as the script expects (exit code 1): ``FILE:LINE: message``."""

    def __init__(self, message: str, file: str = "", line: int | None = None) -> None:
        self.file, self.line, self.reason = file, line, message
        where = f"{file}:{line}: " if file and line else ""
        super().__init__(where + message)


# --------------------------------------------------------------------------- statements
@dataclass(frozen=True)
class Statement:
    line: int
    text: str                       # the statement as written, comment removed

    def refs(self) -> set[str]:
        """Variables this statement reads."""
        out: set[str] = set()
        for value in self._templates():
            out |= {m.group(1) for m in VAR_RE.finditer(value or "")}
        return out

    def defines(self) -> set[str]:
        """Variables this statement sets."""
        return set()

    def _templates(self) -> Iterable[str | None]:
        return ()


@dataclass(frozen=True)
class Expectation:
    """What an exchange must answer: an SW pattern and/or a response pattern (templates)."""

    sw: str | None = None
    pattern: str | None = None
    capture: str | None = None

    @property
    def default(self) -> bool:
        """Neither SW nor pattern given: 9000 is expected."""
        return self.sw is None and self.pattern is None


@dataclass(frozen=True)
class SetVar(Statement):
    name: str = ""
    value: str = ""

    def _templates(self):
        return (self.value,)

    def defines(self):
        return {self.name}


@dataclass(frozen=True)
class Echo(Statement):
    message: str = ""

    def _templates(self):
        return (self.message,)


@dataclass(frozen=True)
class Expect(Statement):
    left: str = ""
    op: str = "=="
    right: str = ""

    def _templates(self):
        return (self.left, self.right)


@dataclass(frozen=True)
class Exchanging(Statement):
    expect: Expectation = field(default_factory=Expectation)

    def defines(self):
        return {self.expect.capture} if self.expect.capture else set()

    def _templates(self):
        return (self.expect.sw, self.expect.pattern)


@dataclass(frozen=True)
class Apdu(Exchanging):
    command: str = ""                # hex template
    replayed: bool = False           # from a transcript's '>' line

    def _templates(self):
        return (self.command, *super()._templates())


@dataclass(frozen=True)
class Select(Exchanging):
    target: str = ""

    def _templates(self):
        return (self.target, *super()._templates())


@dataclass(frozen=True)
class Auth(Exchanging):
    app: str = ""
    key: str | None = None


@dataclass(frozen=True)
class VerifyPin(Exchanging):
    app: str | None = None           # application name, or a key id in hex (no profile)
    env: str = "CITYCARD_PIN"


@dataclass(frozen=True)
class Protect(Exchanging):
    app: str = ""
    key: str = ""
    encrypt: bool = False
    command: str = ""

    def _templates(self):
        return (self.command, *super()._templates())


@dataclass(frozen=True)
class Mac(Statement):
    app: str = ""
    key: str = ""
    data: str = ""
    iv: str | None = None
    capture: str = ""

    def _templates(self):
        return (self.data, self.iv)

    def defines(self):
        return {self.capture}


@dataclass(frozen=True)
class Serial(Statement):
    app: str = ""
    capture: str = ""

    def defines(self):
        return {self.capture}


@dataclass(frozen=True)
class Reset(Statement):
    capture: str | None = None

    def defines(self):
        return {self.capture} if self.capture else set()


NEEDS_KEYS = (Auth, Protect, Mac)


@dataclass(frozen=True)
class Script:
    source: str
    statements: tuple[Statement, ...]
    wire: bool = False              # a citycard transcript: replay at the wire (no T=0 fetching)


# --------------------------------------------------------------------------- parsing
def strip_comment(line: str) -> str:
    """The line without its comment: ``#`` at the start or after a space or tab."""
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _hex_template_ok(text: str) -> bool:
    rest = VAR_RE.sub("", text)
    return all(c in "0123456789abcdefABCDEF \t:_" for c in rest)


def split_tail(rest: str) -> tuple[str, Expectation]:
    """``BODY [=SW] [-> PATTERN] [=> NAME]`` → body and expectation (raises InputError)."""
    capture = None
    m = _CAPTURE_RE.search(rest)
    if m:
        capture = m.group(1)
        rest = rest[: m.start()].rstrip()
    elif "=>" in rest:
        raise InputError(f"'=>' must be followed by a variable name, got {rest.split('=>', 1)[1].strip()!r}")
    pattern = None
    if "->" in rest:
        rest, _, pattern = rest.partition("->")
        pattern = pattern.strip()
        if not pattern:
            raise InputError("'->' must be followed by a response pattern")
        if not VAR_RE.search(pattern):
            ResponsePattern.parse(pattern)        # syntax checked now
        rest = rest.rstrip()
    sw = None
    m = _SW_RE.search(rest)
    if m:
        sw = m.group(1).upper()
        SwPattern.parse(sw)
        rest = rest[: m.start()].rstrip()
    stray = re.search(r"(?<![A-Za-z])=\s*(\S*)\s*$", rest)
    if stray:
        raise InputError(f"{stray.group(0).strip()!r}: an expected SW is '=' and 4 hex digits (X for any nibble),"
                         " e.g. =9000")
    return rest.strip(), Expectation(sw, pattern, capture)


def _keyref(text: str, what: str) -> tuple[str, str]:
    app, sep, key = text.partition("/")
    if not sep or not app or not key:
        raise InputError(f"{what}: name the key as APPLICATION/KEY (e.g. transit/damk), got {text!r}")
    return app, key


def _command(text: str) -> CommandApdu | None:
    """The command of a literal hex template (None when it uses variables)."""
    if VAR_RE.search(text):
        return None
    return CommandApdu.parse(parse_hex(text, "APDU"))


# One parser per statement word: (line number, statement text, word, rest of the line) →
# statement; an :class:`InputError` becomes the ``FILE:LINE`` :class:`ScriptError`.
_StatementParser = Callable[[int, str, str, str], Statement]


def _parse_set(no: int, text: str, word: str, rest: str) -> Statement:
    name, eq, value = rest.partition("=")
    name = name.strip()
    if not eq or not _NAME_RE.match(name):
        raise InputError("expected: set NAME = VALUE")
    if name in AUTO_VARS:
        raise InputError(f"{name} is set by every exchange; choose another name")
    return SetVar(no, text, name=name, value=value.strip())


def _parse_echo(no: int, text: str, word: str, rest: str) -> Statement:
    return Echo(no, text, message=rest)


def _parse_expect(no: int, text: str, word: str, rest: str) -> Statement:
    """``expect``/``assert LEFT == RIGHT`` (or ``!=``, or ``~ PATTERN``)."""
    padded = " " + rest + " "
    m = _EXPECT_RE.search(padded)
    left = padded[: m.start()].strip() if m else ""
    right = padded[m.end():].strip() if m else ""
    if not m or not left or not right:
        raise InputError(f"expected: {word} VALUE == VALUE (or !=, or ~ PATTERN)")
    if m.group(1) == "~" and not VAR_RE.search(right):
        ResponsePattern.parse(right)
    return Expect(no, text, left=left, op=m.group(1), right=right)


def _parse_select(no: int, text: str, word: str, rest: str) -> Statement:
    body, exp = split_tail(rest)
    if not body:
        raise InputError("expected: select mf|APPLICATION|FILE|FID|AID [=SW] [-> PATTERN] [=> NAME]")
    return Select(no, text, expect=exp, target=body)


def _sw_only(word: str, rest: str) -> tuple[str, Expectation]:
    """Body and expectation of a statement that takes an expected SW only."""
    body, exp = split_tail(rest)
    if exp.pattern or exp.capture:
        raise InputError(f"{word} takes an expected SW only (=SW)")
    return body, exp


def _parse_auth(no: int, text: str, word: str, rest: str) -> Statement:
    body, exp = _sw_only(word, rest)
    parts = body.split()
    if not 1 <= len(parts) <= 2:
        raise InputError("expected: auth APPLICATION [KEY] [=SW]")
    return Auth(no, text, expect=exp, app=parts[0], key=parts[1] if len(parts) == 2 else None)


def _parse_verify_pin(no: int, text: str, word: str, rest: str) -> Statement:
    body, exp = _sw_only(word, rest)
    app, env = None, "CITYCARD_PIN"
    for part in body.split():
        if part.lower().startswith("env="):
            env = part[4:]
            if not _NAME_RE.match(env):
                raise InputError(f"env={env!r}: not an environment variable name")
        elif app is None:
            app = part
        else:
            raise InputError("expected: verify-pin [APPLICATION|KEY-ID] [env=NAME] [=SW] "
                             "(the PIN comes from the environment, never from the script)")
    return VerifyPin(no, text, expect=exp, app=app, env=env)


def _parse_protect(no: int, text: str, word: str, rest: str) -> Statement:
    body, exp = split_tail(rest)
    parts = body.split(None, 1)
    if len(parts) < 2:
        raise InputError("expected: protect APPLICATION/KEY [encrypt] APDU [=SW] [-> PATTERN] [=> NAME]")
    app, key = _keyref(parts[0], "protect")
    cmd = parts[1]
    encrypt = cmd.split()[0].lower() in ("encrypt", "enc")
    if encrypt:
        cmd = cmd.split(None, 1)[1] if len(cmd.split(None, 1)) > 1 else ""
    if not cmd or not _hex_template_ok(cmd):
        raise InputError(f"protect: {cmd!r} is not an APDU in hex")
    _command(cmd)
    return Protect(no, text, expect=exp, app=app, key=key, encrypt=encrypt, command=cmd)


def _parse_mac(no: int, text: str, word: str, rest: str) -> Statement:
    usage = "expected: mac APPLICATION/KEY DATA [iv=HEX] => NAME"
    m = _CAPTURE_RE.search(rest)
    if not m:
        raise InputError(usage)
    body = rest[: m.start()].strip()
    iv = None
    im = re.search(r"(?:^|\s)iv=(\S+)\s*$", body)
    if im:
        iv = im.group(1)
        body = body[: im.start()].strip()
    parts = body.split(None, 1)
    if len(parts) < 2:
        raise InputError(usage)
    app, key = _keyref(parts[0], "mac")
    if not _hex_template_ok(parts[1]) or (iv is not None and not _hex_template_ok(iv)):
        raise InputError("mac: DATA and iv= are hex (or ${NAME})")
    return Mac(no, text, app=app, key=key, data=parts[1], iv=iv, capture=m.group(1))


def _parse_serial(no: int, text: str, word: str, rest: str) -> Statement:
    m = _CAPTURE_RE.search(rest)
    body = rest[: m.start()].strip() if m else rest
    if not m or len(body.split()) != 1:
        raise InputError("expected: serial APPLICATION => NAME")
    return Serial(no, text, app=body, capture=m.group(1))


def _parse_reset(no: int, text: str, word: str, rest: str) -> Statement:
    m = _CAPTURE_RE.search(rest)
    body = rest[: m.start()].strip() if m else rest
    if body:
        raise InputError("expected: reset [=> NAME]")
    return Reset(no, text, capture=m.group(1) if m else None)


_PARSERS: dict[str, _StatementParser] = {
    "set": _parse_set, "echo": _parse_echo, "expect": _parse_expect, "assert": _parse_expect,
    "select": _parse_select, "auth": _parse_auth, "verify-pin": _parse_verify_pin, "mac": _parse_mac,
    "protect": _parse_protect, "serial": _parse_serial, "reset": _parse_reset,
}
#: The statement words, in the order messages list them.
KEYWORDS = tuple(_PARSERS)


def _parse_statement(no: int, text: str) -> Statement:
    """A statement (by its first word) or a raw APDU."""
    head, _, rest = text.partition(" ")
    parser = _PARSERS.get(head.lower())
    if parser is not None:
        return parser(no, text, head.lower(), rest.strip())
    body, exp = split_tail(text)
    if not body or not _hex_template_ok(body):
        known = ", ".join(KEYWORDS)
        raise InputError(f"{head!r} is neither a statement ({known}) nor an APDU in hex")
    _command(body)
    return Apdu(no, text, expect=exp, command=body)


def parse(text: str, source: str = "<script>") -> Script:
    """The statements of a script (or of a citycard transcript); :class:`ScriptError` at the
    first line that does not parse."""
    statements: list[Statement] = []
    wire = False
    replay = _Replay()
    seen_text = False
    for no, raw in enumerate(text.splitlines(), 1):
        if not seen_text and raw.strip():
            seen_text = True
            wire = raw.strip().startswith(TRANSCRIPT_HEADER)
        line = strip_comment(raw).strip()
        if not line:
            continue
        try:
            if line.startswith(">"):
                statements.append(replay.command(no, line))
            elif line.startswith("<"):
                statements[-1] = replay.response(line)
            else:
                replay.pending = None
                statements.append(_parse_statement(no, line))
        except ScriptError:
            raise
        except InputError as exc:
            raise ScriptError(str(exc), source, no) from None
    return Script(source, tuple(statements), wire)


class _Replay:
    """The ``> command`` / ``< response`` lines of a citycard transcript: a '>' line is an
    exchange, the '<' line after it its expected response."""

    def __init__(self) -> None:
        self.last_cmd: CommandApdu | None = None     # previous '>' command (GET RESPONSE skipped)
        self.pending: Apdu | None = None             # a '>' statement waiting for its '<' line

    def command(self, no: int, line: str) -> Apdu:
        """A '>' line: the exchange (refused when its data was masked or depends on the
        recorded session's random number)."""
        body = line[1:].strip()
        m = _MASKED_RE.search(body)
        if m:
            raise InputError(f"this command's data ({m.group(1)} bytes) was masked when it was recorded "
                             "(a key or a PIN): it cannot be replayed; use verify-pin, auth or protect "
                             "in its place")
        body, exp = split_tail(body)
        if not body or not _hex_template_ok(body):
            raise InputError(f"'>' must be followed by a command APDU in hex, got {body!r}")
        cmd = _command(body)
        if cmd is not None and self.last_cmd is not None and after_random(self.last_cmd, cmd):
            raise InputError("this command carries a cryptogram or MAC computed over the card's random "
                             "number of the recorded session: it cannot be replayed byte for byte; use "
                             "auth or protect (or record with `citycard script run --transcript`)")
        if cmd is not None and cmd.ins != 0xC0:
            self.last_cmd = cmd
        self.pending = Apdu(no, line, expect=exp, command=body, replayed=True)
        return self.pending

    def response(self, line: str) -> Apdu:
        """A '<' line: the pending '>' exchange with the recorded response as its pattern."""
        pending = self.pending
        if pending is None:
            raise InputError("a '<' response line must follow a '>' command line")
        pat_text, exp = split_tail(line[1:].strip())
        if exp.sw is not None:
            raise InputError("a '<' line is the whole response: data then SW (no '=SW')")
        if exp.pattern is not None:
            raise InputError("a '<' line is the response pattern itself (no '->')")
        if not pat_text:
            raise InputError("a '<' line needs the response: data then SW, e.g. '< 9000'")
        pattern = _replay_pattern(pending, pat_text)
        merged = Expectation(pending.expect.sw, pattern, exp.capture or pending.expect.capture)
        self.pending = None
        return Apdu(pending.line, pending.text, expect=merged, command=pending.command, replayed=True)


def _replay_pattern(stmt: Apdu, text: str) -> str:
    """The expected response of a replayed exchange: as recorded, except the bytes that are
    random by design (a challenge, the card's random of INITIALIZE) become ``..``."""
    if VAR_RE.search(text):
        return text
    ResponsePattern.parse(text)
    compact = "".join(text.split()).upper()
    cmd = _command(stmt.command) if not VAR_RE.search(stmt.command) else None
    if cmd is None or not all(c in "0123456789ABCDEF" for c in compact) or len(compact) < 4:
        return " ".join(text.split())
    raw = bytes.fromhex(compact)
    data, sw = raw[:-2], int.from_bytes(raw[-2:], "big")
    wild = volatile_bytes(cmd.encode(), data)
    return ResponsePattern.exact(data, sw, wild).text if wild else " ".join(text.split())


def after_random(prev: CommandApdu, cmd: CommandApdu) -> bool:
    """Whether ``cmd`` (after ``prev``) depends on a random number the card sent in ``prev``."""
    if prev.ins == 0x84 and prev.cla & 0x80 == 0:               # GET CHALLENGE
        return cmd.ins == 0x82 or (cmd.cla & 0x04 != 0 and len(cmd.data) >= 4)
    if prev.ins == 0x50 and prev.cla & 0xF0 == 0x80:             # INITIALIZE FOR LOAD / PURCHASE ...
        return cmd.cla & 0xF0 == 0x80 and cmd.ins in (0x52, 0x54, 0xDC, 0x58)
    return False


# --------------------------------------------------------------------------- checks
def check(script: Script, *, spec=None, have_keys: bool = False, predefined: Iterable[str] = ()) -> None:
    """Static checks before anything is sent: variables set before use, names of the profile,
    a profile and a key source where the statements need them."""
    defined = set(predefined) | set(AUTO_VARS)
    for st in script.statements:
        problem = (_undefined_variable(st, defined) or _missing_source(st, spec, have_keys)
                   or (_app_problem(spec, st) if spec is not None and _names_app(st) else None))
        if problem:
            raise ScriptError(problem, script.source, st.line)
        defined |= st.defines()


_KEY_ID = re.compile(r"[0-9A-Fa-f]{2}")


def _undefined_variable(st: Statement, defined: set[str]) -> str | None:
    for name in sorted(st.refs()):
        if name not in defined:
            return f"variable {name!r} is used before it is set (set {name} = ..., or capture it with => {name})"
    return None


def _missing_source(st: Statement, spec, have_keys: bool) -> str | None:
    """A statement that needs a profile or a key source the run does not have."""
    word = st.text.split()[0] if st.text else ""
    if isinstance(st, NEEDS_KEYS):
        if spec is None:
            return f"{word} needs a profile (--profile) to know the application's keys"
        if not have_keys:
            return f"{word} needs a key source (--keys) for the per-card key"
    if isinstance(st, Serial) and spec is None:
        return "serial needs a profile (--profile)"
    if isinstance(st, VerifyPin) and st.app is not None and spec is None and not _KEY_ID.fullmatch(st.app):
        return f"verify-pin {st.app}: without a profile give the PIN's key id in hex (e.g. 00)"
    return None


def _names_app(st: Statement) -> bool:
    return isinstance(st, (Auth, Protect, Mac, Serial)) or (isinstance(st, VerifyPin) and bool(st.app))


def _app_problem(spec, st: Statement) -> str | None:
    """The application (and key) a statement names exist in the profile and suit it."""
    app_name = getattr(st, "app")
    if isinstance(st, VerifyPin) and _KEY_ID.fullmatch(app_name or "") and spec.app(app_name) is None:
        return None                      # a PIN's key id
    df = spec.mf if app_name.lower() == "mf" else spec.app(app_name)
    if df is None:
        known = ", ".join(["mf", *(a.name for a in spec.apps)])
        return f"no application {app_name!r} in the profile (applications: {known})"
    if isinstance(st, VerifyPin):
        return None if any(k.ktype == 0x3A for k in df.keys) else f"{df.name} has no PIN in the profile"
    return _key_problem(df, st)


def _key_problem(df, st: Statement) -> str | None:
    """The key an auth, protect or mac statement names: in the DF, and of the right kind."""
    key = getattr(st, "key", None)
    if key is not None and df.key(key) is None:
        known = ", ".join(k.name for k in df.keys) or "none"
        return f"no key {key!r} in {df.name} (keys: {known})"
    if isinstance(st, (Protect, Mac)) and df.key(key).master is None:
        return f"key {df.name}/{key} has no master in the key sources (a PIN is not a MAC key)"
    if isinstance(st, Auth):
        k = df.key(key) if key else df.master_key()
        if k is None or k.ktype != 0x39:
            return f"{df.name}/{key or '(id 00)'} is not an external-auth key"
    return None
