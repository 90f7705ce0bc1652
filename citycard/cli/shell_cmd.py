"""`citycard shell`: an interactive session with a card."""

from __future__ import annotations

import contextlib

import click

from .common import card_options
from .keyopts import keys_option


@click.command("shell")
@card_options
@click.option("-p", "--profile", "profile_path", default=None, metavar="PROFILE",
              help="Card profile: applications and files by name, records decoded.")
@keys_option(required=False)
@click.option("--transcript", "record_path", default=None, type=click.Path(dir_okay=False, writable=True),
              help="Write the session (sensitive data masked) as a script that `script run` replays.")
@click.option("--history", "history", default=None, metavar="FILE",
              help="History file (default $CITYCARD_HISTORY, else ~/.citycard_history).")
@click.pass_obj
def shell(app, reader, sim, profile_path, keys, record_path, history) -> None:
    """Interactive session with a card: select applications and files by name, read records
    decoded, authenticate with the key source, send raw APDUs; every exchange is shown with
    its SW meaning.  History and tab completion with readline."""
    from ..shell.card import CardContext
    from ..shell.interactive import run_shell
    from ..shell.record import Recorder
    from .script_cmd import _keys_and_sink, replay_hint

    spec = None
    if profile_path is not None:
        from ..profile import load_profile

        spec = load_profile(profile_path)
    with contextlib.ExitStack() as stack:
        ring, sink = _keys_and_sink(stack, keys, record_path)
        session = app.open_session(reader, sim=sim)
        stack.callback(session.close)
        ctx = CardContext(session, spec, ring)
        recorder = None
        if sink is not None:
            recorder = Recorder(sink)
            recorder.header(session.transport.name, session.atr, "citycard shell", replay_hint(spec, ring))
        run_shell(ctx, recorder=recorder, history=history)
