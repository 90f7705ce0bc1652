"""Clearing (issue 22): TAC verification with the issuer's keys, verdicts (accepted, rejected,
duplicate, suspicious, grey/settled), idempotent and atomic imports, order independence, the
per-card ledger and settlement.

Every TAC in these records is computed here by an independent implementation written on
`cryptography` directly (PBOC diversification, left ⊕ right, DES CBC-MAC with 80 padding; SPEC
§2.2, §2.4), not by citycard.crypto."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from citycard.clearing import KeysUnavailable, Ledger, TacVerifier
from citycard.errors import InputError
from citycard.keys import open_ring
from citycard.profile import load_profile
from citycard.terminal.txlog import TxRecord, append_record

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles/citycard.toml"
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
DTK_MASTER = bytes.fromhex(tomllib.loads(DEMO_KEYS.read_text())["transit"]["dtk"])
CARD = "3301000000000042"
TERMINAL = "000000000007"


def _ecb(key: bytes, block: bytes) -> bytes:
    k = key if len(key) != 16 else key + key[:8]
    enc = Cipher(TripleDES(k if len(k) == 24 else k * 3), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _tac_key(card: str) -> bytes:
    f = bytes.fromhex(card.zfill(16))[-8:]
    dk = _ecb(DTK_MASTER, f) + _ecb(DTK_MASTER, bytes(b ^ 0xFF for b in f))
    return bytes(a ^ b for a, b in zip(dk[:8], dk[8:]))


def _mac(key8: bytes, data: bytes) -> bytes:
    data += b"\x80" + b"\x00" * ((8 - (len(data) + 1) % 8) % 8)
    iv = bytes(8)
    for i in range(0, len(data), 8):
        iv = _ecb(key8, bytes(a ^ b for a, b in zip(iv, data[i:i + 8])))
    return iv[:4]


def _signed(rec: TxRecord) -> TxRecord:
    """The record with the TAC its card would have computed."""
    k = _tac_key(rec.card)
    t = bytes.fromhex(rec.terminal) + (bytes.fromhex(rec.ttsn) if rec.kind != "load" else b"")
    when = bytes.fromhex(rec.date) + bytes.fromhex(rec.time)
    if rec.kind == "load":
        data = (rec.balance_after.to_bytes(4, "big") + rec.counter.to_bytes(2, "big") + rec.amount.to_bytes(4, "big")
                + bytes((rec.ttype,)) + bytes.fromhex(rec.terminal) + when)
    else:
        data = rec.amount.to_bytes(4, "big") + bytes((rec.ttype,)) + t + when
    return replace(rec, tac=_mac(k, data).hex().upper())


def purchase(counter: int, before: int, amount: int, ttsn: int, *, day: str = "20261203", card: str = CARD,
             terminal: str = TERMINAL) -> TxRecord:
    return _signed(TxRecord("purchase", "transit", card, counter, before, amount, 6, terminal, f"{ttsn:08X}", day,
                            f"08{counter % 60:02d}00", None, "ok", "psam"))


def load(counter: int, before: int, amount: int, *, day: str = "20261203", card: str = CARD) -> TxRecord:
    return _signed(TxRecord("load", "transit", card, counter, before, amount, 2, "000000000001", None, day,
                            f"07{counter % 60:02d}00", None, "ok", "host"))


def write_log(path: Path, records) -> Path:
    for r in records:
        append_record(path, r)
    return path


@pytest.fixture
def verifier():
    ring = open_ring([str(DEMO_KEYS)], [])
    yield TacVerifier(load_profile(str(PROFILE)), ring)
    ring.close()


def _verdicts(book: Ledger, card: str = CARD) -> list[tuple[int, str, str]]:
    return [(h["counter"], h["kind"], h["verdict"]) for h in book.card(card)["history"]]


def test_the_independent_tac_is_the_libraries(verifier):
    """The same record checks under citycard's verifier; one changed byte does not."""
    rec = purchase(1, 5000, 250, 1)
    assert verifier(rec) is None
    assert "does not verify" in verifier(replace(rec, amount=251))
    assert "does not verify" in verifier(replace(rec, ttsn="00000002"))
    assert verifier(load(3, 0, 10000)) is None
    with pytest.raises(KeysUnavailable, match="not in the profile"):
        verifier(replace(rec, app="nosuch"))


