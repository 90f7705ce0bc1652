"""No key value escapes: across keystore handling, personalization (successful, redone and
failed half way), dump and purse transactions at DEBUG logging with a transcript, no master
key, no per-card key (nor either 8-byte half of one) and no passphrase appears in standard
output, standard error, log records, the transcript, exception messages or tracebacks.

The per-card keys are computed here independently (PBOC diversification of each master with
the rightmost 8 bytes of the BCD card serial, SPEC §2.4), and also taken from the planner.
"""

from __future__ import annotations

import base64
import datetime
import traceback
import tomllib
from pathlib import Path

import pytest

from citycard import crypto
from citycard.errors import CitycardError, TransportError
from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.keys.keystore import Keystore, write_demo
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import personalize
from citycard.profile import load_profile
from citycard.sim import SimCard
from citycard.sim.transport import ImageTransport, SimTransport
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
OTHER_KEYS = ROOT / "tests/data/other-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = "20261124"
ROWS = (1, 2, 3, 4)
ENV_PASSPHRASE = "environment passphrase for the bureau 5121"


def _masters(path: Path) -> dict[tuple[str, str], bytes]:
    return {(u, r): bytes.fromhex(v) for u, roles in tomllib.loads(path.read_text()).items() for r, v in roles.items()}


def _serial(row: int) -> bytes:
    """The BCD card serial of a row of the demo profile (issuer 3301, card number = row)."""
    return bytes.fromhex(f"3301{row:012d}")


class Secrets:
    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.words: dict[str, str] = {}

    def add_key(self, label: str, key: bytes) -> None:
        self.keys[label] = key

    def needles(self) -> list[tuple[str, str, bool]]:
        """(what, text, case_sensitive)"""
        out = []
        for label, key in self.keys.items():
            h = key.hex().upper()
            out.append((label, h, False))
            if len(key) > 8:
                for i in range(0, len(key), 8):
                    out.append((f"{label} bytes {i}..{i + 7}", key[i:i + 8].hex().upper(), False))
            out.append((f"{label} (base64)", base64.b64encode(key).decode(), True))
        out += [(label, word, True) for label, word in self.words.items()]
        return out

    def scan(self, where: str, text: str) -> None:
        upper = text.upper()
        found = [what for what, needle, exact in self.needles() if needle in (text if exact else upper)]
        assert not found, f"{where} shows {found}"


@pytest.fixture(scope="module")
def secrets_(tmp_path_factory) -> Secrets:
    s = Secrets()
    spec = load_profile(PROFILE)
    data = read_csv(DATA)
    for name, path in (("demo", DEMO_KEYS), ("other", OTHER_KEYS)):
        masters = _masters(path)
        for (unit, role), master in masters.items():
            if (unit, role) == ("factory", "transport") and master == b"\xff" * 16:
                # the public FM1208 factory key (16 x FF): not a secret, and FF runs are ordinary data
                continue
            s.add_key(f"{name} master {unit}/{role}", master)
            for row in ROWS:
                s.add_key(f"{name} {unit}/{role} of card {row}", crypto.diversify(master, _serial(row)[-8:]))
        # and what the planner itself writes to each card
        if name == "other":   # a card takes only its factory transport key (SPEC §6 R1): plan with FF x 16
            path = tmp_path_factory.mktemp("keys") / "other-keys.toml"
            path.write_text(OTHER_KEYS.read_text().replace(masters[("factory", "transport")].hex().upper(), "FF" * 16))
        ring = KeyRing([DemoKeyFile(path)])
        for row in ROWS:
            plan = Planner(spec, ring).plan(CardData(data.row(row), row, datetime.date(2026, 11, 24), data.where(row)))
            assert plan.card_serial == _serial(row).hex().upper()
            for label, key in plan.keys.items():
                s.add_key(f"{name} plan key {label} of card {row}", key)
    assert len(s.keys) > 150
    return s


def _log_text(caplog) -> str:
    parts = [caplog.text]
    for r in caplog.records:
        parts.append(r.getMessage())
        if r.exc_info:
            parts.append("".join(traceback.format_exception(*r.exc_info)))
    return "\n".join(parts)


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc) + str(exc)


