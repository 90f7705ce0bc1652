"""`citycard shell`: an interactive session with a card."""

from __future__ import annotations

import click

from ..errors import InputError
from .common import card_options
from .keyopts import keys_option, open_keys


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

    spec = None
    if profile_path is not None:
        from ..profile import load_profile

        spec = load_profile(profile_path)
    ring = open_keys(keys) if keys else None
    sink = None
    session = None
    try:
        if record_path is not None:
            try:
                sink = open(record_path, "w", encoding="utf-8")
            except OSError as exc:
                raise InputError(f"--transcript {record_path}: {exc.strerror}") from None
        session = app.open_session(reader, sim=sim)
        ctx = CardContext(session, spec, ring)
        recorder = None
        if sink is not None:
            recorder = Recorder(sink)
            recorder.header(session.transport.name, session.atr, "citycard shell",
                            "citycard script run THIS_FILE" + (" --profile PROFILE" if spec else "")
                            + (" --keys SOURCE" if ring else ""))
        run_shell(ctx, recorder=recorder, history=history)
    finally:
        if session is not None:
            session.close()
        if ring is not None:
            ring.close()
        if sink is not None:
            sink.close()
