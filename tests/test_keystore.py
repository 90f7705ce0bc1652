"""The encrypted keystore (citycard.keys.keystore) and `citycard keys`."""

from __future__ import annotations

import base64
import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from tests.conftest import image_keys

from citycard import crypto
from citycard.cli import keyopts
from citycard.errors import CitycardError, InputError
from citycard.keys import KeyError_, KeyRing, KeySource, open_source
from citycard.keys.demo import DemoKeyFile
from citycard.keys.keystore import (Keystore, KeystoreAuthError, KeystoreError, KeystoreFormatError,
                                    read_header)

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
PW = "correct horse battery staple"
N = 16                                    # scrypt cost for the library tests (the CLI uses 2**15)
K1 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
K2 = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
K3 = bytes.fromhex("A1B2C3D4E5F60718293A4B5C6D7E8F90")
FACTOR = bytes.fromhex("3301000000000001")


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "transit.cks"
    ks = Keystore.create(path, PW, unit="transit", n=N)
    ks.add("transit", "dlk", K1)
    ks.add("transit", "dlk", K3, version=2)
    ks.add("transit", "dpk", K2, algorithm="sm4")
    ks.save()
    ks.close()
    return path


def test_round_trip(store_path):
    ks = Keystore.open(store_path, PW)
    assert isinstance(ks, KeySource)
    assert ks.unit == "transit"
    assert ks.entries() == {("transit", "dlk"), ("transit", "dpk")}
    assert ks.versions("transit", "dlk") == [1, 2]
    assert [(i.unit, i.name, i.version, i.algorithm) for i in ks.keys()] == [
        ("transit", "dlk", 1, "3des"), ("transit", "dlk", 2, "3des"), ("transit", "dpk", 1, "sm4")]
    # derivation: newest version by default, the entry's algorithm
    assert ks.derive("transit", "dlk", FACTOR) == crypto.diversify(K3, FACTOR)
    assert ks.derive("transit", "dlk", FACTOR, version=1) == crypto.diversify(K1, FACTOR)
    assert ks.derive("transit", "dpk", FACTOR) == crypto.diversify(K2, FACTOR, 1, "sm4")
    assert ks.derive("transit", "dlk", None, version=1) == K1
    two = FACTOR + bytes.fromhex("1122334455667788")
    assert ks.derive("transit", "dlk", two, levels=2) == crypto.diversify(K3, two, 2)
    assert ks.kcv("transit", "dlk", version=1) == crypto.kcv(K1)
    assert ks.kcv("transit", "dpk") == crypto.kcv(K2, "sm4")
    with pytest.raises(KeyError_, match="holds no key transit/dlk version 3"):
        ks.derive("transit", "dlk", FACTOR, version=3)
    with pytest.raises(KeyError_, match="holds no key transit/dtk"):
        ks.kcv("transit", "dtk")
    # nothing of a key in repr
    for text in (repr(ks), repr(ks.keys()), repr(ks._entries)):
        for k in (K1, K2, K3):
            assert k.hex().upper() not in text.upper() and repr(k) not in text
    ks.close()
    with pytest.raises(KeystoreError, match="closed"):
        ks.derive("transit", "dlk", FACTOR)


def test_file_holds_no_clear_key_and_is_private(store_path):
    raw = store_path.read_bytes()
    for k in (K1, K2, K3):
        for form in (k.hex().upper(), k.hex(), k.hex().upper()[:16], k.hex().upper()[16:]):
            assert form.encode() not in raw
        assert base64.b64encode(k) not in raw
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    doc = json.loads(raw)
    assert set(doc) == {"format", "version", "unit", "kdf", "check", "nonce", "ciphertext"}
    assert doc["format"] == "citycard-keystore" and doc["version"] == 1 and doc["unit"] == "transit"
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["n"] == N
    header, _ = read_header(store_path)
    assert header.unit == "transit" and header.n == N


def test_each_save_uses_a_fresh_nonce(store_path):
    before = json.loads(store_path.read_text())
    ks = Keystore.open(store_path, PW)
    ks.save()
    after = json.loads(store_path.read_text())
    assert before["nonce"] != after["nonce"] and before["ciphertext"] != after["ciphertext"]
    assert Keystore.open(store_path, PW).derive("transit", "dlk", None, version=1) == K1


def test_default_cost(tmp_path):
    ks = Keystore.create(tmp_path / "k.cks", PW)
    assert json.loads((tmp_path / "k.cks").read_text())["kdf"] == {**json.loads(
        (tmp_path / "k.cks").read_text())["kdf"], "n": 2 ** 15, "r": 8, "p": 1}
    ks.close()