def test_no_key_or_passphrase_escapes(tmp_path, run_cli, capture, monkeypatch, secrets_):
    s = secrets_
    outputs: list[tuple[str, object]] = []

    def cli(*args, expect=0, input=None):
        r = run_cli("-l", "DEBUG", "--transcript", str(transcript), *args, input=input)
        outputs.append((" ".join(args[:3]), r))
        assert r.exit_code == expect, (args, r.stdout, r.stderr)
        if r.exception is not None:
            s.scan(f"exception of {args[:3]}", _exception_text(r.exception))
        return r

    transcript = tmp_path / "transcript.txt"
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", ENV_PASSPHRASE)
    s.words["the environment passphrase"] = ENV_PASSPHRASE

    # custody: one keystore per unit; half of them under their own passphrase file
    units = sorted({u for (u, _r) in _masters(DEMO_KEYS)})
    key_args, pass_args = [], []
    for i, unit in enumerate(units):
        ks = tmp_path / f"{unit}.cks"
        pw = f"custodian of {unit} #{i}" if i % 2 else ENV_PASSPHRASE
        s.words[f"passphrase of {unit}"] = pw
        pf = tmp_path / f"{unit}.pass"
        pf.write_text(pw + "\n")
        if i == 0:
            cli("keys", "demo", str(ks), "--unit", unit, "--passphrase-file", str(pf))
        else:                                        # cheaper scrypt to keep the test fast (same format)
            write_demo(ks, pw, DEMO_KEYS, unit=unit, n=2 ** 8).close()
        cli("keys", "list", str(ks), "--passphrase-file", str(pf))
        cli("keys", "list", str(ks), "--json", "--passphrase-file", str(pf))
        key_args += ["--keys", str(ks)]
        pass_args += ["--passphrase-file", str(pf)]
    keys = [*key_args, *pass_args]
    # a generated key too, then removed again
    cli("keys", "generate", str(tmp_path / "transit.cks"), "--unit", "transit", "--name", "spare",
        "--passphrase-file", str(tmp_path / "transit.pass"))
    spare = Keystore.open(tmp_path / "transit.cks", s.words["passphrase of transit"])
    s.add_key("generated transit/spare", spare.derive("transit", "spare", None))
    for row in ROWS:
        s.add_key(f"transit/spare of card {row}", spare.derive("transit", "spare", _serial(row)[-8:]))
    spare.close()
    cli("keys", "delete", str(tmp_path / "transit.cks"), "--unit", "transit", "--name", "spare", "--version", "1",
        "--yes", "--passphrase-file", str(tmp_path / "transit.pass"))

    common = ["--profile", str(PROFILE), "--data", str(DATA), "--issue-date", DAY]
    card = tmp_path / "card.json"
    cli("sim", "new", str(card))
    cli("profile", "check", str(PROFILE), *keys)
    cli("perso", *common, *keys, "--row", "1", "--sim", str(card), "--dry-run")
    cli("perso", *common, *keys, "--row", "1", "--sim", str(card), "--dry-run", "--json")
    r = cli("perso", *common, *keys, "--row", "1", "--sim", str(card))
    assert "personalized card 3301000000000001" in r.stdout and "verified" in r.stdout
    # redone (the profile erases a personalized card with its MF master first)
    r = cli("perso", *common, *keys, "--row", "1", "--sim", str(card), expect=1)   # issued: refused
    assert "--reissue-card" in r.stderr
    r = cli("perso", *common, *keys, "--row", "1", "--sim", str(card), "--json", "--reissue-card")
    assert r.json()["rerun"] is True
    purse = ["--profile", str(PROFILE), *keys, "--sim", str(card)]
    cli("purse", "load", *purse, "--amount", "25.00")
    cli("purse", "purchase", *purse, "--amount", "1.50")
    cli("purse", "balance", *purse)
    r = cli("dump", "--sim", str(card), "--profile", str(PROFILE), *keys)
    assert "balance 23.50 yuan" in r.stdout
    cli("dump", "--sim", str(card), "--profile", str(PROFILE), *keys, "--json")

    # failures half way, each one clear line and no key
    other = tmp_path / "other.json"
    cli("sim", "new", str(other))
    other_keys = tmp_path / "other-keys.toml"         # the other masters, with the factory's transport key
    other_keys.write_text(OTHER_KEYS.read_text().replace(_masters(OTHER_KEYS)[("factory", "transport")].hex().upper(),
                                                         "FF" * 16))
    cli("perso", *common, "--keys", str(other_keys), "--row", "2", "--sim", str(other))
    r = cli("perso", *common, *keys, "--row", "2", "--sim", str(other), "--reissue-card", expect=1)
    assert "cannot take over the card" in r.stderr
    r = cli("purse", "load", "--profile", str(PROFILE), *keys, "--sim", str(other), "--amount", "1.00", expect=1)
    assert "MAC1" in r.stderr

    pulled = tmp_path / "pulled.json"
    cli("sim", "new", str(pulled))
    real = ImageTransport.transmit
    count = {"n": 0}

    def flaky(self, apdu):
        count["n"] += 1
        if count["n"] > 40:
            raise TransportError("card removed", self.name)
        return real(self, apdu)

    monkeypatch.setattr(ImageTransport, "transmit", flaky)
    r = cli("perso", *common, *keys, "--row", "3", "--sim", str(pulled), expect=1)
    assert "card removed" in r.stderr and "step " in r.stderr
    monkeypatch.setattr(ImageTransport, "transmit", real)

    bad = tmp_path / "bad.csv"
    lines = DATA.read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join([lines[0], lines[4].rsplit(",", 1)[0] + ",12ab"]) + "\n", encoding="utf-8")
    r = cli("perso", "--profile", str(PROFILE), "--data", str(bad), "--issue-date", DAY, *keys, "--row", "1",
            "--sim", str(pulled), expect=2)
    assert "PIN" in r.stderr

    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the right one at all\n")
    r = cli("perso", *common, *key_args, "--passphrase-file", str(wrong), "--row", "4", "--sim", str(pulled),
            expect=2)
    assert "wrong passphrase" in r.stderr

    # a tampered keystore
    raw = bytearray((tmp_path / "hrss.cks").read_bytes())
    i = raw.index(b'"ciphertext": "') + 30
    raw[i] = ord("B") if raw[i] != ord("B") else ord("C")   # still base64: only the tag can tell
    (tmp_path / "hrss.cks").write_bytes(bytes(raw))
    r = cli("perso", *common, *keys, "--row", "4", "--sim", str(pulled), expect=2)
    assert "altered" in r.stderr

    # library level: the exception of a personalization cut short, with its whole traceback
    ring = KeyRing([Keystore.open(tmp_path / f"{u}.cks", s.words[f"passphrase of {u}"]) for u in units
                    if u != "hrss"])
    spec = load_profile(PROFILE)
    data = read_csv(DATA)
    hrss = {(u, r): k for (u, r), k in _masters(DEMO_KEYS).items() if u == "hrss"}
    assert hrss
    with pytest.raises(CitycardError) as info:       # hrss keystore tampered: its keys are missing
        Planner(spec, ring).plan(CardData(data.row(4), 4, datetime.date(2026, 11, 24), data.where(4)))
    s.scan("exception of a planner missing a unit", _exception_text(info.value))

    class Pulled(SimTransport):
        def __init__(self, card, limit):
            super().__init__(card)
            self.limit, self.count = limit, 0

        def transmit(self, apdu):
            self.count += 1
            if self.count > self.limit:
                raise TransportError("card removed", self.name)
            return super().transmit(apdu)

    full = KeyRing([Keystore.open(tmp_path / f"{u}.cks", s.words[f"passphrase of {u}"]) for u in units
                    if u != "hrss"] + [_clear_unit(DEMO_KEYS, "hrss")])
    plan = Planner(spec, full).plan(CardData(data.row(4), 4, datetime.date(2026, 11, 24), data.where(4)))
    for limit in (10, 55, 90):
        t = Pulled(SimCard(), limit)
        t.connect()
        with pytest.raises(CitycardError) as info:
            personalize(CardSession(t), spec, plan)
        s.scan(f"exception of a personalization cut at APDU {limit}", _exception_text(info.value))
    s.scan("repr of the key ring", repr(full) + repr(full.sources) + repr(ring.sources))

    # scan everything
    for what, r in outputs:
        s.scan(f"stdout of {what}", r.stdout)
        s.scan(f"stderr of {what}", r.stderr)
    log_text = _log_text(capture)
    assert "> 00A4" in log_text                      # DEBUG logging did see the APDUs
    s.scan("the log records", log_text)
    t_text = transcript.read_text(encoding="utf-8")
    assert t_text.count("# citycard transcript") >= 5 and "masked" in t_text
    s.scan("the transcript", t_text)
    for ks in tmp_path.glob("*.cks"):
        s.scan(f"keystore file {ks.name}", ks.read_text())


def _clear_unit(path: Path, unit: str):
    """A clear key source with one unit of a demo key file (library-level test only)."""
    src = DemoKeyFile(path)
    src._keys = {k: v for k, v in src._keys.items() if k[0] == unit}
    return src


def test_scanner_finds_what_it_looks_for(secrets_):
    """The scan is real: a key, a half of one in lower case, a passphrase are all caught."""
    s = secrets_
    label, key = next(iter(s.keys.items()))
    for text in (f"x {key.hex().upper()} y", f"...{key[8:].hex()}...", base64.b64encode(key).decode()):
        with pytest.raises(AssertionError, match="shows"):
            s.scan("sample", text)
    s.words.setdefault("sample passphrase", "open sesame 1234")
    with pytest.raises(AssertionError, match="shows"):
        s.scan("sample", "the passphrase was open sesame 1234")
    del s.words["sample passphrase"]
