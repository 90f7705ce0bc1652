"""`citycard pin ...`, `citycard app block|unblock`, `citycard card block`."""

from __future__ import annotations

import os
import sys

import click

from ..errors import InputError
from .common import card_options
from .keyopts import keys_option, open_keys


PIN_STDIN_META = "citycard.pin_stdin"


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _pin_value(env: str, prompt: str, confirm: bool = False) -> str:
    """A PIN from the environment (automation), standard input with ``--pin-stdin`` (one line
    per PIN asked), or a hidden prompt on a terminal; never from argv, and never read from a
    pipe without ``--pin-stdin`` (no GetPassWarning, no echo)."""
    value = os.environ.get(env)
    if value is None:
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.meta.get(PIN_STDIN_META):
            line = sys.stdin.readline()
            if not line:
                raise InputError(f"{prompt}: --pin-stdin given, but standard input has no more lines")
            value = line.rstrip("\r\n")
        elif not _stdin_is_tty():
            raise InputError(f"{prompt}: no terminal to ask on: set {env}, or give --pin-stdin and pipe "
                             "the PIN (one line)")
        else:
            value = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    value = value.strip()
    if not value.isdigit() or not 4 <= len(value) <= 12:
        raise InputError(f"{prompt}: a PIN is 4 to 12 digits")
    return value


def _services(app, reader, sim, profile_path, keys, *, writes: bool = True):
    from ..profile import load_profile
    from ..terminal.services import CardServices

    spec = load_profile(profile_path)
    session = app.open_session(reader, sim=sim, writes=writes)
    try:
        return session, spec, CardServices(session, spec, open_keys(keys) if keys else None)
    except BaseException:
        session.close()
        raise


def _stash_pin_stdin(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta[PIN_STDIN_META] = bool(value)
    return value


pin_stdin_option = click.option(
    "--pin-stdin", is_flag=True, expose_value=False, callback=_stash_pin_stdin,
    help="Read the PIN(s) from standard input, one line each (current, then new), instead of a prompt.")


def _opts(need_keys: bool, app_help: str = "Application of the profile (default: the one with a PIN)."):
    def deco(f):
        f = click.option("--app", "app_name", default=None, help=app_help)(f)
        f = keys_option(required=need_keys)(f)
        f = click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
                         help="Card profile (TOML) describing the applications and their keys.")(f)
        return card_options(f)
    return deco


@click.group()
def pin() -> None:
    """PINs: verify, change, reload (with the reload key), unblock (with the unblock key).

    PINs are read from a hidden prompt on a terminal, from CITYCARD_PIN / CITYCARD_NEW_PIN,
    or from standard input with --pin-stdin (automation)."""


def _pin_cmd(name, need_keys, doc):
    def wrap(fn):
        @pin.command(name, help=doc)
        @_opts(need_keys)
        @pin_stdin_option
        @click.pass_obj
        def command(app, reader, sim, profile_path, keys, app_name):
            from ..terminal.services import find_app

            session, spec, svc = _services(app, reader, sim, profile_path, keys, writes=name != "verify")
            try:
                df = find_app(spec, app_name, need=0x3A)
                fn(svc, df)
            finally:
                session.close()
            click.echo(f"{name}: ok ({df.name})")
        return command
    return wrap


@_pin_cmd("verify", False, "Verify the cardholder's PIN.")
def _verify(svc, df):
    svc.verify_pin(df, _pin_value("CITYCARD_PIN", "PIN"))


@_pin_cmd("change", False, "Change the PIN (old and new PIN).")
def _change(svc, df):
    svc.change_pin(df, _pin_value("CITYCARD_PIN", "current PIN"), _pin_value("CITYCARD_NEW_PIN", "new PIN", True))


@_pin_cmd("reload", True, "Set a new PIN with the PIN-reload key (the holder forgot it).")
def _reload(svc, df):
    svc.reload_pin(df, _pin_value("CITYCARD_NEW_PIN", "new PIN", True))


@_pin_cmd("unblock", True, "Unblock a locked PIN with the PIN-unblock key, setting it.")
def _unblock(svc, df):
    svc.unblock_pin(df, _pin_value("CITYCARD_NEW_PIN", "PIN", True))


@click.group("app")
def app_group() -> None:
    """Block an application (a lost card) or unblock it."""


@app_group.command("block", help="Block an application (a lost card): APPLICATION BLOCK with the "
                   "application's maintenance key; `app unblock` undoes it unless --permanent.")
@_opts(True, "The application to block (its name in the profile; required).")
@click.option("--permanent", is_flag=True, help="Block for good (APPLICATION UNBLOCK will not undo it).")
@click.pass_obj
def app_block(app, reader, sim, profile_path, keys, app_name, permanent):
    from ..terminal.services import find_app

    session, spec, svc = _services(app, reader, sim, profile_path, keys)
    try:
        if app_name is None:
            raise InputError("name the application with --app")
        df = find_app(spec, app_name)
        svc.block_app(df, permanent)
    finally:
        session.close()
    click.echo(f"application {df.name} blocked{' permanently' if permanent else ''}")


@app_group.command("unblock", help="Unblock an application blocked by `app block` (not a permanent block).")
@_opts(True, "The application to unblock (its name in the profile; required).")
@click.pass_obj
def app_unblock(app, reader, sim, profile_path, keys, app_name):
    from ..terminal.services import find_app

    session, spec, svc = _services(app, reader, sim, profile_path, keys)
    try:
        if app_name is None:
            raise InputError("name the application with --app")
        df = find_app(spec, app_name)
        svc.unblock_app(df)
    finally:
        session.close()
    click.echo(f"application {df.name} unblocked")


@click.group("card")
def card_group() -> None:
    """The whole card."""


@card_group.command("block")
@card_options
@click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
              help="Card profile (TOML) naming the MF's maintenance key.")
@keys_option()
@click.option("--yes", is_flag=True, help="Do not ask: CARD BLOCK cannot be undone.")
@click.pass_obj
def card_block(app, reader, sim, profile_path, keys, yes):
    """Block the card for good (every command then answers 6A81)."""
    if not yes:
        click.confirm("CARD BLOCK cannot be undone. Block this card?", abort=True, err=True)
    session, spec, svc = _services(app, reader, sim, profile_path, keys)
    try:
        svc.block_card()
    finally:
        session.close()
    click.echo("card blocked")
