"""Pytest plugin: a private pcscd and a demo card in its vpcd reader.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.pcsc_fixtures"]``
(or on the command line with ``-p tests.pcsc_fixtures``).

* ``pcscd`` (session): the citycard plugin's ``citycard_pcscd``, a started
  :class:`PrivatePcscd`; ``os.environ`` then has
  ``PCSCLITE_CSOCK_NAME`` pointing at it.  The PC/SC client library reads that
  variable once per process, at its first PC/SC call: if anything in the test
  process used PC/SC before this fixture ran, the process stays bound to the other
  socket.  That cannot be detected directly; the fixture checks that its reader is
  listed and fails with an explanation when it is not.
* ``vcard`` (function): :class:`DemoCard` served on slot 0, present in the reader.

Skip policy (the plugin's): when :func:`pcscd_available` says no, the tests are skipped, unless
``CITYCARD_REQUIRE_PCSC=1``, where they fail; with that variable any skipped test
marked ``pcsc`` is reported as a failure (see :func:`pytest_runtest_makereport`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from citycard.testing.democard import DemoCard
from citycard.testing.pcscd import PrivatePcscd, wait_for_card
from citycard.testing.plugin import require_pcsc
from citycard.sim.vpcd import VpcdServer

__all__ = ["ServedSim", "VCard", "pcscd", "pytest_runtest_makereport", "require_pcsc", "served_sim", "vcard"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """With ``CITYCARD_REQUIRE_PCSC=1``, a skipped ``pcsc`` test is a failure."""
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and require_pcsc()
        and item.get_closest_marker("pcsc") is not None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CITYCARD_REQUIRE_PCSC=1: pcsc test must not be skipped ({reason})"
    return report


@pytest.fixture(scope="session")
def pcscd(citycard_pcscd: PrivatePcscd) -> PrivatePcscd:
    """A private pcscd for the whole session, with ``PCSCLITE_CSOCK_NAME`` set.

    The one of the citycard pytest plugin (citycard.testing.plugin): a process can reach
    only one pcscd (the client library reads the variable once), so the project's tests and
    the plugin's fixtures share it.
    """
    return citycard_pcscd


@dataclass
class VCard:
    """A card served in a reader of the private pcscd."""

    reader: str
    card: DemoCard
    server: VpcdServer
    thread: threading.Thread
    daemon: PrivatePcscd


@pytest.fixture
def vcard(pcscd: PrivatePcscd) -> Iterator[VCard]:
    """:class:`DemoCard` in slot 0, present; removed (and awaited absent) afterwards.

    Tests must release their PC/SC handles before returning.
    """
    reader = pcscd.reader_names[0]
    card = DemoCard()
    server = VpcdServer(card, port=pcscd.port)
    thread = server.start_thread()
    try:
        wait_for_card(reader, present=True, timeout=5.0)
        yield VCard(reader, card, server, thread, pcscd)
    finally:
        server.stop()
        thread.join(5)
        assert not thread.is_alive(), "vpcd card thread did not stop"
        wait_for_card(reader, present=False, timeout=5.0)


@dataclass
class ServedSim:
    """A simulated card image served by a `citycard sim serve` process on slot 1."""

    reader: str
    image: "os.PathLike[str]"
    proc: "subprocess.Popen[str]"
    daemon: PrivatePcscd
    log: "os.PathLike[str]"

    def output(self) -> str:
        from pathlib import Path

        return Path(self.log).read_text()

    def stop(self) -> int:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


@pytest.fixture
def served_sim(pcscd: PrivatePcscd, tmp_path) -> Iterator[ServedSim]:
    """A fresh simulated card, served by the real `citycard sim serve` command."""
    from citycard.sim import SimCard
    from citycard.sim.image import save

    image = tmp_path / "card.json"
    save(SimCard(), image)
    yield from serve_image(pcscd, image, tmp_path)


def serve_image(pcscd: PrivatePcscd, image, tmp_path) -> Iterator[ServedSim]:
    """Serve the card image ``image`` with `citycard sim serve` in pcscd's second slot for as
    long as the generator is not closed (the body of a fixture: ``yield from``)."""
    import subprocess
    import sys

    env = dict(os.environ, **pcscd.env)
    log = open(tmp_path / "serve.log", "w")     # a file, never an undrained pipe
    proc = subprocess.Popen([sys.executable, "-m", "citycard", "sim", "serve", str(image), "--vpcd",
                             f"127.0.0.1:{pcscd.port + 1}"], env=env, stdout=log, stderr=log, text=True)
    served = ServedSim(pcscd.reader_names[1], image, proc, pcscd, tmp_path / "serve.log")
    try:
        wait_for_card(served.reader, present=True, timeout=10)
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        wait_for_card(served.reader, present=False, timeout=10)
