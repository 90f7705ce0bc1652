"""Master keys in a hardware security module: the PKCS#11 key source against SoftHSM2.

A private token in a temporary directory (``citycard.testing.softhsm``); skipped when
SoftHSM2 or PyKCS11 is missing, unless ``CITYCARD_REQUIRE_HSM=1`` (CI), which fails instead.
"""

from __future__ import annotations

import datetime
import json
import os
import tomllib
import traceback
from pathlib import Path

import pytest

from tests.conftest import image_keys

from citycard import crypto
from citycard.crypto import pboc
from citycard.errors import CitycardError
from citycard.keys import KeyError_, KeyRing, open_source
from citycard.keys.demo import DemoKeyFile
from citycard.keys.handles import KeyHandle, KeyHandleError
from citycard.keys.keystore import write_demo
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import EXPORTED, Planner
from citycard.perso.run import personalize
from citycard.profile import load_profile
from citycard.sim import SimCard
from citycard.sim.transport import SimTransport
from citycard.terminal.purse import PurseTerminal
from citycard.terminal.services import CardServices
from citycard.testing import softhsm
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = "20261124"
MASTERS = {(u, r): bytes.fromhex(v) for u, roles in tomllib.loads(DEMO_KEYS.read_text()).items()
           for r, v in roles.items()}
FACTOR = bytes.fromhex("3301000000000001")


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    reason = softhsm.unavailable()
    if reason:
        if os.environ.get("CITYCARD_REQUIRE_HSM") == "1":
            pytest.fail(f"CITYCARD_REQUIRE_HSM=1 but {reason}")
        pytest.skip(reason)
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", softhsm.PIN_ENV)}
    h = softhsm.SoftHsm.create(tmp_path_factory.mktemp("softhsm"))
    h.init_token("citycard-empty")
    yield h
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def loaded(hsm):
    """The demo masters imported into the token (through the CLI, as a bureau would)."""
    from click.testing import CliRunner

    from citycard.cli.main import cli

    r = CliRunner().invoke(cli, ["keys", "hsm-import", hsm.uri(), "--from", str(DEMO_KEYS)])
    assert r.exit_code == 0, r.stderr
    assert f"imported {len(MASTERS)} master key(s)" in r.stdout
    assert "TEST KEYS" in r.stderr
    return {"stdout": r.stdout, "stderr": r.stderr}


@pytest.fixture
def source(hsm, loaded):
    src = open_source(hsm.uri())
    yield src
    src.close()


def _no_secret(text: str, hsm) -> None:
    upper = text.upper()
    assert hsm.pin not in text and hsm.so_pin not in text
    for (u, r), key in MASTERS.items():
        if key == b"\xff" * 16:
            continue           # the public factory key
        for needle in (key.hex().upper(), key[:8].hex().upper(), key[8:].hex().upper(),
                       crypto.diversify(key, FACTOR).hex().upper()):
            assert needle not in upper, f"{u}/{r} shows"


# ------------------------------------------------------------------------------ the token
def test_import_makes_sensitive_non_extractable_masters(hsm, loaded, source):
    _no_secret(loaded["stdout"] + loaded["stderr"], hsm)
    assert source.entries() == set(MASTERS)
    for (u, r) in MASTERS:
        a = source.attributes(u, r)
        assert a["CKA_SENSITIVE"] and not a["CKA_EXTRACTABLE"] and a["CKA_TOKEN"] and a["CKA_PRIVATE"]
        assert not a["CKA_MODIFIABLE"] and not a["CKA_WRAP"] and not a["CKA_UNWRAP"] and not a["CKA_DECRYPT"]
        assert a["CKA_DERIVE"] and a["CKA_ENCRYPT"]
    info = {(i.unit, i.name): i for i in source.keys()}
    assert info[("factory", "transport")].direct and not info[("transit", "dlk")].direct


