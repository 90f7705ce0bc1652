"""The SM4 PSAM purchase (docs/psam.md, docs/sm4.md): the simulated PSAM with an SM4 purchase
master (algorithm byte 04 in its key record, profiles/psam-sm4.toml) spends the SM4 purse of
profiles/citycard-sm4.toml.  No public source gives an SM4 PSAM value (PSAM-SM4.md §4.2): every
expected MAC here is recomputed with tests/sm4_gbt.py, an SM4 written from GB/T 32907 that
shares no code with citycard."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from citycard.clearing import TacVerifier
from citycard.commands import psam
from citycard.errors import CardError, CitycardError
from citycard.profile import load_profile
from citycard.sim import SimCard, image
from citycard.terminal.psam_purchase import PsamPurchaseTerminal
from citycard.terminal.purse import NotCompleted, PurseTerminal
from tests import sm4_gbt
from tests.psamhost import (DEMO_KEYS, DEMO_KEYS_SM4, DPK_SM4_MASTER, DTK_SM4_MASTER, PSAM_SM4_PROFILE, PSAM_TERMINAL,
                            ROOT, SM4_CARD_PROFILE, WHEN, H, psam_card, session, sm4_card_spec, sm4_keys, sm4_loaded,
                            sm4_psam_card)
from tests.test_psam_sim import add_keys, in_adf, send
from tests.test_psam_terminal import purse_state, read_log, recorder

FACTOR = H("3301000000000001")        # the demo card's transit application serial (row 1)
R, CTR, AMOUNT, DATE, TIME = H("11223344"), 7, 250, H("20261203"), H("101500")


def sm4_div(master: bytes, factor: bytes) -> bytes:
    """docs/sm4.md item 4: DK = SM4(MK, F ‖ ¬F), written out with the independent SM4."""
    return sm4_gbt.encrypt_block(master, factor + bytes(b ^ 0xFF for b in factor))


def sm4_session(dpk: bytes, random: bytes, counter: int, ttsn: int) -> bytes:
    """docs/sm4.md item 2: SESPK = SM4(DPK, random ‖ counter ‖ TTSN[2..3] ‖ 80 00 00 00 00 00 00 00)."""
    return sm4_gbt.encrypt_block(dpk, random + counter.to_bytes(2, "big") + ttsn.to_bytes(4, "big")[2:]
                                 + H("8000000000000000"))


def init(card: SimCard, *, version=1, algorithm=0x04, factors=(FACTOR,)) -> tuple[bytes, int]:
    cmd = psam.init_sam_for_purchase(R, CTR, AMOUNT, 0x06, DATE, TIME, version, algorithm, list(factors))
    return send(card, cmd.encode())


def test_sm4_psam_mac1_and_mac2_by_the_independent_sm4():
    card = sm4_psam_card()
    card.power_on()
    assert send(card, psam.read_serial().encode())[0][10] == 0x05          # MF EF0015: an SM4 PSAM (ETCP)
    in_adf(card)
    data, sw = init(card)
    ses = sm4_session(sm4_div(DPK_SM4_MASTER, FACTOR), R, CTR, 1)
    mac1 = sm4_gbt.cbc_mac4(ses, AMOUNT.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME)
    assert (data, sw) == (H("00000001") + mac1, 0x9000)
    mac2 = sm4_gbt.cbc_mac4(ses, AMOUNT.to_bytes(4, "big"))
    assert send(card, psam.credit_sam_for_purchase(bytes(b ^ 1 for b in mac2)).encode())[1] == 0x9302
    data, sw = init(card)                                                   # a fresh TTSN, a fresh session
    ses = sm4_session(sm4_div(DPK_SM4_MASTER, FACTOR), R, CTR, 2)
    assert data[:4] == H("00000002") and sw == 0x9000
    assert send(card, psam.credit_sam_for_purchase(sm4_gbt.cbc_mac4(ses, AMOUNT.to_bytes(4, "big"))).encode()) == \
        (b"", 0x9000)


def test_the_card_algorithm_must_be_the_purchase_key_algorithm():
    """Decision (docs/psam.md): the purchase key is the one of the card's key version (PSAMB), and
    the card's INITIALIZE algorithm byte must be its record's (04 SM4, 00/01 3DES/DES): 6A80."""
    card = in_adf(sm4_psam_card())
    assert init(card, algorithm=0x00)[1] == 0x6A80
    assert init(card, algorithm=0x01)[1] == 0x6A80
    assert init(card, algorithm=0x02)[1] == 0x6A80
    assert init(card, version=2)[1] == 0x9403
    assert send(card, psam.read_ttsn().encode())[0] == H("00000001")      # no refusal spent a TTSN
    # one PSAM with both masters, at the key versions they serve: the 3DES one (index 1) and an
    # SM4 one added at index 2 (usage 22 ‖ use AC ‖ change AC ‖ version ‖ algorithm 04 ‖ key)
    both = psam_card()
    add_keys(both, (2, H("22F0F00204") + DPK_SM4_MASTER))
    in_adf(both)
    assert init(both, version=1, algorithm=0x04)[1] == 0x6A80
    data, sw = init(both, version=2, algorithm=0x04)
    assert sw == 0x9000 and data[4:] == sm4_gbt.cbc_mac4(
        sm4_session(sm4_div(DPK_SM4_MASTER, FACTOR), R, CTR, 1),
        AMOUNT.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME)
    assert init(both, version=1, algorithm=0x00)[1] == 0x9000              # the 3DES master still serves
    # an SM4 key is 16 bytes
    with pytest.raises(CardError) as exc:
        add_keys(psam_card(), (3, H("22F0F00304") + DPK_SM4_MASTER[:8]))
    assert exc.value.sw == 0x6700


def test_two_level_sm4_master_applies_the_last_factor_first():
    """docs/psam.md decision 2 with SM4 diversification: DPK = DIV(DIV(MK, f2), f1), each level
    SM4(K, F ‖ ¬F) (docs/sm4.md item 4)."""
    card = sm4_psam_card()
    master2 = H("0123456789ABCDEFFEDCBA9876543210")
    add_keys(card, (2, bytes((0x42, 0xF0, 0xEF, 0x02, 0x04)) + master2))
    in_adf(card)
    city = H("4420FF0000000000")
    data, sw = init(card, version=2, factors=(FACTOR, city))
    ses = sm4_session(sm4_div(sm4_div(master2, city), FACTOR), R, CTR, 1)
    assert sw == 0x9000 and data[4:] == sm4_gbt.cbc_mac4(
        ses, AMOUNT.to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + DATE + TIME)
    assert init(card, version=2, factors=(FACTOR,))[1] == 0x6700           # usage 42: two factors


def test_torn_sm4_debit_is_settled_and_checked_by_the_psam():
    """The card loses power in DEBIT FOR PURCHASE after each write step in turn: either nothing
    was charged, or GET TRANSACTION PROVE gives the SM4 MAC2 ‖ TAC, which the PSAM accepts."""
    outcomes = set()
    for n in range(1, 8):
        card = sm4_loaded()
        card.nvm.tear_after = n
        term = PsamPurchaseTerminal(session(card), session(sm4_psam_card()), sm4_card_spec())
        try:
            tx = term.purchase(250, when=WHEN)
        except NotCompleted:
            outcomes.add("not completed")
            card.nvm.tear_after = None
            assert PurseTerminal(session(card), sm4_card_spec(), sm4_keys()).balance() == 1000
            continue
        card.nvm.tear_after = None
        outcomes.add("recovered" if tx.recovered else "done")
        assert tx.algorithm == 0x04 and TacVerifier(sm4_card_spec(), sm4_keys())(tx.record()) is None
        assert PurseTerminal(session(card), sm4_card_spec(), sm4_keys()).balance() == 750   # charged once
    assert {"not completed", "recovered"} <= outcomes


def test_sm4_psam_purchase_equals_the_host_key_purchase_byte_for_byte():
    """The SM4 card at the same counters: the PSAM terminal (no keys) and the host-key terminal
    (SM4 keys) send the card the same INITIALIZE (key 41) and DEBIT (MAC1) and get the same
    TAC ‖ MAC2; the TAC is the independent SM4's."""
    a, b = sm4_loaded(), sm4_loaded()
    assert image.to_dict(a) == image.to_dict(b)
    seen_a, seen_b = recorder(a), recorder(b)
    sam = sm4_psam_card()
    seen_sam = recorder(sam)
    tx = PsamPurchaseTerminal(session(a), session(sam), sm4_card_spec()).purchase(250, when=WHEN)
    host = PurseTerminal(session(b), sm4_card_spec(), sm4_keys(), terminal_id=PSAM_TERMINAL)
    res = host.purchase(250, terminal_serial=tx.ttsn, when=WHEN)
    assert seen_a == seen_b and len(seen_a) >= 4
    init_cmd, init_answer = next((c, r) for c, r in seen_a if c.startswith("805001020B"))
    assert init_cmd[10:12] == "41"                                          # EF0017: the card's SM4 key id
    assert init_answer[18:22] == "0104"                                     # key version 01, algorithm 04
    assert any(c.startswith("805401000F00000001") for c, _ in seen_a)      # DEBIT with TTSN 00000001
    assert any(c.startswith("8070") and c[2 * 5 + 2 * 18:2 * 5 + 2 * 20] == "0104" for c, _ in seen_sam)
    assert image.to_dict(a) == image.to_dict(b)
    assert (tx.tac, tx.algorithm, tx.balance_after_fen) == (res.tac.hex().upper(), 0x04, 750)
    dtk = sm4_div(DTK_SM4_MASTER, FACTOR)
    tac = sm4_gbt.cbc_mac4(dtk, (250).to_bytes(4, "big") + b"\x06" + PSAM_TERMINAL + H("00000001") + DATE + TIME)
    assert tx.tac == tac.hex().upper()
    assert TacVerifier(sm4_card_spec(), sm4_keys())(tx.record()) is None    # the back office's check


