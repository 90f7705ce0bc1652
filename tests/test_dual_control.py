"""Dual control (issue 25 item 2): personal credentials, the signed roster, and the actions
that need two distinct people (key import/deletion, production keys without a roster)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from citycard.bureau import (CredentialError, DualControlRefused, Roster, RosterError, approve,
                             create_credential, read_public, unlock)

PW = {"alice": "alice passphrase 1", "bob": "bob passphrase 22", "carol": "carol passphrase 333",
      "dave": "dave passphrase 4444"}


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """name -> (credential path, passphrase file); made once (scrypt per credential)."""
    d = tmp_path_factory.mktemp("people")
    out = {}
    for name, pw in PW.items():
        cred = d / f"{name}.cred"
        create_credential(cred, name, pw)
        pfile = d / f"{name}.pass"
        pfile.write_text(pw + "\n")
        pfile.chmod(0o600)
        out[name] = (cred, pfile)
    return out


def _signer(people, name):
    return unlock(people[name][0], PW[name])


def test_credential_opens_only_with_its_passphrase(people, tmp_path):
    cred = people["alice"][0]
    assert oct(cred.stat().st_mode & 0o777) == "0o600"
    assert PW["alice"] not in cred.read_text()
    s = _signer(people, "alice")
    assert s.public == read_public(cred)[0]
    assert s.public.verifies(s.sign(b"statement"), b"statement")
    assert not s.public.verifies(s.sign(b"statement"), b"other")
    with pytest.raises(CredentialError, match="wrong passphrase for operator alice"):
        unlock(cred, "not it at all")
    doc = json.loads(cred.read_text())
    doc["name"] = "mallory"                       # renaming the file's owner breaks the GCM binding
    (tmp_path / "m.cred").write_text(json.dumps(doc))
    with pytest.raises(CredentialError, match="wrong passphrase for operator mallory"):
        unlock(tmp_path / "m.cred", PW["alice"])
    doc = json.loads(cred.read_text())
    doc["kdf"]["n"] = 2 ** 24                    # a forged cost: refused before any work
    (tmp_path / "n.cred").write_text(json.dumps(doc))
    with pytest.raises(CredentialError, match="out of the accepted bounds"):
        unlock(tmp_path / "n.cred", PW["alice"])
    with pytest.raises(CredentialError, match="never overwritten"):
        create_credential(cred, "alice", PW["alice"])


def test_roster_chain_and_its_forgeries(people, tmp_path):
    path = tmp_path / "roster.json"
    r = Roster.create(path, _signer(people, "alice"), _signer(people, "bob"))
    carol = read_public(people["carol"][0])[0]
    with pytest.raises(RosterError, match="two distinct people"):
        r.append("enroll", carol, [_signer(people, "alice"), _signer(people, "alice")])
    r = r.append("enroll", carol, [_signer(people, "alice"), _signer(people, "bob")])
    bob = read_public(people["bob"][0])[0]
    with pytest.raises(RosterError, match="cannot approve their own"):
        r.append("revoke", bob, [_signer(people, "bob"), _signer(people, "carol")])
    r = r.append("revoke", bob, [_signer(people, "alice"), _signer(people, "carol")])
    assert [o.name for o in r.operators.values() if o.active] == ["alice", "carol"]
    good = path.read_text()
    assert Roster.load(path).fingerprint == r.fingerprint

    # a revoked operator cannot approve any more
    dave = read_public(people["dave"][0])[0]
    with pytest.raises(RosterError, match="bob is not an active operator"):
        r.append("enroll", dave, [_signer(people, "alice"), _signer(people, "bob")])

    def forged(edit):
        doc = json.loads(good)
        edit(doc)
        path.write_text(json.dumps(doc))
        with pytest.raises(RosterError):
            Roster.load(path)

    forged(lambda d: d["events"][1]["operators"][0].update(name="mallory"))          # renamed
    forged(lambda d: d["events"][1]["operators"][0].update(                           # key swapped
        public_key=base64.b64encode(dave.public_key).decode()))
    forged(lambda d: d["events"].pop(1))                                             # enrolment removed
    forged(lambda d: d["events"].__setitem__(slice(1, 3), d["events"][2:0:-1]))       # reordered
    path.write_text(good)
    assert Roster.load(path).active("bob") is None
    # the limit said in the docs: cut back to an earlier state, the roster still loads; its head
    # (recorded in the audit log with every change and approval) is what shows it
    doc = json.loads(good)
    doc["events"].pop(2)
    path.write_text(json.dumps(doc))
    assert Roster.load(path).active("bob") is not None and Roster.load(path).head != r.head


def test_approval_needs_two_distinct_active_operators(people, tmp_path):
    r = Roster.create(tmp_path / "r.json", _signer(people, "alice"), _signer(people, "bob"))
    with pytest.raises(DualControlRefused, match="needs two distinct people"):
        approve(r, "keys.delete", "x/y version 1", {}, [_signer(people, "alice")])
    with pytest.raises(DualControlRefused, match="carol is not an active operator"):
        approve(r, "keys.delete", "x/y version 1", {}, [_signer(people, "alice"), _signer(people, "carol")])
    a = approve(r, "keys.delete", "x/y version 1", {"keystore": "k"}, [_signer(people, "alice"), _signer(people, "bob")])
    assert a.names == ("alice", "bob") and len(a.signatures) == 2 and a.roster == r.fingerprint


# ------------------------------------------------------------------ CLI
def _cli_roster(run_cli, people, tmp_path) -> Path:
    roster = tmp_path / "roster.json"
    r = run_cli("operator", "init", str(roster), "--credential", str(people["alice"][0]), "--credential",
                str(people["bob"][0]), "--passphrase-file", str(people["alice"][1]),
                "--passphrase-file", str(people["bob"][1]))
    assert r.exit_code == 0, r.stderr
    return roster


def _approvals(people, *names):
    out = []
    for n in names:
        out += ["--approve", str(people[n][0])]
    for n in names:
        out += ["--approve-passphrase-file", str(people[n][1])]
    return out


def test_key_deletion_needs_two_people(run_cli, people, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "keystore passphrase 5")
    ks = tmp_path / "ks.cks"
    log = tmp_path / "audit.log"
    assert run_cli("keys", "create", str(ks)).exit_code == 0
    assert run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", "dlk").exit_code == 0
    roster = _cli_roster(run_cli, people, tmp_path)
    base = ["--roster", str(roster), "--audit-log", str(log)]
    delete = ["keys", "delete", str(ks), "--unit", "transit", "--name", "dlk", "--version", "1", "--yes"]

    r = run_cli(*base, *delete)
    assert r.exit_code == 2 and "deleting a key needs two people" in r.stderr
    r = run_cli(*base, *delete, *_approvals(people, "alice"))
    assert r.exit_code == 2 and "needs two people: give two --approve credentials (1 given)" in r.stderr
    r = run_cli(*base, *delete, *_approvals(people, "alice", "alice"))
    assert r.exit_code == 2 and "needs two distinct people" in r.stderr
    r = run_cli(*base, *delete, *_approvals(people, "alice", "carol"))
    assert r.exit_code == 2 and "carol is not an active operator" in r.stderr
    listed = run_cli("keys", "list", str(ks), "--json").json()["keys"]
    assert [k["name"] for k in listed] == ["dlk"]            # nothing deleted by a refusal

    r = run_cli(*base, *delete, *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    assert run_cli("keys", "list", str(ks), "--json").json()["keys"] == []
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["action"] == "keys.deleted" and entry["details"]["approved_by"] == ["alice", "bob"]
    text = log.read_text() + r.stdout + r.stderr
    assert not any(pw in text for pw in PW.values())


def test_production_keystore_needs_a_roster(run_cli, people, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "keystore passphrase 5")
    monkeypatch.delenv("CITYCARD_ROSTER", raising=False)
    ks = tmp_path / "prod.cks"
    assert run_cli("keys", "create", str(ks), "--production").exit_code == 0
    assert run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", "dlk").exit_code == 0
    r = run_cli("keys", "delete", str(ks), "--unit", "transit", "--name", "dlk", "--version", "1", "--yes")
    assert r.exit_code == 2 and "needs dual control: give --roster" in r.stderr
    r = run_cli("keys", "delete", str(ks), "--unit", "transit", "--name", "dlk", "--version", "1", "--yes",
                *_approvals(people, "alice", "bob"))
    assert r.exit_code == 2 and "needs dual control" in r.stderr
    # a test keystore without a roster: no second person asked (the demo and CI)
    ts = tmp_path / "test.cks"
    assert run_cli("keys", "create", str(ts)).exit_code == 0
    assert run_cli("keys", "generate", str(ts), "--unit", "transit", "--name", "dlk").exit_code == 0
    assert run_cli("keys", "delete", str(ts), "--unit", "transit", "--name", "dlk", "--version", "1",
                   "--yes").exit_code == 0


def test_operator_enroll_revoke_list(run_cli, people, tmp_path):
    roster = _cli_roster(run_cli, people, tmp_path)
    r = run_cli("operator", "enroll", str(roster), str(people["carol"][0]), *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    r = run_cli("operator", "revoke", str(roster), "bob", *_approvals(people, "alice", "carol"))
    assert r.exit_code == 0, r.stderr
    out = run_cli("operator", "list", str(roster), "--json").json()
    assert {o["name"]: o["active"] for o in out["operators"]} == {"alice": True, "bob": False, "carol": True}
    r = run_cli("operator", "enroll", str(roster), str(people["dave"][0]), *_approvals(people, "alice", "bob"))
    assert r.exit_code == 2 and "bob is not an active operator" in r.stderr


# ------------------------------------------------------------------ batches, re-issues, closing
def test_batch_release_and_reissue_need_two_people(run_cli, people, tmp_path):
    from tests.test_batch import batch_args, make_csv

    roster = _cli_roster(run_cli, people, tmp_path)
    log = tmp_path / "audit.log"
    data, journal = make_csv(tmp_path / "d.csv", 2), tmp_path / "j.db"
    base = ["--roster", str(roster), "--audit-log", str(log), "--operator", "alice"]
    r = run_cli(*base, *batch_args(data, journal, "--sims", "1"))
    assert r.exit_code == 2 and "releasing a production batch needs two people" in r.stderr
    assert not journal.exists()                                    # refused before anything was written
    r = run_cli(*base, *batch_args(data, journal, "--sims", "1"), *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert [e["action"] for e in entries] == ["batch.released", "card.verified", "card.verified", "batch.finished"]
    assert entries[0]["details"]["approved_by"] == ["alice", "bob"]
    assert run_cli("audit", "verify", str(log)).exit_code == 0
    # the same batch again: a resume, not a release (no approvals asked)
    r = run_cli(*base, *batch_args(data, journal, "--sims", "1"))
    assert r.exit_code == 0 and json.loads(log.read_text().splitlines()[-2])["action"] == "batch.resumed"
    # re-issuing its cardholders in another batch: two people
    again = make_csv(tmp_path / "again.csv", 2, mutate=lambda i, row: row.update(phone="13900000000"))
    r = run_cli(*base, *batch_args(again, journal, "--sims", "1", "--reissue", "all"),
                *_approvals(people, "alice", "bob")[:2], *_approvals(people, "alice", "bob")[4:6])
    assert r.exit_code == 2 and "needs two people" in r.stderr


def test_batch_release_command_needs_two_people_and_the_run_is_then_a_resume(run_cli, people, tmp_path):
    from tests.test_batch import KEYS, PROFILE, batch_args, make_csv

    roster = _cli_roster(run_cli, people, tmp_path)
    log = tmp_path / "audit.log"
    data, journal = make_csv(tmp_path / "d.csv", 2), tmp_path / "j.db"
    base = ["--roster", str(roster), "--audit-log", str(log), "--operator", "alice"]
    release = ["batch", "release", "--profile", PROFILE, "--keys", KEYS, "--data", str(data), "--journal", str(journal)]
    r = run_cli(*base, *release)
    assert r.exit_code == 2 and "releasing a production batch needs two people" in r.stderr
    assert not journal.exists()
    r = run_cli(*base, *release, *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert [e["action"] for e in entries] == ["batch.released"]
    assert entries[0]["details"]["approved_by"] == ["alice", "bob"]
    r = run_cli(*base, *batch_args(data, journal, "--sims", "1"))      # no approvals: released already
    assert r.exit_code == 0, r.stderr
    actions = [json.loads(x)["action"] for x in log.read_text().splitlines()]
    assert actions == ["batch.released", "batch.resumed", "card.verified", "card.verified", "batch.finished"]


def test_perso_reissue_needs_two_people(run_cli, people, tmp_path):
    root = Path(__file__).resolve().parents[1]
    img = tmp_path / "card.json"
    assert run_cli("sim", "new", str(img)).exit_code == 0
    common = ["perso", "--profile", str(root / "profiles/citycard.toml"), "--keys", str(root / "profiles/demo-keys.toml"),
              "--data", str(root / "profiles/citycard-sample.csv"), "--row", "1", "--issue-date", "20261124",
              "--sim", str(img)]
    assert run_cli(*common).exit_code == 0
    roster = _cli_roster(run_cli, people, tmp_path)
    issued = img.read_bytes()
    r = run_cli("--roster", str(roster), *common, "--reissue-card")
    assert r.exit_code == 2 and "re-issuing (erasing) an issued card needs two people" in r.stderr
    assert img.read_bytes() == issued
    log = tmp_path / "audit.log"
    r = run_cli("--roster", str(roster), "--audit-log", str(log), *common, "--reissue-card",
                *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    e = json.loads(log.read_text().splitlines()[-1])
    assert e["action"] == "card.reissued" and e["details"]["approved_by"] == ["alice", "bob"]


def test_closing_a_card_with_a_balance_needs_two_people(run_cli, people, tmp_path):
    from citycard.lifecycle import Register
    from tests.test_clearing import DEMO_KEYS, PROFILE, load, purchase, write_log

    card = "3301000000000042"
    reg = str(tmp_path / "reg.db")
    with Register(reg) as r:
        r.add_card(card, "CH42", "citycard")
        r.add_card("3301000000000043", "CH43", "citycard")
    ledger = str(tmp_path / "l.db")
    spent = "3301000000000043"
    log = write_log(tmp_path / "t.log", [load(0, 0, 1000), purchase(0, 1000, 200, 1),
                                         load(0, 0, 300, card=spent), purchase(0, 300, 300, 2, card=spent)])
    assert run_cli("clearing", "import", str(log), "--ledger", ledger, "--profile", str(PROFILE),
                   "--keys", str(DEMO_KEYS)).exit_code == 0
    roster = _cli_roster(run_cli, people, tmp_path)
    base = ["--roster", str(roster), "cards", "close", "--register", reg, "--reason", "moved away"]
    r = run_cli(*base, card)
    assert r.exit_code == 2 and "give --ledger" in r.stderr
    r = run_cli(*base, card, "--ledger", ledger)
    assert r.exit_code == 2 and "closing a card that holds a balance needs two people" in r.stderr
    r = run_cli(*base, card, "--ledger", ledger, *_approvals(people, "alice", "bob"), "--json")
    assert r.exit_code == 0 and r.json()["state"] == "closed" and r.json()["balance_fen"] == 800
    r = run_cli(*base, spent, "--ledger", ledger)                      # spent to 0: one person is enough
    assert r.exit_code == 0, r.stderr
    with Register(reg) as r:
        r.add_card("3301000000000044", "CH44", "citycard")
    r = run_cli(*base, "3301000000000044", "--ledger", ledger)           # unknown to the ledger: two people
    assert r.exit_code == 2 and "needs two people" in r.stderr


def test_one_key_under_two_names_is_refused(people, tmp_path):
    """Someone who wraps their own key again under a second name gains no second vote."""
    import base64 as b64

    alice = _signer(people, "alice")
    r = Roster.create(tmp_path / "r.json", alice, _signer(people, "bob"))
    twin = read_public(people["alice"][0])[0]
    from citycard.bureau import OperatorKey

    with pytest.raises(RosterError, match="already on the roster .* under another name"):
        r.append("enroll", OperatorKey("alice2", twin.public_key), [alice, _signer(people, "bob")])
    # a roster file edited to hold it anyway does not load
    doc = json.loads((tmp_path / "r.json").read_text())
    doc["events"][0]["operators"][1]["public_key"] = b64.b64encode(twin.public_key).decode()
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with pytest.raises(RosterError):
        Roster.load(tmp_path / "r.json")


def test_a_roster_changed_meanwhile_is_not_overwritten(people, tmp_path):
    path = tmp_path / "r.json"
    first = Roster.create(path, _signer(people, "alice"), _signer(people, "bob"))
    stale = Roster.load(path)
    first.append("enroll", read_public(people["carol"][0])[0], [_signer(people, "alice"), _signer(people, "bob")])
    with pytest.raises(RosterError, match="changed meanwhile"):
        stale.append("revoke", read_public(people["bob"][0])[0], [_signer(people, "alice"), _signer(people, "carol")])
    assert Roster.load(path).active("carol") is not None


def test_a_production_keystore_pins_its_roster(run_cli, people, tmp_path, monkeypatch):
    """One person making a roster of their own (two credentials of theirs) gains nothing: the
    production keystore's authenticated header pins the bureau's roster."""
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "keystore passphrase 5")
    roster = _cli_roster(run_cli, people, tmp_path)
    ks = tmp_path / "prod.cks"
    r = run_cli("--roster", str(roster), "keys", "create", str(ks), "--production")
    assert r.exit_code == 0 and "pinned" in r.stdout
    assert run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", "dlk").exit_code == 0
    own = tmp_path / "own.json"         # carol and dave: one person's two credentials, say
    r = run_cli("operator", "init", str(own), "--credential", str(people["carol"][0]), "--credential",
                str(people["dave"][0]), "--passphrase-file", str(people["carol"][1]), "--passphrase-file",
                str(people["dave"][1]))
    assert r.exit_code == 0
    delete = ["keys", "delete", str(ks), "--unit", "transit", "--name", "dlk", "--version", "1", "--yes"]
    r = run_cli("--roster", str(own), *delete, *_approvals(people, "carol", "dave"))
    assert r.exit_code == 2 and "is not the roster the keystore pins" in r.stderr
    assert run_cli("keys", "list", str(ks), "--json").json()["keys"]
    log = tmp_path / "audit.log"
    r = run_cli("--roster", str(roster), "--audit-log", str(log), *delete, *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    assert "deleting a key: transit/dlk version 1" in r.stderr                 # what they were shown
    d = json.loads(log.read_text().splitlines()[-1])["details"]
    statement = d["approval_statement"].encode()                              # what they signed, checkable
    import base64 as b64
    import hashlib

    assert hashlib.sha256(statement).hexdigest() == d["approval"]
    keys = {n: read_public(people[n][0])[0] for n in ("alice", "bob")}
    assert all(keys[n].verifies(b64.b64decode(sig), statement) for n, sig in zip(d["approved_by"],
                                                                                   d["approval_signatures"]))
