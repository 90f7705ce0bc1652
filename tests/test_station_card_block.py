"""CARD BLOCK belongs to the card issuer (issue 18 point 6), on a card of the demo profile:
a service application's DAMK cannot block the card (6988) and the card stays usable; the
MF's line-protection key (the card issuer's unit) does (UM 8.1; docs/sim.md, docs/profile.md)."""

from __future__ import annotations

import datetime
from pathlib import Path

from citycard.commands import fmcos, iso, walk
from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import personalize
from citycard.profile import load_profile
from citycard.sim import SimCard
from citycard.sim.transport import SimTransport
from citycard.terminal.purse import PurseTerminal
from citycard.terminal.services import CardServices, find_app
from citycard.transport import CardSession, LineProtection

ROOT = Path(__file__).resolve().parent.parent


def test_an_applications_damk_cannot_block_the_card():
    spec = load_profile(ROOT / "profiles/citycard.toml")
    keys = KeyRing([DemoKeyFile(ROOT / "profiles/demo-keys.toml")])
    data = read_csv(ROOT / "profiles/citycard-sample.csv")
    plan = Planner(spec, keys).plan(CardData(data.row(1), 1, datetime.date(2026, 11, 24), "row"))
    card = SimCard()
    t = SimTransport(card)
    t.connect()
    session = CardSession(t)
    assert personalize(session, spec, plan).verified
    PurseTerminal(session, spec, keys).load(500)
    # the reproduction: select the library, CARD BLOCK MAC'd with the library's DAMK
    library = find_app(spec, "library")
    assert walk.select_df(session, library).sw == 0x9000
    r = session.send(fmcos.card_block(), protect=LineProtection(plan.keys["library/damk"]))
    assert r.sw == 0x6988 and not card.card_blocked
    # the card stays usable: the transit purse answers and takes a purchase
    term = PurseTerminal(session, spec, keys)
    assert term.purchase(120).balance_after == 380
    # the card issuer's key (the MF's DAMK, used by the host's block_card) blocks it
    CardServices(session, spec, keys).block_card()
    assert card.card_blocked and session.send(iso.select_mf()).sw == 0x6A81