def test_a_master_cannot_be_read_or_wrapped(source):
    import PyKCS11 as P

    for (u, r) in (("transit", "dlk"), ("card", "mf-master"), ("factory", "transport")):
        with pytest.raises(KeyError_, match="sensitive"):
            source.read_value(u, r)
    with pytest.raises(KeyError_, match="never leaves"):
        source.derive("transit", "dlk", None, export=True)
    with pytest.raises(KeyHandleError, match="stays in the HSM"):
        source.derive("transit", "dlk", None).value()
    with pytest.raises(KeyHandleError, match="stays in the HSM"):
        source.derive("transit", "dlk", FACTOR).value()
    # C_WrapKey under a key of our own: refused (not extractable)
    t = source._token
    aes = t.session.generateKey([(P.CKA_CLASS, P.CKO_SECRET_KEY), (P.CKA_KEY_TYPE, P.CKK_AES), (P.CKA_VALUE_LEN, 32),
                                 (P.CKA_TOKEN, False), (P.CKA_WRAP, True)], P.Mechanism(P.CKM_AES_KEY_GEN))
    master = source.master("transit", "dlk")
    with pytest.raises(P.PyKCS11Error, match="UNEXTRACTABLE"):
        t.session.wrapKey(aes, master.obj, P.Mechanism(P.CKM_AES_KEY_WRAP))
    with pytest.raises(P.PyKCS11Error):
        t.session.setAttributeValue(master.obj, [(P.CKA_EXTRACTABLE, True)])


def test_keys_list_shows_labels_and_kcvs_of_the_keystore(hsm, loaded, run_cli, tmp_path, monkeypatch):
    r = run_cli("keys", "list", hsm.uri(), "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["source"] == "pkcs11:token=citycard-test" and doc["derivation"] == "in the token"
    got = {(k["unit"], k["name"]): (k["kcv"], k["label"], k["sensitive"], k["extractable"]) for k in doc["keys"]}
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "a passphrase for the demo keystore")
    ks = tmp_path / "demo.cks"
    write_demo(ks, "a passphrase for the demo keystore", DEMO_KEYS, n=2 ** 8).close()
    r2 = run_cli("keys", "list", str(ks), "--json")
    want = {(k["unit"], k["name"]): k["kcv"] for k in r2.json()["keys"]}
    assert {k: v[0] for k, v in got.items()} == want
    assert all(label == f"{u}/{n}" and sens and not extr for (u, n), (_k, label, sens, extr) in got.items())
    r = run_cli("keys", "list", hsm.uri())
    assert r.exit_code == 0 and "transit  dlk" in r.stdout and "F3961D" in r.stdout
    _no_secret(r.stdout + r.stderr, hsm)
    r = run_cli("keys", "list", hsm.uri("citycard-empty"))
    assert r.exit_code == 0 and ": 0 master keys" in r.stdout


def test_import_refuses_to_replace_and_from_a_keystore(hsm, loaded, run_cli, tmp_path, monkeypatch):
    r = run_cli("keys", "hsm-import", hsm.uri(), "--from", str(DEMO_KEYS), "--unit", "transit")
    assert r.exit_code == 2 and "already holds transit/damk version 1" in r.stderr
    pw = "the passphrase of a ceremony keystore"
    ks = tmp_path / "library.cks"
    write_demo(ks, pw, DEMO_KEYS, unit="library", n=2 ** 8).close()
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", pw)
    r = run_cli("keys", "hsm-import", hsm.uri("citycard-empty"), "--from", str(ks))
    assert r.exit_code == 0, r.stderr
    # write_demo marks its keystore as TEST KEYS (issue 17 item 5): the import says so
    assert "stored library/damk version 1" in r.stdout and "the demo TEST KEYS of library.cks" in r.stderr
    with open_source(hsm.uri("citycard-empty")) as src:
        assert src.entries() == {("library", "damk"), ("library", "master")}
        assert src.kcv("library", "damk") == crypto.kcv(MASTERS[("library", "damk")])


def test_key_ceremony_into_the_token(hsm, loaded, run_cli, monkeypatch):
    from citycard.cli import keyopts

    monkeypatch.setattr(keyopts, "_interactive", lambda: True)
    a, b = "11" * 16, "0123456789ABCDEFFEDCBA9876543210"
    key = crypto.xor(bytes.fromhex(a), bytes.fromhex(b))
    r = run_cli("keys", "hsm-import", hsm.uri("citycard-empty"), "--unit", "bus", "--name", "dlk", "--version", "2",
                input=f"{a}\n{b}\ny\n")
    assert r.exit_code == 0, r.stderr
    assert f"combined key KCV {crypto.kcv(key).hex().upper()}" in r.stdout
    assert key.hex().upper() not in (r.stdout + r.stderr).upper()
    with open_source(hsm.uri("citycard-empty")) as src:
        assert src.versions("bus", "dlk") == [2]
        assert src.kcv("bus", "dlk") == crypto.kcv(key)


