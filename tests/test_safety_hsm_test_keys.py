"""Issue 17 item 5 for hardware security modules: a token given the published demo TEST KEYS
(``keys hsm-import --from`` the demo key file) is marked so inside the token (a CKO_DATA object
``citycard-purpose`` = ``test``, docs/keys.md); using it warns, a production profile refuses it;
a token of keys typed at a ceremony carries no marker and no warning.  Against SoftHSM2
(skipped when missing, unless ``CITYCARD_REQUIRE_HSM=1``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from citycard.keys import KeyRing, TestKeysRefused, check_test_keys, open_source
from citycard.sim import SimCard
from citycard.sim import image as sim_image
from citycard.testing import softhsm

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    reason = softhsm.unavailable()
    if reason:
        if os.environ.get("CITYCARD_REQUIRE_HSM") == "1":
            pytest.fail(f"CITYCARD_REQUIRE_HSM=1 but {reason}")
        pytest.skip(reason)
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", softhsm.PIN_ENV)}
    h = softhsm.SoftHsm.create(tmp_path_factory.mktemp("softhsm-marker"), "citycard-demo-keys")
    h.init_token("citycard-ceremony")
    yield h
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def demo_token(hsm):
    from click.testing import CliRunner

    from citycard.cli.main import cli

    r = CliRunner().invoke(cli, ["keys", "hsm-import", hsm.uri(), "--from", str(DEMO_KEYS)])
    assert r.exit_code == 0, r.stderr
    assert "marked so (a 'citycard-purpose' object)" in r.stderr
    return hsm.uri()


def _marker_values(hsm, label: str) -> list[bytes]:
    """The citycard-purpose data objects of a token, read with PyKCS11 directly (not through
    the key source under test)."""
    import PyKCS11 as P

    lib = P.PyKCS11Lib()
    lib.load(hsm.module)
    slot = next(s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == label)
    session = lib.openSession(slot)
    try:
        session.login(hsm.pin)
        objs = session.findObjects([(P.CKA_CLASS, P.CKO_DATA), (P.CKA_LABEL, "citycard-purpose")])
        return [bytes(session.getAttributeValue(o, [P.CKA_VALUE], allAsBinary=True)[0]) for o in objs]
    finally:
        session.logout()
        session.closeSession()


def test_the_demo_token_carries_the_test_marker(hsm, demo_token):
    assert _marker_values(hsm, "citycard-demo-keys") == [b"test"]
    src = open_source(demo_token)
    try:
        assert src.test_keys and not src.production and src.purpose == "test"
        ring = KeyRing([src])
        assert ring.test_key_sources == [src.name]
        assert "holds published TEST KEYS" in (check_test_keys(ring) or "")
        with pytest.raises(TestKeysRefused, match="profile is marked production"):
            check_test_keys(ring, production=True)
        src.mark_test_keys()                            # marking again: still one marker
    finally:
        src.close()
    assert _marker_values(hsm, "citycard-demo-keys") == [b"test"]


def test_a_ceremony_token_has_no_marker(hsm):
    src = open_source(hsm.uri("citycard-ceremony"))
    try:
        src.import_key("transit", "dlk", secrets.token_bytes(16))
        assert src.purpose is None and not src.test_keys
        assert check_test_keys(KeyRing([src])) is None
    finally:
        src.close()
    assert _marker_values(hsm, "citycard-ceremony") == []


def _perso(run_cli, image: Path, keys: str, profile: Path = PROFILE):
    return run_cli("perso", "--profile", str(profile), "--keys", keys, "--data", str(DATA), "--row", "1",
                   "--sim", str(image))


def test_perso_with_the_demo_token_warns(run_cli, demo_token, tmp_path):
    image = tmp_path / "card.json"
    sim_image.save(SimCard(), image)
    r = _perso(run_cli, image, demo_token)
    assert r.exit_code == 0, r.stderr
    assert "holds published TEST KEYS" in r.stderr


def test_a_production_profile_refuses_the_demo_token(run_cli, demo_token, tmp_path):
    text = PROFILE.read_text(encoding="utf-8").replace('cos = "fmcos"\n', 'cos = "fmcos"\nproduction = true\n', 1)
    assert "production = true" in text
    prod = PROFILE.parent / f"_production_hsm_{secrets.token_hex(4)}.toml"   # beside the original: includes resolve
    prod.write_text(text, encoding="utf-8")
    image = tmp_path / "card.json"
    sim_image.save(SimCard(), image)
    before = image.read_bytes()
    try:
        r = _perso(run_cli, image, demo_token, prod)
    finally:
        prod.unlink()
    assert r.exit_code == 2
    assert "TEST KEYS (published demo keys) refused: the profile is marked production" in r.stderr
    assert image.read_bytes() == before