def test_wrong_passphrase(store_path):
    with pytest.raises(KeystoreAuthError) as info:
        Keystore.open(store_path, "correct horse battery stapler")
    msg = str(info.value)
    assert msg == f"{store_path}: wrong passphrase for this keystore (or its header was altered)"
    assert "stapler" not in msg and "\n" not in msg
    with pytest.raises(InputError, match="passphrase is empty"):
        Keystore.open(store_path, "")


def _secrets_in(text: str) -> list[str]:
    up = text.upper()
    return [k.hex() for k in (K1, K2, K3) if k.hex().upper() in up or k.hex().upper()[:16] in up
            or k.hex().upper()[16:] in up] + (["passphrase"] if PW in text else [])


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_every_flipped_byte_is_detected(store_path, mask):
    good = store_path.read_bytes()
    kinds: set[str] = set()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= mask
        store_path.write_bytes(bytes(bad))
        with pytest.raises(KeystoreError) as info:
            Keystore.open(store_path, PW)
        msg = str(info.value)
        assert msg.startswith(f"{store_path}: ") and "\n" not in msg, (i, msg)
        assert not _secrets_in(msg)
        kinds.add(type(info.value).__name__)
    # both the envelope checks and the authentication caught some of them (0x80 only makes bad UTF-8)
    assert kinds == ({"KeystoreFormatError"} if mask == 0x80 else {"KeystoreFormatError", "KeystoreAuthError"})
    store_path.write_bytes(good)
    assert Keystore.open(store_path, PW).derive("transit", "dpk", None) == K2


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def _b64_other(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("what,change,error", [
    ("unit lifted", lambda d: d.update(unit=None), KeystoreAuthError),
    ("unit changed", lambda d: d.update(unit="library"), KeystoreAuthError),
    ("cheaper kdf", lambda d: d["kdf"].update(n=8), KeystoreAuthError),
    ("kdf r", lambda d: d["kdf"].update(r=1), KeystoreAuthError),
    ("salt", lambda d: d["kdf"].update(salt=_b64_other(d["kdf"]["salt"])), KeystoreAuthError),
    ("check", lambda d: d.update(check=_b64_other(d["check"])), KeystoreAuthError),
    ("nonce", lambda d: d.update(nonce=_b64_other(d["nonce"])), KeystoreAuthError),
    ("ciphertext", lambda d: d.update(ciphertext=_b64_other(d["ciphertext"])), KeystoreAuthError),
    ("truncated ciphertext", lambda d: d.update(ciphertext=d["ciphertext"][:-4]), KeystoreAuthError),
    ("version", lambda d: d.update(version=2), KeystoreFormatError),
    ("version as true", lambda d: d.update(version=True), KeystoreFormatError),
    ("n as float", lambda d: d["kdf"].update(n=16.0), KeystoreFormatError),
    ("n not a power of 2", lambda d: d["kdf"].update(n=24), KeystoreFormatError),
    ("huge n", lambda d: d["kdf"].update(n=2 ** 30), KeystoreFormatError),
    ("kdf name", lambda d: d["kdf"].update(name="pbkdf2"), KeystoreFormatError),
    ("extra field", lambda d: d.update(comment="hi"), KeystoreFormatError),
    ("missing field", lambda d: d.pop("check"), KeystoreFormatError),
    ("format", lambda d: d.update(format="other"), KeystoreFormatError),
    ("non-canonical base64", lambda d: d["kdf"].update(salt=d["kdf"]["salt"][:-3] + "B=="), KeystoreFormatError),
])
def test_header_edits_are_detected(store_path, what, change, error):
    _edit(store_path, change)
    with pytest.raises(error):
        Keystore.open(store_path, PW)


def test_reformatting_is_not_tampering(store_path):
    """The header is bound by value: the same JSON laid out differently still opens."""
    doc = json.loads(store_path.read_text())
    store_path.write_text(json.dumps(dict(reversed(list(doc.items())))))
    assert Keystore.open(store_path, PW).derive("transit", "dlk", None, version=1) == K1


def test_swapped_ciphertext_of_another_keystore_is_detected(store_path, tmp_path):
    other = Keystore.create(tmp_path / "o.cks", PW, unit="transit", n=N)
    other.add("transit", "dlk", K2)
    other.save()
    o = json.loads((tmp_path / "o.cks").read_text())
    _edit(store_path, lambda d: d.update(nonce=o["nonce"], ciphertext=o["ciphertext"]))
    with pytest.raises(KeystoreAuthError, match="altered"):
        Keystore.open(store_path, PW)


@pytest.mark.parametrize("content,match", [
    (b"", "not a citycard keystore"),
    (b"[transit]\ndlk = '00'\n", "not a citycard keystore"),
    (b'{"format": "citycard-sim-image"}', "not a citycard keystore"),
    (b'{"format": "citycard-keystore", ', "damaged keystore"),
    (b"\xff\xfe", "not a citycard keystore"),
])
def test_not_a_keystore(tmp_path, content, match):
    path = tmp_path / "x.cks"
    path.write_bytes(content)
    with pytest.raises(KeystoreFormatError, match=match):
        Keystore.open(path, PW)


def test_missing_and_existing(tmp_path, store_path):
    with pytest.raises(KeystoreError, match="no such keystore"):
        Keystore.open(tmp_path / "none.cks", PW)
    with pytest.raises(KeystoreError, match="is a folder"):
        Keystore.open(tmp_path, PW)
    with pytest.raises(KeystoreError, match="already exists"):
        Keystore.create(store_path, PW, n=N)
    with pytest.raises(InputError, match="too short"):
        Keystore.create(tmp_path / "new.cks", "short", n=N)
    with pytest.raises(InputError, match="scrypt parameters"):
        Keystore.create(tmp_path / "new.cks", PW, n=1000)


@pytest.mark.parametrize("fail", ["fsync", "replace", "write"])
def test_failed_write_leaves_the_old_file(store_path, monkeypatch, fail):
    before = store_path.read_bytes()
    ks = Keystore.open(store_path, PW)
    ks.add("transit", "dtk", K3)

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    if fail == "write":                      # the disk fills up half way through the file
        real_fdopen = os.fdopen

        class HalfFull:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                boom()

        monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfFull(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(os, fail, boom)
    with pytest.raises(KeystoreError, match="cannot write the keystore .No space left on device."):
        ks.save()
    monkeypatch.undo()
    assert store_path.read_bytes() == before
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["transit.cks"]   # no temporary file left
    assert Keystore.open(store_path, PW).entries() == {("transit", "dlk"), ("transit", "dpk")}


def test_unit_restriction_and_uniqueness(store_path, tmp_path):
    ks = Keystore.open(store_path, PW)
    with pytest.raises(KeystoreError, match="holds the keys of unit 'transit' only, not 'library'"):
        ks.add("library", "master", K1)
    with pytest.raises(KeystoreError, match="already holds transit/dlk version 1"):
        ks.add("transit", "dlk", K2)
    with pytest.raises(InputError, match="16 bytes"):
        ks.add("transit", "dtk", K1[:8])
    with pytest.raises(InputError, match="algorithm"):
        ks.add("transit", "dtk", K1, algorithm="aes")
    with pytest.raises(InputError, match="unit"):
        ks.add("transit/x", "dtk", K1)
    with pytest.raises(InputError, match="version"):
        ks.add("transit", "dtk", K1, version=0)
    # an unrestricted keystore takes any unit
    free = Keystore.create(tmp_path / "all.cks", PW, n=N)
    free.add("library", "master", K1)
    free.add("transit", "master", K2)
    assert free.entries() == {("library", "master"), ("transit", "master")}


def test_remove_and_change_passphrase(store_path):
    ks = Keystore.open(store_path, PW)
    assert ks.remove("transit", "dlk", 2).version == 2
    with pytest.raises(KeystoreError, match="holds no key transit/dlk version 2"):
        ks.remove("transit", "dlk", 2)
    ks.change_passphrase("a whole new passphrase")
    ks.save()
    with pytest.raises(KeystoreAuthError):
        Keystore.open(store_path, PW)
    again = Keystore.open(store_path, "a whole new passphrase")
    assert again.versions("transit", "dlk") == [1]
    assert again.derive("transit", "dlk", FACTOR) == crypto.diversify(K1, FACTOR)


def test_key_ring_over_keystores(tmp_path, store_path):
    lib = Keystore.create(tmp_path / "library.cks", PW, unit="library", n=N)
    lib.add("library", "master", K2)
    ring = KeyRing([Keystore.open(store_path, PW), lib])
    assert ring.has("transit", "dlk") and ring.has("library", "master") and not ring.has("bike", "master")
    assert ring.derive("library", "master", FACTOR) == crypto.diversify(K2, FACTOR)
    assert ring.derive("transit", "dlk", FACTOR, version=1) == crypto.diversify(K1, FACTOR)
    assert ring.kcv("transit", "dlk") == crypto.kcv(K3)
    assert "transit.cks" in ring.name and "library.cks" in ring.name
    with pytest.raises(KeyError_, match="is in two key sources"):
        KeyRing([Keystore.open(store_path, PW), Keystore.open(store_path, PW)])
    ring.close()
    with pytest.raises(KeystoreError, match="closed"):
        ring.derive("library", "master", FACTOR)


def test_open_source_by_name(store_path):
    assert isinstance(open_source(str(DEMO_KEYS)), DemoKeyFile)
    assert open_source(str(store_path), PW).entries() == {("transit", "dlk"), ("transit", "dpk")}
    seen = []
    assert open_source(str(store_path), lambda h: seen.append((h.path, h.unit)) or PW).unit == "transit"
    assert seen == [(str(store_path), "transit")]
    with pytest.raises(KeyError_, match="pin-value is refused") as info:
        open_source("pkcs11:token=bureau?pin-value=123456")
    assert "123456" not in str(info.value)
    with pytest.raises(KeyError_, match="object= names one object") as info:
        open_source("pkcs11:token=bureau;object=transit?pin-source=env:SECRET_PIN_VAR")
    assert "SECRET_PIN_VAR" not in str(info.value)


def test_demo_key_file_versions():
    demo = DemoKeyFile(DEMO_KEYS)
    assert demo.kcv("transit", "dlk", version=1) == demo.kcv("transit", "dlk")
    with pytest.raises(KeyError_, match="only version 1"):
        demo.derive("transit", "dlk", FACTOR, version=2)


# ---------------------------------------------------------------------- CLI
@pytest.fixture
def env_pw(monkeypatch):
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", PW)
    return PW


@pytest.fixture
def tty(monkeypatch):
    monkeypatch.setattr(keyopts, "_interactive", lambda: True)


@pytest.fixture
def no_tty(monkeypatch):
    monkeypatch.setattr(keyopts, "_interactive", lambda: False)
    monkeypatch.delenv("CITYCARD_KEYSTORE_PASSPHRASE", raising=False)


def _all_output(r) -> str:
    return r.stdout + r.stderr


def test_cli_create_generate_list(tmp_path, run_cli, env_pw):
    ks = str(tmp_path / "t.cks")
    r = run_cli("keys", "create", ks, "--unit", "transit")
    assert r.exit_code == 0, r.stderr
    assert "created keystore" in r.stdout and "unit transit" in r.stdout
    assert stat.S_IMODE(os.stat(ks).st_mode) == 0o600
    r = run_cli("keys", "create", ks)
    assert r.exit_code == 2 and "already exists" in r.stderr
    gens = []
    for name, alg in (("dlk", "3des"), ("dpk", "sm4")):
        r = run_cli("keys", "generate", ks, "--unit", "transit", "--name", name, "--algorithm", alg)
        assert r.exit_code == 0, r.stderr
        gens.append(r)
    r = run_cli("keys", "generate", ks, "--unit", "library", "--name", "master")
    assert r.exit_code == 2 and "holds the keys of unit 'transit' only" in r.stderr
    r = run_cli("keys", "generate", ks, "--unit", "transit", "--name", "dlk")
    assert r.exit_code == 2 and "already holds transit/dlk version 1" in r.stderr
    r = run_cli("keys", "generate", ks, "--unit", "transit", "--name", "dlk", "--version", "2")
    assert r.exit_code == 0
    gens.append(r)
    store = Keystore.open(ks, PW)
    masters = [store.derive("transit", "dlk", None, version=1), store.derive("transit", "dpk", None),
               store.derive("transit", "dlk", None, version=2)]
    assert len(set(masters)) == 3
    assert crypto.kcv(masters[0]).hex().upper() in gens[0].stdout
    assert crypto.kcv(masters[1], "sm4").hex().upper() in gens[1].stdout
    listing = run_cli("keys", "list", ks)
    as_json = run_cli("keys", "list", ks, "--json")
    assert listing.exit_code == 0 and as_json.exit_code == 0
    rows = as_json.json()["keys"]
    assert [(k["unit"], k["name"], k["version"], k["algorithm"]) for k in rows] == [
        ("transit", "dlk", 1, "3des"), ("transit", "dlk", 2, "3des"), ("transit", "dpk", 1, "sm4")]
    assert set(rows[0]) == {"unit", "name", "version", "algorithm", "kcv", "created", "state", "activation", "expiry"}
    assert as_json.json()["unit"] == "transit"
    assert "(unit transit only): 3 keys" in listing.stdout
    for line, info in zip(listing.stdout.splitlines()[2:], store.keys()):
        assert line.split()[:5] == [info.unit, info.name, str(info.version), info.algorithm,
                                    info.kcv.hex().upper()]
    text = "".join(_all_output(r) for r in [*gens, listing, as_json]).upper()
    for m in masters:
        h = m.hex().upper()
        assert h not in text and h[:16] not in text and h[16:] not in text
    assert PW.upper() not in text


@pytest.mark.parametrize("n", [2, 3])
def test_cli_import_components(tmp_path, run_cli, env_pw, tty, n):
    ks = str(tmp_path / "t.cks")
    assert run_cli("keys", "create", ks, "--unit", "transit").exit_code == 0
    comps = [K1, K2, K3][:n]
    typed = [c.hex() if i % 2 else " ".join(c.hex().upper()[j:j + 4] for j in range(0, 32, 4))
             for i, c in enumerate(comps)]           # spaces and lower case are fine
    r = run_cli("keys", "import", ks, "--unit", "transit", "--name", "dlk", "--components", str(n),
                input="\n".join(typed) + "\ny\n")
    assert r.exit_code == 0, r.stderr
    combined = comps[0]
    for c in comps[1:]:
        combined = crypto.xor(combined, c)
    for i, c in enumerate(comps, 1):
        assert f"component {i} KCV {crypto.kcv(c).hex().upper()}" in r.stdout
    assert f"combined key KCV {crypto.kcv(combined).hex().upper()}" in r.stdout
    assert f"stored transit/dlk version 1 (3des, KCV {crypto.kcv(combined).hex().upper()})" in r.stdout
    # the stored key is the XOR: a per-card key derived from it matches one computed here
    store = Keystore.open(ks, PW)
    assert store.derive("transit", "dlk", FACTOR) == crypto.diversify(combined, FACTOR)
    out = _all_output(r).upper()
    for k in [*comps, combined]:
        h = k.hex().upper()
        assert h not in out and h[:16] not in out and h[16:] not in out
    assert "0123 4567" not in out


def test_cli_import_sm4_and_retry(tmp_path, run_cli, env_pw, tty):
    ks = str(tmp_path / "t.cks")
    run_cli("keys", "create", ks)
    r = run_cli("keys", "import", ks, "--unit", "health", "--name", "master", "--algorithm", "sm4",
                "--version", "3", input="zz\n0011\n" + K1.hex() + "\n" + K2.hex() + "\ny\n")
    assert r.exit_code == 0, r.stderr
    assert "component 1: not hex digits; type it again" in r.stderr
    assert "component 1: 4 hex digits, expected 32; type it again" in r.stderr
    combined = crypto.xor(K1, K2)
    assert f"combined key KCV {crypto.kcv(combined, 'sm4').hex().upper()}" in r.stdout
    store = Keystore.open(ks, PW)
    assert store.info("health", "master").version == 3
    assert store.derive("health", "master", FACTOR) == crypto.diversify(combined, FACTOR, 1, "sm4")


def test_cli_import_refusals(tmp_path, run_cli, env_pw, tty):
    ks = str(tmp_path / "t.cks")
    run_cli("keys", "create", ks, "--unit", "transit")
    # declined at the confirmation: nothing stored
    r = run_cli("keys", "import", ks, "--unit", "transit", "--name", "dlk", input=f"{K1.hex()}\n{K2.hex()}\nn\n")
    assert r.exit_code == 1 and "nothing stored" in r.stderr
    assert Keystore.open(ks, PW).keys() == []
    # the same component twice would cancel out
    r = run_cli("keys", "import", ks, "--unit", "transit", "--name", "dlk", input=f"{K1.hex()}\n{K1.hex()}\n")
    assert r.exit_code == 2 and "component 2 equals component 1" in r.stderr
    # three bad tries
    r = run_cli("keys", "import", ks, "--unit", "transit", "--name", "dlk", input="x\ny\n" + "00" * 16 + "\n")
    assert r.exit_code == 2 and "no valid component after 3 attempts" in r.stderr
    # refused before anything is typed: another unit, an existing version
    r = run_cli("keys", "import", ks, "--unit", "bike", "--name", "dlk", input="")
    assert r.exit_code == 2 and "unit 'transit' only" in r.stderr
    run_cli("keys", "generate", ks, "--unit", "transit", "--name", "dlk")
    r = run_cli("keys", "import", ks, "--unit", "transit", "--name", "dlk", input="")
    assert r.exit_code == 2 and "already holds transit/dlk version 1" in r.stderr


def test_cli_import_needs_a_terminal(tmp_path, run_cli, env_pw, monkeypatch):
    ks = str(tmp_path / "t.cks")
    run_cli("keys", "create", ks)
    monkeypatch.setattr(keyopts, "_interactive", lambda: False)
    r = run_cli("keys", "import", ks, "--unit", "transit", "--name", "dlk", input=f"{K1.hex()}\n{K2.hex()}\ny\n")
    assert r.exit_code == 2 and "no terminal" in r.stderr
    assert Keystore.open(ks, PW).keys() == []


def test_cli_passphrase_sources(tmp_path, run_cli, monkeypatch, tty):
    monkeypatch.delenv("CITYCARD_KEYSTORE_PASSPHRASE", raising=False)
    ks = str(tmp_path / "t.cks")
    # a hidden prompt, asked twice when creating
    r = run_cli("keys", "create", ks, input=f"{PW}\n{PW}\n")
    assert r.exit_code == 0, r.stderr
    assert "New passphrase for keystore" in r.stderr and PW not in _all_output(r)
    r = run_cli("keys", "create", str(tmp_path / "u.cks"), input=f"{PW}\nsomething else\n{PW}\n{PW}\n")
    assert r.exit_code == 0 and "do not match" in r.stderr.lower()
    r = run_cli("keys", "list", ks, input=f"{PW}\n")
    assert r.exit_code == 0 and f"Passphrase for keystore {ks}" in r.stderr
    # a passphrase file: first line only, without its line ending
    pfile = tmp_path / "pw.txt"
    pfile.write_text(PW + "\r\nsecond line\n")
    assert run_cli("keys", "list", ks, "--passphrase-file", str(pfile)).exit_code == 0
    # the file comes before the environment, the environment before the prompt
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "not the passphrase")
    assert run_cli("keys", "list", ks, "--passphrase-file", str(pfile)).exit_code == 0
    r = run_cli("keys", "list", ks, input=f"{PW}\n")
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"citycard: error: {ks}: wrong passphrase for this keystore (or its header was altered)")
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", PW)
    assert run_cli("keys", "list", ks).exit_code == 0
    # an empty or missing file
    (tmp_path / "empty").write_text("\n")
    r = run_cli("keys", "list", ks, "--passphrase-file", str(tmp_path / "empty"))
    assert r.exit_code == 2 and "first line is empty" in r.stderr
    r = run_cli("keys", "list", ks, "--passphrase-file", str(tmp_path / "none"))
    assert r.exit_code == 2 and "no such file" in r.stderr
    # too short a new passphrase
    short = tmp_path / "short"
    short.write_text("abc\n")
    r = run_cli("keys", "create", str(tmp_path / "v.cks"), "--passphrase-file", str(short))
    assert r.exit_code == 2 and "too short" in r.stderr and not (tmp_path / "v.cks").exists()


