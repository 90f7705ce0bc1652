"""SM4 keys in profiles and key sources (docs/sm4.md): ``alg = "sm4"``, the algorithm byte
04 in the key record (PSAM-SM4 §4.1), 16-byte SM4 masters in the demo file, a keystore, a
key ceremony (KCV) and an HSM (a clear error: no SM4 mechanism)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citycard import crypto
from citycard.errors import CitycardError
from citycard.keys import KeyError_, KeyRing, open_source
from citycard.keys.ceremony import Ceremony
from citycard.keys.demo import DemoKeyFile
from citycard.keys.keystore import Keystore
from citycard.profile import parse_profile
from citycard.profile.fields import ProfileError
from tests import sm4_gbt as ref

ROOT = Path(__file__).resolve().parent.parent
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
SM4_KEYS = ROOT / "profiles/demo-keys-sm4.toml"
FACTOR = bytes.fromhex("3301000000000001")
K = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

PBOC_EP = (ROOT / "profiles/pboc-ep.toml").read_text()
_PURSE_KEYS = PBOC_EP[PBOC_EP.index("dlk = {"):PBOC_EP.index("[apps.purse.files.ef0015]")]


DUAL = """
dpk = { type = "purchase", id = 1, version = 1, master = "dpk" }
dtk = { type = "tac", id = 1, version = 1, master = "dtk" }
dpk-sm4 = { type = "purchase", id = 0x41, version = 2, alg = "sm4", master = "dpk-sm4" }
dtk-sm4 = { type = "tac", id = 0x41, version = 2, alg = "sm4", master = "dtk-sm4" }
"""


def _profile(keys: str):
    """pboc-ep.toml with ``keys`` in place of its purse keys (the purse's TAC key id 1)."""
    text = PBOC_EP.replace(_PURSE_KEYS, keys + "\n\n") + "tac_key = 1\n"
    return parse_profile(text, "t.toml")


def test_alg_field_gives_sm4_keys_with_algorithm_byte_04():
    spec = _profile(DUAL)
    keys = {k.name: k for k in spec.apps[0].keys}
    assert keys["dpk"].alg == "des" and keys["dpk"].b4 == 0x00
    assert keys["dpk-sm4"].alg == "sm4" and keys["dpk-sm4"].b4 == 0x04 and keys["dpk-sm4"].b3 == 0x02
    assert keys["dtk-sm4"].alg == "sm4" and keys["dtk-sm4"].b4 == 0x04


@pytest.mark.parametrize("line,where,what", [
    ('dpk = { type = "purchase", id = 1, alg = "aes", master = "dpk" }', "dpk.alg", "3des or sm4"),
    ('dpk = { type = "purchase", id = 1, alg = "sm4", algorithm = 1, master = "dpk" }', "dpk.algorithm",
     "algorithm byte 04"),
    ('dpk = { type = "purchase", id = 1, alg = "sm4", length = 8, master = "dpk" }', "dpk.length", "16 bytes"),
    ('lp = { type = "damk", id = 1, alg = "sm4", master = "damk" }', "lp.alg", "error counter"),
    ('enc = { type = "des-encrypt", id = 0, alg = "sm4", master = "damk" }', "enc.alg", "cannot be SM4"),
    # a 3DES key's algorithm byte: 00 or 01 (SPEC §2.2); 04 is SM4's; 02/03 unknown ciphers (SPEC §6.6)
    ('dpk = { type = "purchase", id = 1, algorithm = 4, master = "dpk" }', "dpk.algorithm", 'alg = "sm4"'),
    ('dpk = { type = "purchase", id = 1, algorithm = 2, master = "dpk" }', "dpk.algorithm", "SPEC §6.6"),
    ('dpk = { type = "purchase", id = 1, algorithm = 3, master = "dpk" }', "dpk.algorithm", "SPEC §6.6"),
    ('enc = { type = "des-encrypt", id = 0, algorithm = 0x80, master = "damk" }', "enc.algorithm", "00 or 01"),
])
def test_bad_alg_is_one_clear_line(line, where, what):
    with pytest.raises(ProfileError) as e:
        _profile(line + '\ndtk = { type = "tac", id = 1, master = "dtk" }')
    msg = str(e.value)
    assert "\n" not in msg and where in msg and what in msg


def test_a_3des_key_takes_algorithm_byte_00_or_01():
    for b, length in ((0, 16), (0, 8), (1, 8)):
        spec = _profile(f'dpk = {{ type = "purchase", id = 1, algorithm = {b}, length = {length}, master = "dpk" }}\n'
                        'dtk = { type = "tac", id = 1, master = "dtk" }')
        assert {k.name: k.b4 for k in spec.apps[0].keys}["dpk"] == b
    # 01 with a 16-byte purchase key: 3DES on the card (SPEC §2.2), single DES at a PSAM (PSAMB)
    with pytest.raises(ProfileError, match=r"dpk\.algorithm.*16-byte purchase key with algorithm byte 01"):
        _profile('dpk = { type = "purchase", id = 1, algorithm = 1, master = "dpk" }\n'
                 'dtk = { type = "tac", id = 1, master = "dtk" }')


def test_an_sm4_purse_key_needs_an_sm4_tac_key():
    with pytest.raises(ProfileError, match=r"dpk-sm4\.alg.*no SM4 TAC key"):
        _profile('dtk = { type = "tac", id = 1, master = "dtk" }\n'
                 'dpk-sm4 = { type = "purchase", id = 0x41, alg = "sm4", master = "dpk-sm4" }')


# ------------------------------------------------------------------ key sources
def test_demo_file_derives_sm4_keys():
    src = DemoKeyFile(SM4_KEYS)
    master = bytes.fromhex("DC92ED3C9E5A54E11CD84080C7C2B16A")
    f = FACTOR
    want = ref.encrypt_block(master, f + bytes(b ^ 0xFF for b in f))
    assert src.derive("transit", "dpk-sm4", f, alg="sm4") == want
    ring = KeyRing([DemoKeyFile(DEMO_KEYS), src])
    assert ring.derive("transit", "dpk-sm4", f, alg="sm4") == want
    assert ring.derive("transit", "dpk", f) == crypto.diversify(DemoKeyFile(DEMO_KEYS).derive("transit", "dpk", None), f)


def test_keystore_sm4_master_and_algorithm_mismatch(tmp_path):
    ks = Keystore.create(tmp_path / "t.cks", "correct horse battery staple", unit="transit", n=16)
    ks.add("transit", "dpk-sm4", K, algorithm="sm4")
    ks.add("transit", "dpk", K)
    want = ref.encrypt_block(K, FACTOR + bytes(b ^ 0xFF for b in FACTOR))
    assert ks.derive("transit", "dpk-sm4", FACTOR, alg="sm4") == want
    assert ks.kcv("transit", "dpk-sm4") == ref.encrypt_block(K, bytes(16))[:3]
    with pytest.raises(KeyError_) as e:
        KeyRing([ks]).derive("transit", "dpk", FACTOR, alg="sm4")
    assert str(e.value) == f"{ks.name}: key transit/dpk is 3des here, but the profile declares it sm4"
    with pytest.raises(KeyError_, match="transit/dpk-sm4 is sm4 here, but the profile declares it 3des"):
        ks.derive("transit", "dpk-sm4", FACTOR, alg="des")
    ks.close()


def test_ceremony_kcvs_with_sm4():
    c1, c2 = bytes.fromhex("11" * 16), K
    cer = Ceremony(2, "sm4")
    assert cer.add(c1.hex()) == ref.encrypt_block(c1, bytes(16))[:3]
    assert cer.add(c2.hex()) == ref.encrypt_block(c2, bytes(16))[:3]
    key = cer.key()
    assert key == crypto.xor(c1, c2)
    assert crypto.kcv(key, "sm4") == ref.encrypt_block(key, bytes(16))[:3]
    assert crypto.kcv(key, "sm4") != crypto.kcv(key)          # not the 3DES KCV


def test_ceremony_cli_shows_sm4_kcvs(run_cli, tmp_path, monkeypatch):
    """`keys import --algorithm sm4`: each component's KCV and the key's are SM4 KCVs."""
    from citycard.cli import keyopts
    monkeypatch.setattr(keyopts, "_interactive", lambda: True)
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "correct horse battery staple")
    c1 = bytes.fromhex("11" * 16)
    store = str(tmp_path / "k.cks")
    assert run_cli("keys", "create", store, "--unit", "transit").exit_code == 0
    r = run_cli("keys", "import", store, "--unit", "transit", "--name", "dpk-sm4", "--algorithm", "sm4",
                input=f"{c1.hex()}\n{K.hex()}\ny\n")
    assert r.exit_code == 0, r.stderr
    kcv = lambda k: ref.encrypt_block(k, bytes(16))[:3].hex().upper()
    out = r.stdout
    assert f"component 1 KCV {kcv(c1)}" in out and f"component 2 KCV {kcv(K)}" in out
    assert f"combined key KCV {kcv(crypto.xor(c1, K))}" in out
    assert c1.hex().upper() not in (out + r.stderr).upper() and K.hex().upper() not in (out + r.stderr).upper()


