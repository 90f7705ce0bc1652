"""Simulated cards for tests, built the way the pytest plugin offers them.

Independent of pytest: ``new_card()`` (a factory card of a model), ``load_card(image)``
(a card image file, loaded in memory: the file is never written), ``personalize_demo(card)``
(the shipped demo profile, TEST KEYS and a sample cardholder), and ``serve_in_reader(card,
daemon)``, which puts a card object in a slot of a :class:`PrivatePcscd`'s vpcd reader.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .pcscd import PrivatePcscd, wait_for_card

if TYPE_CHECKING:   # imported when used: the pytest plugin imports this module at every pytest start
    from ..sim import SimCard

__all__ = ["DEFAULT_MODEL", "Personalization", "ServedCard", "load_card", "new_card", "personalize_demo",
           "serve_in_reader"]

DEFAULT_MODEL = "fm1208"


def new_card(model: str | None = None) -> SimCard:
    """A factory-fresh simulated card of ``model`` (a name of ``citycard.sim.MODELS``; default
    the FM1208 as real blank cards come, SPEC §6 R1)."""
    from ..sim import new_card as _new_card

    return _new_card(model or DEFAULT_MODEL)


def load_card(image: str | os.PathLike[str]) -> SimCard:
    """The card of a card image file (``citycard sim new``/``sim serve`` write them), in memory."""
    from ..sim import image as _image

    return _image.load(image)


@dataclass(frozen=True)
class Personalization:
    """What a personalized demo card was made from."""

    profile: Path
    keys: Path            # the demo key file: TEST KEYS ONLY
    data: Path
    row: int
    card_serial: str
    issue_date: datetime.date


def _profile_path(profile: str | os.PathLike[str]) -> Path:
    from ..assets import named_profile

    named = named_profile(str(profile)) if isinstance(profile, str) else None
    return named if named is not None else Path(profile)


def personalize_demo(card: SimCard, *, profile: str | os.PathLike[str] = "demo",
                     keys: str | os.PathLike[str] | None = None, row: int = 1,
                     issue_date: datetime.date | None = None) -> Personalization:
    """Personalize ``card`` in process and verify it.

    ``profile``: a shipped profile's name (``demo``, ``pboc-ep``) or a profile file;
    ``keys``: a demo key file (default: the shipped TEST KEYS); ``row``: the cardholder of
    the shipped sample CSV (1-based); ``issue_date``: default today, as ``citycard perso``.
    """
    from ..assets import SAMPLE_DATA, asset_path
    from ..keys import KeyRing
    from ..keys.demo import DemoKeyFile, default_demo_key_file
    from ..perso.context import CardData
    from ..perso.data import read_csv
    from ..perso.plan import Planner
    from ..perso.run import PersoError, personalize
    from ..profile import load_profile
    from ..sim.transport import SimTransport
    from ..transport import CardSession

    profile_path = _profile_path(profile)
    keys_path = Path(keys) if keys is not None else default_demo_key_file()
    data_path = asset_path(SAMPLE_DATA)
    spec = load_profile(profile_path)
    ring = KeyRing([DemoKeyFile(keys_path)])
    data = read_csv(data_path)
    day = issue_date or datetime.date.today()
    plan = Planner(spec, ring).plan(CardData(data.row(row), row, day, data.where(row)))
    transport = SimTransport(card)
    transport.connect()
    try:
        report = personalize(CardSession(transport), spec, plan)
    finally:
        transport.close()
    if not report.verified:
        failed = [label for label, ok, _detail in report.checks if not ok]
        raise PersoError(f"the personalized card failed its verification: {', '.join(failed)}")
    return Personalization(profile_path, keys_path, data_path, row, report.card_serial, day)


@dataclass
class ServedCard:
    """A card object in a reader of a private pcscd."""

    reader: str        # the full PC/SC reader name
    card: SimCard
    daemon: PrivatePcscd
    personalization: Personalization | None = None


def _vpcd_server():
    from ..sim.vpcd import VpcdServer

    return VpcdServer


@contextmanager
def serve_in_reader(card: SimCard, daemon: PrivatePcscd, slot: int = 0, timeout: float = 10.0, *,
                    personalization: Personalization | None = None) -> Iterator[ServedCard]:
    """Insert ``card`` in slot ``slot`` (0 or 1) of ``daemon``'s vpcd reader; remove it after.

    The card is served by a thread of this process.  ``PCSCLITE_CSOCK_NAME`` must point at
    ``daemon`` (``os.environ.update(daemon.env)``) before this process first uses PC/SC.
    Release PC/SC handles to the card before the block ends.
    """
    reader = daemon.reader_names[slot]
    server = _vpcd_server()(card, port=daemon.port + slot)
    thread: threading.Thread = server.start_thread()
    try:
        wait_for_card(reader, present=True, timeout=timeout)
        yield ServedCard(reader, card, daemon, personalization)
    finally:
        server.stop()
        thread.join(timeout)
        if thread.is_alive():  # pragma: no cover - VpcdServer.stop wakes it at once
            raise RuntimeError(f"the card thread of {reader!r} did not stop")
        wait_for_card(reader, present=False, timeout=timeout)
