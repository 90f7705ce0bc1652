"""``citycard shell``: an interactive session with a card (standard library ``cmd`` and
``readline``: history in ``~/.citycard_history``, tab completion of the commands and of
the profile's applications, files and keys).

Every exchange is shown with its SW meaning and, when the answer is BER-TLV, a TLV dump.
Lines that are not shell commands are script statements (docs/script.md): raw APDUs in
hex, ``set``, ``echo``, ``expect``, ``mac``, ``protect``, ``serial``, ``reset``.
"""

from __future__ import annotations

import cmd
import getpass
import os
from typing import IO, Any

from ..apdu import CommandApdu, describe_sw
from ..errors import CitycardError, InputError
from ..hexutil import parse_hex
from ..money import yuan
from ..spec import ac_text
from .card import CardContext, decoded_lines, exchange_lines
from .record import Recorder
from .runner import Runner
from .script import KEYWORDS, ScriptFailure, check, parse, split_tail

HISTORY_ENV = "CITYCARD_HISTORY"
HISTORY_DEFAULT = "~/.citycard_history"
HISTORY_LENGTH = 2000
_COMMANDS_SCRIPT_ONLY = ("set", "echo", "expect", "mac", "protect", "serial", "reset", "verify-pin")


def history_path() -> str:
    return os.path.expanduser(os.environ.get(HISTORY_ENV) or HISTORY_DEFAULT)