def test_sm4_psam_with_a_wrong_master_fails_mac1_and_leaves_the_purse(tmp_path):
    text = DEMO_KEYS_SM4.read_text()
    other = text.replace('dpk-sm4 = "DC92ED3C9E5A54E11CD84080C7C2B16A"', 'dpk-sm4 = "00112233445566778899AABBCCDDEEFF"')
    assert other != text
    wrong = tmp_path / "keys-sm4.toml"
    wrong.write_text(other)
    card = sm4_loaded()
    before = purse_state(card)
    with pytest.raises(CardError) as exc:
        PsamPurchaseTerminal(session(card), session(sm4_psam_card(str(wrong))), sm4_card_spec()).purchase(
            250, when=WHEN)
    assert exc.value.sw == 0x9302 and "purchase master" in str(exc.value)
    card.power_off()
    assert purse_state(card) == before                                      # balance, counters, records untouched
    assert PurseTerminal(session(card), sm4_card_spec(), sm4_keys()).balance() == 1000


def _with_key_index(term: PsamPurchaseTerminal, key_index: int) -> PsamPurchaseTerminal:
    """A terminal whose PSAM's EF0017 names another card key (as another PSAM issue would)."""
    term.psam.info = replace(term.psam.open(), key_index=key_index)
    return term


