"""Issue 20: demo assets inside the package, the pytest plugin, reader selection by fragment."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from citycard.assets import asset_names, asset_path, copy_assets, named_profile
from citycard.errors import InputError, NoReaderError
from citycard.sim.image import save
from citycard.testing.cards import new_card, personalize_demo, serve_in_reader
from citycard.transport.pcsc import PcscTransport, resolve_reader

ROOT = Path(__file__).resolve().parent.parent
SELECT_MF = "00A40000023F00"
SELECT_TRANSIT = "00A4040009A00000000386980701"   # the demo profile's transit AID
READ_EF15 = "00B0950000"                           # EF0015 by SFI: serial at bytes 12..19


def source_files() -> list[str]:
    return sorted(f"{d}/{p.name}" for d in ("profiles", "examples") for p in (ROOT / d).iterdir() if p.is_file())


# ------------------------------------------------------------------------------ assets
def test_assets_are_the_source_tree_files():
    assert asset_names() == source_files()
    for rel in source_files():
        assert asset_path(rel).read_bytes() == (ROOT / rel).read_bytes()
    assert asset_path("demo-keys.toml") == asset_path("profiles/demo-keys.toml")
    assert "TEST KEYS ONLY" in asset_path("demo-keys.toml").read_text()
    assert named_profile("demo") == named_profile("citycard") == asset_path("citycard.toml")
    assert named_profile("pboc-ep") == asset_path("pboc-ep.toml")
    assert named_profile("profiles/citycard.toml") is None


@pytest.mark.parametrize("name, message", [
    ("nothing.toml", "nothing.toml: no such citycard demo asset; there are: examples/"),
    ("../pyproject.toml", "../pyproject.toml: not a citycard demo asset"),
    ("profiles/../../errors.py", "profiles/../../errors.py: not a citycard demo asset"),
    ("tests/data/other-keys.toml", "tests/data/other-keys.toml: not a citycard demo asset"),
])
def test_asset_path_refuses(name, message):
    with pytest.raises(InputError) as err:
        asset_path(name)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_copy_assets_refuses_changed_files_and_changes_nothing(tmp_path):
    (tmp_path / "profiles").mkdir()
    mine = tmp_path / "profiles" / "pboc-ep.toml"
    mine.write_text("# my own profile\n")
    with pytest.raises(InputError, match=r"pboc-ep.toml: already exists with other content \(--force"):
        copy_assets(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["pboc-ep.toml", "profiles"]
    written = copy_assets(tmp_path, overwrite=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in written) == source_files()
    assert mine.read_bytes() == (ROOT / "profiles/pboc-ep.toml").read_bytes()
    assert copy_assets(tmp_path) == []   # identical files are left alone


def test_demo_assets_command_makes_the_readme_paths_work(run_cli, tmp_path, monkeypatch):
    r = run_cli("demo-assets", str(tmp_path / "demo"))
    assert r.exit_code == 0, r.stderr
    n = len(source_files())   # the shipped demo files (profiles/, examples/ of the source tree)
    assert n >= 8
    assert r.stdout.strip() == f"{n} of {n} demo files written to {tmp_path / 'demo'} (0 already there)"
    assert "TEST KEYS" in r.stderr
    monkeypatch.chdir(tmp_path / "demo")
    r = run_cli("profile", "check", "profiles/citycard.toml", "--data", "profiles/citycard-sample.csv",
                "--keys", "profiles/demo-keys.toml")
    assert r.exit_code == 0, r.stderr
    again = run_cli("demo-assets", ".")
    assert again.stdout.strip() == f"0 of {n} demo files written to . ({n} already there)"
    (tmp_path / "demo" / "examples" / "transit.cardscript").write_text("changed")
    refused = run_cli("demo-assets", ".")
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[-1] == ("citycard: error: examples/transit.cardscript: already exists"
                                               " with other content (--force overwrites it)")


def test_keys_demo_reads_the_shipped_file(run_cli, tmp_path, monkeypatch):
    import tomllib

    from citycard import crypto

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITYCARD_KEYSTORE_PASSPHRASE", "plugin test passphrase")
    r = run_cli("keys", "demo", "demo.ks")
    assert r.exit_code == 0, r.stderr
    listed = {(k["unit"], k["name"]): k["kcv"].upper() 
              for k in run_cli("keys", "list", "demo.ks", "--json").json()["keys"]}
    clear = tomllib.loads((ROOT / "profiles/demo-keys.toml").read_text())
    expected = {(u, role): crypto.kcv(bytes.fromhex(v)).hex().upper()
                for u, roles in clear.items() for role, v in roles.items()}
    assert listed == expected


# ------------------------------------------------------------------------------ reader choice
NAMES = ["Citycard Virtual 00 00", "Citycard Virtual 00 01", "ACS ACR122U 00 00"]


def test_fragment_picks_the_only_reader_holding_a_card(caplog):
    caplog.set_level(logging.WARNING, logger="citycard.transport.pcsc")
    asked = []

    def holding(names):
        asked.append(list(names))
        return ["Citycard Virtual 00 01", "ACS ACR122U 00 00"]

    assert resolve_reader("virtual", NAMES, holding) == "Citycard Virtual 00 01"
    assert asked == [["Citycard Virtual 00 00", "Citycard Virtual 00 01"]]   # only the matching ones
    assert caplog.messages == ["reader 'virtual' matches 2 readers; using 'Citycard Virtual 00 01',"
                               " the only one holding a card"]


def test_fragment_ambiguity_errors():
    with pytest.raises(NoReaderError) as none:
        resolve_reader("Virtual", NAMES, lambda names: [])
    assert str(none.value) == ("'Virtual' matches 2 readers and none holds a card: Citycard Virtual 00 00,"
                               " Citycard Virtual 00 01")
    with pytest.raises(NoReaderError) as several:
        resolve_reader(" 00", NAMES, lambda names: names)
    assert str(several.value) == ("' 00' matches 3 readers holding a card (Citycard Virtual 00 00, Citycard Virtual"
                                  " 00 01, ACS ACR122U 00 00); give the full name or the index (citycard readers)")
    with pytest.raises(NoReaderError, match="matches 2 readers .*be more specific"):
        resolve_reader("Virtual", NAMES)               # no card information: as before
    # exact names and indexes never ask for cards
    assert resolve_reader("ACS ACR122U 00 00", NAMES, lambda n: pytest.fail("asked")) == "ACS ACR122U 00 00"
    assert resolve_reader("1", NAMES, lambda n: pytest.fail("asked")) == "Citycard Virtual 00 01"
    assert resolve_reader("acr", NAMES, lambda n: pytest.fail("asked")) == "ACS ACR122U 00 00"


# ------------------------------------------------------------------------------ in process
def test_citycard_card_fixture_is_a_fresh_card(citycard_card):
    resp = citycard_card.send(SELECT_MF)
    assert resp.sw == 0x9000
    assert citycard_card.personalization is None and citycard_card.model == "fm1208"
    assert citycard_card.send(SELECT_TRANSIT).sw == 0x6A82     # no application yet
    assert citycard_card.atr == citycard_card.card.atr


@pytest.mark.citycard(personalized=True, row=2)
def test_citycard_card_fixture_personalized(citycard_card):
    perso = citycard_card.personalization
    assert perso.row == 2 and perso.profile == asset_path("citycard.toml")
    citycard_card.send(SELECT_TRANSIT, expect=0x9000)
    ef15 = citycard_card.send(READ_EF15, expect=0x9000).data
    assert ef15[12:20] == bytes.fromhex(perso.card_serial.zfill(16))
    assert ef15[20:24] == bytes.fromhex(perso.issue_date.strftime("%Y%m%d"))


def run_inner(pytester, source: str, *args: str):
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_plugin_options_markers_and_images(pytester, tmp_path):
    card = new_card()
    perso = personalize_demo(card, profile="pboc-ep", row=7)
    save(card, pytester.path / "pboc.json")
    result = run_inner(pytester, f'''
        import pytest

        PBOC_SERIAL = bytes.fromhex("{perso.card_serial}")

        @pytest.mark.citycard(image="pboc.json")
        def test_image(citycard_card):
            assert citycard_card.personalization is None
            assert citycard_card.send("00A40000023F00").sw == 0x9000
            assert citycard_card.send("00A4040009A00000000386980701").sw != 0x9000   # no citycard transit

        def test_option_image(citycard_card):
            assert citycard_card.card.mf.children, "--citycard-image gives the personalized image"

        @pytest.mark.parametrize("citycard_card", [dict(personalized=True, profile="pboc-ep", row=3)],
                                 indirect=True)
        def test_indirect(citycard_card):
            assert citycard_card.personalization.row == 3
            assert citycard_card.personalization.profile.name == "pboc-ep.toml"

        @pytest.mark.citycard(model="fm1208")
        def test_model(citycard_card):
            assert citycard_card.model == "fm1208"

        @pytest.mark.citycard(model="nonesuch")
        def test_unknown_model(citycard_card):
            pass

        @pytest.mark.citycard(personalised=True)
        def test_misspelt(citycard_card):
            pass

        @pytest.mark.citycard(personalized=True, row=9999)
        def test_bad_row(citycard_card):
            pass
    ''', "-k", "not option_image")
    result.assert_outcomes(passed=3, errors=3)
    result.stdout.fnmatch_lines([
        "*citycard card: unknown card model 'nonesuch' (known: fm1208*",
        "*@pytest.mark.citycard: unknown option personalised (known: model, image, personalized, profile, keys,"
        " row, issue_date)",
        "*citycard card: *citycard-sample.csv: row 9999 does not exist (rows 1..240)",
    ])
    with_option = pytester.runpytest("-p", "no:cacheprovider", "--citycard-image", "pboc.json", "-k", "option_image")
    with_option.assert_outcomes(passed=1)
    fresh = pytester.runpytest("-p", "no:cacheprovider", "-k", "option_image")
    fresh.assert_outcomes(failed=1)
    both = pytester.runpytest("-p", "no:cacheprovider", "--citycard-model", "fm1208", "-k", "test_image")
    both.assert_outcomes(errors=1)
    both.stdout.fnmatch_lines(["*give a model or an image, not both*"])


def test_plugin_is_registered_by_its_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("citycard")
    assert plugin is not None and plugin.__name__ == "citycard.testing.plugin"


def test_require_pcsc_turns_the_skip_into_a_failure(pytester, monkeypatch):
    """Where the private pcscd cannot run (here: the vpcd driver missing), the reader is skipped with
    the reason, or fails under CITYCARD_REQUIRE_PCSC=1."""
    code = textwrap.dedent('''
        import citycard.testing.pcscd as p
        p.pcscd_available.cache_clear()
        p.VPCD_DRIVER = p.pathlib.Path("/nonexistent/libifdvpcd.so")

        def test_reader(citycard_reader):
            pass
    ''')
    pytester.makepyfile(test_inner=code)
    monkeypatch.delenv("CITYCARD_REQUIRE_PCSC", raising=False)
    skipped = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*private pcscd unavailable: vpcd driver /nonexistent/libifdvpcd.so not found"
                                  "*(CITYCARD_REQUIRE_PCSC=1 makes this a failure)*"])
    monkeypatch.setenv("CITYCARD_REQUIRE_PCSC", "1")
    failed = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    failed.assert_outcomes(errors=1)
    failed.stdout.fnmatch_lines(["*CITYCARD_REQUIRE_PCSC=1 but the private pcscd cannot run: vpcd driver*"])


# ------------------------------------------------------------------------------ PC/SC
def transmit(reader: str, apdu: str) -> tuple[str, bytes]:
    t = PcscTransport(reader)
    t.connect()
    try:
        return t.name, t.transmit(bytes.fromhex(apdu))
    finally:
        t.close()


@pytest.mark.pcsc
def test_citycard_reader_and_the_fragment_on_the_documented_set_up(citycard_reader, citycard_pcscd, caplog):
    assert citycard_reader == citycard_pcscd.reader_names[0]
    name, resp = transmit(citycard_reader, SELECT_MF)
    assert resp[-2:] == b"\x90\x00"
    # vpcd's two slots both match "Virtual"; only slot 0 holds a card (the README example)
    caplog.set_level(logging.WARNING, logger="citycard.transport.pcsc")
    name, resp = transmit("Virtual", SELECT_MF)
    assert name == citycard_reader and resp[-2:] == b"\x90\x00"
    assert f"using {citycard_reader!r}, the only one holding a card" in caplog.text
    # the CLI, as the README writes it
    env = dict(os.environ, **citycard_pcscd.env)
    cli = subprocess.run([sys.executable, "-m", "citycard", "apdu", "--reader", "Virtual", "--json",
                          "00A404000E315041592E5359532E4444463031"], env=env, capture_output=True, text=True)
    assert cli.returncode in (0, 1), cli.stderr           # 1: the fresh card has no PSE (SW not 9000)
    assert f"using {citycard_reader!r}, the only one holding a card" in cli.stderr
    assert "error" not in cli.stderr


@pytest.mark.pcsc
def test_fragment_with_cards_in_both_slots_is_an_error(citycard_reader, citycard_pcscd):
    with serve_in_reader(new_card(), citycard_pcscd, slot=1) as second:
        with pytest.raises(NoReaderError) as err:
            transmit("virtual", SELECT_MF)
        assert str(err.value) == (f"'virtual' matches 2 readers holding a card ({citycard_reader}, {second.reader});"
                                  " give the full name or the index (citycard readers)")
        assert transmit(second.reader, SELECT_MF)[1][-2:] == b"\x90\x00"


@pytest.mark.pcsc
@pytest.mark.citycard(personalized=True, row=5)
def test_citycard_reader_personalized(citycard_served_card, citycard_reader):
    assert citycard_served_card.reader == citycard_reader
    t = PcscTransport(citycard_reader)
    t.connect()
    try:
        from citycard.transport import CardSession

        card = CardSession(t)
        card.send(bytes.fromhex(SELECT_TRANSIT), expect=0x9000)
        ef15 = card.send(bytes.fromhex(READ_EF15), expect=0x9000).data
    finally:
        t.close()
    assert ef15[12:20] == bytes.fromhex(citycard_served_card.personalization.card_serial.zfill(16))


@pytest.mark.pcsc
def test_readme_library_example_runs_as_written(citycard_reader):
    import re

    section = (ROOT / "README.md").read_text().split("\n## The library\n", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```python\n(.*?)```", section, re.S)
    (example,) = [e for e in examples if 'PcscTransport("Virtual")' in e]
    scope: dict = {}
    exec(compile(example, "README.md (The library)", "exec"), scope)
    assert scope["fci"].startswith(b"\x6f")        # the MF's FCI template, fetched through 61xx
    assert scope["t"].name == citycard_reader


def test_readme_perso_example_runs_as_written(run_cli, tmp_path, monkeypatch):
    """The README's "personalizing one card from a script" example, in a folder holding the demo
    assets and a fresh card image (a real-card model FM1208: SPEC §6)."""
    import re

    from citycard.assets import copy_assets
    from citycard.sim import image

    section = (ROOT / "README.md").read_text().split("\n## The library\n", 1)[1].split("\n## ", 1)[0]
    (example,) = [e for e in re.findall(r"```python\n(.*?)```", section, re.S) if "personalize(" in e]
    monkeypatch.chdir(tmp_path)
    copy_assets(tmp_path)
    assert run_cli("sim", "new", "card.json").exit_code == 0
    scope: dict = {}
    exec(compile(example, "README.md (The library: perso)", "exec"), scope)
    assert scope["report"].verified and not scope["report"].rerun
    card = image.load(tmp_path / "card.json")
    assert card.model.name == "fm1208" and card.mf.keyfile is not None
    assert {df.name for df in card.mf.children.values() if hasattr(df, "keyfile")} >= {
        a.aid for a in scope["job"].spec.apps}


def test_named_profiles_resolve_to_the_shipped_files_unless_a_file_has_that_name(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = run_cli("profile", "check", "demo")
    assert demo.exit_code == 0, demo.stderr
    assert demo.stdout.strip() == "demo: ok (5 applications, 11 files, 20 keys)"   # the citizen card
    pboc = run_cli("profile", "check", "pboc-ep")
    assert pboc.stdout.startswith("pboc-ep: ok (1 application"), pboc.stdout
    (tmp_path / "demo").write_bytes(asset_path("pboc-ep.toml").read_bytes())   # a file called demo wins
    mine = run_cli("profile", "check", "demo")
    assert mine.stdout.startswith("demo: ok (1 application"), mine.stdout
    missing = run_cli("profile", "check", "nonesuch")
    assert missing.exit_code == 2 and "nonesuch" in missing.stderr and "no such profile" in missing.stderr


@pytest.mark.pcsc
@pytest.mark.parametrize("citycard_reader", [{"personalized": True, "profile": "pboc-ep", "row": 6}], indirect=True)
def test_citycard_reader_indirect_parameter(citycard_reader, citycard_served_card):
    perso = citycard_served_card.personalization
    assert citycard_served_card.reader == citycard_reader
    assert perso.profile == asset_path("pboc-ep.toml") and perso.row == 6
    name, resp = transmit(citycard_reader, SELECT_MF)
    assert resp[-2:] == b"\x90\x00"
