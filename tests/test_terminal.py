"""Card services on a personalized demo card: purse (load, purchase, CAPP, unload, history),
torn transactions settled by GET TRANSACTION PROVE, PINs, blocking — in process and
through pcscd."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import pytest

from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import personalize
from citycard.profile import load_profile
from citycard.sim import SimCard
from citycard.sim.image import save
from citycard.sim.transport import SimTransport
from citycard.terminal.purse import NotCompleted, PurseTerminal
from citycard.terminal.services import CardServices, ServiceError, find_app
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"


@pytest.fixture(scope="module")
def demo():
    return load_profile(PROFILE), KeyRing([DemoKeyFile(KEYS)]), read_csv(ROOT / "profiles/citycard-sample.csv")


def personalized(demo, row=1):
    spec, keys, data = demo
    card = SimCard()
    t = SimTransport(card)
    t.connect()
    session = CardSession(t)
    plan = Planner(spec, keys).plan(CardData(data.row(row), row, datetime.date(2026, 11, 24), "row"))
    assert personalize(session, spec, plan).verified
    return card, session


def test_purse_load_purchase_capp_unload_history(demo):
    spec, keys, _ = demo
    card, session = personalized(demo)
    term = PurseTerminal(session, spec, keys)
    assert term.load(5000).balance_after == 5000
    assert term.purchase(120).balance_after == 4880
    from citycard import records
    rec = records.get("capp_metro").encode({"state": 1, "line": "03", "station": "0A0B", "terminal": "000000000001",
                                            "entry_time": "20261124081500", "amount": 0})
    capp = term.purchase(200, capp=(2, rec))
    assert capp.kind == "capp purchase" and capp.balance_after == 4680
    assert card.mf.children[0x3F01].children[0x001A].records[0] == rec    # written by the DEBIT
    from citycard.terminal.purse import PurseError
    with pytest.raises(PurseError, match=r"ED command.*SPEC §6 R18"):     # unload: ED only (R18, UM 8.10): refused
        #   by the host before INITIALIZE (the card would answer 6A86: tests/test_sim_realcard.py)
        term.unload(680)
    hist = term.history()
    assert [h["type"] for h in hist] == [9, 6, 2]                          # newest first
    assert [h["amount"] for h in hist] == [200, 120, 5000]
    assert term.balance() == 4680


@pytest.mark.parametrize("kind", ["load", "purchase"])
def test_torn_transaction_is_settled_never_charged_twice(demo, kind):
    spec, keys, _ = demo
    outcomes = set()
    for n in range(1, 8):
        card, session = personalized(demo)
        term = PurseTerminal(session, spec, keys)
        if kind == "purchase":
            term.load(1000)
        before = term.balance()
        counter_before = card.mf.children[0x3F01].children[0x0002].offline
        card.nvm.tear_after = n          # power lost after the n-th write of the next transaction step...
        try:
            res = term.load(300) if kind == "load" else term.purchase(300)
        except NotCompleted:
            outcomes.add("not completed")
            card.nvm.tear_after = None
            assert term.balance() == before                               # nothing charged
            res = term.load(300) if kind == "load" else term.purchase(300)  # retry: once
            assert not res.recovered
        else:
            outcomes.add("recovered" if res.recovered else "normal")
        card.nvm.tear_after = None
        after = term.balance()
        assert after == before + (300 if kind == "load" else -300), n    # exactly once
        hist = term.history()
        assert sum(1 for h in hist if h["amount"] == 300) == 1
        if kind == "purchase":
            assert card.mf.children[0x3F01].children[0x0002].offline == counter_before + 1
    assert {"not completed", "recovered"} <= outcomes


def test_pins(demo, monkeypatch):
    spec, keys, _ = demo
    card, session = personalized(demo)
    svc = CardServices(session, spec, keys)
    social = find_app(spec, "social")
    svc.verify_pin(social, "123456")
    svc.change_pin(social, "123456", "2468")
    with pytest.raises(ServiceError, match="63C2"):
        svc.verify_pin(social, "123456")
    svc.verify_pin(social, "2468")
    for _ in range(3):
        with pytest.raises(ServiceError):
            svc.verify_pin(social, "0000")
    with pytest.raises(ServiceError, match="6983"):
        svc.verify_pin(social, "2468")                                   # locked
    svc.unblock_pin(social, "1357")                                      # with the unblock key
    svc.verify_pin(social, "1357")
    svc.reload_pin(social, "97531")                                      # with the reload key
    svc.verify_pin(social, "97531")
    # without key sources, unblock is refused clearly
    with pytest.raises(ServiceError, match="needs key sources"):
        CardServices(session, spec).unblock_pin(social, "1111")


def test_block_unblock_application_and_card(demo):
    spec, keys, _ = demo
    card, session = personalized(demo)
    svc = CardServices(session, spec, keys)
    term = PurseTerminal(session, spec, keys)
    term.load(100)
    transit = find_app(spec, "transit")
    svc.block_app(transit)
    from citycard.terminal.purse import PurseError
    with pytest.raises(Exception, match="6A81"):
        PurseTerminal(session, spec, keys).select()
    svc.unblock_app(transit)
    t2 = PurseTerminal(session, spec, keys)
    t2.select()
    assert t2.balance() == 100
    svc.block_app(find_app(spec, "library"), permanent=True)
    with pytest.raises(ServiceError, match="9303"):
        svc.unblock_app(find_app(spec, "library"))
    svc.block_card()
    r = session.send(bytes.fromhex("00A40000023F00"))
    assert r.sw == 0x6A81
    with pytest.raises(PurseError):
        PurseTerminal(session, spec, keys).load(1)


def test_purse_cli_json(demo, run_cli, tmp_path):
    img = tmp_path / "c.json"
    card, _session = personalized(demo)
    save(card, img)
    common = ["--profile", str(PROFILE), "--keys", str(KEYS), "--sim", str(img)]
    assert run_cli("purse", "load", *common, "--amount", "12.34").exit_code == 0
    r = run_cli("purse", "purchase", *common, "--amount", "0.34", "--json")
    assert r.exit_code == 0 and r.json()["balance_fen"] == 1200 and r.json()["recovered"] is False
    assert run_cli("purse", "balance", *common, "--json").json() == {"balance_fen": 1200, "balance_yuan": "12.00"}
    hist = run_cli("purse", "history", *common, "--json").json()
    assert [(h["type"], h["amount_fen"], h["amount_yuan"]) for h in hist] == [(6, 34, "0.34"), (2, 1234, "12.34")]
    bad = run_cli("purse", "load", *common, "--amount", "1.234")
    assert bad.exit_code == 2 and "at most 2 decimals" in bad.stderr
    poor = run_cli("purse", "purchase", *common, "--amount", "99.00")
    assert poor.exit_code == 1 and "9401" in poor.stderr
    pin = run_cli("pin", "verify", *common, "--pin-stdin", input="123456\n")
    assert pin.exit_code == 0 and "123456" not in pin.stdout + pin.stderr
    wrong = run_cli("pin", "verify", *common, "--pin-stdin", input="111111\n")
    assert wrong.exit_code == 1 and "2 tries left" in wrong.stderr
    assert run_cli("app", "block", *common, "--app", "bike").exit_code == 0
    assert run_cli("app", "unblock", *common, "--app", "bike").exit_code == 0
    assert run_cli("card", "block", *common, "--yes").exit_code == 0
    assert "6A81" in run_cli("apdu", "--sim", str(img), "00A40000023F00").stdout


class DropAfterDebit:
    """Wraps a card: after processing the first DEBIT/CREDIT it pulls the card out of the
    reader before the answer is sent, then puts it back a moment later."""

    def __init__(self, card):
        self.card = card
        self.atr = card.atr
        self.server = None
        self.armed = True

    def power_on(self):
        self.card.power_on()

    def power_off(self):
        self.card.power_off()

    def reset(self):
        self.card.reset()

    def process(self, apdu):
        resp = self.card.process(apdu)
        if self.armed and apdu[1] in (0x52, 0x54):
            self.armed = False
            server = self.server
            server.stop()                       # the answer never reaches the reader

            def back():
                time.sleep(0.8)
                server.start_thread()
            threading.Thread(target=back, daemon=True).start()
        return resp


@pytest.mark.pcsc
def test_torn_purchase_through_pcscd_is_recovered(demo, pcscd):
    from citycard.testing.pcscd import wait_for_card
    from citycard.transport.pcsc import PcscTransport
    from citycard.sim.vpcd import VpcdServer

    spec, keys, _ = demo
    card, session = personalized(demo, row=5)
    PurseTerminal(session, spec, keys).load(2000)
    wrapper = DropAfterDebit(card)
    server = VpcdServer(wrapper, port=pcscd.port + 1)
    wrapper.server = server
    reader = pcscd.reader_names[1]
    server.start_thread()
    try:
        wait_for_card(reader, timeout=10)
        t = PcscTransport(reader)
        t.connect()
        remote = CardSession(t)
        res = PurseTerminal(remote, spec, keys).purchase(500)
        assert res.recovered and res.balance_after == 1500
        term = PurseTerminal(remote, spec, keys)
        assert term.balance() == 1500                           # charged once
        assert [h["amount"] for h in term.history()] == [500, 2000]
        # a load torn the same way
        wrapper.armed = True
        res = PurseTerminal(remote, spec, keys).load(100)
        assert res.recovered and PurseTerminal(remote, spec, keys).balance() == 1600
        remote.close()
    finally:
        server.stop()
        wait_for_card(reader, present=False, timeout=10)


def _variant(demo, text_change):
    from citycard.profile import parse_profile

    spec, keys, data = demo
    text = PROFILE.read_text()
    for old, new in text_change:
        assert old in text
        text = text.replace(old, new)
    return parse_profile(text, str(PROFILE)), keys, data


def test_mohurd_auth_code_option(demo):
    """D7: with auth_code on, the card answers 80 CA and the purchase MAC1 includes it."""
    spec, keys, data = _variant(demo, [('fci_sfi = 0x15                             # SELECT shows EF0015 in 9F0C',
                                        'fci_sfi = 0x15\nauth_code = true')])
    card, session = personalized((spec, keys, data), row=9)
    term = PurseTerminal(session, spec, keys)
    term.load(1000)
    assert term.purchase(100).balance_after == 900
    code = session.send(bytes.fromhex("80CA000009")).data
    assert code[0] == 0x85 and code[1:5] == code[5:9] == bytes.fromhex("3301000000000009")[-4:]
    # a terminal unaware of the option computes MAC1 without the code: refused, nothing charged
    plain_spec = load_profile(PROFILE)
    from citycard.terminal.purse import PurseError
    with pytest.raises(PurseError, match="9302"):
        PurseTerminal(session, plain_spec, keys).purchase(100)
    assert term.balance() == 900


def test_ed_purse_needs_the_pin(demo, run_cli, tmp_path):
    spec, keys, data = _variant(demo, [
        ('[apps.transit.files.ep]\nfid = "0002"\nkind = "ep"\nusage = "free"              # a transit purse needs no PIN',
         '[apps.transit.files.ep]\nfid = "0001"\nkind = "ed"\nusage = "sr>=1"'),
        ('unload = { type = "unload"',
         'pin = { type = "pin", id = 0, state = 1, tries = 3, value = "2580", write = "mac" }\nunload = { type = "unload"')])
    card, session = personalized((spec, keys, data), row=10)
    term = PurseTerminal(session, spec, keys)
    term.select()
    from citycard.terminal.purse import PurseError
    with pytest.raises(PurseError, match="6982"):
        term.load(100)                               # the ED's usage AC needs the PIN
    term.verify_pin("2580")
    assert term.load(100).balance_after == 100
    assert term.purchase(40).balance_after == 60
    assert [h["type"] for h in term.history()] == [5, 1]   # ED purchase, ED load


@pytest.mark.parametrize("algorithm, known", [(0x00, True), (0x01, True), (0x02, False), (0x03, False)])
def test_purse_keys_of_an_unknown_algorithm_are_refused_by_name(algorithm, known):
    """SPEC §6.6 (DENG): algorithm ids 02/03 gave non-DES MAC1s on a real FM1208; the terminal
    names the algorithm instead of reporting a wrong MAC1 (which would blame the keys)."""
    from citycard.commands.purse import PurchaseInit
    from citycard.terminal.purse import PurseError, _known_algorithm

    init = PurchaseInit.parse(bytes.fromhex("00001000 0000 000000 01") + bytes((algorithm,)) + bytes(4))
    if known:
        assert _known_algorithm(init, "INITIALIZE FOR PURCHASE") is init
    else:
        with pytest.raises(PurseError, match=f"algorithm id {algorithm:02X}.*SPEC §6.6"):
            _known_algorithm(init, "INITIALIZE FOR PURCHASE")


def test_a_grey_transaction_is_logged_and_proven_later(demo, tmp_path, monkeypatch):
    """The card's answer to the DEBIT is lost and the card does not come back (CardGone): the
    terminal logs a grey record; presented again, `prove` gets GET TRANSACTION PROVE's TAC (checked
    with the keys) and a proven record, or finds it never happened; clearing then settles it."""
    from citycard.clearing import Ledger, TacVerifier
    from citycard.errors import TransportError
    from citycard.terminal.purse import CardGone
    from citycard.terminal.txlog import append_record, read_records

    spec, keys, _ = demo
    outcomes = set()
    for n in range(1, 9):
        card, session = personalized(demo)
        term = PurseTerminal(session, spec, keys)
        term.settle_timeout = 0          # the card is gone for good: no waiting (no wall-clock test)
        term.load(1000)
        log = tmp_path / f"t{n}.log"
        append_record(log, term.load(0 + 500).record())
        t = session.transport

        def gone():
            raise TransportError("no card in the reader")
        monkeypatch.setattr(t, "reset", gone)
        if hasattr(t, "reconnect"):
            monkeypatch.setattr(t, "reconnect", gone)
        card.nvm.tear_after = n
        try:
            term.purchase(300, terminal_serial=7)
        except CardGone as exc:
            append_record(log, exc.pending.record())
        except NotCompleted:
            continue
        else:
            continue
        finally:
            card.nvm.tear_after = None
            monkeypatch.undo()
        grey = [r for _l, r in read_records(log)][-1]
        assert grey.status == "grey" and grey.tac is None and grey.ttsn == "00000007"
        # presented again, at another terminal session
        t2 = SimTransport(card)
        t2.connect()
        again = PurseTerminal(CardSession(t2), spec, keys)
        balance = again.balance()
        try:
            proven = again.prove(grey)
        except NotCompleted:
            outcomes.add("never happened")
            assert balance == 1500                                        # nothing was charged
            continue
        outcomes.add("proven")
        assert balance == 1200 and proven.status == "proven" and proven.tac
        append_record(log, proven)
        with Ledger(str(tmp_path / f"l{n}.db")) as book:
            s = book.import_logs([str(log)], TacVerifier(spec, keys))
            assert s.verdicts == {"accepted": 2, "settled": 1}, s.verdicts
            assert book.carried_balance(grey.card, "transit") == (1200, 0)
    assert outcomes == {"never happened", "proven"}, outcomes
