"""Entry point: global options, error handling, session opening."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import IO

import click

from .. import __version__
from ..errors import CitycardError
from ..transport import CardSession

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass
class AppContext:
    transcript_path: str | None = None
    _transcript_file: IO[str] | None = field(default=None, repr=False)

    def open_session(self, reader: str | None = None, *, sim: str | None = None,
                     fetch: bool = True, custody: bool = True) -> CardSession:
        """The card of ``--reader`` or ``--sim IMAGE``, with the ``--transcript`` file
        (``custody``: see :func:`citycard.transport.open.open_session`)."""
        from ..transport.open import open_session
        from .common import check_card_choice

        check_card_choice(reader, sim)
        transport = None
        if sim is not None:
            from ..sim.saver import open_image

            transport = open_image(sim)
        return open_session(reader, transport=transport, transcript=self._transcript_sink, fetch=fetch,
                            custody=custody)

    def _transcript_sink(self) -> IO[str] | None:
        if self.transcript_path is not None and self._transcript_file is None:
            try:
                self._transcript_file = open(self.transcript_path, "a", encoding="utf-8")
            except OSError as exc:
                raise CitycardError(f"--transcript {self.transcript_path}: {exc.strerror}") from None
        return self._transcript_file

    def close(self) -> None:
        if self._transcript_file is not None:
            self._transcript_file.close()
            self._transcript_file = None


class CitycardGroup(click.Group):
    """Turns a :class:`CitycardError` into one line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except CitycardError as exc:
            click.echo(f"citycard: error: {exc}", err=True)
            raise click.exceptions.Exit(2) from None


@click.group(cls=CitycardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="citycard")
@click.option("-l", "--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="WARNING",
              show_default=True, help="Logging to stderr; DEBUG shows every APDU (sensitive data masked).")
@click.option("--transcript", "transcript", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Append every APDU exchanged to FILE (keys and PINs masked).")
@click.pass_context
def cli(ctx: click.Context, log_level: str, transcript: str | None) -> None:
    """citycard: personalize multi-application city cards and talk to them in APDUs."""
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, log_level.upper()),
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    app = AppContext(transcript_path=transcript)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from . import apdu_cmd, batch_cmd, calc, keys_cmd, perso_cmd, profile_cmd, purse_cmd, readers, services_cmd, sim
    from . import assets_cmd, script_cmd, shell_cmd

    cli.add_command(readers.readers)
    cli.add_command(profile_cmd.profile)
    cli.add_command(perso_cmd.perso)
    cli.add_command(batch_cmd.batch)
    cli.add_command(perso_cmd.dump)
    cli.add_command(purse_cmd.purse)
    cli.add_command(services_cmd.pin)
    cli.add_command(services_cmd.app_group)
    cli.add_command(services_cmd.card_group)
    cli.add_command(keys_cmd.keys)
    cli.add_command(sim.sim)
    cli.add_command(apdu_cmd.apdu)
    cli.add_command(calc.calc)
    cli.add_command(script_cmd.script)
    cli.add_command(shell_cmd.shell)
    cli.add_command(assets_cmd.demo_assets)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="citycard")
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
