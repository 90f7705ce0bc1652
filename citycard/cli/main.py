"""Entry point: global options, error handling (exit codes, JSON errors), session opening.

Start-up is kept short (issue 19 item 3): the subcommand modules are imported only when
their command is invoked (:class:`CitycardGroup` is a lazy group), and this module imports
neither the transport stack nor the crypto, pyscard, construct or the simulator.

Exit codes (README, "Exit codes"), decided in one place, :func:`exit_code_for`:

- 0: ok;
- 1: the card refused or a verification failed (:class:`~citycard.errors.CardError`, a
  personalization, purse, service or script check that failed on the card);
- 2: usage or bad input (options, files, data, keys, readers);
- 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import IO, TYPE_CHECKING, Any

import click

from .. import __version__
from ..errors import CitycardError

if TYPE_CHECKING:
    from ..transport import CardSession

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

EXIT_OK = 0
EXIT_CARD = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: command name -> (module of citycard.cli, attribute); imported when the command is invoked
COMMANDS: dict[str, tuple[str, str]] = {
    "readers": ("readers", "readers"),
    "profile": ("profile_cmd", "profile"),
    "perso": ("perso_cmd", "perso"),
    "batch": ("batch_cmd", "batch"),
    "dump": ("perso_cmd", "dump"),
    "purse": ("purse_cmd", "purse"),
    "terminal": ("terminal_cmd", "terminal"),
    "pin": ("services_cmd", "pin"),
    "app": ("services_cmd", "app_group"),
    "card": ("services_cmd", "card_group"),
    "keys": ("keys_cmd", "keys"),
    "sim": ("sim", "sim"),
    "apdu": ("apdu_cmd", "apdu"),
    "calc": ("calc", "calc"),
    "script": ("script_cmd", "script"),
    "shell": ("shell_cmd", "shell"),
    "demo-assets": ("assets_cmd", "demo_assets"),
    "audit": ("audit_cmd", "audit"),
    "operator": ("operator_cmd", "operator"),
    "cards": ("cards_cmd", "cards"),
    "hotlist": ("cards_cmd", "hotlist"),
    "clearing": ("clearing_cmd", "clearing"),
}

#: the first paragraph of each command's help, from which ``citycard --help`` sums it up
#: without importing its module (all of them would be imported for their one line: ~2x
#: the time of any command).  tests/test_cli_imports.py checks each against the command's
#: own help: edit both together.
SUMMARIES: dict[str, str] = {
    "readers": "List PC/SC readers, whether a card is present, and its ATR.",
    "profile": "Card profiles: check and show them.",
    "perso": "Personalize one card from PROFILE, key sources and one cardholder row.",
    "batch": "Personalize a batch of cards from a data file, with a journal; report on it.",
    "dump": "Read every application, file and record of a card, decoded.",
    "purse": "Electronic purse: balance, load, purchase (and CAPP purchase), unload, history.",
    "terminal": "A purse terminal without keys: the card in one reader, its PSAM in another.",
    "pin": "PINs: verify, change, reload (with the reload key), unblock (with the unblock key).",
    "app": "Block an application (a lost card) or unblock it.",
    "card": "The whole card.",
    "keys": "Keystores: master keys encrypted at rest (scrypt + AES-256-GCM). Never prints a key.",
    "sim": "Simulated FMCOS city cards kept in JSON card images.",
    "apdu": "Send APDUs given as hex (spaces allowed within one argument).",
    "calc": "Cryptographic calculator: ciphers, MACs, diversification, purse MACs, line protection.",
    "script": "Scripts: APDUs with expected SWs and response patterns, variables, and conveniences (select, "
              "auth, verify-pin, mac, protect) using the profile and the key source. A citycard transcript "
              "replays as a script. Format: docs/script.md.",
    "shell": "Interactive session with a card: select applications and files by name, read records decoded, "
             "authenticate with the key source, send raw APDUs; every exchange is shown with its SW meaning. "
             "History and tab completion with readline.",
    "demo-assets": "Copy the shipped demo files to DIRECTORY/profiles and DIRECTORY/examples.",
    "audit": "The audit log: who did what with keys, batches and cards (hash-chained, tamper-evident).",
    "operator": "Operator credentials and the roster (dual control: two people for sensitive actions).",
    "cards": "The card register: issued cards, their states (lost, blocked, closed, replaced) and history.",
    "hotlist": "Signed hotlists for terminals: full lists and deltas (docs/lifecycle.md).",
    "clearing": "Back office: verify every terminal transaction's TAC, keep a ledger per card, settle.",
}

#: commands that never log: at the default level their start-up skips the logging module
QUIET_COMMANDS = frozenset({"calc"})


def _no_suggestions_for_short_options() -> None:
    """click tries every short option (``-k``) as a long one first and discards the
    NoSuchOption it gets, but builds that exception's "did you mean" list first, importing
    difflib: ~7 ms of CPU of a ~90-ms ``citycard calc`` (issue 19 item 3).  Here a token whose
    first two characters are not a long-option prefix fails the long match at once, without
    the list (click then matches it as short options, as before); an unknown ``--option``
    still gets its suggestions.  Left alone where click's parser is not the one patched."""
    from click import parser

    cls = getattr(parser, "_OptionParser", None) or getattr(parser, "OptionParser", None)
    original = getattr(cls, "_match_long_opt", None)
    if original is None or getattr(original, "citycard_quick", False):
        return

    def _match_long_opt(self: Any, opt: str, explicit_value: str | None, state: Any) -> None:
        if opt not in self._long_opt and opt[:2] not in self._opt_prefixes:
            raise click.NoSuchOption(opt, ctx=self.ctx)
        return original(self, opt, explicit_value, state)

    _match_long_opt.citycard_quick = True  # type: ignore[attr-defined]
    cls._match_long_opt = _match_long_opt  # type: ignore[union-attr]