def test_a_card_history_is_filed_and_its_balance_kept(tmp_path, verifier):
    log = write_log(tmp_path / "t1.log", [load(0, 0, 10000), purchase(0, 10000, 250, 1), purchase(1, 9750, 300, 2)])
    with Ledger(str(tmp_path / "l.db")) as book:
        s = book.import_logs([str(log)], verifier)
        assert (s.new, s.verdicts) == (3, {"accepted": 3})
        assert book.balance(CARD, "transit") == 9450
        info = book.card(CARD)["apps"]["transit"]
        assert (info["balance"], info["online_counter"], info["offline_counter"]) == (9450, 0, 1)


def test_rejected_duplicate_and_repeated(tmp_path, verifier):
    good = [purchase(0, 5000, 100, 1), purchase(1, 4900, 100, 2)]
    forged = replace(purchase(2, 4800, 100, 3), amount=5000)          # the TAC was for 1.00 yuan
    copy_counter = purchase(1, 4900, 90, 9)                          # valid TAC, counter 1 again (TTSN 9)
    copy_ttsn = purchase(3, 4800, 100, 2)                            # valid TAC, terminal serial 2 again
    a = write_log(tmp_path / "a.log", good + [forged])
    b = write_log(tmp_path / "b.log", good + [copy_counter, copy_ttsn])
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(a)], verifier)
        s = book.import_logs([str(b)], verifier)
        assert (s.records, s.new, s.repeated) == (4, 2, 2)            # the same two records: nothing added
        rows = {(h["counter"], h["amount"]): (h["verdict"], h["reason"]) for h in book.card(CARD)["history"]}
        assert rows[(2, 5000)] == ("rejected", "wrong TAC: the TAC does not verify under the issuer's key")
        assert rows[(3, 100)] == ("duplicate", "same terminal and terminal serial already filed")
        # a counter is not under a purchase TAC: claimed twice, the second is flagged, not voided
        assert rows[(1, 90)][0] == "suspicious"
        assert rows[(1, 90)][1].startswith("offline counter 1 also claimed by an earlier record")
        (unit,) = list(book.report(by="unit"))                         # duplicates and rejects are never money
        assert (unit["purchases"], unit["purchase_fen"], unit["rejected"], unit["duplicates"]) == (3, 290, 1, 1)


def test_order_of_imports_does_not_matter(tmp_path, verifier):
    """Counters 0, 1, 3 in one log, 2 in another: a gap (suspicious) until the other arrives;
    both import orders end with the same verdicts."""
    first = [purchase(0, 1000, 100, 1), purchase(1, 900, 100, 2), purchase(3, 700, 100, 4)]
    second = [purchase(2, 800, 100, 3)]
    results = []
    for order, name in (((first, second), "x"), ((second, first), "y")):
        logs = [write_log(tmp_path / f"{name}{i}.log", recs) for i, recs in enumerate(order)]
        with Ledger(str(tmp_path / f"{name}.db")) as book:
            book.import_logs([str(logs[0])], verifier)
            after_one = _verdicts(book)
            book.import_logs([str(logs[1])], verifier)
            results.append(_verdicts(book))
        if name == "x":
            assert ("suspicious" in {v for _c, _k, v in after_one})
    assert results[0] == results[1] == [(c, "purchase", "accepted") for c in range(4)]


def test_balance_that_does_not_follow_is_suspicious(tmp_path, verifier):
    log = write_log(tmp_path / "t.log", [purchase(0, 1000, 100, 1), purchase(1, 2000, 100, 2)])
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(log)], verifier)
        h = book.card(CARD)["history"]
        assert h[1]["verdict"] == "suspicious" and "balance before 2000 does not follow 900" in h[1]["reason"]