# ------------------------------------------------------------------------------ derivation
@pytest.mark.parametrize("role", [("transit", "dlk"), ("hrss", "pin-reload"), ("card", "mf-master")])
def test_derived_keys_match_the_clear_computation(source, role):
    master = MASTERS[role]
    dk = crypto.diversify(master, FACTOR)
    h = source.derive(*role, FACTOR)
    assert isinstance(h, KeyHandle) and len(h) == 16 and not h.exportable
    assert h.kcv() == crypto.kcv(dk)
    assert h[:8].kcv() == crypto.kcv(dk[:8]) and h[8:].kcv() == crypto.kcv(dk[8:])
    data = bytes(range(40))
    iv = bytes.fromhex("A1B2C3D400000000")
    assert crypto.line_mac(h, iv[:4], data) == crypto.line_mac(dk, iv[:4], data)
    assert crypto.line_mac(h[:8], iv[:4], data) == crypto.line_mac(dk[:8], iv[:4], data)
    assert crypto.encipher(h, data[:21]) == crypto.encipher(dk, data[:21])
    assert crypto.ecb_decrypt(h, data[:16]) == crypto.ecb_decrypt(dk, data[:16])
    assert crypto.tac_key(h).kcv() == crypto.kcv(crypto.tac_key(dk))
    ses_h = pboc.load_session_key(h, b"\x01\x02\x03\x04", 7)
    assert isinstance(ses_h, KeyHandle) and len(ses_h) == 8
    ses = pboc.load_session_key(dk, b"\x01\x02\x03\x04", 7)
    assert pboc.load_mac1(ses_h, 100, 5, 2, bytes(6)) == pboc.load_mac1(ses, 100, 5, 2, bytes(6))
    term = bytes.fromhex("112233445566")
    c_h = pboc.purchase_cryptogram(h, h, random=b"\x09\x08\x07\x06", counter=3, terminal_serial=b"\x00\x00\x00\x05",
                                   amount=150, terminal=term, date=bytes.fromhex("20261124"),
                                   time=bytes.fromhex("120000"))
    c = pboc.purchase_cryptogram(dk, dk, random=b"\x09\x08\x07\x06", counter=3, terminal_serial=b"\x00\x00\x00\x05",
                                 amount=150, terminal=term, date=bytes.fromhex("20261124"), time=bytes.fromhex("120000"))
    assert (c_h.mac1, c_h.mac2, c_h.tac) == (c.mac1, c.mac2, c.tac)
    exported = source.derive(*role, FACTOR, export=True)
    assert exported.exportable and exported.value() == dk and exported[:8].value() == dk[:8]
    two = bytes.fromhex("3301000000000000") + FACTOR
    assert source.derive(*role, two, 2).kcv() == crypto.kcv(crypto.diversify(master, two, 2))


def test_transport_key_used_as_it_is(source):
    """A master used directly (the factory key) MACs with its single-DES halves."""
    t = source.derive("factory", "transport", None)
    assert t.kcv() == crypto.kcv(b"\xff" * 16)
    assert crypto.line_mac(t, b"\x01\x02\x03\x04", b"abc" * 9) == crypto.line_mac(b"\xff" * 16, b"\x01\x02\x03\x04",
                                                                                b"abc" * 9)
    with pytest.raises(KeyError_, match="--direct"):
        source.derive("transit", "dlk", None)[:8]


def test_fallback_without_derivation_mechanism(hsm, loaded):
    """A token lacking CKM_DES3_ECB_ENCRYPT_DATA: C_Encrypt of F ‖ ~F, then a session object."""
    with open_source(hsm.uri()) as src:
        src._token.can_derive = False
        dk = crypto.diversify(MASTERS[("transit", "dtk")], FACTOR)
        h = src.derive("transit", "dtk", FACTOR)
        assert h.kcv() == crypto.kcv(dk) and h[8:].kcv() == crypto.kcv(dk[8:])
        assert crypto.tac_key(h).kcv() == crypto.kcv(crypto.tac_key(dk))