_no_suggestions_for_short_options()


class AppContext:
    """What the global options give every command: the ``--transcript`` file, sessions."""

    def __init__(self, transcript_path: str | None = None, *, audit_log: str | None = None,
                 audit_seal: str | None = None, operator: str | None = None, roster: str | None = None) -> None:
        self.transcript_path = transcript_path
        self._transcript_file: IO[str] | None = None
        self.audit_location = audit_log
        self.audit_seal = audit_seal
        self.operator = operator
        self.roster = roster              # dual control (citycard.bureau): the roster of operators
        self._audit: Any = None

    def audit_log(self, *, required_for: str | None = None) -> Any:
        """The ``--audit-log`` (:class:`citycard.audit.AuditLog`), sealed under ``--audit-seal``;
        None when none is configured, unless ``required_for`` names what needs one."""
        if self._audit is None and self.audit_location is not None:
            from ..audit import AuditLog
            from .common import audit_seal_key

            key = audit_seal_key(self.audit_seal) if self.audit_seal is not None else None
            self._audit = AuditLog(self.audit_location, operator=self.operator, seal_key=key)
        if self._audit is None and required_for is not None:
            raise CitycardError(f"{required_for} needs an audit log: give --audit-log LOG "
                                "(or set CITYCARD_AUDIT_LOG)")
        return self._audit

    def audit(self, action: str, subject: str = "", **details: Any) -> None:
        """Record ``action`` in the audit log when one is configured (docs/audit.md)."""
        log = self.audit_log()
        if log is not None:
            log.append(action, subject, **details)

    def open_session(self, reader: str | None = None, *, sim: str | None = None,
                     fetch: bool = True, writes: bool = False, custody: bool = True) -> CardSession:
        """The card of ``--reader`` or ``--sim IMAGE``, with the ``--transcript`` file
        (``custody``: see :func:`citycard.transport.open.open_session`).

        ``writes``: the command writes to the card (issue 17 item 2): with neither option the
        one reader holding a card is used only when it is the only one, and the output says
        which (:func:`citycard.cli.common.default_reader_for_writing`)."""
        from ..transport.open import open_session
        from .common import check_card_choice, default_reader_for_writing

        check_card_choice(reader, sim)
        transport = None
        if sim is not None:
            from ..sim.saver import open_image

            transport = open_image(sim)
        elif reader is None and writes:
            reader = default_reader_for_writing()
        return open_session(reader, transport=transport, transcript=self._transcript_sink, fetch=fetch,
                            custody=custody)

    def _transcript_sink(self) -> IO[str] | None:
        if self.transcript_path is not None and self._transcript_file is None:
            try:
                from ..fsutil import open_private_text

                self._transcript_file = open_private_text(self.transcript_path, append=True)   # 0600

            except OSError as exc:
                raise CitycardError(f"--transcript {self.transcript_path}: {exc.strerror}") from None
        return self._transcript_file

    def close(self) -> None:
        if self._transcript_file is not None:
            self._transcript_file.close()
            self._transcript_file = None


