"""The terminal that holds no keys (citycard/terminal/psam_purchase.py, `citycard terminal`):
the card ↔ PSAM purchase on simulated cards personalized from the shipped profiles."""

from __future__ import annotations

import copy
import json

import pytest

from citycard.clearing import TacVerifier
from citycard.errors import CardError
from citycard.sim import image
from citycard.terminal.psam_purchase import PsamPurchaseTerminal, append_log
from citycard.terminal.purse import NotCompleted, PurseTerminal
from citycard.terminal.txlog import read_records
from tests.psamhost import (CARD_PROFILE, DEMO_KEYS, DPK_MASTER, PSAM_PROFILE, PSAM_TERMINAL, ROOT, WHEN, card_spec,
                            div, keys, loaded, psam_card, session)


def check_tac(tx, spec, keys) -> bool:
    """The back office's check (citycard.clearing) of a PSAM transaction's record."""
    return TacVerifier(spec, keys)(tx.record()) is None


def read_log(path):
    return [rec for _line, rec in read_records(path)]


def purse_state(card):
    return image.to_dict(card)["mf"]["children"]


def recorder(card):
    """The APDUs the card receives and its answers."""
    seen = []
    orig = card.process

    def process(raw):
        out = orig(raw)
        seen.append((raw.hex().upper(), out.hex().upper()))
        return out
    card.process = process
    return seen


def test_psam_purchase_equals_the_host_key_purchase_byte_for_byte():
    """The same card at the same counters: the PSAM terminal (no keys) and the host-key terminal
    send the card the same INITIALIZE and DEBIT (MAC1) and get the same TAC ‖ MAC2 back."""
    a, b = loaded(), loaded()
    assert image.to_dict(a) == image.to_dict(b)
    seen_a, seen_b = recorder(a), recorder(b)
    tx = PsamPurchaseTerminal(session(a), session(psam_card()), card_spec()).purchase(250, when=WHEN)
    host = PurseTerminal(session(b), card_spec(), keys(), terminal_id=PSAM_TERMINAL)
    res = host.purchase(250, terminal_serial=tx.ttsn, when=WHEN)
    assert seen_a == seen_b and len(seen_a) >= 4
    assert any(c.startswith("805401000F00000001") for c, _ in seen_a)       # DEBIT with TTSN 00000001
    assert image.to_dict(a) == image.to_dict(b)
    assert (tx.tac, tx.card_counter, tx.balance_after_fen) == (res.tac.hex().upper(), res.counter, res.balance_after)
    assert (tx.terminal_number, tx.ttsn, tx.transaction_type) == (PSAM_TERMINAL.hex(), 1, 6)
    assert check_tac(tx, card_spec(), keys())                                 # the back office's check


def test_psam_with_a_wrong_master_fails_mac1_and_leaves_the_purse(tmp_path):
    other = (ROOT / "profiles/demo-keys.toml").read_text().replace(
        'dpk = "791A8504E959DF230A308891A2B59511"', 'dpk = "00112233445566778899AABBCCDDEEFF"')
    assert other != (ROOT / "profiles/demo-keys.toml").read_text()
    wrong_keys = tmp_path / "keys.toml"
    wrong_keys.write_text(other)
    card = loaded()
    before = purse_state(card)
    with pytest.raises(CardError) as exc:
        PsamPurchaseTerminal(session(card), session(psam_card(str(wrong_keys))), card_spec()).purchase(250, when=WHEN)
    assert exc.value.sw == 0x9302 and "purchase master" in str(exc.value)
    card.power_off()
    assert purse_state(card) == before                 # balance, counters, records untouched
    assert PurseTerminal(session(card), card_spec(), keys()).balance() == 1000


def test_ttsn_monotonic_over_power_loss_of_the_psam():
    """The PSAM loses power in INIT SAM FOR PURCHASE after each write step in turn; every TTSN a
    purchase then uses is above every TTSN ever answered, and the card is charged once per purchase."""
    base = psam_card()
    ref = copy.deepcopy(base)
    s0 = ref.nvm.steps
    PsamPurchaseTerminal(session(loaded()), session(ref), card_spec()).purchase(1, when=WHEN)
    steps = ref.nvm.steps - s0                          # the TTSN write and the commit point
    assert steps >= 2
    card = loaded()
    sam = copy.deepcopy(base)
    used = []
    for n in range(1, steps + 1):
        sam.nvm.tear_after = n
        term = PsamPurchaseTerminal(session(card), session(sam), card_spec())
        with pytest.raises(Exception):
            term.purchase(10, when=WHEN)
        sam.nvm.tear_after = None
        sam.power_on()
        card.power_off()
        tx = PsamPurchaseTerminal(session(card), session(sam), card_spec()).purchase(10, when=WHEN)
        assert all(tx.ttsn > u for u in used)
        used.append(tx.ttsn)
    assert used == sorted(set(used)) and len(used) == steps
    assert used[0] == 1 and used[-1] == steps + 1       # the tear at the commit point spent one TTSN (a gap)
    assert PurseTerminal(session(card), card_spec(), keys()).balance() == 1000 - 10 * steps


