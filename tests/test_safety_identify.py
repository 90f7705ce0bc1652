"""Issue 17 item 1 for the card services: every command that uses a key or the cardholder's PIN
first shows the card is one of the profile (its serial read freely, the application there); a
factory card or another profile's card is refused with exit code 1 before any key or PIN, and
the card is left exactly as it was (the image byte for byte: no try counter moved, no write)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from citycard.sim import SimCard
from citycard.sim import image as sim_image
from citycard.sim.transport import SimTransport
from citycard.terminal.identify import CardRefused, identify_for_service, is_profile_serial
from citycard.testing.cards import personalize_demo
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles/citycard.toml")
EP_PROFILE = str(ROOT / "profiles/pboc-ep.toml")
KEYS = str(ROOT / "profiles/demo-keys.toml")
DAY = datetime.date(2026, 11, 24)

#: every service that sends a key or a PIN: (command line, needs keys)
SERVICES = [
    (["purse", "load", "--amount", "1.00"], True),
    (["purse", "purchase", "--amount", "1.00"], True),
    (["purse", "unload", "--amount", "1.00"], True),
    (["pin", "verify"], False),
    (["pin", "change"], False),
    (["pin", "reload"], True),
    (["pin", "unblock"], True),
    (["app", "block", "--app", "transit"], True),
    (["app", "unblock", "--app", "transit"], True),
    (["card", "block", "--yes"], True),
]


def _image(tmp_path: Path, kind: str) -> Path:
    card = SimCard()
    if kind == "demo":
        personalize_demo(card, issue_date=DAY)
    elif kind == "pboc-ep":
        personalize_demo(card, profile="pboc-ep", row=7, issue_date=DAY)
    path = tmp_path / f"{kind}.json"
    sim_image.save(card, path)
    return path


@pytest.fixture
def pins(monkeypatch):
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    monkeypatch.setenv("CITYCARD_NEW_PIN", "2468")


@pytest.mark.parametrize("kind", ["factory", "pboc-ep"])
@pytest.mark.parametrize("args,keys", SERVICES, ids=[" ".join(a[:2]) for a, _k in SERVICES])
def test_a_card_not_of_the_profile_is_refused_untouched(run_cli, tmp_path, pins, kind, args, keys):
    img = _image(tmp_path, kind)
    before = img.read_bytes()
    r = run_cli(*args, "--profile", PROFILE, *(["--keys", KEYS] if keys else []), "--sim", str(img))
    assert r.exit_code == 1, r.stderr
    assert "card refused" in r.stderr and f"sim:{img}" in r.stderr and "citycard-demo" in r.stderr
    assert img.read_bytes() == before


def test_another_profiles_purse_is_refused_and_the_right_one_served(run_cli, tmp_path):
    demo = _image(tmp_path, "demo")
    before = demo.read_bytes()
    r = run_cli("purse", "load", "--profile", EP_PROFILE, "--keys", KEYS, "--sim", str(demo), "--amount", "1.00")
    assert r.exit_code == 1 and "card refused" in r.stderr and "pboc-ep" in r.stderr
    assert demo.read_bytes() == before
    ep = _image(tmp_path, "pboc-ep")     # a profile with no MF serial file: the application's serial
    ok = run_cli("purse", "load", "--profile", EP_PROFILE, "--keys", KEYS, "--sim", str(ep), "--amount", "1.00")
    assert ok.exit_code == 0, ok.stderr


def test_a_card_of_the_profile_is_served(run_cli, tmp_path, pins):
    """The contrast: on a card of the profile the same commands go through."""
    img = _image(tmp_path, "demo")
    common = ["--profile", PROFILE, "--sim", str(img)]
    for args in (["purse", "load", "--amount", "1.00"], ["pin", "verify"], ["app", "block", "--app", "transit"],
                 ["app", "unblock", "--app", "transit"], ["pin", "change"], ["card", "block", "--yes"]):
        keys = [] if args[0] == "pin" else ["--keys", KEYS]
        r = run_cli(*args, *common, *keys)
        assert r.exit_code == 0, (args, r.stderr)


def _session(card: SimCard, sent: list[bytes] | None = None) -> CardSession:
    class Recording(SimTransport):
        def transmit(self, apdu: bytes) -> bytes:
            if sent is not None:
                sent.append(bytes(apdu))
            return super().transmit(apdu)

    t = Recording(card, name="test reader")
    t.connect()
    return CardSession(t)


def test_identification_sends_only_selects_and_free_reads():
    from citycard.profile import load_profile

    spec = load_profile(PROFILE)
    sent: list[bytes] = []
    card = SimCard()
    personalize_demo(card, issue_date=DAY, row=3)
    session = _session(card, sent)
    transit = next(a for a in spec.apps if a.name == "transit")
    known = identify_for_service(session, spec, transit)
    assert known.serial == "3301" + "3".zfill(spec.serial_digits - 4) and known.reader == "test reader"
    assert sent and all(a[1] in (0xA4, 0xB0) for a in sent)
    with pytest.raises(CardRefused, match=r"test reader .*no application|test reader .*serial file"):
        identify_for_service(_session(SimCard()), spec, transit)


def test_profile_serials():
    from citycard.profile import load_profile

    spec = load_profile(PROFILE)
    n = spec.serial_digits
    assert is_profile_serial("3301".ljust(n, "0")[:-1] + "7", spec)
    assert not is_profile_serial("8888".ljust(n, "0"), spec)          # another prefix
    assert not is_profile_serial("3301".ljust(n - 1, "0"), spec)      # too short
    assert not is_profile_serial("3301".ljust(n - 1, "0") + "A", spec)