class CardShell(cmd.Cmd):
    """The shell over a :class:`CardContext`."""

    doc_header = "Commands (help COMMAND for details; script statements work too: " \
                 + ", ".join(_COMMANDS_SCRIPT_ONLY) + ", raw APDUs in hex):"
    ruler = ""

    def __init__(self, ctx: CardContext, *, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
                 recorder: Recorder | None = None, history: str | None = None, use_readline: bool = True) -> None:
        super().__init__(completekey="tab" if use_readline else None, stdin=stdin, stdout=stdout)
        self.ctx = ctx
        ctx.on_exchange = self._show_exchange
        self.runner = Runner(ctx, out=self._say, recorder=recorder)
        self.runner.source = "shell"
        self.recorder = recorder
        self.history = history
        self.use_readline = use_readline
        self._readline: Any = None
        spec = ctx.spec
        what = f"profile {spec.name}" if spec is not None else "no profile"
        keys = "key source" if ctx.keys is not None else "no key source"
        self.intro = (f"citycard shell: {ctx.session.transport.name}, ATR {ctx.session.atr.hex().upper()}\n"
                      f"{what}, {keys}. Type help, ls, select NAME, read, quit. Tab completes.")

    # ------------------------------------------------------------------ plumbing
    def _say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def _show_exchange(self, ex) -> None:
        for line in exchange_lines(ex):
            self._say(line)

    @property
    def prompt(self) -> str:  # type: ignore[override]
        return f"citycard:{self.ctx.where}> "

    def preloop(self) -> None:
        if not self.use_readline:
            return
        try:
            import readline
        except ImportError:  # pragma: no cover - no readline on this platform
            return
        self._readline = readline
        readline.set_completer_delims(" \t\n")
        readline.set_history_length(HISTORY_LENGTH)
        if self.history:
            try:
                readline.read_history_file(self.history)
            except (FileNotFoundError, PermissionError, OSError):
                pass

    def postloop(self) -> None:
        if self._readline is not None and self.history:
            try:
                self._readline.write_history_file(self.history)
            except OSError as exc:
                self._say(f"(history not saved to {self.history}: {exc.strerror})")

    def cmdloop(self, intro: str | None = None) -> None:
        """Like :meth:`cmd.Cmd.cmdloop`; Ctrl-C abandons the line, not the shell."""
        first = True
        while True:
            try:
                super().cmdloop(intro if first else "")
                return
            except KeyboardInterrupt:
                self._say("^C")
                first = False

    def emptyline(self) -> bool:
        return False

    def onecmd(self, line: str) -> bool:
        try:
            return super().onecmd(line)
        except ScriptFailure as exc:
            self._say(f"mismatch: {exc.reason}")
        except CitycardError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            self._say(f"error: {reason}")
        return False

    def default(self, line: str) -> bool:
        """Script statements and raw APDUs."""
        text = line.strip()
        if text == "EOF":
            return self.do_quit("")
        word = text.split()[0].lower()
        if _looks_hex(text):
            return self.do_apdu(text)
        if word in KEYWORDS or word.startswith((">", "<")):
            self.runner.run_line(text)
            return False
        self._say(f"unknown command {word!r}: try help")
        return False

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        names = super().completenames(text, *ignored) + [k for k in _COMMANDS_SCRIPT_ONLY if k.startswith(text)]
        return sorted(set(n + " " for n in names if n != "EOF"))

    # ------------------------------------------------------------------ completion
    def _complete(self, text: str, options: list[str]) -> list[str]:
        low = text.lower()
        return [o + " " for o in options if o.lower().startswith(low)] if text else [o + " " for o in options]

    def _apps_and_files(self) -> list[str]:
        return [*self.ctx.app_names(), *self.ctx.file_names()]

    def complete_select(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        if len(line[:begidx].split()) > 1:
            return []
        return self._complete(text, self._apps_and_files())

    def complete_read(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete(text, self.ctx.file_names()) if len(line[:begidx].split()) <= 1 else []

    complete_records = complete_read

    def complete_ls(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete(text, self.ctx.app_names()) if len(line[:begidx].split()) <= 1 else []

    complete_balance = complete_ls
    complete_verify = complete_ls

    def complete_auth(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if len(words) <= 1:
            return self._complete(text, self.ctx.app_names())
        if len(words) == 2 and self.ctx.spec is not None:
            try:
                df = self.ctx.app(words[1])
            except CitycardError:
                return []
            return self._complete(text, [k.name for k in df.keys if k.ktype == 0x39])
        return []

    def complete_run(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        import glob

        return [p + ("/" if os.path.isdir(p) else " ") for p in glob.glob(os.path.expanduser(text) + "*")]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """``protect``/``mac``: APPLICATION/KEY; ``serial``/``verify-pin``: applications."""
        words = line[:begidx].split()
        if not words or self.ctx.spec is None:
            return []
        if words[0] in ("protect", "mac") and len(words) == 1:
            refs = [f"{df.name}/{k.name}" for df in self.ctx.spec.dfs() for k in df.keys if k.master is not None]
            refs = [r.replace(f"{self.ctx.spec.mf.name}/", "mf/", 1) for r in refs]
            return self._complete(text, refs)
        if words[0] in ("serial", "verify-pin") and len(words) == 1:
            return self._complete(text, self.ctx.app_names())
        return []

    # ------------------------------------------------------------------ commands
    def do_select(self, arg: str) -> bool:
        """select mf|APPLICATION|FILE|FID|AID|..  —  select an application of the profile (transit),
        a file of the current application by name (ef0015), a FID (4 hex digits) or an AID."""
        if not arg.strip():
            self._say("select what? " + ", ".join(self._apps_and_files()))
            return False
        resp = self.ctx.select(arg.strip())
        self._record_plain()
        if resp.sw == 0x9000 and self.ctx.ef is not None and self.ctx.ef.layout:
            self._say(f"({self.ctx.ef.name}: {self.ctx.ef.kind}, layout {self.ctx.ef.layout}; `read` decodes it)")
        return False

    def do_ls(self, arg: str) -> bool:
        """ls [APPLICATION]  —  the applications of the profile, or the files and keys of one
        (default: the current application)."""
        spec = self.ctx.spec
        if spec is None:
            self._say("no profile (--profile): select by FID or AID; `apdu`, raw hex and scripts work")
            return False
        name = arg.strip() or None
        if name is None and (self.ctx.df is None or self.ctx.df is spec.mf):
            self._say(f"applications of {spec.name} ({spec.title}):")
            for df in spec.dfs():
                aid = df.aid.hex().upper() if df.fid != 0x3F00 else "1PAY.SYS.DDF01"
                unit = f"  unit {df.unit}" if df.unit else ""
                label = f"  {df.label}" if df.label and df.label != df.name else ""
                self._say(f"  {'mf' if df.fid == 0x3F00 else df.name:<10} {df.fid:04X}  {aid}{label}{unit}")
            name = "mf"
        df = self.ctx.app(name)
        here = " (current)" if df is self.ctx.df else ""
        aid = f", AID {df.aid.hex().upper()}" if df.fid != 0x3F00 else ""
        self._say(f"{'mf' if df.fid == 0x3F00 else df.name}: DF {df.fid:04X}{aid}{here}")
        for f in df.files:
            if f.kind in ("ed", "ep"):
                shape = f"{f.kind.upper()} purse, usage {ac_text(f.usage_ac)}"
            elif f.kind == "binary":
                shape = f"binary {f.size} bytes, read {ac_text(f.read_ac)}, write {ac_text(f.write_ac)}"
            elif f.kind == "variable":
                shape = f"variable records ({f.size} bytes), read {ac_text(f.read_ac)}, write {ac_text(f.write_ac)}"
            else:
                shape = f"{f.kind} {f.nrec} x {f.reclen}, read {ac_text(f.read_ac)}, write {ac_text(f.write_ac)}"
            if f.write_protect != "plain":
                shape += f" (+{f.write_protect})"
            layout = f"  [{f.layout}]" if f.layout else ""
            self._say(f"  {f.name:<10} {f.fid:04X}  {shape}{layout}")
        if df.keys:
            self._say("  keys: " + ", ".join(f"{k.name} ({k.type_byte:02X}/{k.kid:02X})" for k in df.keys))
        if name is None and df is self.ctx.df:
            self._say("  (ls mf, ls APPLICATION for another; the applications: "
                      + ", ".join(self.ctx.app_names()) + ")")
        return False

    def do_read(self, arg: str) -> bool:
        """read [FILE]  —  read a file of the current application (default: the selected file),
        binary or records, and decode it with the profile's layout."""
        f = self._file_arg(arg)
        res = self.ctx.read(f) if f is None or f.kind not in ("fixed", "cyclic", "variable") \
            else self.ctx.read_records(f)
        self._record_plain()
        self._show_read(res)
        return False

    def do_records(self, arg: str) -> bool:
        """records [FILE]  —  read every record of a record file (default: the selected file)."""
        f = self._file_arg(arg)
        res = self.ctx.read_records(f)
        self._record_plain()
        self._show_read(res)
        return False

    def _file_arg(self, arg: str):
        name = arg.strip() or None
        if self.ctx.spec is None:
            if name is not None:
                self.ctx.select(name)
            return None
        if name is None and self.ctx.ef is None:
            if self.ctx.df is None:
                return None
            raise InputError("read which file? " + (", ".join(self.ctx.file_names()) or "none"))
        if name is not None:
            f = self.ctx.file(name)
        else:
            f = self.ctx.ef
        return f

    def _show_read(self, res) -> None:
        f = res.file
        label = f"{f.name} ({f.fid:04X})" if f is not None else "current file"
        if res.error:
            self._say(f"{label}: {res.error}")
        if res.decoded is None:
            if f is not None and f.kind not in ("binary", "ed", "ep") and not res.records and not res.error:
                self._say(f"{label}: no records")
            elif res.records:
                self._say(f"{label}: {len(res.records)} record(s)")
            elif res.data is not None:
                self._say(f"{label}: {len(res.data)} bytes")
            return
        layout = f", layout {f.layout}" if f is not None and f.layout else ""
        self._say(f"{label}{layout}:")
        for line in decoded_lines(res.decoded):
            self._say(line)

    def do_auth(self, arg: str) -> bool:
        """auth [APPLICATION] [KEY]  —  GET CHALLENGE + EXTERNAL AUTHENTICATE with the per-card
        key (default: the application's external-auth key 00) from the key source."""
        words = arg.split()
        if len(words) > 2:
            raise InputError("auth [APPLICATION] [KEY]")
        df = self.ctx.app(words[0] if words else None)
        key = words[1] if len(words) > 1 else None
        resp = self.ctx.auth(df, key)
        self._record_statement(f"auth {df.name if df.fid != 0x3F00 else 'mf'}" + (f" {key}" if key else ""))
        self._say("authenticated" if resp.sw == 0x9000 else f"not authenticated: {resp.sw:04X} "
                  f"{describe_sw(resp.sw)}")
        return False

    def do_verify(self, arg: str) -> bool:
        """verify [APPLICATION]  —  VERIFY the cardholder PIN, from $CITYCARD_PIN or a hidden prompt
        (never shown, masked in transcripts)."""
        if arg.startswith("-pin"):                            # the script statement verify-pin
            self.runner.run_line("verify-pin" + arg[4:])
            return False
        name = arg.strip() or None
        df = None
        if self.ctx.spec is not None:
            df = self.ctx.app(name) if name else self.ctx.app(None)
        pin = os.environ.get("CITYCARD_PIN") or getpass.getpass("PIN: ")
        resp = self.ctx.verify_pin(df, pin.strip(), None if df is not None else 0)
        if df is not None:
            self._record_statement(f"verify-pin {df.name}")
        self._say("PIN verified" if resp.sw == 0x9000 else f"PIN refused: {resp.sw:04X} {describe_sw(resp.sw)}")
        return False

    def do_apdu(self, arg: str) -> bool:
        """apdu HEX [=SW] [-> PATTERN] [=> NAME]  —  send an APDU (a bare hex line does the same).
        An =SW or a pattern is checked; without them any answer is fine."""
        body, exp = split_tail(arg.strip())
        if exp.sw is not None or exp.pattern is not None or exp.capture is not None or "${" in body:
            # the statement's order: BODY [=SW] [-> PATTERN] [=> NAME]; no =SW and no pattern: any answer
            sw = exp.sw if exp.sw else ("XXXX" if exp.pattern is None else None)
            line = body + (f" ={sw}" if sw else "") + (f" -> {exp.pattern}" if exp.pattern else "")
            if exp.capture:
                line += f" => {exp.capture}"
            self.runner.run_line(line)
            return False
        cmd_ = CommandApdu.parse(parse_hex(body, "APDU"))
        self.ctx.send(cmd_)
        self._record_plain()
        return False

    def do_balance(self, arg: str) -> bool:
        """balance [APPLICATION]  —  GET BALANCE of the purse (the current application's)."""
        df = None
        if arg.strip():
            df = self.ctx.app(arg.strip())
            self.ctx.enter(df)
        resp = self.ctx.balance(df)
        self._record_plain()
        if resp.sw == 0x9000:
            fen = int.from_bytes(resp.data, "big")
            self._say(f"balance: {yuan(fen)} ({fen} fen)")
        return False

    def do_run(self, arg: str) -> bool:
        """run FILE  —  run a script (docs/script.md) in this session; its variables stay."""
        path = os.path.expanduser(arg.strip())
        if not path:
            raise InputError("run FILE")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror}") from None
        script = parse(text, path)
        check(script, spec=self.ctx.spec, have_keys=self.ctx.keys is not None, predefined=self.runner.vars)
        old = self.runner.source
        self.runner.source = path
        try:
            self.runner.run(script)
        finally:
            self.runner.source = old
        self._say(f"{path}: {len(script.statements)} statements, ok")
        return False

    def do_vars(self, arg: str) -> bool:
        """vars  —  the variables set so far (set, captures, mac results)."""
        for name, value in sorted(self.runner.vars.items()):
            self._say(f"  {name} = {value}")
        return False

    def do_history(self, arg: str) -> bool:
        """history [N]  —  the last N lines entered (default 20)."""
        rl = self._readline
        if rl is None:
            self._say("no history (no readline)")
            return False
        n = int(arg) if arg.strip().isdigit() else 20
        total = rl.get_current_history_length()
        for i in range(max(1, total - n + 1), total + 1):
            self._say(f"{i:5d}  {rl.get_history_item(i)}")
        return False

    def do_reset(self, arg: str) -> bool:
        """reset  —  reset the card (the MF is selected, security states are cleared)."""
        self.runner.run_line("reset")
        return False

    def do_quit(self, arg: str) -> bool:
        """quit  —  leave the shell (Ctrl-D too)."""
        self._say("bye")
        return True

    do_exit = do_quit
    do_EOF = do_quit

    def help_script(self) -> None:
        self._say("Script statements (docs/script.md): set NAME = VALUE, echo TEXT, expect A == B, "
                  "mac APP/KEY DATA [iv=HEX] => NAME, protect APP/KEY [encrypt] APDU, serial APP => NAME, "
                  "verify-pin [APP], reset; raw APDUs: HEX [=SW] [-> PATTERN] [=> NAME].")

    # ------------------------------------------------------------------ recording
    def _record_plain(self) -> None:
        ex = self.ctx.take_exchanges()
        if self.recorder is not None and ex:
            self.recorder.exchanges(ex)

    def _record_statement(self, text: str) -> None:
        ex = self.ctx.take_exchanges()
        if self.recorder is not None:
            self.recorder.statement(text, ex)


def _looks_hex(text: str) -> bool:
    head = text.split("=")[0].split("->")[0]
    compact = "".join(head.split())
    return len(compact) >= 8 and all(c in "0123456789abcdefABCDEF" for c in compact)


def run_shell(ctx: CardContext, *, recorder: Recorder | None = None, history: str | None = None,
              stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> None:
    """Run the shell until quit or end of input."""
    use_readline = stdin is None and _isatty()
    shell = CardShell(ctx, stdin=stdin, stdout=stdout, recorder=recorder,
                      history=history if history is not None else history_path(), use_readline=use_readline)
    if not use_readline:
        shell.use_rawinput = stdin is None
    shell.cmdloop()


def _isatty() -> bool:
    import sys

    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["CardShell", "history_path", "run_shell"]