def test_cli_no_terminal_no_passphrase_is_an_error(tmp_path, run_cli, no_tty):
    ks = tmp_path / "t.cks"
    Keystore.create(ks, PW, n=N).close()
    r = run_cli("keys", "list", str(ks), input=f"{PW}\n")
    assert r.exit_code == 2
    assert r.stderr.strip() == (f"citycard: error: {ks}: no passphrase: give --passphrase-file FILE or set "
                                "CITYCARD_KEYSTORE_PASSPHRASE (no terminal to ask on)")
    r = run_cli("profile", "check", str(PROFILE), "--keys", str(ks))
    assert r.exit_code == 2 and "no passphrase" in r.stderr


def test_cli_tampered_keystore_is_one_line(tmp_path, run_cli, env_pw):
    ks = tmp_path / "t.cks"
    run_cli("keys", "create", str(ks))
    run_cli("keys", "generate", str(ks), "--unit", "transit", "--name", "dlk")
    raw = bytearray(ks.read_bytes())
    i = raw.index(b'"ciphertext": "') + 20
    raw[i] = ord("B") if raw[i] != ord("B") else ord("C")   # still base64: only the tag can tell
    ks.write_bytes(bytes(raw))
    for args in (["keys", "list", str(ks)], ["dump", "--sim", "x.json", "--keys", str(ks)]):
        r = run_cli(*args)
        assert r.exit_code == 2
        assert r.stderr.strip() == f"citycard: error: {ks}: the keystore was altered or damaged (authentication failed)"


