"""TEST KEYS never silently (issue 17 item 5): the published demo keys are marked wherever
they go, using them warns (stderr and a log line), and production refuses them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from citycard.keys import KeyRing, TestKeysRefused, check_test_keys
from citycard.keys.demo import DemoKeyFile
from citycard.keys.keystore import Keystore, KeystoreAuthError, write_demo

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = "20261124"
PW = "correct horse battery"
FAST_N = 2 ** 10


def test_demo_key_file_says_test_keys_in_its_header():
    head = KEYS.read_text(encoding="utf-8").splitlines()[:3]
    assert "TEST KEYS" in head[0]
    assert DemoKeyFile(KEYS).test_keys is True


def test_keys_demo_marks_the_keystore_in_its_authenticated_header(tmp_path):
    path = tmp_path / "demo.cks"
    write_demo(path, PW, KEYS, n=FAST_N).close()
    doc = json.loads(path.read_text())
    assert doc["purpose"] == "test"
    store = Keystore.open(path, PW)
    assert store.test_keys and not store.production
    assert KeyRing([store]).test_key_sources == [str(path)]
    # the marker is authenticated: removing it (to pass test keys off as real) is detected
    del doc["purpose"]
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreAuthError):
        Keystore.open(path, PW)


def test_a_keystore_without_purpose_reads_as_before(tmp_path):
    path = tmp_path / "plain.cks"
    Keystore.create(path, PW, n=FAST_N).close()
    assert "purpose" not in json.loads(path.read_text())
    store = Keystore.open(path, PW)
    assert store.purpose is None and not store.test_keys
    assert KeyRing([store]).test_key_sources == []


def test_the_library_decides(tmp_path, caplog):
    demo = KeyRing([DemoKeyFile(KEYS)])
    with caplog.at_level(logging.INFO, logger="citycard.keys"):
        message = check_test_keys(demo)
    assert message is not None and "TEST KEYS" in message and str(KEYS) in message
    assert [r.getMessage() for r in caplog.records if r.name == "citycard.keys"] == [
        f"TEST KEYS in use for cards: {KEYS}"]
    with pytest.raises(TestKeysRefused, match=r"profile is marked production"):
        check_test_keys(demo, production=True)
    prod_path = tmp_path / "prod.cks"
    Keystore.create(prod_path, PW, n=FAST_N, purpose="production").close()
    prod = Keystore.open(prod_path, PW)
    assert prod.production
    with pytest.raises(TestKeysRefused, match="production keystore"):
        check_test_keys(KeyRing([DemoKeyFile(KEYS), prod]))
    assert check_test_keys(KeyRing([prod])) is None


@pytest.fixture
def card(run_cli, tmp_path):
    img = tmp_path / "card.json"
    assert run_cli("sim", "new", str(img), "--model", "fm1208-16ff").exit_code == 0
    return img


def _perso(run_cli, card, *extra, profile=PROFILE, keys=(str(KEYS),)):
    ks = [a for k in keys for a in ("--keys", k)]
    return run_cli("perso", "--profile", str(profile), *ks, "--data", str(DATA), "--row", "1",
                   "--issue-date", DAY, "--sim", str(card), *extra)


def test_perso_with_test_keys_warns(run_cli, card, capture):
    r = _perso(run_cli, card)
    assert r.exit_code == 0, r.stderr
    assert f"citycard: warning: {KEYS} holds published TEST KEYS" in r.stderr
    assert "never use them for real cards" in r.stderr
    assert any("TEST KEYS" in rec.getMessage() for rec in capture.records if rec.name == "citycard.keys")
    purse = run_cli("purse", "load", "--profile", str(PROFILE), "--keys", str(KEYS), "--sim", str(card),
                    "--amount", "1.00")
    assert purse.exit_code == 0 and "TEST KEYS" in purse.stderr


def test_the_console_shows_the_warning_once(tmp_path):
    """The CLI prints the warning; the library's record of the use is an INFO line, shown only
    with --log-level info (it was a WARNING too: two lines for one warning)."""
    import subprocess
    import sys

    img = tmp_path / "c.json"
    base = [sys.executable, "-m", "citycard"]
    subprocess.run([*base, "sim", "new", str(img)], check=True, capture_output=True)
    args = ["perso", "--sim", str(img), "--profile", str(PROFILE), "--keys", str(KEYS), "--data",
            str(PROFILE.parent / "citycard-sample.csv"), "--row", "1"]
    quiet = subprocess.run([*base, *args], capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if "TEST KEYS" in line] == [
        f"citycard: warning: {KEYS} holds published TEST KEYS: anyone can read them; never use them for real cards"]
    subprocess.run([*base, "sim", "new", "--force", str(img)], check=True, capture_output=True)
    loud = subprocess.run([*base, "--log-level", "info", *args], capture_output=True, text=True)
    assert loud.returncode == 0, loud.stderr
    assert f"INFO citycard.keys: TEST KEYS in use for cards: {KEYS}" in loud.stderr.splitlines()


def test_perso_with_a_demo_keystore_warns(run_cli, card, tmp_path, monkeypatch):
    ks = tmp_path / "demo.cks"
    write_demo(ks, PW, KEYS, n=FAST_N).close()
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", PW)
    r = _perso(run_cli, card, keys=(str(ks),))
    assert r.exit_code == 0, r.stderr
    assert f"{ks} holds published TEST KEYS" in r.stderr


def test_a_production_profile_refuses_test_keys(run_cli, card, tmp_path):
    text = PROFILE.read_text(encoding="utf-8").replace('cos = "fmcos"\n', 'cos = "fmcos"\nproduction = true\n', 1)
    assert "production = true" in text
    prod = PROFILE.parent / "_production_test_profile.toml"     # beside the original: includes resolve
    prod.write_text(text, encoding="utf-8")
    try:
        before = card.read_bytes()
        r = _perso(run_cli, card, profile=prod)
    finally:
        prod.unlink()
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"citycard: error: {KEYS}: TEST KEYS (published demo keys) refused: the profile is marked production "
        "([profile] production = true)"]
    assert card.read_bytes() == before


def test_a_production_keystore_refuses_test_keys(run_cli, card, tmp_path, monkeypatch):
    prod = tmp_path / "prod.cks"
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", PW)
    r = run_cli("keys", "create", str(prod), "--production", "--unit", "extra")
    assert r.exit_code == 0 and "marked production" in r.stdout
    assert json.loads(prod.read_text())["purpose"] == "production"
    before = card.read_bytes()
    r = _perso(run_cli, card, keys=(str(KEYS), str(prod)))
    assert r.exit_code == 2 and "refused next to the production keystore" in r.stderr
    assert card.read_bytes() == before


def test_hsm_import_knows_a_demo_keystore_holds_test_keys(tmp_path):
    from citycard.cli.keys_cmd import _holds_test_keys

    demo, plain = tmp_path / "demo.cks", tmp_path / "plain.cks"
    write_demo(demo, PW, KEYS, n=FAST_N).close()
    Keystore.create(plain, PW, n=FAST_N).close()
    assert _holds_test_keys(str(KEYS)) and _holds_test_keys(str(demo))
    assert not _holds_test_keys(str(plain)) and not _holds_test_keys(str(tmp_path / "none.cks"))


def test_the_warning_names_every_test_key_source_in_one_line():
    two = KeyRing([DemoKeyFile(KEYS), DemoKeyFile(ROOT / "profiles/demo-keys-sm4.toml")])
    message = check_test_keys(two) or ""
    assert "demo-keys.toml" in message and "demo-keys-sm4.toml" in message and "\n" not in message
    assert " hold published TEST KEYS" in message
    assert " holds published TEST KEYS" in (check_test_keys(KeyRing([DemoKeyFile(KEYS)])) or "")