def test_imports_are_idempotent_and_atomic(tmp_path, verifier):
    log = write_log(tmp_path / "t.log", [purchase(0, 1000, 100, 1)])
    bad = write_log(tmp_path / "bad.log", [purchase(1, 900, 100, 2), purchase(2, 800, 100, 3)])
    with open(bad, "a") as f:
        f.write('{"format": "citycard-tx", "version": 1, "kind": "purchase"}\n')
    db = str(tmp_path / "l.db")
    with Ledger(db) as book:
        book.import_logs([str(log)], verifier)
        s = book.import_logs([str(log)], verifier)
        assert (s.skipped_files, s.new) == (1, 0)
        with pytest.raises(InputError, match=r"bad.log:3: card: a string expected"):
            book.import_logs([str(bad)], verifier)
        assert [c for c, _k, _v in _verdicts(book)] == [0]           # nothing of bad.log filed
        assert book.db.one("SELECT COUNT(*) FROM imports")[0] == 1


def test_grey_records_settle_when_their_proof_arrives(tmp_path, verifier):
    torn = replace(purchase(1, 900, 100, 2), tac=None, status="grey")
    proof = replace(purchase(1, 900, 100, 2), status="proven")
    lost = replace(purchase(5, 900, 100, 7, day="20261101"), tac=None, status="grey")
    a = write_log(tmp_path / "a.log", [purchase(0, 1000, 100, 1), torn, lost])
    b = write_log(tmp_path / "b.log", [proof])
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(a)], verifier)
        assert [g["counter"] for g in book.grey()] == [5, 1]
        book.import_logs([str(b)], verifier)
        assert [g["counter"] for g in book.grey()] == [5]
        assert [g["counter"] for g in book.grey("20261102")] == [5]
        assert list(book.grey("20261101")) == []
        verdicts = {(c, v) for c, _k, v in _verdicts(book)}
        assert (1, "settled") in verdicts and (1, "accepted") in verdicts


def test_settlement_by_unit_terminal_and_day(tmp_path, verifier):
    other = "3301000000000043"
    log = write_log(tmp_path / "t.log", [
        load(0, 0, 5000), purchase(0, 5000, 250, 1), purchase(1, 4750, 100, 2, day="20261204"),
        purchase(0, 800, 50, 3, card=other, terminal="000000000009"),
        replace(purchase(2, 4650, 999, 3), amount=1)])
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(log)], verifier)
        (unit,) = list(book.report(by="unit"))
        assert unit == {"unit": "transit", "purchases": 3, "purchase_fen": 400, "suspicious": 0, "suspicious_fen": 0,
                        "load_fen": 5000, "rejected": 1, "duplicates": 0, "grey": 0}
        by_term = {r["terminal"]: r["purchase_fen"] for r in book.report(by="terminal")}
        assert by_term == {"000000000001": 0, TERMINAL: 350, "000000000009": 50}
        days = {r["day"]: r["purchase_fen"] for r in book.report(by="day", date_from="20261204")}
        assert days == {"20261204": 100}


@pytest.mark.postgres
def test_ledger_on_postgres(postgres, tmp_path, verifier):
    url = postgres.fresh_database("ledger")
    log = write_log(tmp_path / "t.log", [purchase(0, 1000, 100, 1), purchase(2, 800, 100, 3)])
    with Ledger(url) as book:
        s = book.import_logs([str(log)], verifier)
        assert s.verdicts == {"accepted": 1, "suspicious": 1}
        assert book.balance(CARD, "transit") == 700


