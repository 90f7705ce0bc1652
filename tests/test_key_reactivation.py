"""``keys set`` under dual control (leftovers item 4; docs/keys.md, docs/audit.md): putting a
retired key version back to active needs two people under a roster (always with a production
keystore); retiring and marking compromised stay single-person protective steps, audited; a
compromised version never comes back."""

from __future__ import annotations

import json

from tests.test_dual_control import PW, _approvals, _cli_roster, people  # noqa: F401 (people: a fixture)

KS_PW = "keystore passphrase 5"


def _set(ks, *args):
    return ["keys", "set", str(ks), "--unit", "transit", "--name", "dlk", "--version", "1", *args]


def _state(run_cli, ks) -> str:
    keys = run_cli("keys", "list", str(ks), "--json").json()["keys"]
    return {(k["unit"], k["name"]): k["state"] for k in keys}[("transit", "dlk")]


def _entries(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_reactivating_a_retired_version_of_a_production_keystore_needs_two_people(run_cli, people, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", KS_PW)
    roster = _cli_roster(run_cli, people, tmp_path)
    ks, log = tmp_path / "prod.cks", tmp_path / "audit.log"
    assert run_cli("--roster", str(roster), "keys", "create", str(ks), "--production").exit_code == 0
    assert run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", "dlk").exit_code == 0
    base = ["--roster", str(roster), "--audit-log", str(log)]

    r = run_cli(*base, *_set(ks, "--state", "retired"))              # one person retires it
    assert r.exit_code == 0, r.stderr
    assert _entries(log)[-1]["action"] == "keys.state-changed" and "approved_by" not in _entries(log)[-1]["details"]

    r = run_cli(*base, *_set(ks, "--state", "active"))
    assert r.exit_code == 2 and "putting a retired key version back to active needs two people" in r.stderr
    r = run_cli(*base, *_set(ks, "--state", "active"), *_approvals(people, "alice"))
    assert r.exit_code == 2 and "(1 given)" in r.stderr
    r = run_cli(*base, *_set(ks, "--state", "active"), *_approvals(people, "alice", "alice"))
    assert r.exit_code == 2 and "two distinct people" in r.stderr
    r = run_cli(*_set(ks, "--state", "active"))                      # no roster at all: production refuses
    assert r.exit_code == 2 and "needs dual control: give --roster" in r.stderr
    assert _state(run_cli, ks) == "retired"                         # nothing changed by a refusal

    r = run_cli(*base, *_set(ks, "--state", "active"), *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    assert "putting a retired key version back to active: transit/dlk version 1" in r.stderr   # shown before
    assert _state(run_cli, ks) == "active"
    entry = _entries(log)[-1]
    assert entry["action"] == "keys.state-changed" and entry["details"]["state"] == "active"
    assert entry["details"]["approved_by"] == ["alice", "bob"]
    statement = json.loads(entry["details"]["approval_statement"])
    assert statement["action"] == "keys.reactivate" and statement["subject"] == "transit/dlk version 1"
    assert (statement["details"]["from"], statement["details"]["to"]) == ("retired", "active")

    # marking compromised: one person, at once, audited; approvals are not taken for it
    r = run_cli(*base, *_set(ks, "--state", "compromised"), *_approvals(people, "alice", "bob"))
    assert r.exit_code == 2 and "only putting a retired version back to active needs approvals" in r.stderr
    r = run_cli(*base, *_set(ks, "--state", "compromised"))
    assert r.exit_code == 0, r.stderr
    assert _entries(log)[-1]["details"]["state"] == "compromised" and _state(run_cli, ks) == "compromised"
    # and it never comes back, not even with two people
    r = run_cli(*base, *_set(ks, "--state", "active"), *_approvals(people, "alice", "bob"))
    assert r.exit_code == 2 and "stays compromised" in r.stderr
    assert _state(run_cli, ks) == "compromised"
    text = log.read_text()
    assert not any(pw in text for pw in (*PW.values(), KS_PW))


def test_with_a_roster_a_test_keystore_also_needs_two_people(run_cli, people, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", KS_PW)
    roster = _cli_roster(run_cli, people, tmp_path)
    ks = tmp_path / "ks.cks"
    assert run_cli("keys", "create", str(ks)).exit_code == 0
    assert run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", "dlk").exit_code == 0
    assert run_cli(*_set(ks, "--state", "retired")).exit_code == 0
    r = run_cli("--roster", str(roster), *_set(ks, "--state", "active", "--expiry", "2099-01-01"))
    assert r.exit_code == 2 and "needs two people" in r.stderr and _state(run_cli, ks) == "retired"
    # dates of a retired version, and retiring an active one: single-person
    assert run_cli("--roster", str(roster), *_set(ks, "--expiry", "2099-01-01")).exit_code == 0
    assert _state(run_cli, ks) == "retired"


def test_without_a_roster_a_test_keystore_runs_as_before(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", KS_PW)
    monkeypatch.delenv("CITYCARD_ROSTER", raising=False)
    ks = tmp_path / "ks.cks"
    assert run_cli("keys", "create", str(ks)).exit_code == 0
    assert run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", "dlk").exit_code == 0
    assert run_cli(*_set(ks, "--state", "retired")).exit_code == 0
    r = run_cli(*_set(ks, "--state", "active"))
    assert r.exit_code == 0, r.stderr
    assert _state(run_cli, ks) == "active"


def test_a_token_version_put_back_to_active_needs_two_people_under_a_roster(run_cli, people, tmp_path,
                                                                             monkeypatch):
    """The same rule for an HSM token's inventory (``keys set pkcs11:…``)."""
    import os

    import pytest

    from citycard.testing import softhsm
    from tests.test_hsm import DEMO_KEYS

    reason = softhsm.unavailable()
    if reason:
        if os.environ.get("CITYCARD_REQUIRE_HSM") == "1":
            pytest.fail(f"CITYCARD_REQUIRE_HSM=1 but {reason}")
        pytest.skip(reason)
    for k in ("SOFTHSM2_CONF", softhsm.PIN_ENV):
        monkeypatch.setenv(k, os.environ.get(k, ""))      # restored after the test
    h = softhsm.SoftHsm.create(tmp_path / "softhsm")
    h.init_token("citycard-reactivate")
    uri = h.uri()
    assert run_cli("keys", "hsm-import", uri, "--from", str(DEMO_KEYS)).exit_code == 0
    roster = _cli_roster(run_cli, people, tmp_path)
    log = tmp_path / "audit.log"
    set_ = ["keys", "set", uri, "--unit", "transit", "--name", "dlk", "--version", "1"]
    assert run_cli("--audit-log", str(log), *set_, "--state", "retired").exit_code == 0
    r = run_cli("--roster", str(roster), *set_, "--state", "active")
    assert r.exit_code == 2 and "needs two people" in r.stderr

    def token_state() -> str:
        keys = run_cli("keys", "list", uri, "--json").json()["keys"]
        return {(k["unit"], k["name"]): k["state"] for k in keys}[("transit", "dlk")]

    assert token_state() == "retired"
    r = run_cli("--roster", str(roster), "--audit-log", str(log), *set_, "--state", "active",
                *_approvals(people, "alice", "bob"))
    assert r.exit_code == 0, r.stderr
    assert token_state() == "active" and _entries(log)[-1]["details"]["approved_by"] == ["alice", "bob"]