def test_uri_and_pin_errors_name_no_pin(hsm, loaded, tmp_path, monkeypatch):
    bad = tmp_path / "pin"
    bad.write_text("999999\n")
    with pytest.raises(KeyError_, match="wrong PIN") as info:
        open_source(hsm.uri(pin_source=f"file:{bad}"))
    assert "999999" not in str(info.value)
    good = tmp_path / "good"
    good.write_text(hsm.pin + "\n")
    with open_source(hsm.uri(pin_source=str(good))) as src:
        assert ("transit", "dlk") in src.entries()
    monkeypatch.setenv("CITYCARD_HSM_PIN", hsm.pin)
    with open_source(f"pkcs11:token=citycard-test?module-path={hsm.module}") as src:
        assert src.name == "pkcs11:token=citycard-test"
    monkeypatch.delenv("CITYCARD_HSM_PIN")
    with pytest.raises(KeyError_, match="no PIN"):
        open_source(f"pkcs11:token=citycard-test?module-path={hsm.module}")
    with pytest.raises(KeyError_, match="no such token"):
        open_source(hsm.uri("no-such-token"))
    with pytest.raises(KeyError_, match="not set"):
        open_source(hsm.uri(pin_source="env:CITYCARD_NO_SUCH_VARIABLE"))
    with pytest.raises(KeyError_, match="unknown query attribute 'colour'"):
        open_source("pkcs11:token=x?colour=blue")
    with pytest.raises(KeyError_, match="cannot load the PKCS#11 module"):
        open_source(f"pkcs11:token=x?module-path={tmp_path / 'nothing.so'}")


# ------------------------------------------------------------------------------ perso
def test_perso_through_the_hsm_makes_the_same_card(hsm, loaded, run_cli, tmp_path, capture):
    outputs = []

    def cli(*args, expect=0):
        r = run_cli("-l", "DEBUG", "--transcript", str(tmp_path / "transcript.txt"), *args)
        outputs.append(r.stdout + r.stderr)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            outputs.append("".join(traceback.format_exception(r.exception)))
        assert r.exit_code == expect, (args, r.stdout, r.stderr)
        return r

    common = ["--profile", str(PROFILE), "--data", str(DATA), "--row", "1", "--issue-date", DAY]
    a, b = tmp_path / "hsm.json", tmp_path / "file.json"
    for img in (a, b):
        cli("sim", "new", str(img))
    r = cli("perso", *common, "--keys", hsm.uri(), "--sim", str(a), "--dry-run")
    # exported: the MF's and the 5 applications' masters (plaintext right after their KEY file) and
    # the load key (added with a MAC: SPEC §6 R4); enciphered by the HSM: the flagged keys (CIPHK)
    assert r.stdout.count(EXPORTED) == 7
    assert "WRITE KEY master (39/00) in mf: the master, plaintext [key exported from the HSM]" in r.stdout
    assert "WRITE KEY dlk (3F/00) in transit under MAC of the master [key exported from the HSM]" in r.stdout
    assert ("WRITE KEY dpk (FE/00) in transit under cipher+MAC of the master [key enciphered by the HSM]"
            in r.stdout)
    assert r.stdout.count("[key enciphered by the HSM]") == 11    # the flagged keys but the PINs (not in an HSM)
    r = cli("perso", *common, "--keys", hsm.uri(), "--sim", str(a))
    assert "verified: " in r.stdout
    cli("perso", *common, "--keys", str(DEMO_KEYS), "--sim", str(b))
    keys_a = image_keys(a)
    assert len(keys_a) >= 20 and keys_a == image_keys(b)
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    # redone through the HSM: erased with its MF master, the MF master written back (exported)
    r = cli("perso", *common, "--keys", hsm.uri(), "--sim", str(a), "--json", "--reissue-card")
    assert r.json()["rerun"] is True
    # purse and services through the HSM
    purse = ["--profile", str(PROFILE), "--keys", hsm.uri(), "--sim", str(a)]
    cli("purse", "load", *purse, "--amount", "25.00")
    cli("purse", "purchase", *purse, "--amount", "1.50")
    r = cli("purse", "balance", *purse, "--json")
    assert r.json() == {"balance_fen": 2350, "balance_yuan": "23.50"}
    cli("purse", "purchase", *purse, "--amount", "0.50", "--capp-station", "0102", "--capp-line", "03")
    r = cli("dump", "--sim", str(a), "--profile", str(PROFILE), "--keys", hsm.uri())
    assert "balance 23.00 yuan" in r.stdout
    text = "\n".join(outputs) + (tmp_path / "transcript.txt").read_text() + capture.text
    text += "\n".join(rec.getMessage() for rec in capture.records)
    _no_secret(text, hsm)


