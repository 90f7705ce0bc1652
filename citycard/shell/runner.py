"""Running scripts: statements against a :class:`~citycard.shell.card.CardContext`.

:class:`Runner` keeps the variables, sends what each statement asks for, checks the
answers and stops at the first mismatch with a :class:`ScriptFailure` naming the line.
The interactive shell runs its script-language lines through the same object.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping

from ..apdu import CommandApdu, ResponseApdu, describe_sw
from ..errors import CitycardError, InputError
from ..hexutil import parse_hex
from ..transport.transcript import format_response
from .card import CardAnswer, CardContext, Exchange
from .pattern import SW_OK, ResponsePattern, SwPattern
from .record import Recorder
from .script import (AUTO_VARS, NEEDS_KEYS, VAR_RE, Apdu, Auth, Echo, Exchanging, Expect, Mac, Protect,
                     Reset, Script, ScriptError, ScriptFailure, Select, Serial, SetVar, Statement,
                     VerifyPin, check, parse)

_HEXISH = re.compile(r"^[0-9A-Fa-f\s]*$")


class Runner:
    """Executes statements.  ``out`` receives lines for the user (exchanges, echo);
    ``env`` is where ``verify-pin`` finds PINs (default: ``os.environ``)."""

    def __init__(self, ctx: CardContext, *, variables: Mapping[str, str] | None = None,
                 out: Callable[[str], None] = print, recorder: Recorder | None = None,
                 env: Mapping[str, str] | None = None, show_statements: bool = False) -> None:
        self.ctx = ctx
        self.vars: dict[str, str] = {"SW": "", "DATA": ""}
        self.vars.update(variables or {})
        self.volatile: set[str] = set(AUTO_VARS)
        self.out = out
        self.recorder = recorder
        self.env = env if env is not None else os.environ
        self.show_statements = show_statements
        self.source = "<shell>"
        self.count = 0

    # ------------------------------------------------------------------ scripts
    def run(self, script: Script) -> int:
        """Run every statement; returns how many ran.  Raises at the first problem."""
        self.source = script.source
        if self.recorder is not None:
            for name, value in self.vars.items():
                if name not in AUTO_VARS:
                    self.recorder.statement(f"set {name} = {value}")
        self._prepare(script)
        for st in script.statements:
            self.execute(st)
        return len(script.statements)

    def _prepare(self, script: Script) -> None:
        """Read the serials the per-card keys need before the first statement, so that key
        statements later do not disturb the selection or the security state."""
        spec = self.ctx.spec
        if spec is None:
            return
        seen: set[str] = set()
        for st in script.statements:
            if isinstance(st, NEEDS_KEYS) and st.app not in seen:
                seen.add(st.app)
                df = spec.mf if st.app.lower() == "mf" else spec.app(st.app)
                if df is not None:
                    self._guard(st, lambda df=df: self.ctx.prepare_keys(df))
        ex = self.ctx.take_exchanges()
        if ex and self.recorder is not None:
            self.recorder.comment("reading the card serial for the per-card keys (done again on replay):")
            self.recorder.statement("#", ex)

    def run_line(self, text: str, line: int = 0) -> Statement | None:
        """Parse, check and run one line (the shell); returns the statement, None for a comment."""
        script = parse(text, self.source)
        if not script.statements:
            return None
        check(script, spec=self.ctx.spec, have_keys=self.ctx.keys is not None, predefined=self.vars)
        for st in script.statements:
            self.execute(st)
        return script.statements[-1]

    # ------------------------------------------------------------------ statements
    def _fail(self, st: Statement, message: str) -> ScriptFailure:
        return ScriptFailure(message, self.source, st.line or None)

    def _error(self, st: Statement, message: str) -> ScriptError:
        return ScriptError(message, self.source, st.line or None)

    def _guard(self, st: Statement, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except CardAnswer as exc:
            raise self._fail(st, str(exc)) from None
        except (ScriptError, ScriptFailure):
            raise
        except CitycardError as exc:
            raise self._error(st, str(exc)) from None

    def execute(self, st: Statement) -> None:
        self.count += 1
        if self.show_statements and not isinstance(st, Apdu):   # an APDU shows as its exchange (masked)
            self.out(f"-- {st.line}: {st.text}" if st.line else f"-- {st.text}")
        self.ctx.take_exchanges()
        try:
            handler = getattr(self, "_do_" + type(st).__name__.lower())
            handler(st)
        except (ScriptFailure, ScriptError) as exc:
            if self.recorder is not None:
                ex = self.ctx.take_exchanges()
                self.recorder.statement(st.text, ex)
                self.recorder.comment(f"FAILED: {exc}")
            raise

    # -- no card
    def _do_setvar(self, st: SetVar) -> None:
        value = self.subst(st, st.value)
        self.vars[st.name] = value
        self._mark(st.name, st.value)
        self._record_source(st)

    def _do_echo(self, st: Echo) -> None:
        self.out(self.subst(st, st.message))
        self._record_source(st)

    def _do_expect(self, st: Expect) -> None:
        left, right = self.subst(st, st.left), self.subst(st, st.right)
        if st.op == "~":
            pat = self._pattern(st, right)
            ok = _HEXISH.match(left) is not None and pat.matches_bytes(self._hexval(st, left, "left side"))
        else:
            same = _norm(left) == _norm(right)
            ok = same if st.op == "==" else not same
        if not ok:
            raise self._fail(st, f"expect failed: {left!r} {st.op} {right!r}")
        self._record_source(st)

    def _do_mac(self, st: Mac) -> None:
        data = self._hexval(st, self.subst(st, st.data), "mac data")
        iv = self._hexval(st, self.subst(st, st.iv), "iv") if st.iv is not None else b""
        if iv and len(iv) not in (4, 8):
            raise self._error(st, f"iv: {len(iv)} bytes, expected 4 (a challenge) or 8")
        df = self._guard(st, lambda: self.ctx.app(st.app))
        mac = self._guard(st, lambda: self.ctx.mac(df, st.key, data, iv))
        self.vars[st.capture] = mac.hex().upper()
        self.volatile.add(st.capture)
        self.out(f"mac {st.app}/{st.key} = {mac.hex().upper()}  (=> {st.capture})")
        self._record_source(st, self.ctx.take_exchanges())

    def _do_serial(self, st: Serial) -> None:
        df = self._guard(st, lambda: self.ctx.app(st.app))
        value = self._guard(st, lambda: self.ctx.serial(df))
        self.vars[st.capture] = value
        self.volatile.add(st.capture)
        self.out(f"serial of {df.name}: {value}  (=> {st.capture})")
        self._record_source(st, self.ctx.take_exchanges())

    def _do_reset(self, st: Reset) -> None:
        atr = self._guard(st, self.ctx.reset)
        self.out(f"reset: ATR {atr.hex().upper()}")
        if st.capture:
            self.vars[st.capture] = atr.hex().upper()
            self.volatile.add(st.capture)
        self._record_source(st)

    # -- exchanges
    def _do_apdu(self, st: Apdu) -> None:
        text = self.subst(st, st.command)
        try:
            cmd = CommandApdu.parse(parse_hex(text, "APDU"), what="APDU")
        except InputError as exc:
            raise self._error(st, str(exc)) from None
        resp = self._guard(st, lambda: self.ctx.send(cmd))
        volatile = self._uses_volatile(st.command) or self._uses_volatile(st.expect.pattern or "")
        self._finish(st, resp, plain=not volatile)

    def _do_select(self, st: Select) -> None:
        target = self.subst(st, st.target)
        resp = self._guard(st, lambda: self.ctx.select(target))
        self._finish(st, resp, plain=True)

    def _do_auth(self, st: Auth) -> None:
        df = self._guard(st, lambda: self.ctx.app(st.app))
        resp = self._guard(st, lambda: self.ctx.auth(df, st.key))
        self._finish(st, resp, plain=False)

    def _do_verifypin(self, st: VerifyPin) -> None:
        pin = self.env.get(st.env)
        if not pin:
            raise self._error(st, f"verify-pin: set the PIN in the environment variable {st.env} "
                                  "(scripts never hold PINs)")
        pin = pin.strip()
        if st.app is not None and re.fullmatch(r"[0-9A-Fa-f]{2}", st.app) and (
                self.ctx.spec is None or self.ctx.spec.app(st.app) is None):
            df, kid = None, int(st.app, 16)
        elif st.app is not None:
            df, kid = self._guard(st, lambda: self.ctx.app(st.app)), None
        elif self.ctx.spec is not None and self.ctx.df is not None:
            df, kid = self.ctx.df, None
        else:
            df, kid = None, 0
        resp = self._guard(st, lambda: self.ctx.verify_pin(df, pin, kid))
        self._finish(st, resp, plain=False)

    def _do_protect(self, st: Protect) -> None:
        text = self.subst(st, st.command)
        try:
            cmd = CommandApdu.parse(parse_hex(text, "APDU"), what="APDU")
        except InputError as exc:
            raise self._error(st, str(exc)) from None
        df = self._guard(st, lambda: self.ctx.app(st.app))
        resp = self._guard(st, lambda: self.ctx.protected(df, st.key, cmd, encrypt=st.encrypt))
        self._finish(st, resp, plain=False)

    def _finish(self, st: Exchanging, resp: ResponseApdu, *, plain: bool) -> None:
        """Check the answer, capture, record."""
        self.vars["SW"] = f"{resp.sw:04X}"
        self.vars["DATA"] = resp.data.hex().upper()
        exp = st.expect
        problem = None
        sw = SwPattern.parse(self.subst(st, exp.sw)) if exp.sw is not None else (SW_OK if exp.default else None)
        pattern = self._pattern(st, self.subst(st, exp.pattern)) if exp.pattern is not None else None
        if sw is not None and not sw.matches(resp.sw):
            problem = f"expected SW {sw.text}, card answered {resp.sw:04X} ({describe_sw(resp.sw)})"
        elif pattern is not None and not pattern.matches(resp.data, resp.sw):
            problem = (f"response {format_response(resp)} ({describe_sw(resp.sw)}) does not match "
                       f"the pattern {pattern.text}")
        if problem is not None:
            raise self._fail(st, problem)       # execute() records the exchanges with the failure
        if exp.capture:
            self.vars[exp.capture] = resp.data.hex().upper()
            self.volatile.add(exp.capture)
        exchanges = self.ctx.take_exchanges()
        if self.recorder is not None:
            if plain and exchanges:
                self.recorder.exchanges(exchanges, capture=exp.capture,
                                        pattern=pattern.text if pattern is not None else None,
                                        note=st.text if not isinstance(st, Apdu) else "")
            else:
                self.recorder.statement(st.text, exchanges)

    # ------------------------------------------------------------------ values
    def subst(self, st: Statement, text: str | None) -> str:
        """``text`` with ``${NAME}`` and ``${NAME[a:b]}`` (byte slices of hex) replaced."""
        if text is None:
            return ""

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.vars:
                raise self._error(st, f"variable {name!r} is not set")
            value = self.vars[name]
            if m.group(2) is None and m.group(3) is None:
                return value
            raw = self._hexval(st, value, f"${{{name}}}")
            lo = int(m.group(2)) if m.group(2) else None
            hi = int(m.group(3)) if m.group(3) else None
            return raw[lo:hi].hex().upper()

        return VAR_RE.sub(one, text)

    def _uses_volatile(self, template: str) -> bool:
        return any(m.group(1) in self.volatile for m in VAR_RE.finditer(template))

    def _mark(self, name: str, template: str) -> None:
        if self._uses_volatile(template):
            self.volatile.add(name)
        else:
            self.volatile.discard(name)

    def _hexval(self, st: Statement, text: str, what: str) -> bytes:
        try:
            return parse_hex(text, what)
        except InputError as exc:
            raise self._error(st, str(exc)) from None

    def _pattern(self, st: Statement, text: str) -> ResponsePattern:
        try:
            return ResponsePattern.parse(text)
        except InputError as exc:
            raise self._error(st, str(exc)) from None

    def _record_source(self, st: Statement, exchanges: list[Exchange] | None = None) -> None:
        if self.recorder is not None:
            self.recorder.statement(st.text, exchanges or [])


def _norm(value: str) -> str:
    """Values compare as hex (spaces and case ignored) when both look like hex, else as text."""
    compact = "".join(value.split())
    if compact and all(c in "0123456789abcdefABCDEF" for c in compact):
        return compact.upper()
    return value.strip()


def run_script(ctx: CardContext, script: Script, *, variables: Mapping[str, str] | None = None,
               out: Callable[[str], None] = print, recorder: Recorder | None = None,
               env: Mapping[str, str] | None = None, show_statements: bool = True,
               replay_hint: str = "") -> Runner:
    """Check ``script`` against what ``ctx`` has (profile, key source), then run it.

    Returns the runner (its ``count``, its variables); raises :class:`ScriptError` before
    anything is sent when the script cannot run, :class:`ScriptFailure` at the first mismatch.
    """
    check(script, spec=ctx.spec, have_keys=ctx.keys is not None, predefined=(variables or {}).keys())
    runner = Runner(ctx, variables=variables, out=out, recorder=recorder, env=env,
                    show_statements=show_statements)
    if recorder is not None:
        transport = ctx.session.transport
        recorder.header(getattr(transport, "name", "?"), ctx.session.atr, script.source, replay_hint)
    runner.run(script)
    return runner