def test_3des_psam_refuses_the_sm4_set_and_sm4_psam_the_3des_card():
    """The 3DES PSAM asked for the card's SM4 key (41: version 01, algorithm 04) and the SM4 PSAM
    with a 3DES card (key 00: version 01, algorithm 00): the key of that version is not of the
    card's algorithm, 6A80 in one line; the card is not charged."""
    from tests.psamhost import card_spec, keys, loaded

    card = sm4_loaded()
    term = _with_key_index(PsamPurchaseTerminal(session(card), session(psam_card()), sm4_card_spec()), 0x41)
    with pytest.raises(CardError) as exc:
        term.purchase(250, when=WHEN)
    assert exc.value.sw == 0x6A80 and "not of the card's algorithm (04, SM4; 6A80)" in str(exc.value)
    assert "\n" not in str(exc.value)
    card.power_off()
    assert PurseTerminal(session(card), sm4_card_spec(), sm4_keys()).balance() == 1000
    des_card = loaded()
    term = _with_key_index(PsamPurchaseTerminal(session(des_card), session(sm4_psam_card()), card_spec()), 0)
    with pytest.raises(CardError) as exc:
        term.purchase(250, when=WHEN)
    assert exc.value.sw == 0x6A80 and "(00, 3DES; 6A80)" in str(exc.value)
    des_card.power_off()
    assert PurseTerminal(session(des_card), card_spec(), keys()).balance() == 1000


def test_the_3des_set_of_the_sm4_card_through_the_3des_psam():
    """docs/psam.md: the 3DES PSAM asking for the card's 3DES key (id 01, version 01, algorithm 00)
    spends the 3DES set of the same card; the TAC is the 3DES one the back office checks."""
    card = sm4_loaded()
    term = _with_key_index(PsamPurchaseTerminal(session(card), session(psam_card()), sm4_card_spec()), 0x01)
    tx = term.purchase(250, when=WHEN)
    assert (tx.algorithm, tx.key_version, tx.balance_after_fen) == (0x00, 1, 750)
    assert TacVerifier(sm4_card_spec(), sm4_keys())(tx.record()) is None
    assert TacVerifier(sm4_card_spec(), sm4_keys())(replace(tx.record(), algorithm=0x04)) is not None