def test_plain_write_needs_export_and_redo_without_it(hsm, source, tmp_path):
    text = PROFILE.read_text().replace(", export = true", "")
    bare = tmp_path / "bare.toml"
    bare.write_text(text)
    spec = load_profile(bare)
    data = read_csv(DATA)
    ring = KeyRing([source])
    card = CardData(data.row(1), 1, datetime.date(2026, 11, 24), data.where(1))
    with pytest.raises(CitycardError, match="mf.keys.master: the key comes from a hardware security module "
                                            "and WRITE KEY plain sends it in clear: put export = true"):
        Planner(spec, ring).plan(card)
    # the MF master too: after ERASE DF it is added in plaintext (SPEC §6 R2, R4), first pass or redo
    only_apps = PROFILE.read_text().replace('tries = 15, export = true,', 'tries = 15,')
    p2 = tmp_path / "apps.toml"
    p2.write_text(only_apps)
    with pytest.raises(CitycardError, match=r"mf.keys.master: .*\(the master of a DF is always written plain\)"):
        Planner(load_profile(p2), ring).plan(card)
    # the load key goes with a MAC only (in clear): it needs export too
    no_dlk = PROFILE.read_text().replace('master = "dlk", write = "mac", export = true', 'master = "dlk", write = "mac"')
    p3 = tmp_path / "dlk.toml"
    p3.write_text(no_dlk)
    with pytest.raises(CitycardError, match="apps.transit.keys.dlk: .* WRITE KEY with a MAC only sends it in clear"):
        Planner(load_profile(p3), ring).plan(card)
    # with the profile's exports the card is made, and redone (taken over with its MF master handle)
    full = load_profile(PROFILE)
    plan = Planner(full, ring).plan(card)
    session = CardSession(SimTransport(SimCard()))
    session.transport.connect()
    assert personalize(session, full, plan).verified
    again = personalize(session, full, plan, reissue=True)
    assert again.rerun and again.verified


def test_library_purse_and_services_with_hsm_keys(source):
    spec = load_profile(PROFILE)
    data = read_csv(DATA)
    ring = KeyRing([source])
    t = SimTransport(SimCard())
    t.connect()
    session = CardSession(t)
    plan = Planner(spec, ring).plan(CardData(data.row(2), 2, datetime.date(2026, 11, 24), data.where(2)))
    assert all(isinstance(v, KeyHandle) for v in plan.keys.values())
    assert personalize(session, spec, plan).verified
    term = PurseTerminal(session, spec, ring)
    assert term.load(1000).balance_after == 1000
    assert term.purchase(250).balance_after == 750
    from citycard.terminal.purse import PurseError
    with pytest.raises(PurseError, match=r"ED command.*SPEC §6 R18"):     # unload: ED only (R18, UM 8.10): refused
        #   by the host before INITIALIZE (the card would answer 6A86: tests/test_sim_realcard.py)
        term.unload(100)
    svc = CardServices(session, spec, ring)
    social = next(a for a in spec.apps if a.name == "social")
    svc.reload_pin(social, "654321")
    svc.verify_pin(social, "654321")
    svc.unblock_pin(social, "112233")
    svc.verify_pin(social, "112233")
    library = next(a for a in spec.apps if a.name == "library")
    svc.block_app(library)
    svc.unblock_app(library)
    # the same card, the same terminal with the clear demo keys: same keys on both sides
    file_ring = KeyRing([DemoKeyFile(DEMO_KEYS)])
    assert PurseTerminal(session, spec, file_ring).purchase(50).balance_after == 700