def test_cli_delete_and_passphrase_change(tmp_path, run_cli, env_pw, tty):
    ks = str(tmp_path / "t.cks")
    run_cli("keys", "create", ks)
    run_cli("keys", "generate", ks, "--unit", "transit", "--name", "dlk")
    run_cli("keys", "generate", ks, "--unit", "transit", "--name", "dlk", "--version", "2")
    r = run_cli("keys", "delete", ks, "--unit", "transit", "--name", "dlk", "--version", "1", input="n\n")
    assert r.exit_code == 1 and "nothing deleted" in r.stderr
    r = run_cli("keys", "delete", ks, "--unit", "transit", "--name", "dlk", "--version", "1", "--yes")
    assert r.exit_code == 0 and "deleted transit/dlk version 1" in r.stdout
    assert Keystore.open(ks, PW).versions("transit", "dlk") == [2]
    r = run_cli("keys", "delete", ks, "--unit", "transit", "--name", "dlk", "--version", "1", "--yes")
    assert r.exit_code == 2 and "holds no key transit/dlk version 1" in r.stderr
    new = tmp_path / "new.txt"
    new.write_text("the next passphrase\n")
    r = run_cli("keys", "passphrase", ks, "--new-passphrase-file", str(new))
    assert r.exit_code == 0, r.stderr
    assert Keystore.open(ks, "the next passphrase").versions("transit", "dlk") == [2]
    with pytest.raises(KeystoreAuthError):
        Keystore.open(ks, PW)