def test_torn_debit_is_settled_and_checked_by_the_psam():
    outcomes = set()
    for n in range(1, 8):
        card = loaded()
        card.nvm.tear_after = n
        term = PsamPurchaseTerminal(session(card), session(psam_card()), card_spec())
        try:
            tx = term.purchase(250, when=WHEN)
        except NotCompleted:
            outcomes.add("not completed")
            card.nvm.tear_after = None
            assert PurseTerminal(session(card), card_spec(), keys()).balance() == 1000
            continue
        card.nvm.tear_after = None
        outcomes.add("recovered" if tx.recovered else "done")
        assert check_tac(tx, card_spec(), keys())
        assert PurseTerminal(session(card), card_spec(), keys()).balance() == 750   # charged once
    assert {"not completed", "recovered"} <= outcomes


def test_log_format_and_back_office_check(tmp_path):
    card, sam = loaded(), psam_card()
    log = tmp_path / "terminal.log"
    for amount in (100, 200):
        append_log(log, PsamPurchaseTerminal(session(card), session(sam), card_spec()).purchase(amount, when=WHEN))
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["format"] == "citycard-tx" and first["version"] == 1       # the clearing log (docs/clearing.md)
    assert {k: first[k] for k in ("kind", "app", "card", "counter", "amount", "ttype", "terminal", "ttsn", "date",
                                  "time", "source", "psam")} == \
        {"kind": "purchase", "app": "transit", "card": "3301000000000001", "counter": 0, "amount": 100, "ttype": 6,
         "terminal": "330100000001", "ttsn": "00000001", "date": "20261203", "time": "101500", "source": "psam",
         "psam": first["psam"]}
    txs = read_log(log)
    check = TacVerifier(card_spec(), keys())
    assert [t.ttsn for t in txs] == ["00000001", "00000002"] and all(check(t) is None for t in txs)
    forged = log.read_text().replace('"amount":100', '"amount":10', 1)
    assert forged != log.read_text()
    log.write_text(forged)
    assert [check(t) is None for t in read_log(log)] == [False, True]
    log.write_text(forged + "{}\n")
    with pytest.raises(Exception, match=r"terminal.log:3: not a citycard transaction record"):
        read_log(log)