def test_batch_workers_share_the_hsm(hsm, loaded, run_cli, tmp_path):
    r = run_cli("batch", "run", "--profile", str(PROFILE), "--keys", hsm.uri(), "--data", str(DATA),
                "--journal", str(tmp_path / "j.db"), "--sims", "2", "--limit", "6", "--issue-date", DAY, "--json",
                "--keep-cards", str(tmp_path / "cards"))
    assert r.exit_code == 0, r.stderr
    assert r.json()["verified"] == 6


def test_scripts_use_hsm_keys(hsm, loaded, run_cli, tmp_path):
    """The script engine (auth, protect, mac) with per-card keys derived in the token."""
    from citycard.cli.main import cli

    if "script" not in cli.list_commands(None):
        pytest.skip("no `citycard script` command in this tree")
    card = tmp_path / "card.json"
    assert run_cli("sim", "new", str(card)).exit_code == 0
    r = run_cli("perso", "--profile", str(PROFILE), "--data", str(DATA), "--row", "1", "--issue-date", DAY,
                "--keys", hsm.uri(), "--sim", str(card))
    assert r.exit_code == 0, r.stderr
    for example in ("line-protection", "transit"):
        r = run_cli("script", "run", str(ROOT / "examples" / f"{example}.cardscript"), "--sim", str(card),
                    "--profile", str(PROFILE), "--keys", hsm.uri())
        assert r.exit_code == 0, (example, r.stdout[-2000:], r.stderr)
        _no_secret(r.stdout + r.stderr, hsm)


def test_dropped_per_card_keys_leave_no_objects(source):
    import PyKCS11 as P

    t = source._token

    def session_objects() -> int:
        return len(t._call("count", lambda: t.session.findObjects([(P.CKA_TOKEN, False)])))

    before = session_objects()
    for i in range(40):
        factor = bytes.fromhex(f"3301{i:012d}")
        h = source.derive("transit", "dlk", factor)
        pboc.load_mac1(pboc.load_session_key(h, b"\x01\x02\x03\x04", i), 0, 1, 2, bytes(6))
        crypto.line_mac(h, b"\x00" * 4, b"x")
        crypto.tac_key(source.derive("transit", "dtk", factor)).kcv()
        del h
    assert session_objects() <= before + 1


def test_key_inventory_in_the_token(hsm, loaded, run_cli, monkeypatch):
    """A token's masters have a state and dates too (a data object of the token): a compromised
    master is refused for issuing and for cards already issued, by name; a retired one still
    serves named versions; the listing shows it; nothing about it prints a key or the PIN."""
    from citycard.keys import KeyError_

    uri = hsm.uri()
    r = run_cli("keys", "set", uri, "--unit", "library", "--name", "damk", "--version", "1", "--state", "retired",
                "--expiry", "2099-01-01")
    assert r.exit_code == 0, r.stderr
    r = run_cli("keys", "set", uri, "--unit", "library", "--name", "master", "--version", "1", "--state",
                "compromised")
    assert r.exit_code == 0 and "compromised" in r.stdout, r.stderr
    src = open_source(uri)
    try:
        assert src.derive("library", "damk", FACTOR, version=1) is not None        # a retired version, named
        with pytest.raises(KeyError_, match="no version of library/damk may be used today .version 1 retired"):
            src.derive("library", "damk", FACTOR)
        with pytest.raises(KeyError_, match="library/master version 1 is compromised"):
            src.derive("library", "master", FACTOR, version=1)
        assert src.kcv("library", "master") == crypto.kcv(MASTERS[("library", "master")])   # still listed
    finally:
        src.close()
    listed = run_cli("keys", "list", uri, "--json").json()["keys"]
    assert {(k["unit"], k["name"]): k["state"] for k in listed}[("library", "master")] == "compromised"
    r = run_cli("keys", "set", uri, "--unit", "library", "--name", "master", "--version", "1", "--state", "active")
    assert r.exit_code == 2 and "stays compromised" in r.stderr
    _no_secret(r.stdout + r.stderr, hsm)
    # put the token back as the other tests of the module found it (a fresh inventory)
    src = open_source(uri)
    try:
        from citycard.keys.pkcs11_inventory import write_inventory

        write_inventory(src._token, src.name, {})
    finally:
        src.close()