def test_cli_demo_keystore(tmp_path, run_cli, env_pw):
    out = tmp_path / "demo.cks"
    r = run_cli("keys", "demo", str(out))
    assert r.exit_code == 0, r.stderr
    assert "TEST KEYS" in r.stderr and "never use them for real cards" in r.stderr
    demo = tomllib.loads(DEMO_KEYS.read_text())
    count = sum(len(v) for v in demo.values())
    assert f"wrote {count} demo master keys to" in r.stdout
    store = Keystore.open(out, PW)
    for unit, roles in demo.items():
        for role, value in roles.items():
            assert store.derive(unit, role, None) == bytes.fromhex(value)
            assert store.info(unit, role).algorithm == "3des"
    assert store.unit is None
    r = run_cli("keys", "demo", str(out))
    assert r.exit_code == 2 and "already exists" in r.stderr
    r = run_cli("keys", "demo", str(out), "--force", "--unit", "transit")
    assert r.exit_code == 0 and f"wrote {len(demo['transit'])} demo master keys of unit transit" in r.stdout
    assert Keystore.open(out, PW).unit == "transit"
    r = run_cli("keys", "demo", str(tmp_path / "x.cks"), "--unit", "nobody")
    assert r.exit_code == 2 and "no keys of unit 'nobody'" in r.stderr
    text = r.stdout + r.stderr
    assert not any(v in text.upper() for roles in demo.values() for v in roles.values())


