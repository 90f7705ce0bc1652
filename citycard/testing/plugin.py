"""The citycard pytest plugin: simulated city cards for your own test suite.

Installed with citycard and loaded by pytest through the ``pytest11`` entry point
(plugin name ``citycard``; ``-p no:citycard`` disables it).  Fixtures:

* ``citycard_card``: a fresh simulated card in process, powered on, with a
  :class:`~citycard.transport.CardSession` ready to send APDUs (:class:`CitycardCard`).
* ``citycard_reader``: the full name of a PC/SC reader holding a simulated card, behind a
  private pcscd started once per test session (its own mount namespace: root or
  unprivileged user namespaces, Debian packages ``pcscd`` and ``vsmartcard-vpcd``).
  Where that cannot run the test is skipped with the reason;
  ``CITYCARD_REQUIRE_PCSC=1`` makes it a failure instead (for CI).
* ``citycard_served_card``: the same, as a :class:`~citycard.testing.cards.ServedCard`
  (reader name, the card object, its personalization).
* ``citycard_pcscd``: the session's :class:`~citycard.testing.pcscd.PrivatePcscd`;
  ``os.environ["PCSCLITE_CSOCK_NAME"]`` points at it while the session runs.

Which card (for both fixtures): the marker
``@pytest.mark.citycard(model=..., image=..., personalized=..., profile=..., keys=..., row=...)``
or indirect parametrization with a dict of the same keys, else the command-line defaults
``--citycard-model`` and ``--citycard-image``:

* ``model``: the card model (default ``fm1208``);
* ``image``: a card image file (``citycard sim new``), relative to the test file
  (``--citycard-image``: relative to the current directory); the file is never written;
* ``personalized=True``: personalize with the shipped demo profile, its TEST KEYS and
  cardholder ``row`` (default 1) of the sample CSV; ``profile`` (``"demo"``, ``"pboc-ep"``
  or a file) and ``keys`` (a demo key file) choose others.

The PC/SC client library reads ``PCSCLITE_CSOCK_NAME`` once per process, at its first
PC/SC call: a test process that used PC/SC before ``citycard_pcscd`` started cannot
reach the private pcscd (the fixture then fails and says so).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .cards import DEFAULT_MODEL, Personalization, ServedCard
from .pcscd import PrivatePcscd

if TYPE_CHECKING:   # imported when a fixture runs: pytest loads this plugin at every start
    from ..sim import SimCard
    from ..transport import CardSession

__all__ = ["CitycardCard", "REQUIRE_PCSC_ENV", "citycard_card", "citycard_pcscd", "citycard_reader",
           "citycard_served_card", "require_pcsc"]

REQUIRE_PCSC_ENV = "CITYCARD_REQUIRE_PCSC"
MARKER = "citycard"
_CARD_OPTIONS = ("model", "image", "personalized", "profile", "keys", "row", "issue_date")


def require_pcsc() -> bool:
    """True when ``CITYCARD_REQUIRE_PCSC=1``: a private pcscd that cannot run is a failure."""
    return os.environ.get(REQUIRE_PCSC_ENV) == "1"


# ------------------------------------------------------------------------------ set-up
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("citycard", "citycard simulated cards")
    group.addoption("--citycard-model", default=None, metavar="MODEL",
                    help=f"card model of citycard_card and citycard_reader (default {DEFAULT_MODEL})")
    group.addoption("--citycard-image", default=None, metavar="FILE",
                    help="start citycard_card and citycard_reader from this card image file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "citycard(model=None, image=None, personalized=False, profile='demo', keys=None, row=1): "
        "the simulated card of the citycard_card / citycard_reader fixtures",
    )


# ------------------------------------------------------------------------------ which card
@dataclass(frozen=True)
class CardChoice:
    model: str | None = None
    image: Path | None = None
    personalized: bool = False
    profile: str | Path = "demo"
    keys: Path | None = None
    row: int = 1
    issue_date: datetime.date | None = None


def _choice(request: pytest.FixtureRequest, fixtures: tuple[str, ...]) -> CardChoice:
    """The card asked for: command-line defaults, then the marker, then an indirect parameter
    of one of ``fixtures``.  Relative paths of the marker and parameter are from the test file."""
    from ..assets import NAMED_PROFILES

    config = request.config
    options: dict[str, Any] = {}
    if config.getoption("citycard_model"):
        options["model"] = config.getoption("citycard_model")
    if config.getoption("citycard_image"):
        options["image"] = Path(config.invocation_params.dir, config.getoption("citycard_image"))
    sources: list[tuple[str, dict[str, Any]]] = []
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        if marker.args:
            pytest.fail(f"@pytest.mark.{MARKER}: keyword arguments only ({', '.join(_CARD_OPTIONS)})",
                        pytrace=False)
        sources.append((f"@pytest.mark.{MARKER}", dict(marker.kwargs)))
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    for name in fixtures:
        if name in params:
            if not isinstance(params[name], dict):
                pytest.fail(f"indirect parameter of {name}: a dict of {', '.join(_CARD_OPTIONS)}", pytrace=False)
            sources.append((f"indirect parameter of {name}", dict(params[name])))
    here = request.path.parent
    for where, given in sources:
        unknown = sorted(set(given) - set(_CARD_OPTIONS))
        if unknown:
            pytest.fail(f"{where}: unknown option {', '.join(unknown)} (known: {', '.join(_CARD_OPTIONS)})",
                        pytrace=False)
        for name in ("image", "keys"):
            if given.get(name) is not None:
                given[name] = here / Path(given[name])
        profile = given.get("profile")
        if profile is not None and str(profile) not in NAMED_PROFILES:
            given["profile"] = here / Path(profile)
        options.update(given)
    choice = CardChoice(**options)
    if choice.image is not None and choice.model is not None:
        pytest.fail(f"citycard card: give a model or an image, not both (the image {choice.image} holds a card "
                    "of its model)", pytrace=False)
    return choice


def _make_card(choice: CardChoice) -> tuple[SimCard, Personalization | None]:
    from ..errors import CitycardError
    from .cards import load_card, new_card, personalize_demo

    try:
        card = load_card(choice.image) if choice.image is not None else new_card(choice.model)
        perso = None
        if choice.personalized:
            perso = personalize_demo(card, profile=choice.profile, keys=choice.keys, row=choice.row,
                                     issue_date=choice.issue_date)
    except (CitycardError, ValueError, OSError) as exc:   # bad input: one line, no traceback
        pytest.fail(f"citycard card: {exc}", pytrace=False)
    return card, perso


# ------------------------------------------------------------------------------ in process
@dataclass
class CitycardCard:
    """A simulated card in process: ``send`` APDUs (hex text, bytes or ``CommandApdu``)."""

    card: SimCard
    session: CardSession
    personalization: Personalization | None
    model: str

    def send(self, apdu: Any, *, expect: int | None = None):
        """Send one command (61xx/6Cxx handled); with ``expect`` raise ``ApduError`` on another SW."""
        if isinstance(apdu, str):
            apdu = bytes.fromhex(apdu.replace(" ", ""))
        return self.session.send(apdu, expect=expect)

    @property
    def atr(self) -> bytes:
        return self.session.atr


@pytest.fixture
def citycard_card(request: pytest.FixtureRequest) -> Iterator[CitycardCard]:
    """A fresh simulated card in process with a session ready to send APDUs."""
    from ..sim.transport import SimTransport
    from ..transport import CardSession

    choice = _choice(request, ("citycard_card",))
    card, perso = _make_card(choice)
    transport = SimTransport(card)
    transport.connect()
    session = CardSession(transport)
    try:
        yield CitycardCard(card, session, perso, choice.model or DEFAULT_MODEL)
    finally:
        session.close()


# ------------------------------------------------------------------------------ PC/SC
def _unavailable(reason: str) -> None:
    if require_pcsc():
        pytest.fail(f"{REQUIRE_PCSC_ENV}=1 but the private pcscd cannot run: {reason}", pytrace=False)
    pytest.skip(f"private pcscd unavailable: {reason} ({REQUIRE_PCSC_ENV}=1 makes this a failure)")


def _check_listed(daemon: PrivatePcscd) -> None:
    from smartcard import scard

    hres, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    readers: list[str] = []
    if hres == scard.SCARD_S_SUCCESS:
        _, readers = scard.SCardListReaders(ctx, [])
        scard.SCardReleaseContext(ctx)
    if daemon.reader_names[0] not in (readers or []):
        pytest.fail(
            f"the private pcscd's reader {daemon.reader_names[0]!r} is not listed"
            f" (readers: {readers}, {scard.SCardGetErrorMessage(hres)}). Something in this"
            " process probably used PC/SC before PCSCLITE_CSOCK_NAME was set; the client"
            f" library reads it only once.\npcscd log:\n{daemon.log_tail()}"
        )


@pytest.fixture(scope="session")
def citycard_pcscd() -> Iterator[PrivatePcscd]:
    """A private pcscd with a vpcd reader for the whole session; ``PCSCLITE_CSOCK_NAME`` set."""
    from .pcscd import pcscd_available

    ok, reason = pcscd_available()
    if not ok:
        _unavailable(reason)
    daemon = PrivatePcscd().start()   # it can run here: a failure to start is an error, not a skip
    old = os.environ.get("PCSCLITE_CSOCK_NAME")
    os.environ.update(daemon.env)
    try:
        _check_listed(daemon)
        yield daemon
    finally:
        if old is None:
            os.environ.pop("PCSCLITE_CSOCK_NAME", None)
        else:
            os.environ["PCSCLITE_CSOCK_NAME"] = old
        daemon.stop()


@pytest.fixture
def citycard_served_card(request: pytest.FixtureRequest, citycard_pcscd: PrivatePcscd) -> Iterator[ServedCard]:
    """A simulated card in slot 0 of the session's vpcd reader (removed afterwards)."""
    from .cards import serve_in_reader

    card, perso = _make_card(_choice(request, ("citycard_served_card", "citycard_reader")))
    with serve_in_reader(card, citycard_pcscd, slot=0, personalization=perso) as served:
        yield served


@pytest.fixture
def citycard_reader(citycard_served_card: ServedCard) -> str:
    """The full PC/SC name of a reader holding a simulated card (release handles before the test ends)."""
    return citycard_served_card.reader
