"""perso identifies the card before touching it (issue 17 item 1): an issued card is refused
unless re-issuance is asked for, another cardholder's card is refused before any key is tried,
and one failed EXTERNAL AUTHENTICATE stops the run."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from citycard.commands import iso
from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import (AuthenticationRefused, CardAlreadyIssued, CardState, ForeignCard, PersoError,
                                identify_card, personalize)
from citycard.profile import load_profile
from citycard.sim import SimCard
from citycard.sim import image as sim_image
from citycard.sim.fs import KT_EXT_AUTH
from citycard.sim.transport import SimTransport
from citycard.terminal.purse import PurseTerminal
from citycard.transport import CardSession

from .test_perso import Pulled, cut

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = datetime.date(2026, 11, 24)
TRANSIT = 0x3F01          # the transit application's DF (its EP at EF 0002)


@pytest.fixture(scope="module")
def demo():
    return load_profile(PROFILE), KeyRing([DemoKeyFile(KEYS)]), read_csv(DATA)


def plan_for(spec, keys, data, row):
    return Planner(spec, keys).plan(CardData(data.row(row), row, DAY, data.where(row)))


def session_on(card):
    t = SimTransport(card)
    t.connect()
    return CardSession(t)


def mf_master(card):
    """The MF master's key record on the simulated card (its error counter: ``tries_left``)."""
    return card.mf.keyfile.keys[(KT_EXT_AUTH, 0)]


def issued_card(spec, keys, data, row, balance_fen=0):
    card = SimCard()
    plan = plan_for(spec, keys, data, row)
    assert personalize(session_on(card), spec, plan).verified
    if balance_fen:
        term = PurseTerminal(session_on(card), spec, keys)
        term.select()
        assert term.load(balance_fen).balance_after == balance_fen
    return card, plan


def test_factory_card_is_identified_without_a_try(demo):
    spec, keys, data = demo
    card = SimCard()
    transport = card.mf.keyfile.keys[(KT_EXT_AUTH, 0)]
    tries = transport.tries_left
    ident = identify_card(session_on(card), spec, plan_for(spec, keys, data, 1))
    assert ident.state is CardState.FACTORY and ident.serial is None and ident.apps_found == ()
    assert ident.atr == card.atr and transport.tries_left == tries


def test_second_perso_of_an_issued_card_is_refused_and_keeps_the_purse(demo):
    spec, keys, data = demo
    card, plan = issued_card(spec, keys, data, 1, balance_fen=5000)
    tries = mf_master(card).tries_left
    ident = identify_card(session_on(card), spec, plan)
    assert ident.state is CardState.ISSUED and ident.serial == "3301000000000001"
    assert set(ident.apps_found) == {a.name for a in spec.apps}
    with pytest.raises(CardAlreadyIssued, match="card 3301000000000001 is already issued.*--reissue-card"):
        personalize(session_on(card), spec, plan)
    assert card.mf.children[TRANSIT].children[0x0002].balance == 5000
    assert mf_master(card).tries_left == tries                            # no key was tried
    # asked explicitly: erased and redone, a fresh purse
    report = personalize(session_on(card), spec, plan, reissue=True)
    assert report.rerun and report.verified
    assert card.mf.children[TRANSIT].children[0x0002].balance == 0


def test_perso_twice_through_the_cli(demo, run_cli, tmp_path):
    image = tmp_path / "card.json"
    assert run_cli("sim", "new", str(image)).exit_code == 0
    common = ["--profile", str(PROFILE), "--keys", str(KEYS)]
    perso = ["perso", *common, "--data", str(DATA), "--row", "2", "--sim", str(image), "--issue-date", "20261124"]
    first = run_cli(*perso)
    assert first.exit_code == 0, first.stderr
    assert run_cli("purse", "load", *common, "--sim", str(image), "--amount", "50.00").exit_code == 0
    second = run_cli(*perso)
    assert second.exit_code == 1
    assert "card 3301000000000002 is already issued" in second.stderr and "--reissue-card" in second.stderr
    balance = run_cli("purse", "balance", *common, "--sim", str(image), "--json")
    assert balance.json()["balance_fen"] == 5000
    redone = run_cli(*perso, "--reissue-card", "--json")
    assert redone.exit_code == 0, redone.stderr
    assert redone.json()["rerun"] is True and redone.json()["verified"] is True
    assert sim_image.load(image).mf.children[TRANSIT].children[0x0002].balance == 0


def test_another_cardholders_card_is_refused_before_any_key(demo):
    spec, keys, data = demo
    card, _plan = issued_card(spec, keys, data, 3, balance_fen=1234)
    tries = mf_master(card).tries_left
    other_row = plan_for(spec, keys, data, 4)
    for reissue in (False, True):                      # re-issuance is for this cardholder's card only
        with pytest.raises(ForeignCard, match="card 3301000000000003 of another cardholder, not 3301000000000004"):
            personalize(session_on(card), spec, other_row, reissue=reissue)
    assert mf_master(card).tries_left == tries
    assert card.mf.children[TRANSIT].children[0x0002].balance == 1234