def test_cli_import_card_report(run_cli, tmp_path):
    log = write_log(tmp_path / "t.log", [load(0, 0, 2000), purchase(0, 2000, 250, 1),
                                         replace(purchase(1, 1750, 250, 2), tac="00000000")])
    db = str(tmp_path / "l.db")
    audit = tmp_path / "audit.log"
    r = run_cli("--audit-log", str(audit), "clearing", "import", str(log), "--ledger", db, "--profile", str(PROFILE),
                "--keys", str(DEMO_KEYS), "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["verdicts"] == {"accepted": 2, "rejected": 1}
    assert json.loads(audit.read_text())["action"] == "clearing.imported"
    r = run_cli("clearing", "card", CARD, "--ledger", db)
    assert r.exit_code == 0 and "balance 17.50 yuan" in r.stdout and "rejected" in r.stdout
    assert "counter None" not in r.stdout
    # JSON: money as *_fen integers with *_yuan strings beside (the README's convention)
    card = run_cli("clearing", "card", CARD, "--ledger", db, "--json").json()
    transit = card["apps"]["transit"]
    assert (transit["balance_fen"], transit["balance_yuan"]) == (1750, "17.50") and "balance" not in transit
    first = card["history"][0]
    assert {"amount_fen", "amount_yuan", "balance_after_fen", "balance_after_yuan"} <= set(first)
    assert first["amount_yuan"] == f"{first['amount_fen'] // 100}.{first['amount_fen'] % 100:02d}"
    row = json.loads(run_cli("clearing", "report", "--ledger", db, "--json").stdout.splitlines()[0])
    assert (row["purchase_fen"], row["purchase_yuan"]) == (250, "2.50") and row["load_yuan"] == "20.00"
    r = run_cli("clearing", "report", "--ledger", db, "--csv")
    assert r.stdout.splitlines()[0].startswith("unit,purchases,purchase_fen") and "transit,1,250," in r.stdout
    r = run_cli("clearing", "report", "--ledger", db, "--from", "2026-13-01")
    assert r.exit_code == 2 and "--from 2026-13-01" in r.stderr
    r = run_cli("clearing", "card", CARD, "--ledger", str(tmp_path / "none.db"))
    assert r.exit_code == 2 and "no such ledger" in r.stderr


def test_sm4_records_are_checked_with_the_sm4_tac_key(tmp_path):
    """A record whose INITIALIZE said algorithm 04 is checked with the profile's SM4 TAC key
    (docs/sm4.md); its TAC computed by the tests' own SM4 (tests/sm4_gbt.py, GB/T 32907):
    DIV = SM4(MK, F‖¬F), the 16-byte DTK used directly, CBC-MAC 80-padded, left 4 bytes."""
    from tests import sm4_gbt

    profile = ROOT / "profiles/citycard-sm4.toml"
    master = bytes.fromhex(tomllib.loads((ROOT / "profiles/demo-keys-sm4.toml").read_text())["transit"]["dtk-sm4"])
    f = bytes.fromhex(CARD)[-8:]
    dtk = sm4_gbt.encrypt_block(master, f + bytes(b ^ 0xFF for b in f))
    rec = TxRecord("purchase", "transit", CARD, 0, 1000, 150, 6, TERMINAL, "00000001", "20261203", "090000", None,
                   algorithm=0x04)
    data = (150).to_bytes(4, "big") + b"\x06" + bytes.fromhex(TERMINAL) + bytes.fromhex("00000001") \
        + bytes.fromhex("20261203090000")
    rec = replace(rec, tac=sm4_gbt.cbc_mac4(dtk, data).hex().upper())
    ring = open_ring([str(DEMO_KEYS), str(ROOT / "profiles/demo-keys-sm4.toml")], [])
    try:
        check = TacVerifier(load_profile(str(profile)), ring)
        assert check(rec) is None
        assert "does not verify" in check(replace(rec, algorithm=0x00))       # the 3DES key: not this TAC
        assert "algorithm byte 02" in check(replace(rec, algorithm=0x02))
    finally:
        ring.close()


def test_host_terminal_log_clears(run_cli, tmp_path):
    """`citycard purse load|purchase --log` on a personalized simulated card; the log clears
    with every record accepted and the card's balance as the card says; purchases take their
    terminal serial from the log (1, 2: never repeated)."""
    img, log, db = tmp_path / "card.json", tmp_path / "counter.log", str(tmp_path / "l.db")
    assert run_cli("sim", "new", str(img)).exit_code == 0
    r = run_cli("perso", "--profile", str(PROFILE), "--data", str(ROOT / "profiles/citycard-sample.csv"), "--row", "1",
                "--issue-date", "20261124", "--keys", str(DEMO_KEYS), "--sim", str(img))
    assert r.exit_code == 0, r.stderr
    common = ["--profile", str(PROFILE), "--keys", str(DEMO_KEYS), "--sim", str(img), "--log", str(log),
              "--terminal", "0000000000AB"]
    assert run_cli("purse", "load", *common, "--amount", "20.00").exit_code == 0
    for amount in ("2.50", "1.00"):
        r = run_cli("purse", "purchase", *common, "--amount", amount)
        assert r.exit_code == 0, r.stderr
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["kind"], x["ttsn"], x["terminal"]) for x in recs] == [
        ("load", None, "0000000000AB"), ("purchase", "00000001", "0000000000AB"), ("purchase", "00000002", "0000000000AB")]
    r = run_cli("clearing", "import", str(log), "--ledger", db, "--profile", str(PROFILE), "--keys", str(DEMO_KEYS),
                "--json")
    assert r.exit_code == 0 and r.json()["verdicts"] == {"accepted": 3}, r.stdout + r.stderr
    card = recs[0]["card"]
    bal = run_cli("purse", "balance", "--profile", str(PROFILE), "--sim", str(img), "--json").json()["balance_fen"]
    with Ledger(db) as book:
        assert book.balance(card, "transit") == bal == 1650
    r = run_cli("purse", "unload", *common, "--amount", "1.00")
    assert r.exit_code == 2 and "not a clearing record" in r.stderr