def test_hsm_refuses_sm4_in_one_line(tmp_path_factory):
    from citycard.testing import softhsm
    reason = softhsm.unavailable()
    if reason:
        if os.environ.get("CITYCARD_REQUIRE_HSM") == "1":
            pytest.fail(f"CITYCARD_REQUIRE_HSM=1 but {reason}")
        pytest.skip(reason)
    from click.testing import CliRunner

    from citycard.cli.main import cli
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", softhsm.PIN_ENV)}
    try:
        h = softhsm.SoftHsm.create(tmp_path_factory.mktemp("softhsm-sm4"))
        h.init_token("citycard-empty")
        r = CliRunner().invoke(cli, ["keys", "hsm-import", h.uri(), "--from", str(DEMO_KEYS)])
        assert r.exit_code == 0, r.output
        src = open_source(h.uri())
        try:
            ring = KeyRing([src])
            with pytest.raises(CitycardError) as e:
                ring.derive("transit", "dpk", FACTOR, alg="sm4")
            msg = str(e.value)
            assert "\n" not in msg and "transit/dpk" in msg and "no SM4 mechanism" in msg
            assert ring.derive("transit", "dpk", FACTOR) is not None          # 3DES as before
        finally:
            src.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_profile_show_names_sm4_keys(run_cli):
    r = run_cli("profile", "show", str(ROOT / "profiles/citycard-sm4.toml"))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    sm4 = [line for line in lines if "SM4 (algorithm 04)" in line]
    assert sorted(line.split(":")[0].split()[-1] for line in sm4) == ["dlk-sm4", "dpk-sm4", "dtk-sm4", "unload-sm4"]
    plain = run_cli("profile", "show", str(ROOT / "profiles/citycard.toml"))
    assert "SM4" not in plain.stdout