# ------------------------------------------------------------------ exit codes and errors
def _is_card_failure(exc: BaseException) -> bool:
    """The card refused, or what it answered did not verify (exit code 1)."""
    from ..errors import CardError

    if isinstance(exc, CardError):
        return True
    # the families raised while talking to a card; their modules are looked up only when
    # already imported (an error of a command that never loaded them is not of them)
    families = (("citycard.perso.steps", "PersoError"), ("citycard.terminal.purse", "PurseError"),
                ("citycard.terminal.services", "ServiceError"), ("citycard.shell.script", "ScriptFailure"),
                ("citycard.terminal.identify", "CardRefused"), ("citycard.cos", "WrongLineProtection"),
                ("citycard.commands.walk", "SerialNotReadable"), ("citycard.audit.log", "AuditBroken"))
    for module, name in families:
        mod = sys.modules.get(module)
        if mod is not None and isinstance(exc, getattr(mod, name)):
            return True
    return False


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an exception that ended a command (the one mapping of the CLI)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, click.exceptions.Abort) and isinstance(exc.__context__, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if _is_card_failure(exc):
        return EXIT_CARD
    return EXIT_USAGE


def error_kind(exc: BaseException) -> str:
    """The ``error.kind`` of the JSON error object (docs/json.md)."""
    from ..errors import TransportError

    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        return "interrupted" if exit_code_for(exc) == EXIT_INTERRUPTED else "aborted"
    if _is_card_failure(exc):
        return "card"
    if isinstance(exc, click.UsageError):
        return "usage"
    if isinstance(exc, TransportError):
        return "reader"
    return "input"


def error_object(exc: BaseException, message: str) -> dict[str, Any]:
    """``{"ok": false, "error": {"kind", "message", "exit_code"[, "sw"]}}`` (docs/json.md)."""
    err: dict[str, Any] = {"kind": error_kind(exc), "message": message, "exit_code": exit_code_for(exc)}
    sw = getattr(exc, "sw", None)
    if isinstance(sw, int):
        err["sw"] = f"{sw:04X}"
    return {"ok": False, "error": err}


def _wants_json(args: list[str]) -> bool:
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


def _report(exc: BaseException, message: str, as_json: bool) -> int:
    code = exit_code_for(exc)
    if as_json:
        import json

        click.echo(json.dumps(error_object(exc, message), ensure_ascii=False))
    click.echo(f"citycard: error: {message}", err=True)
    return code


def _os_error_message(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "file"
    return f"{where}: {exc.strerror or exc}"


class CitycardGroup(click.Group):
    """The top-level group: imports a subcommand's module only when it is invoked, and turns
    every user mistake into one line on stderr (and a JSON error object on stdout under
    ``--json``) with the exit code of :func:`exit_code_for` (no traceback)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(f"{__package__}.{target[0]}")
        command = getattr(module, target[1])
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of commands of ``--help``, as click writes it, each command not imported yet
        stood in for by its :data:`SUMMARIES` line (the same words, so the same summary at
        any width)."""
        stand_ins = {name: click.Command(name, help=SUMMARIES[name])
                     for name in COMMANDS if name in SUMMARIES and name not in self.commands}
        listed = click.Group(self.name, commands={**stand_ins, **self.commands})
        click.Group.format_commands(listed, ctx, formatter)

    #: set by :func:`main` (the console script) only: see :meth:`resolve_command`
    freeze_after_imports = False

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """The subcommand, as click resolves it; then, in the console script only, every object
        the imports made (modules, classes, functions: long-lived, most of them in reference
        cycles) is moved out of the cyclic garbage collector's sight (:func:`gc.freeze`).  The
        interpreter's final collection at exit then no longer walks and frees them one by one:
        ~10 ms of a ~75-ms ``citycard calc`` on a 2-core machine (issue 19 item 3).  Everything
        the command itself creates (files, sessions, connections) comes after and is collected
        and finalized as before; the frozen objects live as long as the process anyway."""
        resolved = super().resolve_command(ctx, args)
        if self.freeze_after_imports:
            import gc

            gc.freeze()
        return resolved

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        args = list(getattr(ctx, "_protected_args", [])) + list(ctx.args)
        as_json = _wants_json(args)
        try:
            return super().invoke(ctx)
        except CitycardError as exc:
            raise click.exceptions.Exit(_report(exc, str(exc), as_json)) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            # a path the user gave that cannot be used: one line, never a traceback
            raise click.exceptions.Exit(_report(exc, _os_error_message(exc), as_json)) from None
        except KeyboardInterrupt as exc:
            raise click.exceptions.Exit(_report(exc, "interrupted", as_json)) from None
        except click.exceptions.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise click.exceptions.Exit(_report(exc, "interrupted", as_json)) from None
            raise
        except click.UsageError as exc:
            if not as_json:
                raise
            import json

            exc.show()
            click.echo(json.dumps(error_object(exc, exc.format_message()), ensure_ascii=False))
            raise click.exceptions.Exit(exc.exit_code) from None


@click.group(cls=CitycardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="citycard")
@click.option("-l", "--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="WARNING",
              show_default=True, help="Logging to stderr; DEBUG shows every APDU (sensitive data masked).")
@click.option("--transcript", "transcript", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Append every APDU exchanged to FILE (keys and PINs masked).")
@click.option("--audit-log", "audit_log", envvar="CITYCARD_AUDIT_LOG", default=None, metavar="LOG",
              help="Record key, batch and card actions in this audit log (a file, or a postgresql:// URL; "
                   "env CITYCARD_AUDIT_LOG). docs/audit.md.")
@click.option("--audit-seal", "audit_seal", envvar="CITYCARD_AUDIT_SEAL", default=None, metavar="KEYSTORE",
              help="Seal audit entries under the audit/seal key of this keystore (env CITYCARD_AUDIT_SEAL).")
@click.option("--operator", envvar="CITYCARD_OPERATOR", default=None,
              help="Operator named in audit entries (env CITYCARD_OPERATOR; default: the login name).")
@click.option("--roster", envvar="CITYCARD_ROSTER", default=None, metavar="ROSTER",
              type=click.Path(dir_okay=False),
              help="The roster of operators: dual control (two --approve) for key imports and deletions, "
                   "production batches and re-issues (env CITYCARD_ROSTER). docs/audit.md.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, transcript: str | None, audit_log: str | None,
        audit_seal: str | None, operator: str | None, roster: str | None) -> None:
    """citycard: personalize multi-application city cards and talk to them in APDUs.

    Exit codes: 0 ok, 1 the card refused or a verification failed, 2 usage or bad
    input, 130 interrupted."""
    if log_level.upper() != "WARNING" or ctx.invoked_subcommand not in QUIET_COMMANDS:
        import logging

        logging.basicConfig(stream=sys.stderr, level=getattr(logging, log_level.upper()),
                            format="%(levelname)s %(name)s: %(message)s", force=True)
    app = AppContext(transcript_path=transcript, audit_log=audit_log, audit_seal=audit_seal, operator=operator,
                     roster=roster)
    if audit_log is not None and ctx.invoked_subcommand != "audit":
        app.audit_log().check_writable()      # before the action: never done and then not recorded
    ctx.obj = app
    ctx.call_on_close(app.close)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.freeze_after_imports = True     # a process of its own (CitycardGroup.resolve_command)
    try:
        cli.main(args=argv, prog_name="citycard")
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:       # outside a command (e.g. while parsing)
        sys.exit(EXIT_INTERRUPTED)
