"""The audit trail (issue 25 item 1): hash chain, seals, head, file and PostgreSQL storage,
the CLI, and that no secret can reach an entry.

The chain is checked here against an independent computation: each test recomputes SHA-256
over the canonical JSON with hashlib and json directly, not through citycard.audit.chain."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import tracemalloc
from pathlib import Path

import pytest

from citycard.audit import AuditLog, Head, check_details
from citycard.errors import InputError

PASS = "correct horse battery staple"


def _rehash(entry: dict) -> str:
    """Independent hash: SHA-256 over sorted-key, no-space JSON without hash and seal."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "seal")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def _filled(tmp_path: Path, n: int = 6, seal_key: bytes | None = None) -> AuditLog:
    log = AuditLog(str(tmp_path / "audit.log"), operator="alice", station="bureau-1", seal_key=seal_key)
    for i in range(n):
        log.append("card.personalized", f"S{i:04d}", batch="b1", row=i)
    return log


def _lines(log: AuditLog) -> list[str]:
    return Path(log.location).read_text().splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    Path(log.location).write_text("".join(line + "\n" for line in lines))


def test_entries_chain_by_an_independent_hash(tmp_path):
    log = _filled(tmp_path)
    prev = "0" * 64
    for n, line in enumerate(_lines(log), 1):
        e = json.loads(line)
        assert e["seq"] == n and e["prev"] == prev and e["hash"] == _rehash(e)
        assert (e["operator"], e["station"], e["action"]) == ("alice", "bureau-1", "card.personalized")
        prev = e["hash"]
    head = json.loads(Path(log.location + ".head").read_text())
    assert head == {"seq": 6, "hash": prev}
    v = log.verify()
    assert v.ok and v.entries == 6 and v.head == Head(6, prev)
    assert oct(Path(log.location).stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("tamper, problem", [
    ("edit", r"line 3 \(entry 3\): edited"),
    ("remove", r"line 3 \(entry 4\): entry 3 removed"),
    ("swap", r"line 3 \(entry 4\): entry 3 removed|line 4 \(entry 3\): out of order"),
    ("truncate", r"truncated: ends at entry 4, the head says entry 6"),
    ("insert", r"line 4 \(entry 3\): a second entry 3 \(inserted"),
    ("garbage", r"line 2: not a JSON entry"),
])
def test_every_kind_of_tampering_is_named(tmp_path, tamper, problem):
    log = _filled(tmp_path)
    lines = _lines(log)
    if tamper == "edit":
        e = json.loads(lines[2])
        e["details"]["row"] = 99
        lines[2] = json.dumps(e)
    elif tamper == "remove":
        del lines[2]
    elif tamper == "swap":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "truncate":
        lines = lines[:4]
    elif tamper == "insert":
        forged = json.loads(lines[2])
        forged["subject"] = "FORGED"
        forged["hash"] = _rehash(forged)
        lines.insert(3, json.dumps(forged))
    elif tamper == "garbage":
        lines[1] = lines[1][:-5]
    _write(log, lines)
    v = log.verify()
    assert not v.ok
    assert any(re.search(problem, f.text()) for f in v.findings), [f.text() for f in v.findings]


def test_a_rewritten_chain_is_caught_by_the_seal_only(tmp_path):
    """Someone without the seal key edits an entry and recomputes every hash and the head:
    the chain alone looks fine, the seals do not."""
    key = bytes(range(16))
    log = _filled(tmp_path, seal_key=key)
    lines = [json.loads(x) for x in _lines(log)]
    lines[1]["subject"] = "S9999"
    prev = "0" * 64
    for e in lines:
        e["prev"] = prev
        e["hash"] = _rehash(e)
        prev = e["hash"]
    _write(log, [json.dumps(e) for e in lines])
    Path(log.location + ".head").write_text(json.dumps({"seq": 6, "hash": prev}))
    unsealed = AuditLog(log.location)
    assert unsealed.verify().ok                      # the limit of a bare chain, said in the notes
    assert any("seals not checked" in n for n in unsealed.verify().notes)
    v = AuditLog(log.location, seal_key=key).verify()
    assert not v.ok and {f.seq for f in v.findings} == {2, 3, 4, 5, 6}
    assert AuditLog(log.location, seal_key=b"\x01" * 16).verify().ok is False


def test_details_never_take_a_secret(tmp_path):
    log = AuditLog(str(tmp_path / "a.log"))
    for name in ("pin", "PIN", "passphrase", "key", "key_value", "component"):
        with pytest.raises(InputError, match="never holds secrets"):
            log.append("keys.imported", "x/y", **{name: "1234"})
    with pytest.raises(InputError, match="flat values"):
        check_details({"nested": {"a": 1}})
    assert not Path(log.location).exists()           # nothing written by a refused entry
    with pytest.raises(InputError, match="one word"):
        log.append("two words")


def test_verify_streams_a_large_log(tmp_path):
    log = _filled(tmp_path, n=1)
    with open(log.location, "a") as f:     # 20,000 more entries written directly (fast)
        prev = json.loads(_lines(log)[-1])["hash"]
        for seq in range(2, 20_002):
            e = {"seq": seq, "time": "2026-12-03T00:00:00.000000Z", "operator": "bot", "station": "s",
                 "action": "card.verified", "subject": f"S{seq}", "details": {"row": seq}, "prev": prev}
            e["hash"] = prev = _rehash(e)
            f.write(json.dumps(e) + "\n")
    Path(log.location + ".head").write_text(json.dumps({"seq": 20_001, "hash": prev}))
    tracemalloc.start()
    v = log.verify()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert v.ok and v.entries == 20_001
    assert peak < 2 * 1024 * 1024, peak            # streamed: not the 20,000 entries in memory
    nxt = log.append("batch.finished", "b1")       # the tail is found by reading backwards
    assert nxt["seq"] == 20_002 and nxt["prev"] == prev


def test_two_writers_form_one_chain(tmp_path):
    path = str(tmp_path / "a.log")
    logs = [AuditLog(path, operator=f"op{i}", station=f"st{i}") for i in range(4)]

    def work(log):
        for i in range(25):
            log.append("card.verified", f"{log.operator}-{i}")

    threads = [threading.Thread(target=work, args=(g,)) for g in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    v = AuditLog(path).verify()
    assert v.ok and v.entries == 100


@pytest.mark.postgres
def test_postgres_log_shared_by_stations(postgres):
    url = postgres.fresh_database("audit")
    a = AuditLog(url, operator="alice", station="st1", seal_key=b"k" * 16)
    b = AuditLog(url, operator="bob", station="st2", seal_key=b"k" * 16)
    for i in range(5):
        a.append("card.personalized", f"A{i}")
        b.append("card.personalized", f"B{i}")
    v = a.verify()
    assert v.ok and v.entries == 10 and v.head is not None and v.head.seq == 10
    assert [e["operator"] for e in a.entries(since_seq=8)] == ["alice", "bob"]
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT entry FROM audit_entries WHERE seq = 4").fetchone()
        e = json.loads(row[0])
        e["subject"] = "EDITED"
        conn.execute("UPDATE audit_entries SET entry = %s WHERE seq = 4", (json.dumps(e),))
        conn.execute("DELETE FROM audit_entries WHERE seq = 10")
    v = a.verify()
    texts = [f.text() for f in v.findings]
    assert any("entry 4" in t and "edited" in t for t in texts), texts
    assert any("truncated" in t for t in texts), texts


# ------------------------------------------------------------------ CLI
def _demo_key_hexes() -> set[str]:
    text = (Path(__file__).parents[1] / "profiles" / "demo-keys.toml").read_text()
    return {m.upper() for m in re.findall(r'"([0-9A-Fa-f]{32})"', text)}


def test_cli_records_key_actions_without_key_values(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", PASS)
    log = tmp_path / "audit.log"
    ks = tmp_path / "demo.cks"
    base = ["--audit-log", str(log), "--operator", "carol"]
    assert run_cli(*base, "keys", "demo", str(ks)).exit_code == 0
    assert run_cli(*base, "keys", "generate", str(ks), "--unit", "audit", "--name", "seal").exit_code == 0
    r = run_cli(*base, "keys", "delete", str(ks), "--unit", "card", "--name", "damk", "--version", "1", "--yes")
    assert r.exit_code == 0, r.stderr
    text = log.read_text()
    assert not any(k in text.upper() for k in _demo_key_hexes())
    shown = run_cli("audit", "show", str(log), "--json")
    actions = [json.loads(x)["action"] for x in shown.stdout.splitlines()]
    assert actions == ["keys.demo-written", "keys.generated", "keys.deleted"]
    assert {json.loads(x)["operator"] for x in shown.stdout.splitlines()} == {"carol"}
    r = run_cli("audit", "verify", str(log))
    assert r.exit_code == 0 and "ok, 3 entries" in r.stdout
    head = run_cli("audit", "head", str(log)).stdout.strip()
    assert head.startswith("3:")

    # sealed from here on: entries after this carry a seal the keystore's audit/seal key checks
    sealed = base + ["--audit-seal", str(ks)]
    assert run_cli(*sealed, "keys", "generate", str(ks), "--unit", "transit", "--name", "x").exit_code == 0
    r = run_cli("audit", "verify", str(log), "--seal", str(ks), "--json")
    out = json.loads(r.stdout)      # the first three entries were written unsealed: named
    assert r.exit_code == 1 and [f["seq"] for f in out["findings"]] == [1, 2, 3]

    # cut the log and its head file is the reference
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2]) + "\n")
    r = run_cli("audit", "verify", str(log))
    assert r.exit_code == 1 and "truncated: ends at entry 2, the head says entry 4" in r.stdout
    r = run_cli("audit", "verify", str(log), "--head", head)
    assert r.exit_code == 1 and "the head says entry 3" in r.stdout
    assert run_cli("audit", "verify", str(log), "--head", "3:xyz").exit_code == 2