def test_wrong_keys_burn_one_try_at_most(demo, tmp_path):
    spec, keys, data = demo
    card, _plan = issued_card(spec, keys, data, 5)
    text = KEYS.read_text()
    assert 'mf-master = "7901175B43DE6A59BAD387759DBB5813"' in text
    other = tmp_path / "other-keys.toml"                                         # another MF master
    other.write_text(text.replace('mf-master = "7901175B43DE6A59BAD387759DBB5813"',
                                  'mf-master = "0123456789ABCDEFFEDCBA9876543210"'))
    wrong = plan_for(spec, KeyRing([DemoKeyFile(other)]), data, 5)              # same serial, other master
    master = mf_master(card)
    tries = master.tries_left
    with pytest.raises(CardAlreadyIssued):                                      # not asked: no try at all
        personalize(session_on(card), spec, wrong)
    assert master.tries_left == tries
    with pytest.raises(AuthenticationRefused, match=r"MF master of card 3301000000000005 answered 63C.*one try") as e:
        personalize(session_on(card), spec, wrong, reissue=True)
    assert (e.value.sw & 0xFFF0) == 0x63C0
    assert master.tries_left == tries - 1                                       # exactly one, then stop
    # the right keys still take it over
    assert personalize(session_on(card), spec, plan_for(spec, keys, data, 5), reissue=True).verified


def test_half_personalized_card_is_reported_and_redone(demo):
    spec, keys, data = demo
    card = SimCard()
    plan = plan_for(spec, keys, data, 6)
    t = Pulled(card, cut(45))
    t.connect()
    with pytest.raises(PersoError, match="card removed"):
        personalize(CardSession(t), spec, plan)
    ident = identify_card(session_on(card), spec, plan)
    assert ident.state is CardState.PARTIAL and ident.reached
    tries = mf_master(card).tries_left
    report = personalize(session_on(card), spec, plan)
    assert report.rerun and report.verified
    assert report.identity is not None and report.identity.state is CardState.PARTIAL
    assert mf_master(card).tries_left == tries                                  # the master opened it first time


def test_factory_card_with_reissue_is_refused_after_one_try(demo):
    """--reissue-card says the card is issued: on a card showing nothing of the profile the MF
    master is tried once instead of the transport key, and nothing more."""
    spec, keys, data = demo
    card = SimCard()
    transport = card.mf.keyfile.keys[(KT_EXT_AUTH, 0)]
    tries = transport.tries_left
    with pytest.raises(AuthenticationRefused, match="without --reissue-card"):
        personalize(session_on(card), spec, plan_for(spec, keys, data, 7), reissue=True)
    assert transport.tries_left == tries - 1 and not card.mf.children
    assert personalize(session_on(card), spec, plan_for(spec, keys, data, 7)).verified


def test_card_of_another_profile_is_refused_before_any_key(demo):
    """A PBOC EP card (its application at FID 3F01 under another AID) given to the city card
    profile: no application of the profile, not a factory card either; refused without a try."""
    spec, keys, data = demo
    ep = load_profile(ROOT / "profiles/pboc-ep.toml")
    card = SimCard()
    assert personalize(session_on(card), ep, plan_for(ep, keys, data, 3)).verified
    tries = mf_master(card).tries_left
    ep_aid = ep.apps[0].aid.hex().upper()
    with pytest.raises(ForeignCard, match=f"DF 3F01 holds application {ep_aid}, not transit.*another profile"):
        personalize(session_on(card), spec, plan_for(spec, keys, data, 3))
    assert mf_master(card).tries_left == tries and list(card.mf.children) == [0x3F01]


def test_issued_card_with_a_blocked_application_is_still_refused(demo):
    """A blocked application (APPLICATION BLOCK: SELECT answers 6A81) is part of an issued card,
    not a sign of a half-personalized one: perso refuses, the purse is kept."""
    from citycard.terminal.services import CardServices, find_app

    spec, keys, data = demo
    card, plan = issued_card(spec, keys, data, 8, balance_fen=700)
    CardServices(session_on(card), spec, keys).block_app(find_app(spec, "transit"))
    assert session_on(card).send(iso.select_name(find_app(spec, "transit").aid)).sw in (0x6A81, 0x9303)
    with pytest.raises(CardAlreadyIssued, match="card 3301000000000008 is already issued"):
        personalize(session_on(card), spec, plan)
    assert card.mf.children[TRANSIT].children[0x0002].balance == 700


def test_a_card_whose_serial_file_is_not_free_is_refused_before_any_key(demo):
    """A card with the profile's MF serial file, but which refuses its free read (another
    issuer's ACs): not a card of this profile; no key is tried on it, even with --reissue-card."""
    spec, keys, data = demo
    card, plan = issued_card(spec, keys, data, 5)
    card.mf.children[0x0005].read_ac = 0xF1               # the card's read needs a key: not our layout
    card.reset()
    tries = mf_master(card).tries_left
    for reissue in (False, True):
        with pytest.raises(ForeignCard, match="0005 refuses a free read \\(SW 6982\\)"):
            personalize(session_on(card), spec, plan, reissue=reissue)
    assert mf_master(card).tries_left == tries