def test_keys_that_fail_stop_the_import_and_file_nothing(tmp_path, verifier, run_cli):
    """The wrong keys (or a key the inventory refuses, an HSM gone) are not the card's fault:
    the import stops naming the card, nothing is filed, and the same log imports later."""
    log = write_log(tmp_path / "t.log", [purchase(0, 1000, 100, 1)])
    other = tmp_path / "other-keys.toml"
    other.write_text(DEMO_KEYS.read_text().replace('dtk = "7C1814104CE3767265CDCCA28FE56DA2"\n', ""))
    assert other.read_text() != DEMO_KEYS.read_text()
    db = str(tmp_path / "l.db")
    r = run_cli("clearing", "import", str(log), "--ledger", db, "--profile", str(PROFILE), "--keys", str(other))
    assert r.exit_code == 2 and f"card {CARD}: no TAC key" in r.stderr
    r = run_cli("clearing", "import", str(log), "--ledger", db, "--profile", str(PROFILE), "--keys", str(DEMO_KEYS),
                "--json")
    assert r.exit_code == 0 and r.json()["verdicts"] == {"accepted": 1}


def test_carried_balance_rests_on_what_the_tacs_cover(tmp_path, verifier):
    """A purchase record's balance fields are not under its TAC: the balance the back office
    carries (a replacement) is the last load's new balance minus the purchase amounts after it."""
    inflated = replace(purchase(0, 999900, 250, 1))          # its TAC verifies: balance_before is not covered
    log = write_log(tmp_path / "t.log", [load(0, 0, 5000), inflated])
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(log)], verifier)
        assert book.balance(CARD, "transit") == 999650       # what the last record claims
        assert book.carried_balance(CARD, "transit") == (4750, 1)   # what the TACs prove; 1 suspicious
        assert book.carried_balance("3301999999999999", "transit") == (None, 0)


def test_a_purchase_counter_claimed_twice_is_suspicious_not_a_duplicate(tmp_path, verifier):
    """Purchases are duplicates by terminal and TTSN (under their TAC); another terminal's
    genuine purchase logged with a clashing counter is flagged, not voided."""
    a = purchase(3, 1000, 100, 1, terminal="000000000007")
    b = purchase(3, 900, 50, 1, terminal="000000000008")
    log = write_log(tmp_path / "t.log", [a, b])
    with Ledger(str(tmp_path / "l.db")) as book:
        book.import_logs([str(log)], verifier)
        v = [(h["terminal"], h["verdict"]) for h in book.card(CARD)["history"]]
        assert v == [("000000000007", "accepted"), ("000000000008", "suspicious")]