def test_cli_terminal_with_sim_images(run_cli, tmp_path):
    card_img, psam_img, log = tmp_path / "card.json", tmp_path / "psam.json", tmp_path / "t.log"
    image.save(loaded(), card_img)
    image.save(psam_card(), psam_img)
    info = run_cli("terminal", "info", "--psam-sim", str(psam_img), "--json")
    assert info.exit_code == 0 and info.json()["terminal_number"] == "330100000001" and info.json()["next_ttsn"] == 1
    r = run_cli("terminal", "purchase", "-p", str(CARD_PROFILE), "--card-sim", str(card_img), "--psam-sim",
                str(psam_img), "--amount", "2.50", "--log", str(log), "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["balance_after_fen"] == 750 and out["ttsn"] == 1 and out["amount_yuan"] == "2.50"
    r = run_cli("terminal", "purchase", "-p", str(CARD_PROFILE), "--card-sim", str(card_img), "--psam-sim",
                str(psam_img), "--amount", "1", "--capp-station", "0A0B", "--log", str(log))
    assert r.exit_code == 0 and "TTSN 2" in r.stdout
    assert run_cli("terminal", "info", "--psam-sim", str(psam_img), "--json").json()["next_ttsn"] == 3
    assert [(t.kind, t.ttype) for t in read_log(log)] == [("purchase", 6), ("capp-purchase", 9)]
    ok = run_cli("terminal", "check-log", "-p", str(CARD_PROFILE), "-k", str(DEMO_KEYS), "--log", str(log), "--json")
    assert ok.exit_code == 0 and ok.json() == {"ok": True, "transactions": 2, "bad": []}
    bad = run_cli("terminal", "purchase", "-p", str(CARD_PROFILE), "--card-sim", str(card_img), "--amount", "1")
    assert bad.exit_code == 2 and "--psam READER or --psam-sim IMAGE" in bad.stderr
    shown = r.stdout + info.stdout + out.__repr__() + log.read_text() + ok.stdout
    for secret in (DPK_MASTER, div(DPK_MASTER, bytes.fromhex("3301000000000001"))):
        assert secret.hex().upper() not in shown.upper()


def test_psam_perso_from_cli(run_cli, tmp_path):
    img = tmp_path / "psam.json"
    assert run_cli("sim", "new", "--model", "psam", str(img)).exit_code == 0
    r = run_cli("perso", "--profile", str(PSAM_PROFILE), "--keys", str(DEMO_KEYS), "--data",
                str(ROOT / "profiles/psam-sample.csv"), "--row", "2", "--sim", str(img), "--json")
    assert r.exit_code == 0, r.stderr
    info = run_cli("terminal", "info", "--psam-sim", str(img), "--json").json()
    assert info == {"serial": "01000000000000000002", "version": 1, "terminal_number": "330100000002",
                    "key_index": 0, "issuer_id": "3301000000000000", "next_ttsn": 1}


def test_mohurd_card_code_goes_to_the_psam_and_both_terminals_agree(tmp_path):
    """A card profile with ``auth_code`` (SPEC D7): the terminal reads the card's code and sends
    it to the PSAM (``80 CA``), whose MAC1 then covers it; the host-key purchase agrees."""
    from citycard.profile import load_profile
    from citycard.sim import SimCard
    from tests.psamhost import PSAM_TERMINAL, ROOT, _perso

    text = CARD_PROFILE.read_text(encoding="utf-8")
    assert "[apps.transit.keys]" in text
    profile = tmp_path / "mohurd.toml"
    profile.write_text(text.replace("[apps.transit.keys]", "auth_code = true\n\n[apps.transit.keys]"), encoding="utf-8")
    spec = load_profile(profile)
    base = _perso(SimCard(rng=lambda n: b"\x5A" * n), profile, ROOT / "profiles/citycard-sample.csv")
    PurseTerminal(session(base), spec, keys()).load(1000, when=WHEN)
    base.power_off()
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    seen_a, seen_b = recorder(a), recorder(b)
    sam = psam_card()
    seen_sam = recorder(sam)
    tx = PsamPurchaseTerminal(session(a), session(sam), spec).purchase(250, when=WHEN)
    res = PurseTerminal(session(b), spec, keys(), terminal_id=PSAM_TERMINAL).purchase(250, terminal_serial=tx.ttsn,
                                                                                     when=WHEN)
    assert seen_a == seen_b and any(c == "80CA000009" for c, _ in seen_a)
    code = next(r[:-4] for c, r in seen_a if c == "80CA000009")
    assert ("80CA000009" + code, "9000") in seen_sam                  # the PSAM got the card's code
    assert tx.tac == res.tac.hex().upper() and check_tac(tx, spec, keys())
    # without the code the PSAM's MAC1 misses it: the card refuses and is not charged
    c = copy.deepcopy(base)
    term = PsamPurchaseTerminal(session(c), session(psam_card()), spec)
    term.psam.authentication_message = lambda code: None            # a terminal that forgets step 3
    with pytest.raises(CardError) as exc:
        term.purchase(250, when=WHEN)
    assert exc.value.sw == 0x9302


def test_hotlisted_card_blocked_with_the_psam_maintenance_key(tmp_path, run_cli):
    """The PSAM's maintenance master (the cards' DAMK master, usage 25) MACs APPLICATION BLOCK:
    the card then refuses its purse; a PSAM with another master gets 6988 and blocks nothing."""
    from citycard.terminal.psam_hotlist import block_application
    other = (ROOT / "profiles/demo-keys.toml").read_text().replace(
        'damk = "51FA354E134CA033545350C87EB3D264"', 'damk = "00112233445566778899AABBCCDDEEFF"')
    wrong_keys = tmp_path / "keys.toml"
    wrong_keys.write_text(other)
    card = loaded()
    with pytest.raises(CardError) as exc:
        block_application(session(card), session(psam_card(str(wrong_keys))), card_spec())
    assert exc.value.sw == 0x6988
    card.power_off()
    assert PurseTerminal(session(card), card_spec(), keys()).balance() == 1000        # not blocked
    card_img, psam_img = tmp_path / "card.json", tmp_path / "psam.json"
    image.save(card, card_img)
    image.save(psam_card(), psam_img)
    r = run_cli("terminal", "block", "-p", str(CARD_PROFILE), "--card-sim", str(card_img), "--psam-sim",
                str(psam_img), "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()   # the block's record also names the PSAM and the terminal clock (issue 23 item 3)
    date, time = out.pop("date"), out.pop("time")
    assert len(date) == 8 and date.isdigit() and len(time) == 6 and time.isdigit()
    assert out == {"ok": True, "card_serial": "3301000000000001", "application": "transit", "permanent": False,
                   "terminal_number": "330100000001", "psam_serial": "01000000000000000001"}
    assert image.load(card_img).mf.children[0x3F01].block == 1                          # temporary block
    r = run_cli("terminal", "purchase", "-p", str(CARD_PROFILE), "--card-sim", str(card_img), "--psam-sim",
                str(psam_img), "--amount", "1")
    assert r.exit_code == 1 and "6A81" in r.stderr


class _LostAnswer:
    """A card transport that loses the answer of the n-th command and then holds another card
    (or none) in its place: what a reader does when the card is swapped mid-transaction."""

    def __init__(self, t, lose: bytes, then):
        self._t, self._lose, self._then, self._lost = t, lose, then, False

    def __getattr__(self, name):
        return getattr(self._t, name)

    def transmit(self, apdu: bytes) -> bytes:
        if self._lost:
            return self._then.transmit(apdu)
        out = self._t.transmit(apdu)
        if apdu[:2] == self._lose:
            self._lost = True
            from citycard.errors import TransportError
            raise TransportError("the answer was lost")
        return out

    def reconnect(self):
        if self._then is None:
            from citycard.errors import TransportError
            raise TransportError("no card in the reader")
        self._then.reset()

    reset = reconnect


def _swapped_session(card, other):
    from citycard.sim.transport import SimTransport
    from citycard.transport import CardSession

    t = SimTransport(card)
    t.connect()
    nxt = None
    if other is not None:
        nxt = SimTransport(other)
        nxt.connect()
    return CardSession(_LostAnswer(t, bytes.fromhex("8054"), nxt))


@pytest.mark.parametrize("then", ["another card", "no card"])
def test_a_lost_debit_answer_is_never_called_not_charged_on_another_card(then):
    """The DEBIT's answer is lost; the reader then holds another card of the profile (which would
    answer GET TRANSACTION PROVE 9406) or none: the terminal never says "nothing was charged" (a
    retry would charge twice); the purchase stays grey, with its record to log."""
    from citycard.terminal.purse import CardGone

    a = loaded()
    b = None
    if then == "another card":
        from tests.psamhost import CARD_PROFILE as _P, _perso, ROOT as _R
        from citycard.sim import SimCard

        b = _perso(SimCard(), _P, _R / "profiles/citycard-sample.csv", row=2)
    term = PsamPurchaseTerminal(_swapped_session(a, b), session(psam_card()), card_spec())
    term.card.settle_timeout = 0
    with pytest.raises(CardGone) as exc:
        term.purchase(250, when=WHEN)
    assert PurseTerminal(session(a), card_spec(), keys()).balance() == 750               # A was charged
    rec = exc.value.pending.record()
    assert rec.status == "grey" and rec.tac is None and rec.card == "3301000000000001" and rec.amount == 250
    # the host terminal behaves the same
    a2 = loaded()
    host = PurseTerminal(_swapped_session(a2, b), card_spec(), keys())
    host.settle_timeout = 0
    with pytest.raises(CardGone):
        host.purchase(250, when=WHEN)


def test_a_debit_whose_mac2_the_psam_does_not_check_is_still_logged(tmp_path):
    """The card is debited, then the PSAM's CREDIT SAM fails: the purchase happened and its
    record (with the card's TAC) is carried for the log; clearing accepts its TAC."""
    from citycard.terminal.psam_purchase import Mac2NotChecked

    card = loaded()
    term = PsamPurchaseTerminal(session(card), session(psam_card()), card_spec())

    def unplugged(mac2):
        from citycard.errors import TransportError
        raise TransportError("PSAM reader unplugged")
    term.psam.credit_for_purchase = unplugged
    with pytest.raises(Mac2NotChecked) as exc:
        term.purchase(100, when=WHEN)
    tx = exc.value.transaction
    assert PurseTerminal(session(card), card_spec(), keys()).balance() == 900
    assert tx.tac and check_tac(tx, card_spec(), keys())
