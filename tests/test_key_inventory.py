"""The key inventory (issue 25 item 3): states and dates of master versions, what issuing and
what cards already issued may use, rotation, and refusals that change nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from citycard import crypto
from citycard.errors import InputError
from citycard.keys import KeyError_
from citycard.keys.inventory import Lifecycle
from citycard.keys.keystore import Keystore

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles/citycard.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
PW = "inventory passphrase 1"
K1, K2 = bytes.fromhex("00112233445566778899AABBCCDDEEFF"), bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
F = bytes.fromhex("1122334455667788")


def _day(delta: int) -> str:
    return (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=delta)).isoformat()


def test_lifecycle_rules():
    on = "2027-06-01"
    assert Lifecycle().refusal(issuing=True, on=on) is None
    assert Lifecycle("retired").refusal(issuing=False, on=on) is None            # old cards keep working
    assert "retired" in Lifecycle("retired").refusal(issuing=True, on=on)
    assert Lifecycle("compromised").refusal(issuing=False, on=on) == "compromised"
    assert Lifecycle(expiry="2027-06-01").refusal(issuing=False, on=on) == "expired on 2027-06-01"
    assert Lifecycle(expiry="2027-06-02").refusal(issuing=False, on=on) is None
    assert Lifecycle(activation="2027-06-02").refusal(issuing=True, on=on) == "not active before 2027-06-02"
    with pytest.raises(InputError, match="stays compromised"):
        Lifecycle("compromised").change(state="active")
    with pytest.raises(InputError, match="not after activation"):
        Lifecycle(activation="2027-01-02", expiry="2027-01-01")
    with pytest.raises(InputError, match="one of active, retired, compromised"):
        Lifecycle("lost")


def test_rotation_in_a_keystore(tmp_path):
    path = tmp_path / "ks.cks"
    ks = Keystore.create(path, PW, n=2 ** 8)
    ks.add("transit", "dlk", K1)
    ks.add("transit", "dlk", K2, version=2, life=Lifecycle(activation=_day(1)))
    # version 2 is not active until tomorrow: new cards still get version 1
    assert ks.derive("transit", "dlk", F) == crypto.diversify(K1, F)
    with pytest.raises(KeyError_, match="version 2 is not active before"):
        ks.derive("transit", "dlk", F, version=2)
    # the rotation day: version 2 from today, version 1 retired until the end of next month
    ks.set_lifecycle("transit", "dlk", 2, activation=_day(0))
    ks.set_lifecycle("transit", "dlk", 1, state="retired", expiry=_day(40))
    ks.save()
    ks.close()
    ks = Keystore.open(path, PW)                      # the inventory is kept in the (encrypted) file
    assert ks.info("transit", "dlk", 1).life == Lifecycle("retired", None, _day(40))
    assert ks.derive("transit", "dlk", F) == crypto.diversify(K2, F)              # new cards: version 2
    assert ks.derive("transit", "dlk", F, version=1) == crypto.diversify(K1, F)   # old cards: still served
    ks.set_lifecycle("transit", "dlk", 1, expiry=_day(0))
    with pytest.raises(KeyError_, match="version 1 is expired on"):
        ks.derive("transit", "dlk", F, version=1)
    ks.set_lifecycle("transit", "dlk", 2, state="compromised")
    with pytest.raises(KeyError_, match=r"no version of transit/dlk may be used today \(version 2 compromised; "
                                        r"version 1 expired on"):
        ks.derive("transit", "dlk", F)
    with pytest.raises(KeyError_, match="version 2 is compromised"):
        ks.derive("transit", "dlk", F, version=2)
    assert K1.hex() not in repr(ks.keys()).lower()


def test_older_keystores_read_as_active(tmp_path):
    """A keystore written before the inventory (entries without state or dates) is all active."""
    from citycard.keys.keystore import _parse_entries

    old = [{"unit": "transit", "name": "dlk", "version": 1, "algorithm": "3des", "key": K1.hex().upper(),
            "kcv": crypto.kcv(K1).hex().upper(), "created": "2026-01-01"}]
    (entry,) = _parse_entries(json.dumps(old).encode(), "old.cks", None)
    assert entry.info.life == Lifecycle()
    old[0]["state"] = "lost"
    from citycard.keys.keystore import KeystoreFormatError

    with pytest.raises(KeystoreFormatError, match="state or dates"):
        _parse_entries(json.dumps(old).encode(), "old.cks", None)


def test_cli_inventory_and_a_compromised_master_stops_perso(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", PW)
    ks = tmp_path / "demo.cks"
    log = tmp_path / "audit.log"
    assert run_cli("keys", "demo", str(ks)).exit_code == 0
    r = run_cli("--audit-log", str(log), "keys", "set", str(ks), "--unit", "transit", "--name", "dlk",
                "--version", "1", "--state", "compromised")
    assert r.exit_code == 0 and "transit/dlk version 1" in r.stdout and "compromised" in r.stdout
    assert json.loads(log.read_text().splitlines()[-1])["details"]["state"] == "compromised"
    r = run_cli("keys", "set", str(ks), "--unit", "transit", "--name", "dlk", "--version", "1", "--state", "active")
    assert r.exit_code == 2 and "stays compromised" in r.stderr
    r = run_cli("keys", "set", str(ks), "--unit", "transit", "--name", "dlk", "--version", "1",
                "--expiry", "2027-13-01")
    assert r.exit_code == 2 and "--expiry '2027-13-01': a date" in r.stderr
    listed = run_cli("keys", "list", str(ks), "--json").json()["keys"]
    assert {(k["unit"], k["name"]): k["state"] for k in listed}[("transit", "dlk")] == "compromised"
    assert "compromised" in run_cli("keys", "list", str(ks)).stdout

    img = tmp_path / "card.json"
    assert run_cli("sim", "new", str(img)).exit_code == 0
    before = img.read_bytes()
    r = run_cli("perso", "--profile", str(PROFILE), "--data", str(DATA), "--row", "1", "--issue-date", "20261124",
                "--keys", str(ks), "--sim", str(img))
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "transit/dlk" in r.stderr and "compromised" in r.stderr
    assert img.read_bytes() == before                  # refused before anything was written


def test_rotation_old_cards_keep_working_until_the_end_date(run_cli, tmp_path, monkeypatch):
    """Issue 25 item 3: after a rotation new cards get the new version (its number in the key
    record), while terminals and clearing serve the cards of the retired version by the key
    version the card gives in INITIALIZE, until that version's end date."""
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", PW)
    ks = tmp_path / "keys.cks"
    assert run_cli("keys", "demo", str(ks)).exit_code == 0
    profile = tmp_path / "rotating.toml"
    text = PROFILE.read_text()
    for role in ("dlk", "dpk", "dtk"):
        text = text.replace(f'version = 1, algorithm = 0, master = "{role}"', f'version = "master", algorithm = 0, '
                                                                              f'master = "{role}"')
    assert text.count('version = "master"') == 3
    profile.write_text(text)
    a, b, log = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "counter.log"

    def issue(img, row):
        assert run_cli("sim", "new", str(img)).exit_code == 0
        r = run_cli("perso", "--profile", str(profile), "--data", str(DATA), "--row", row, "--issue-date", "20261124",
                    "--keys", str(ks), "--sim", str(img))
        assert r.exit_code == 0, r.stderr

    def version_bytes(img) -> set[int]:
        """Byte 3 (the version) of the transit load (3F), purchase (3E) and TAC (34) key records."""
        nodes = json.loads(img.read_text())["mf"]["children"]
        transit = next(c for c in nodes if c.get("type") == "DF" and c.get("fid") == "3F01")
        return {int(k["b3"], 16) for k in transit["keyfile"]["keys"] if int(k["type"], 16) & 0x3F in (0x3F, 0x3E, 0x34)}

    issue(a, "1")
    for role in ("dlk", "dpk", "dtk"):
        r = run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", role, "--version", "2",
                    "--activation", _day(0))
        assert r.exit_code == 0, r.stderr
        r = run_cli("keys", "set", str(ks), "--unit", "transit", "--name", role, "--version", "1", "--state",
                    "retired", "--expiry", _day(30))
        assert r.exit_code == 0, r.stderr
    issue(b, "2")
    assert version_bytes(a) == {1} and version_bytes(b) == {2}     # the issuing master's version in each record

    for img in (a, b):
        r = run_cli("purse", "load", "--profile", str(profile), "--keys", str(ks), "--sim", str(img), "--amount", "5.00",
                    "--log", str(log))
        assert r.exit_code == 0, r.stderr
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["key_version"] for r in recs] == [1, 2]
    r = run_cli("clearing", "import", str(log), "--ledger", str(tmp_path / "l.db"), "--profile", str(profile),
                "--keys", str(ks), "--json")
    assert r.exit_code == 0 and r.json()["verdicts"] == {"accepted": 2}, r.stdout + r.stderr

    # version 1 reaches its end date: its cards are refused, naming why; version 2 cards go on
    for role in ("dlk", "dpk", "dtk"):
        assert run_cli("keys", "set", str(ks), "--unit", "transit", "--name", role, "--version", "1",
                       "--expiry", _day(0)).exit_code == 0
    r = run_cli("purse", "load", "--profile", str(profile), "--keys", str(ks), "--sim", str(a), "--amount", "1.00")
    assert r.exit_code != 0 and "version 1 is expired on" in r.stderr
    r = run_cli("purse", "load", "--profile", str(profile), "--keys", str(ks), "--sim", str(b), "--amount", "1.00")
    assert r.exit_code == 0, r.stderr



def test_clearing_checks_the_inventory_on_the_transaction_date(tmp_path):
    """A purchase made the day before its TAC key's end date and uploaded after it still clears;
    one made on the end date is refused (the keys, not the card: the import stops)."""
    from citycard.clearing import KeysUnavailable, TacVerifier
    from citycard.keys import KeyRing
    from citycard.keys.keystore import write_demo
    from citycard.profile import load_profile
    from tests.test_clearing import purchase

    path = tmp_path / "demo.cks"
    write_demo(path, PW, ROOT / "profiles/demo-keys.toml", n=2 ** 8).close()
    ks = Keystore.open(path, PW)
    ks.set_lifecycle("transit", "dtk", 1, state="retired", expiry=_day(0))
    ring = KeyRing([ks])
    check = TacVerifier(load_profile(str(PROFILE)), ring)
    yesterday = _day(-1).replace("-", "")
    assert check(purchase(0, 1000, 100, 1, day=yesterday)) is None
    with pytest.raises(KeysUnavailable, match="expired on"):
        check(purchase(1, 900, 100, 2, day=_day(0).replace("-", "")))
    ring.close()