def test_cli_errors_are_one_line(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("CITYCARD_AUDIT_LOG", raising=False)
    r = run_cli("audit", "show")
    assert r.exit_code == 2 and "no audit log" in r.stderr
    r = run_cli("audit", "verify", str(tmp_path / "missing.log"))
    assert r.exit_code == 2 and "no such audit log" in r.stderr
    r = run_cli("audit", "show", str(tmp_path / "missing.log"), "--since", "yesterday")
    assert r.exit_code == 2 and "--since yesterday" in r.stderr


def test_a_rewrite_past_the_recorded_head_is_caught(tmp_path):
    """The head noted on paper (entry 6) still catches a log rewritten from entry 4 on and grown
    past it (hashes recomputed, head file rewritten): entry 6 is not the one recorded."""
    log = _filled(tmp_path)
    paper = log.stored_head()
    lines = [json.loads(x) for x in _lines(log)][:3]
    prev = lines[-1]["hash"]
    for seq in range(4, 9):
        e = {"seq": seq, "time": "2026-12-03T00:00:00.000000Z", "operator": "mallory", "station": "s",
             "action": "card.verified", "subject": f"F{seq}", "details": {}, "prev": prev}
        e["hash"] = prev = _rehash(e)
        lines.append(e)
    _write(log, [json.dumps(e) for e in lines])
    Path(log.location + ".head").write_text(json.dumps({"seq": 8, "hash": prev}))
    assert log.verify().ok                                          # the chain and its own head agree
    v = log.verify(expect_head=paper)
    assert not v.ok and any("entry 6 is not the one the head records" in f.text() for f in v.findings)


def test_a_damaged_log_stops_the_action_before_it_is_done(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "a passphrase of the test")
    log = tmp_path / "audit.log"
    ks = tmp_path / "k.cks"
    assert run_cli("--audit-log", str(log), "keys", "create", str(ks)).exit_code == 0
    log.write_text(log.read_text()[:-20] + "\n")                       # its tail cut
    r = run_cli("--audit-log", str(log), "keys", "generate", str(ks), "--unit", "transit", "--name", "dlk")
    assert r.exit_code == 2 and "the last entry is damaged" in r.stderr and "nothing was done" in r.stderr
    assert run_cli("keys", "list", str(ks), "--json").json()["keys"] == []     # nothing generated
    r = run_cli("--audit-log", str(log), "audit", "verify")                   # reading it still works
    assert r.exit_code == 1


def test_a_refused_data_file_releases_no_batch(run_cli, tmp_path):
    from tests.test_batch import batch_args, make_csv

    log = tmp_path / "audit.log"
    bad = make_csv(tmp_path / "bad.csv", 3, mutate=lambda i, r: r.update(id_number="12345") if i == 2 else None)
    r = run_cli("--audit-log", str(log), *batch_args(bad, tmp_path / "j.db", "--sims", "1"))
    assert r.exit_code == 2 and "bad.csv" in r.stderr, r.stderr
    actions = [json.loads(x)["action"] for x in log.read_text().splitlines()] if log.exists() else []
    assert "batch.released" not in actions
    good = make_csv(tmp_path / "good.csv", 2)
    r = run_cli("--audit-log", str(log), *batch_args(good, tmp_path / "j.db", "--sims", "1"))
    assert r.exit_code == 0, r.stderr
    actions = [json.loads(x)["action"] for x in log.read_text().splitlines()]
    assert actions[-4:] == ["batch.released", "card.verified", "card.verified", "batch.finished"]
