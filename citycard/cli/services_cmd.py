"""`citycard pin ...`, `citycard app block|unblock`, `citycard card block`."""

from __future__ import annotations

import os

import click

from ..errors import InputError
from .common import card_options
from .keyopts import keys_option, open_keys


def _pin_value(env: str, prompt: str, confirm: bool = False) -> str:
    """A PIN from the environment (automation) or a hidden prompt; never from argv."""
    value = os.environ.get(env)
    if value is None:
        value = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    value = value.strip()
    if not value.isdigit() or not 4 <= len(value) <= 12:
        raise InputError(f"{prompt}: a PIN is 4 to 12 digits")
    return value


def _services(app, reader, sim, profile_path, keys):
    from ..profile import load_profile
    from ..terminal.services import CardServices

    spec = load_profile(profile_path)
    session = app.open_session(reader, sim=sim)
    try:
        return session, spec, CardServices(session, spec, open_keys(keys) if keys else None)
    except BaseException:
        session.close()
        raise


def _opts(need_keys: bool):
    def deco(f):
        f = click.option("--app", "app_name", default=None, help="Application of the profile (default: the one with a PIN).")(f)
        f = keys_option(required=need_keys)(f)
        f = click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE")(f)
        return card_options(f)
    return deco


@click.group()
def pin() -> None:
    """PINs: verify, change, reload (with the reload key), unblock (with the unblock key).

    PINs are read from a hidden prompt, or CITYCARD_PIN / CITYCARD_NEW_PIN for automation."""


def _pin_cmd(name, need_keys, doc):
    def wrap(fn):
        @pin.command(name, help=doc)
        @_opts(need_keys)
        @click.pass_obj
        def command(app, reader, sim, profile_path, keys, app_name):
            from ..terminal.services import find_app

            session, spec, svc = _services(app, reader, sim, profile_path, keys)
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


@app_group.command("block")
@_opts(True)
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


@app_group.command("unblock")
@_opts(True)
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
@click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE")
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
