"""The SM4 purse end to end in process (docs/sm4.md): profiles/citycard-sm4.toml (an SM4 and a
3DES key set side by side in the transit application) personalized and verified on the
simulated card; loads, purchases and CAPP purchases with either set, the terminal taking the
algorithm from the card's INITIALIZE answer; every TAC checked against the independent SM4 of
tests/sm4_gbt.py; torn SM4 transactions settled exactly once."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest

from citycard.commands import purse as purse_cmds
from citycard.commands import walk
from citycard.crypto import pboc
from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import personalize
from citycard.profile import load_profile
from citycard.sim import SimCard
from citycard.sim.transport import SimTransport
from citycard.terminal.purse import NotCompleted, PurseError, PurseTerminal
from citycard.transport import CardSession
from tests import sm4_gbt as ref

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard-sm4.toml"
KEYS = (ROOT / "profiles/demo-keys.toml", ROOT / "profiles/demo-keys-sm4.toml")
SM4_MASTERS = {r: bytes.fromhex(v) for r, v in {
    "dlk-sm4": "1CB5E487411BAD3B5AB28FA92406788D", "dpk-sm4": "DC92ED3C9E5A54E11CD84080C7C2B16A",
    "dtk-sm4": "FFC9C066F62E8CB61EBDFDF12D06107B"}.items()}
WHEN = datetime.datetime(2026, 12, 3, 9, 30, 15)
DATE, TIME = bytes.fromhex("20261203"), bytes.fromhex("093015")
TERMINAL = b"\x00\x00\x00\x00\x00\x01"


@pytest.fixture(scope="module")
def setup():
    return load_profile(PROFILE), KeyRing([DemoKeyFile(k) for k in KEYS]), read_csv(ROOT / "profiles/citycard-sample.csv")


def personalized(setup, row=1):
    spec, keys, data = setup
    card = SimCard()
    t = SimTransport(card)
    t.connect()
    session = CardSession(t)
    plan = Planner(spec, keys).plan(CardData(data.row(row), row, datetime.date(2026, 11, 24), "row"))
    assert personalize(session, spec, plan).verified
    return card, session


def _ref_key(role: str, serial: str) -> bytes:
    """The per-card SM4 key computed with the independent SM4: SM4(MK, F ‖ ¬F)."""
    f = walk.diversification_factor(serial)[-8:]
    return ref.encrypt_block(SM4_MASTERS[role], f + bytes(b ^ 0xFF for b in f))


def test_sm4_keys_are_written_with_algorithm_byte_04(setup):
    card, _ = personalized(setup)
    keys = card.mf.children[0x3F01].keyfile.keys
    for ktype in (0x34, 0x3D, 0x3E, 0x3F):
        assert keys[(ktype, 0x41)].b4 == 0x04 and len(keys[(ktype, 0x41)].value) == 16
        assert keys[(ktype, 0x01)].b4 == 0x00


def test_initialize_answers_algorithm_04_for_the_sm4_key(setup):
    _, session = personalized(setup)
    spec, _, _ = setup
    transit = next(a for a in spec.apps if a.name == "transit")
    from citycard.commands import iso
    session.send(iso.select_name(transit.aid), expect=0x9000)
    r = session.send(purse_cmds.initialize_for_load(2, 0x41, 100, TERMINAL), expect=0x9000)
    assert purse_cmds.LoadInit.parse(r.data).algorithm == 0x04
    r = session.send(purse_cmds.initialize_for_load(2, 0x01, 100, TERMINAL), expect=0x9000)
    assert purse_cmds.LoadInit.parse(r.data).algorithm == 0x00


def test_sm4_load_purchase_capp_against_the_reference(setup):
    spec, keys, _ = setup
    card, session = personalized(setup)
    term = PurseTerminal(session, spec, keys)
    serial = term.select()
    dtk = _ref_key("dtk-sm4", serial)
    load = term.load(5000, when=WHEN)                         # the first load key: the SM4 set (id 41)
    assert load.balance_after == 5000
    want = ref.cbc_mac4(dtk, (5000).to_bytes(4, "big") + load.counter.to_bytes(2, "big")
                        + (5000).to_bytes(4, "big") + b"\x02" + TERMINAL + DATE + TIME)
    assert load.tac == want
    buy = term.purchase(120, when=WHEN, terminal_serial=7)
    assert buy.tac == ref.cbc_mac4(dtk, (120).to_bytes(4, "big") + b"\x06" + TERMINAL + (7).to_bytes(4, "big")
                                   + DATE + TIME)
    from citycard import records
    rec = records.get("capp_metro").encode({"state": 1, "line": "03", "station": "0A0B", "terminal": "000000000001",
                                            "entry_time": "20261203093000", "amount": 0})
    capp = term.purchase(200, capp=(2, rec), when=WHEN, terminal_serial=8)
    assert capp.balance_after == 4680
    assert capp.tac == ref.cbc_mac4(dtk, (200).to_bytes(4, "big") + b"\x09" + TERMINAL + (8).to_bytes(4, "big")
                                    + DATE + TIME)
    assert card.mf.children[0x3F01].children[0x001A].records[0] == rec
    # the card's own session key and MAC1 for the purchase, recomputed independently
    r = session.send(purse_cmds.initialize_for_purchase(2, 0x41, 10, TERMINAL), expect=0x9000)
    init = purse_cmds.PurchaseInit.parse(r.data)
    dpk = _ref_key("dpk-sm4", serial)
    ses = ref.encrypt_block(dpk, init.random + init.offline_counter.to_bytes(2, "big") + b"\x00\x09"
                            + bytes.fromhex("8000000000000000"))
    mac1 = ref.cbc_mac4(ses, (10).to_bytes(4, "big") + b"\x06" + TERMINAL + DATE + TIME)
    r = session.send(purse_cmds.debit_for_purchase(bytes.fromhex("00000009"), DATE, TIME, mac1), expect=0x9000)
    debit = purse_cmds.DebitResult.parse(r.data)
    assert debit.mac2 == ref.cbc_mac4(ses, (10).to_bytes(4, "big"))
    assert debit.tac == ref.cbc_mac4(_ref_key("dtk-sm4", serial), (10).to_bytes(4, "big") + b"\x06" + TERMINAL
                                     + bytes.fromhex("00000009") + DATE + TIME)
    assert term.balance() == 4670
    assert [h["type"] for h in term.history()] == [6, 9, 6, 2]


def test_3des_set_beside_it_is_unchanged(setup):
    spec, keys, _ = setup
    _, session = personalized(setup)
    term = PurseTerminal(session, spec, keys)
    serial = term.select()
    res = term.load(1000, when=WHEN, key_id=0x01)
    dtk = DemoKeyFile(KEYS[0]).derive("transit", "dtk", walk.diversification_factor(serial))
    assert res.tac == pboc.load_tac(dtk, 1000, res.counter, 1000, 0x02, TERMINAL, DATE, TIME)
    assert term.purchase(300, when=WHEN, key_id=0x01).balance_after == 700
    assert term.purchase(300, when=WHEN).balance_after == 400          # and the SM4 set on the same purse
    assert term.balance() == 400


def test_profile_and_card_disagreeing_on_the_algorithm_is_named(setup):
    spec, keys, _ = setup
    card, session = personalized(setup)
    transit = next(a for a in spec.apps if a.name == "transit")
    # the profile's SM4 load key declared 3DES: the card's INITIALIZE answer (04) wins the argument
    wrong = dataclasses.replace(spec, apps=tuple(
        dataclasses.replace(a, keys=tuple(dataclasses.replace(k, alg="des") if k.name == "dlk-sm4" else k
                                          for k in a.keys)) if a is transit else a for a in spec.apps))
    term = PurseTerminal(session, wrong, keys)
    with pytest.raises(PurseError) as e:
        term.load(100)
    assert str(e.value) == ("INITIALIZE FOR LOAD: the card's key 41 has algorithm id 04 (SM4), but the profile's "
                            "key dlk-sm4 is 3DES")
    assert term.balance() == 0


@pytest.mark.parametrize("kind", ["load", "purchase"])
def test_torn_sm4_transaction_is_settled_never_charged_twice(setup, kind):
    spec, keys, _ = setup
    outcomes = set()
    for n in range(1, 8):
        card, session = personalized(setup)
        term = PurseTerminal(session, spec, keys)
        if kind == "purchase":
            term.load(1000)
        before = term.balance()
        card.nvm.tear_after = n
        try:
            res = term.load(300) if kind == "load" else term.purchase(300)
        except NotCompleted:
            outcomes.add("not completed")
            card.nvm.tear_after = None
            assert term.balance() == before
            res = term.load(300) if kind == "load" else term.purchase(300)
            assert not res.recovered
        else:
            outcomes.add("recovered" if res.recovered else "normal")
        card.nvm.tear_after = None
        assert term.balance() == before + (300 if kind == "load" else -300), n
        assert sum(1 for h in term.history() if h["amount"] == 300) == 1
    assert {"not completed", "recovered"} <= outcomes


def test_sm4_unload_on_an_ed(setup, tmp_path):
    """An ED whose load, unload and TAC keys are SM4 only (profiles/pboc-ep.toml made an ED):
    unload's MAC3 checked by the terminal and recomputed with the independent SM4."""
    _, keys, data = setup
    text = (ROOT / "profiles/pboc-ep.toml").read_text()
    old = text[text.index("dlk = {"):text.index("[apps.purse.files.ef0015]")]
    text = text.replace(old, '''dlk = { type = "load", id = 0x41, alg = "sm4", master = "dlk-sm4" }
dtk = { type = "tac", id = 0x41, alg = "sm4", master = "dtk-sm4" }
unload = { type = "unload", id = 0x41, alg = "sm4", master = "unload-sm4" }

''').replace('fid = "0002"\nkind = "ep"', 'fid = "0001"\nkind = "ed"\ntac_key = 0x41')
    path = tmp_path / "ed-sm4.toml"
    path.write_text(text)
    spec = load_profile(path)
    randoms: list[bytes] = []

    def rng(n: int) -> bytes:                 # the card's randoms, kept to recompute MAC3
        randoms.append(bytes((0x30 + len(randoms) + i) & 0xFF for i in range(n)))
        return randoms[-1]

    card = SimCard(rng=rng)
    t = SimTransport(card)
    t.connect()
    session = CardSession(t)
    plan = Planner(spec, keys).plan(CardData(data.row(2), 2, datetime.date(2026, 11, 24), "row"))
    assert personalize(session, spec, plan).verified
    term = PurseTerminal(session, spec, keys)
    serial = term.select()
    assert term.load(1000, when=WHEN).balance_after == 1000
    res = term.unload(400, when=WHEN)
    assert res.kind == "unload" and res.balance_after == 600 and term.balance() == 600
    # MAC3 = SM4 MAC under SESLK of the unload key over new balance ‖ counter ‖ amount ‖ 03 ‖ terminal ‖ date ‖ time
    f = walk.diversification_factor(serial)[-8:]
    master = bytes.fromhex("A1B1F8C5B7255151D812D4E5C62299D5")       # demo-keys-sm4.toml transit/unload-sm4
    dulk = ref.encrypt_block(master, f + bytes(b ^ 0xFF for b in f))
    random = randoms[-1]
    assert len(random) == 4
    ses = ref.encrypt_block(dulk, random + res.counter.to_bytes(2, "big") + b"\x80\x00" + bytes.fromhex("8000000000000000"))
    assert res.tac == ref.cbc_mac4(ses, (600).to_bytes(4, "big") + res.counter.to_bytes(2, "big")
                                   + (400).to_bytes(4, "big") + b"\x03" + TERMINAL + DATE + TIME)


def test_verification_checks_the_sm4_load_key_by_its_mac1(setup):
    spec, keys, data = setup
    t = SimTransport(SimCard())
    t.connect()
    plan = Planner(spec, keys).plan(CardData(data.row(4), 4, datetime.date(2026, 11, 24), "row"))
    res = personalize(CardSession(t), spec, plan)
    checks = {name: ok for name, ok, _ in res.checks}
    assert checks["transit: load key dlk-sm4 gives the expected MAC1"] is True
    assert checks["transit: load key dlk gives the expected MAC1"] is True
    assert res.verified