SM4_PURCHASE = ('purchase = { type = "psam-purchase", levels = 1, id = 1, version = 1, alg = "sm4", '
                'master = "transit/dpk-sm4", export = true }')
MAINTENANCE = 'maintenance = { type = "psam-maintenance", levels = 1,'


def test_shipped_sm4_psam_profile_keys():
    app = next(df for df in load_profile(PSAM_SM4_PROFILE).apps if df.name == "psam")
    keys = {k.name: k for k in app.keys}
    p, m = keys["purchase"], keys["maintenance"]
    assert (p.type_byte, p.kid, p.b3, p.b4, p.alg, p.master) == (0x22, 1, 1, 0x04, "sm4", ("transit", "dpk-sm4"))
    assert (m.type_byte, m.b4, m.alg, m.master) == (0x25, 0x00, "des", ("transit", "damk"))


@pytest.mark.parametrize("old, new, where, message", [
    (SM4_PURCHASE, SM4_PURCHASE.replace('alg = "sm4"', 'alg = "sm4", algorithm = 0'),
     "apps.psam.keys.purchase.algorithm", "algorithm byte 04"),
    (SM4_PURCHASE, SM4_PURCHASE.replace('alg = "sm4"', 'alg = "aes"'), "apps.psam.keys.purchase.alg", "3des or sm4"),
    # an SM4 maintenance master is the DAMK master of cards with SM4 line protection (docs/sm4.md);
    # a MAC key cannot be SM4
    (MAINTENANCE, MAINTENANCE.replace("levels = 1,", 'levels = 1, alg = "sm4",'), "apps.psam.keys.maintenance.algorithm",
     "algorithm byte 04"),
    (MAINTENANCE, 'mac = { type = "psam-mac", id = 2, alg = "sm4", master = "transit/damk-sm4" }\n' + MAINTENANCE,
     "apps.psam.keys.mac.alg", "only a psam-purchase or psam-maintenance key can be SM4"),
])
def test_bad_sm4_psam_keys_are_named(tmp_path, old, new, where, message):
    text = PSAM_SM4_PROFILE.read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "psam.toml"
    bad.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(CitycardError) as exc:
        load_profile(bad)
    line = str(exc.value)
    assert "\n" not in line and where in line and message in line


def test_sm4_card_issued_loaded_spent_through_the_psam_and_cleared(run_cli, tmp_path):
    """issue 24's end to end from the CLI: an SM4 citizen card and an SM4 PSAM issued from the
    demo keys, loaded by the host (SM4), spent through the PSAM terminal, the terminal log
    checked and cleared (every record accepted, algorithm 04), the ledger's balance the card's."""
    card_img, psam_img, log, db = (tmp_path / "card.json", tmp_path / "psam.json", tmp_path / "t.log",
                                   str(tmp_path / "l.db"))
    k = ["--keys", str(DEMO_KEYS), "--keys", str(DEMO_KEYS_SM4)]
    assert run_cli("sim", "new", str(card_img)).exit_code == 0
    assert run_cli("sim", "new", "--model", "psam", str(psam_img)).exit_code == 0
    r = run_cli("perso", "--profile", str(SM4_CARD_PROFILE), *k, "--data", str(ROOT / "profiles/citycard-sample.csv"),
                "--row", "1", "--sim", str(card_img))
    assert r.exit_code == 0, r.stderr
    r = run_cli("perso", "--profile", str(PSAM_SM4_PROFILE), *k, "--data", str(ROOT / "profiles/psam-sample.csv"),
                "--row", "1", "--sim", str(psam_img))
    assert r.exit_code == 0, r.stderr
    info = run_cli("terminal", "info", "--psam-sim", str(psam_img), "--json").json()
    assert (info["version"], info["key_index"], info["next_ttsn"]) == (5, 0x41, 1)
    r = run_cli("purse", "load", "--amount", "10.00", "--profile", str(SM4_CARD_PROFILE), *k, "--sim", str(card_img),
                "--log", str(log), "--terminal", "330100000001")
    assert r.exit_code == 0, r.stderr
    for amount in ("2.50", "1.00"):
        r = run_cli("terminal", "purchase", "-p", str(SM4_CARD_PROFILE), "--card-sim", str(card_img), "--psam-sim",
                    str(psam_img), "--amount", amount, "--log", str(log), "--json")
        assert r.exit_code == 0, r.stderr
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["kind"], x["source"] if x["kind"] == "purchase" else None, x["algorithm"]) for x in recs] == \
        [("load", None, 4), ("purchase", "psam", 4), ("purchase", "psam", 4)]
    assert [t.ttsn for t in read_log(log)][1:] == ["00000001", "00000002"]
    ok = run_cli("terminal", "check-log", "-p", str(SM4_CARD_PROFILE), *[a.replace("--keys", "-k") for a in k],
                 "--log", str(log), "--json")
    assert ok.exit_code == 0 and ok.json() == {"ok": True, "transactions": 3, "bad": []}, ok.stdout + ok.stderr
    r = run_cli("clearing", "import", str(log), "--ledger", db, "--profile", str(SM4_CARD_PROFILE), *k, "--json")
    assert r.exit_code == 0 and r.json()["verdicts"] == {"accepted": 3}, r.stdout + r.stderr
    bal = run_cli("purse", "balance", "--profile", str(SM4_CARD_PROFILE), "--sim", str(card_img),
                  "--json").json()["balance_fen"]
    from citycard.clearing import Ledger
    with Ledger(db) as book:
        assert book.balance(recs[0]["card"], "transit") == bal == 650
    # a forged amount does not clear
    forged = tmp_path / "forged.log"
    forged.write_text(log.read_text().replace('"amount":100,', '"amount":10,', 1))
    assert forged.read_text() != log.read_text()
    r = run_cli("clearing", "import", str(forged), "--ledger", str(tmp_path / "f.db"), "--profile",
                str(SM4_CARD_PROFILE), *k, "--json")
    assert r.json()["verdicts"].get("rejected") == 1, r.stdout + r.stderr
    shown = log.read_text() + r.stdout + ok.stdout
    for secret in (DPK_SM4_MASTER, DTK_SM4_MASTER, sm4_div(DPK_SM4_MASTER, FACTOR)):
        assert secret.hex().upper() not in shown.upper()


