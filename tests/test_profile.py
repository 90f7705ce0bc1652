"""Profiles: the shipped ones load; every bad profile of the corpus gives its located error."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.profile import ProfileError, check_columns, check_keys, load_profile, locate, parse_profile
from citycard.spec import ac_allows, ac_text, parse_ac

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted(glob.glob(str(ROOT / "tests/data/bad_profiles/*.toml")))


@pytest.mark.parametrize("path", BAD, ids=[Path(p).stem for p in BAD])
def test_bad_profile_corpus(path):
    expected = Path(path).read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(path + expected), message
    assert "\n" not in message
    assert info.value.line is not None


def test_corpus_is_large():
    assert len(BAD) >= 20


@pytest.mark.parametrize("name", ["citycard.toml", "pboc-ep.toml"])
def test_shipped_profiles_load_and_have_their_keys(name):
    spec = load_profile(ROOT / "profiles" / name)
    keys = KeyRing([DemoKeyFile(ROOT / "profiles/demo-keys.toml")])
    check_keys(spec, keys)
    assert spec.apps
    for df in spec.dfs():
        assert df.master_key() is not None


def test_demo_profile_shape():
    spec = load_profile(ROOT / "profiles/citycard.toml")
    names = [a.name for a in spec.apps]
    assert names == ["social", "transit", "library", "bike", "health"]
    transit = spec.app("transit")
    assert transit.aid.hex().upper() == "A00000000386980701"
    assert transit.sfi_byte == 0x95                       # fci_sfi 0x15 with b8 (SPEC §1.2)
    units = {a.unit for a in spec.apps}
    assert len(units) == 5                                 # each application its own service unit
    ep = next(f for f in transit.files if f.kind == "ep")
    assert ep.usage_ac == 0xF0                             # no PIN for the transit purse
    ef15 = next(f for f in transit.files if f.fid == 0x0015)
    assert ef15.type_byte == 0xA8 and ef15.key_byte == 0xFF  # SPEC §1.2 EF0015 example
    assert spec.mf.aid == b"1PAY.SYS.DDF01"
    lib, bike = spec.app("library"), spec.app("bike")     # shaped by the same template
    assert [k.name for k in lib.keys] == [k.name for k in bike.keys] == ["master", "damk"]
    assert lib.keys[0].master == ("library", "master") and bike.keys[0].master == ("bike", "master")


def test_missing_master_in_key_source(tmp_path):
    keys = tmp_path / "k.toml"
    keys.write_text('[card]\nmf-master = "' + "11" * 16 + '"\n[factory]\ntransport = "' + "FF" * 16 + '"\n')
    spec = load_profile(ROOT / "profiles/pboc-ep.toml")
    with pytest.raises(ProfileError) as info:
        check_keys(spec, KeyRing([DemoKeyFile(keys)]))
    msg = str(info.value)
    assert msg.startswith(str(ROOT / "profiles/pboc-ep.toml") + ":")
    assert "apps.purse.keys.master.master: master key transit/master is not in the key sources" in msg
    assert "11" * 16 not in msg


def test_binding_to_missing_column():
    spec = load_profile(ROOT / "profiles/citycard.toml")
    with pytest.raises(ProfileError) as info:
        check_columns(spec, ["cardholder_id", "name"], "people.csv")
    msg = str(info.value)
    assert "binds column" in msg and "which people.csv does not have" in msg
    line = int(msg.split(":")[1])
    text = (ROOT / "profiles/citycard.toml").read_text().splitlines()
    assert "$" in text[line - 1] or "column" in text[line - 1]


def test_include_and_template(tmp_path):
    (tmp_path / "shared.toml").write_text(
        '[templates.basic]\nspace = 256\ncreate = "sr>=1"\nerase = "sr>=1"\nkeyfile = { add = "sr>=1" }\n'
        '[templates.basic.keys]\nmaster = { type = "external-auth", state = 1, change = "sr>=1", master = "master" }\n'
        '[units]\nlib = "Library"\n')
    text = ('include = ["shared.toml"]\n[mf]\nkeys.master = { type = "external-auth", state = 1, master = "lib/m" }\n'
            '[apps.a]\ntemplate = "basic"\nfid = "3F01"\naid = "D156000001"\nunit = "lib"\n'
            '[apps.b]\ntemplate = "basic"\nfid = "3F02"\naid = "D156000002"\nunit = "lib"\nspace = 300\n')
    (tmp_path / "p.toml").write_text(text)
    spec = load_profile(tmp_path / "p.toml")
    assert [a.space for a in spec.apps] == [256, 300]
    assert spec.apps[0].keys[0].master == ("lib", "master")
    bad = text.replace('template = "basic"\nfid = "3F02"', 'template = "basic"\nfid = "3F02"\nbogus = 1')
    (tmp_path / "q.toml").write_text(bad)
    with pytest.raises(ProfileError, match=r"q.toml:\d+: apps.b.bogus: unknown key 'bogus'"):
        load_profile(tmp_path / "q.toml")
    (tmp_path / "shared.toml").write_text('[templates.basic]\nspace = "big"\n')
    with pytest.raises(ProfileError, match=r"p.toml:\d+: apps.a.space: 'big' is not a number"):
        load_profile(tmp_path / "p.toml")


@pytest.mark.parametrize("text, byte", [
    ("free", 0xF0), ("never", 0xEF), ("sr>=1", 0xF1), ("sr=2", 0x22), ("sr<=3", 0x30), ("sr=3..5", 0x53),
    ("mf>=1", 0x01), ("F1", 0xF1), ("SR >= 2", 0xF2),
])
def test_parse_ac(text, byte):
    assert parse_ac(text) == byte


@pytest.mark.parametrize("bad", ["sr>=16", "sr=5..3", "maybe", "", 7])
def test_parse_ac_rejects(bad):
    with pytest.raises(ValueError):
        parse_ac(bad)


def test_ac_semantics_match_spec():
    # SPEC §1.1: 53 allows SR 3, 4 or 5; EF never; F0 free; 0Y needs MF SR >= Y
    assert [sr for sr in range(16) if ac_allows(0x53, sr, 0)] == [3, 4, 5]
    assert not any(ac_allows(0xEF, sr, sr) for sr in range(16))
    assert all(ac_allows(0xF0, sr, 0) for sr in range(16))
    assert ac_allows(0x02, 0, 2) and not ac_allows(0x02, 15, 1)
    assert ac_allows(0x33, 3, 0) and not ac_allows(0x33, 4, 0)
    for b in (0xF0, 0xEF, 0xF1, 0x22, 0x30, 0x53, 0x01):
        assert parse_ac(ac_text(b)) == b


def test_locate_finds_dotted_inline_and_tables():
    text = '[a]\nx = 1\n[a.b]\ny = { z = 2 }\nc.d = 3\n'
    assert locate(text, ["a", "x"]) == 2
    assert locate(text, ["a", "b", "y", "z"]) == 4
    assert locate(text, ["a", "b", "c", "d"]) == 5
    assert locate(text, ["a", "b", "missing"]) == 3


def test_parse_profile_in_memory_error_has_no_file_line_confusion():
    with pytest.raises(ProfileError, match=r"^x.toml:2: profile.cos: COS 'java' not supported"):
        parse_profile('[profile]\ncos = "java"\n[mf]\n', "x.toml")