def test_keys_option_sources(tmp_path, run_cli, env_pw):
    r = run_cli("profile", "check", str(PROFILE), "--keys", "pkcs11:token=bureau?pin-value=4321")
    assert r.exit_code == 2 and "pin-value is refused" in r.stderr and "4321" not in r.stderr
    (tmp_path / "k.json").write_text('{"a": 1}')
    r = run_cli("profile", "check", str(PROFILE), "--keys", str(tmp_path / "k.json"))
    assert r.exit_code == 2 and r.stderr.strip() == f"citycard: error: {tmp_path / 'k.json'}: not a citycard keystore"
    pf = tmp_path / "p"
    pf.write_text(PW)
    r = run_cli("profile", "check", str(PROFILE), "--keys", str(DEMO_KEYS), "--passphrase-file", str(pf))
    assert r.exit_code == 2 and "no --keys source is a keystore" in r.stderr


def test_perso_with_one_keystore_per_unit(tmp_path, run_cli, monkeypatch):
    """Custody: each unit's keys in its own keystore under its own passphrase; the card is the
    same as with the demo key file."""
    monkeypatch.delenv("CITYCARD_KEYSTORE_PASSPHRASE", raising=False)
    units = list(tomllib.loads(DEMO_KEYS.read_text()))
    stores, pfiles = [], []
    for u in units:
        pf = tmp_path / f"{u}.pass"
        pf.write_text(f"passphrase of the {u} custodian\n")
        ks = tmp_path / f"{u}.cks"
        r = run_cli("keys", "demo", str(ks), "--unit", u, "--passphrase-file", str(pf))
        assert r.exit_code == 0, r.stderr
        stores.append(str(ks))
        pfiles.append(str(pf))
    key_args = [a for s in stores for a in ("--keys", s)]
    pass_args = [a for p in pfiles for a in ("--passphrase-file", p)]
    common = ["--profile", str(PROFILE), "--data", str(DATA), "--row", "1", "--issue-date", "20261124"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for img in (a, b):
        assert run_cli("sim", "new", str(img)).exit_code == 0
    r = run_cli("perso", *common, *key_args, *pass_args, "--sim", str(a))
    assert r.exit_code == 0, r.stderr
    assert "verified: " in r.stdout
    r = run_cli("perso", *common, "--keys", str(DEMO_KEYS), "--sim", str(b))
    assert r.exit_code == 0, r.stderr
    keys_a, keys_b = image_keys(a), image_keys(b)
    assert len(keys_a) >= 20 and keys_a == keys_b
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    # one passphrase file per keystore, paired in order: a wrong order fails on the first mismatch
    r = run_cli("perso", *common, *key_args, *[a for p in reversed(pfiles) for a in ("--passphrase-file", p)],
                "--sim", str(a), "--dry-run")
    assert r.exit_code == 2 and "wrong passphrase" in r.stderr
    r = run_cli("perso", *common, *key_args, *pass_args[:4], "--sim", str(a), "--dry-run")
    assert r.exit_code == 2 and f"given 2 times for {len(units)} keystores" in r.stderr
    # a missing unit is named by the profile check
    r = run_cli("perso", *common, *key_args[2:], *pass_args[2:], "--sim", str(a), "--dry-run")
    assert r.exit_code == 2 and "is not in the key sources" in r.stderr


def test_library_errors_are_citycard_errors():
    for cls in (KeystoreError, KeystoreFormatError, KeystoreAuthError):
        assert issubclass(cls, CitycardError)


# ---------------------------------------------------------------------- library rules the CLI uses
def test_check_can_add_refuses_before_any_key_material(tmp_path):
    store = Keystore.create(tmp_path / "t.cks", PW, unit="transit", n=N)
    store.check_can_add("transit", "dlk", 1)               # free: no error
    with pytest.raises(KeystoreError, match="holds the keys of unit 'transit' only, not 'bike'"):
        store.check_can_add("bike", "dlk", 1)
    store.add("transit", "dlk", K1)
    with pytest.raises(KeystoreError, match="already holds transit/dlk version 1"):
        store.check_can_add("transit", "dlk", 1)
    store.check_can_add("transit", "dlk", 2)
    store.close()
    with pytest.raises(KeystoreError, match="closed"):
        store.check_can_add("transit", "dlk", 3)


def test_clear_masters_of_the_demo_file_and_of_a_keystore(tmp_path):
    from citycard.keys import clear_masters

    demo = tomllib.loads(DEMO_KEYS.read_text())
    every = clear_masters(str(DEMO_KEYS))
    assert {(u, r, v) for (u, r, v), _k in every} == {(u, r, 1) for u, roles in demo.items() for r in roles}
    assert all(key == bytes.fromhex(demo[u][r]) for (u, r, _v), key in every)
    assert {m[0][0] for m in clear_masters(str(DEMO_KEYS), unit="transit")} == {"transit"}
    with pytest.raises(InputError, match="holds no keys of unit 'nobody'"):
        clear_masters(str(DEMO_KEYS), unit="nobody")
    ks = tmp_path / "m.cks"
    store = Keystore.create(ks, PW, n=N)
    store.add("transit", "dlk", K1, version=2)
    store.save()
    store.close()
    assert clear_masters(str(ks), PW) == [(("transit", "dlk", 2), K1)]
    with pytest.raises(KeyError_, match="needs a passphrase"):
        clear_masters(str(ks))
    store = Keystore.open(ks, PW)
    store.add("health", "master", K1, algorithm="sm4")
    store.save()
    store.close()
    with pytest.raises(InputError, match="is sm4: PKCS#11 tokens here hold 2-key 3DES masters only") as err:
        clear_masters(str(ks), PW)
    assert K1.hex() not in str(err.value).lower()


@pytest.mark.parametrize("kdf", [{"n": 2 ** 20, "r": 32, "p": 1},      # 4 GiB of scrypt memory
                                 {"n": 2 ** 18, "r": 8, "p": 16},       # 256 MiB, but 2^25 n·r·p
                                 {"n": 2 ** 20, "r": 8, "p": 16}])
def test_a_tampered_kdf_cost_is_refused_before_scrypt_runs(store_path, monkeypatch, kdf):
    """Issue 18 point 8: the header's n, r, p are bounded, so a tampered header cannot make an
    open cost gigabytes and minutes before "wrong passphrase"; scrypt is never called."""
    import citycard.keys.keystore as ks_mod

    doc = json.loads(store_path.read_text())
    doc["kdf"].update(kdf)
    store_path.write_text(json.dumps(doc))

    def no_scrypt(*_a, **_k):
        raise AssertionError("scrypt ran on an unaffordable header")

    monkeypatch.setattr(ks_mod, "Scrypt", no_scrypt)
    with pytest.raises(KeystoreFormatError, match="kdf cost"):
        Keystore.open(store_path, PW)


def test_creating_an_unaffordable_keystore_is_refused(tmp_path):
    with pytest.raises(InputError, match="memory 128·n·r at most 256 MiB"):
        Keystore.create(tmp_path / "k.cks", PW, n=2 ** 20, r=8)
    assert not (tmp_path / "k.cks").exists()