def test_sim_show_names_the_sm4_purchase_master_without_its_value(run_cli, tmp_path):
    img = tmp_path / "psam.json"
    image.save(copy.deepcopy(sm4_psam_card()), img)
    r = run_cli("sim", "show", str(img))
    assert r.exit_code == 0 and "key 22 psam-purchase, 1 level id 01:" in r.stdout
    assert "version 01, algorithm 04, 16 bytes" in r.stdout
    assert DPK_SM4_MASTER.hex().upper() not in r.stdout.upper() and DPK_SM4_MASTER.hex() not in r.stdout


def test_sm4_psam_master_from_a_keystore_must_be_sm4_there(tmp_path):
    """The SM4 PSAM's purchase master from a keystore: an SM4 entry is written as it is (the
    master itself, algorithm byte 04); a 3DES entry of that name is refused, naming the key."""
    from citycard.keys import KeyError_, KeyRing
    from citycard.keys.demo import DemoKeyFile
    from citycard.keys.keystore import Keystore
    from citycard.perso.context import CardData
    from citycard.perso.data import read_csv
    from citycard.perso.plan import Planner
    from tests.psamhost import ISSUE

    data = CardData(read_csv(ROOT / "profiles/psam-sample.csv").row(1), 1, ISSUE, "row")
    spec = load_profile(PSAM_SM4_PROFILE)
    for algorithm in ("sm4", "3des"):
        ks = Keystore.create(tmp_path / f"{algorithm}.cks", "correct horse battery staple", unit="transit", n=16)
        ks.add("transit", "dpk-sm4", DPK_SM4_MASTER, algorithm=algorithm)
        # the SM4 maintenance master (citycard-sm4-lp's DAMK master, docs/sm4.md) is an SM4 entry
        ks.add("transit", "damk-sm4", bytes.fromhex("DFAE2FBDD16BBFF87DCA5E9D019B9B09"), algorithm="sm4")
        try:
            planner = Planner(spec, KeyRing([DemoKeyFile(DEMO_KEYS), ks]))
            if algorithm == "3des":
                with pytest.raises(KeyError_, match="transit/dpk-sm4 is 3des here, but the profile declares it sm4"):
                    planner.plan(data)
                continue
            plan = planner.plan(data)
            record = bytes((0x22, 0xF0, 0xEF, 0x01, 0x04)) + DPK_SM4_MASTER   # usage ‖ ACs ‖ version ‖ 04 ‖ key
            assert any(step.cmd.ins == 0xD4 and step.cmd.data[:len(record)] == record for step in plan.steps)
        finally:
            ks.close()
