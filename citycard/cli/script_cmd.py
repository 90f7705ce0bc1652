"""`citycard script run|check`: scripts of APDUs and conveniences (docs/script.md)."""

from __future__ import annotations

import contextlib

import re

import click

from ..errors import InputError
from .common import card_options
from .keyopts import keys_option, open_keys


def _read(path: str) -> str:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None


def _variables(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise InputError(f"--var {pair!r}: expected NAME=VALUE")
        if name.strip() in ("SW", "DATA"):
            raise InputError(f"--var {name.strip()}: set by every exchange; choose another name")
        out[name.strip()] = value.strip()
    return out


def _profile(path: str | None):
    if path is None:
        return None
    from ..profile import load_profile

    return load_profile(path)


@click.group("script")
def script() -> None:
    """Scripts: APDUs with expected SWs and response patterns, variables, and conveniences
    (select, auth, verify-pin, mac, protect) using the profile and the key source.
    A citycard transcript replays as a script.  Format: docs/script.md."""


@script.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@card_options
@click.option("-p", "--profile", "profile_path", default=None, metavar="PROFILE",
              help="Card profile: applications, files and keys by name.")
@keys_option(required=False)
@click.option("-D", "--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set a variable (repeatable).")
@click.option("--transcript", "record_path", default=None, type=click.Path(dir_okay=False, writable=True),
              help="Write what was exchanged (sensitive data masked) as a script that `script run` replays.")
@click.option("--raw", is_flag=True, help="Do not fetch 61xx/6Cxx answers (automatic for a wire transcript "
                                          "written by `citycard --transcript`).")
@click.option("-q", "--quiet", is_flag=True, help="Show only echo output and the result.")
@click.pass_obj
def run(app, file: str, reader, sim, profile_path, keys, variables, record_path, raw, quiet) -> None:
    """Run the script FILE against a card; stop at the first mismatch (exit code 1) with its
    FILE:LINE.  A script that cannot run (syntax, unknown variable, no key source) exits 2
    before anything is sent."""
    from ..shell.card import CardContext, exchange_lines
    from ..shell.record import Recorder
    from ..shell.runner import run_script
    from ..shell.script import ScriptFailure, check, parse

    script_ = parse(_read(file), file)
    spec = _profile(profile_path)
    vars_ = _variables(variables)
    check(script_, spec=spec, have_keys=bool(keys), predefined=vars_.keys())
    with contextlib.ExitStack() as stack:
        ring, sink = _keys_and_sink(stack, keys, record_path)

        def show(ex) -> None:
            for line in exchange_lines(ex):
                click.echo(line)

        session = app.open_session(reader, sim=sim, fetch=not (raw or script_.wire), custody=False)  # raw APDUs: shared, card left as it is (like scriptor)
        stack.callback(session.close)
        ctx = CardContext(session, spec, ring, on_exchange=None if quiet else show)
        try:
            runner = run_script(ctx, script_, variables=vars_, out=click.echo,
                                recorder=Recorder(sink) if sink is not None else None,
                                show_statements=not quiet, replay_hint=replay_hint(spec, ring))
        except ScriptFailure as exc:
            click.echo(str(exc), err=True)
            raise click.exceptions.Exit(1) from None
        click.echo(f"{file}: {runner.count} statements, ok")


def _keys_and_sink(stack: contextlib.ExitStack, keys, record_path):
    """Open the key sources and the --transcript file, both closed by ``stack``."""
    ring = open_keys(keys) if keys else None
    if ring is not None:
        stack.callback(ring.close)
    sink = None
    if record_path is not None:
        try:
            from ..fsutil import open_private_text

            sink = stack.enter_context(open_private_text(record_path))   # 0600: cardholder data
        except OSError as exc:
            raise InputError(f"--transcript {record_path}: {exc.strerror}") from None
    return ring, sink


def replay_hint(spec, ring) -> str:
    """How to replay a recorded session (the options it needs)."""
    return ("citycard script run THIS_FILE" + (" --profile PROFILE" if spec else "")
            + (" --keys SOURCE" if ring else ""))


@script.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-p", "--profile", "profile_path", default=None, metavar="PROFILE",
              help="Card profile: applications, files and keys by name.")
@click.option("--with-keys", is_flag=True, help="Assume a key source will be given (--keys) when it runs.")
@click.option("-D", "--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set a variable (repeatable).")
def check_cmd(file: str, profile_path, with_keys, variables) -> None:
    """Check FILE without a card: syntax, variables, names of the profile (exit 2 on a problem)."""
    from ..shell.script import check, parse

    script_ = parse(_read(file), file)
    check(script_, spec=_profile(profile_path), have_keys=with_keys, predefined=_variables(variables).keys())
    click.echo(f"{file}: {len(script_.statements)} statements, ok")
