"""`citycard sim`: simulated cards (new, show, serve)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading

import click

from ..errors import InputError

log = logging.getLogger("citycard.sim")


@click.group()
def sim() -> None:
    """Simulated FMCOS city cards kept in JSON card images."""


@sim.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing image.")
@click.option("--model", "model", default="fm1208", show_default=True, metavar="NAME",
              help="Card model: fm1208 (transport key 00 = 8×FF, 3 tries), fm1208-16ff (legacy: 16×FF, 15 tries), "
                   "fmcos-sm4 (SM4 line protection, transport key 00 = 16×FF SM4, 3 tries; docs/sm4.md) "
                   "or psam (a terminal's secure module, docs/psam.md).")
def new(image: str, force: bool, model: str) -> None:
    """Make IMAGE a fresh card, as a factory FM1208 (MF, transport key 00 of the card model)."""
    from ..sim import new_card
    from ..sim.image import save

    if os.path.exists(image) and not force:
        raise InputError(f"{image} exists; use --force to replace it with a fresh card")
    folder = os.path.dirname(image) or "."
    if not os.path.isdir(folder):
        raise InputError(f"{image}: no folder {folder} to write the image in")
    save(new_card(model), image)
    click.echo(f"{image}: fresh card (MF 3F00, external-auth key 00 = transport key)")


@sim.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
def show(image: str, as_json: bool) -> None:
    """Print the card's file tree: kinds, sizes, ACs, key slots (never key values)."""
    from ..sim import image as _image
    from ..sim.show import lines, tree

    card = _image.load(image)
    if as_json:
        click.echo(json.dumps(tree(card), indent=2))
    else:
        click.echo("\n".join(lines(card)))


@sim.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--vpcd", "endpoint", default="127.0.0.1:35963", show_default=True, metavar="HOST:PORT",
              help="Where pcscd's vpcd driver listens.")
@click.option("--save-interval", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds between image saves; 0 saves after every APDU that changed the card.")
@click.option("--dispenser", "dispenser_dir", default=None, metavar="DIR",
              help="Act as a card dispenser: a changed card powered down by the host is filed in DIR "
                   "and replaced by a fresh one (for citycard batch).")
@click.option("--timing", "timing", default=None, metavar="PRESET",
              help="Take a real card's time: sleep the modelled time of every APDU (contact-9600, contact-115200, "
                   "contactless-106, contactless-424, ...; docs/sim.md).")
def serve(image: str, endpoint: str, save_interval: float, dispenser_dir: str | None,
          timing: str | None) -> None:
    """Put the card of IMAGE in a vpcd virtual reader until SIGTERM or Ctrl-C.

    The image is saved (atomically) as the card changes, and once more on exit.
    """
    from ..sim import image as _image
    from ..sim.saver import ImageSaver
    from ..sim.vpcd import VpcdServer, parse_endpoint

    host, port = parse_endpoint(endpoint)
    if timing is not None:
        from ..sim.timing import get_preset
        preset = get_preset(timing)   # an unknown name: one line, before the image is locked
    card = _image.load(image, lock=True)   # the only writer of the image (issue 18 point 5)
    holder = card
    if dispenser_dir is not None:
        from ..sim.dispenser import Dispenser
        holder = Dispenser(card, dispenser_dir)
    saver = ImageSaver(holder, image, save_interval)
    served = holder
    if timing is not None:
        import time

        from ..sim.timing import TimedCard
        served = TimedCard(holder, preset, sleep=time.sleep)
    server = VpcdServer(served, host, port, on_apdu=saver.after_apdu)
    if dispenser_dir is not None:
        holder.server = server

    stopping = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: stopping", signum)
        stopping.set()
        server.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"serving {image} on vpcd {host}:{port} (SIGTERM or Ctrl-C stops)", err=True)
    try:
        server.start_thread()
        while not stopping.is_set():   # (the dispenser restarts the serving thread by itself)
            stopping.wait(0.2)
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
        saver.close()
    click.echo(f"stopped; {image} saved", err=True)

