"""`citycard script run`: the script language in process (--sim) on a personalized demo
card: success, each kind of failure with its line, transcripts recorded and replayed, and
no key or PIN in any output."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from citycard.crypto import diversify
from citycard.errors import InputError
from citycard.keys.demo import DemoKeyFile
from citycard.shell.pattern import ResponsePattern, SwPattern, volatile_bytes
from citycard.shell.script import (Apdu, Auth, Expect, Mac, Protect, ScriptError, Select, SetVar, VerifyPin,
                                   check, parse, split_tail, strip_comment)

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles/citycard.toml")
KEYS = str(ROOT / "profiles/demo-keys.toml")
PK = ["--profile", PROFILE, "--keys", KEYS]
EXAMPLES = sorted((ROOT / "examples").glob("*.cardscript"))
SERIAL = "3301000000000001"


@pytest.fixture(scope="module")
def perso_image(tmp_path_factory):
    """A demo card personalized from row 1 of the sample data (made once per module)."""
    from click.testing import CliRunner

    from citycard.cli.main import cli

    image = tmp_path_factory.mktemp("script") / "perso.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["sim", "new", str(image)]).exit_code == 0
    r = runner.invoke(cli, ["perso", *PK, "--data", str(ROOT / "profiles/citycard-sample.csv"), "--row", "1",
                            "--sim", str(image), "--issue-date", "20261124"])
    assert r.exit_code == 0, r.output
    return image


@pytest.fixture
def card(perso_image, tmp_path):
    """A fresh copy of the personalized card for one test."""
    path = tmp_path / "card.json"
    shutil.copy(perso_image, path)
    return path


def write(tmp_path, text: str, name: str = "t.cardscript") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def per_card_keys() -> list[str]:
    """Every per-card key of the demo card and every master, in hex: none may ever be shown."""
    src = DemoKeyFile(KEYS)
    factor = bytes.fromhex(SERIAL)
    out = []
    for unit, role in src.entries():
        master = src.derive(unit, role, None)
        out += [master.hex().upper(), diversify(master, factor).hex().upper()]
        card_key = diversify(master, factor)
        out += [card_key[:8].hex().upper(), card_key[8:].hex().upper()]
    return out


# ---------------------------------------------------------------------------- the language
def test_response_patterns():
    p = ResponsePattern.parse("6F..84 0E * 9000")
    assert p.matches(bytes.fromhex("6F15840E") + b"x" * 20, 0x9000)
    assert p.matches(bytes.fromhex("6F00840E"), 0x9000)                 # '*' may be empty
    assert not p.matches(bytes.fromhex("6F15840F"), 0x9000)
    assert not p.matches(bytes.fromhex("6F15840E"), 0x6A82)
    assert ResponsePattern.parse("6X 9000").matches(b"\x61", 0x9000)
    assert ResponsePattern.parse("* 9000").matches(b"", 0x9000)
    assert not ResponsePattern.parse("..9000").matches(b"", 0x9000)     # exactly one byte
    assert ResponsePattern.parse("* 6A8X").matches(b"", 0x6A83)
    for bad in ("6F 9", "6G 9000", "", "9"):
        with pytest.raises(InputError):
            ResponsePattern.parse(bad)
    assert ResponsePattern.exact(b"\x01\x02", 0x9000, frozenset({1})).text == "01.. 9000"


def test_sw_patterns_and_volatile_bytes():
    assert SwPattern.parse("63cx").matches(0x63C2) and not SwPattern.parse("63CX").matches(0x6300)
    with pytest.raises(InputError):
        SwPattern.parse("900")
    assert volatile_bytes(bytes.fromhex("0084000004"), b"1234") == frozenset(range(4))
    assert volatile_bytes(bytes.fromhex("805000020B"), bytes(16)) == frozenset(range(8, 16))
    assert volatile_bytes(bytes.fromhex("805001020B"), bytes(15)) == frozenset(range(11, 15))
    assert volatile_bytes(bytes.fromhex("00B0950000"), bytes(30)) == frozenset()


def test_parse_statements():
    s = parse("set A = 12 34   # c\n"
              "00A4 0400 09 A00000000386980701 =9000 -> 6F * 9000 => FCI\n"
              "select transit =6A82\n"
              "auth transit master\n"
              "verify-pin social env=MYPIN =63CX\n"
              "mac transit/damk 04D6${A} iv=${FCI[0:4]} => M\n"
              "protect transit/damk encrypt 00D6951C02 ${M[0:2]}\n"
              "expect ${A} != 1235\n"
              "> 0084000004\n"
              "< 11223344 9000  # success, 0.1 ms\n", "x")
    kinds = [type(st) for st in s.statements]
    assert kinds == [SetVar, Apdu, Select, Auth, VerifyPin, Mac, Protect, Expect, Apdu]
    a = s.statements[1]
    assert a.command == "00A4 0400 09 A00000000386980701" and a.expect.sw == "9000"
    assert a.expect.pattern == "6F * 9000" and a.expect.capture == "FCI"
    assert s.statements[3].key == "master" and s.statements[4].env == "MYPIN"
    assert s.statements[6].encrypt and s.statements[6].command == "00D6951C02 ${M[0:2]}"
    replay = s.statements[8]
    assert replay.replayed and replay.expect.pattern == "........ 9000"      # a challenge: random
    assert [st.line for st in s.statements] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert strip_comment("echo a#b # c") == "echo a#b"
    assert split_tail("00B0950000=6A82")[1].sw == "6A82"


@pytest.mark.parametrize("text,line,needle", [
    ("select mf\nbogus stuff\n", 2, "'bogus' is neither a statement"),
    ("00A4 =90\n", 1, "expected SW is '=' and 4 hex digits"),
    ("00B0950000 -> 6G 9000\n", 1, "not a hex digit"),
    ("00B0950000 ->\n", 1, "followed by a response pattern"),
    ("set 1X = 2\n", 1, "set NAME = VALUE"),
    ("mac transit 00 => M\n", 1, "APPLICATION/KEY"),
    ("\n\nverify-pin social 123456\n", 3, "never from the script"),
    ("< 9000\n", 1, "must follow a '>'"),
    ("00B0\n", 1, "at least 4"),
    ("> 80D4010015 <21 bytes masked>\n< 9000\n", 1, "masked when it was recorded"),
    ("> 0084000004\n< 11223344 9000\n> 0082000008 1122334455667788\n< 9000\n", 3, "cryptogram or MAC"),
])
def test_syntax_errors_name_the_line(text, line, needle):
    with pytest.raises(ScriptError) as e:
        parse(text, "f.cardscript")
    assert e.value.line == line and needle in str(e.value)
    assert str(e.value).startswith(f"f.cardscript:{line}: ")


def test_static_checks():
    from citycard.profile import load_profile

    spec = load_profile(PROFILE)
    ok = parse("00B0950000 => X\necho ${X[0:2]} ${SW}\nauth transit\n", "s")
    check(ok, spec=spec, have_keys=True)
    cases = [
        ("echo ${NOPE}\n", {}, "variable 'NOPE' is used before it is set"),
        ("echo ${X}\n00B0950000 => X\n", {}, "'X' is used before"),
        ("auth transit\n", {"have_keys": False}, "needs a key source (--keys)"),
        ("mac transit/damk 00 => M\n", {"spec": None}, "needs a profile"),
        ("auth metro\n", {}, "no application 'metro'"),
        ("auth transit damk\n", {}, "not an external-auth key"),
        ("protect transit/nokey 00D6951C0100\n", {}, "no key 'nokey' in transit"),
        ("verify-pin transit\n", {}, "transit has no PIN"),
        ("mac social/pin 00 => M\n", {}, "has no master in the key sources"),
    ]
    for text, kw, needle in cases:
        args = {"spec": spec, "have_keys": True, **kw}
        with pytest.raises(ScriptError, match=re.escape(needle)):
            check(parse(text, "s"), **args)
    check(parse("echo ${V}\n", "s"), predefined=["V"])


# ---------------------------------------------------------------------------- running
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_run(example, card, run_cli, monkeypatch):
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    r = run_cli("script", "run", str(example), "--sim", str(card), *PK)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("statements, ok")
    assert run_cli("script", "check", str(example), "--profile", PROFILE, "--with-keys").exit_code == 0


def test_success_output_shows_exchanges_and_meanings(card, tmp_path, run_cli):
    f = write(tmp_path, "select transit\n00B2011C00 =6A8X\necho done ${SW}\n")
    r = run_cli("script", "run", f, "--sim", str(card), "--profile", PROFILE)
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "> 00A4040009 A00000000386980701" in out and "(success)" in out
    assert "84 (DF name) 09 A00000000386980701" in out                  # TLV dump of the FCI
    assert "< 6A82  (file or application not found)" in out
    assert "done 6A82" in out and "-- 3: echo done ${SW}" in out
    q = run_cli("script", "run", f, "--sim", str(card), "--profile", PROFILE, "-q")
    assert q.stdout.splitlines() == ["done 6A82", f"{f}: 3 statements, ok"]


def test_sw_mismatch_stops_at_its_line(card, tmp_path, run_cli):
    f = write(tmp_path, "# a comment\nselect transit\n\n00B2011C00\necho never\n")
    r = run_cli("script", "run", f, "--sim", str(card), "--profile", PROFILE)
    assert r.exit_code == 1
    assert r.stderr.strip() == f"{f}:4: expected SW 9000, card answered 6A82 (file or application not found)"
    assert "never" not in r.stdout


def test_auth_on_a_blocked_card_names_the_cards_answer(card, tmp_path, run_cli):
    """`auth` reads the card's serial first; on a blocked card (CARD BLOCK: every command
    answers 6A81) the one error line says what the card answered, not only that no readable
    file carries the serial."""
    assert run_cli("card", "block", *PK, "--sim", str(card), "--yes").exit_code == 0
    f = write(tmp_path, "auth transit\n")
    r = run_cli("script", "run", f, "--sim", str(card), *PK)
    assert r.exit_code != 0
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"citycard: error: {f}:1: cannot read the serial of transit")
    assert "6A81" in line


def test_pattern_mismatch(card, tmp_path, run_cli):
    f = write(tmp_path, "select A00000000386980701\n00B0950004 -> 3301 3302 9000\n")
    r = run_cli("script", "run", f, "--sim", str(card))
    assert r.exit_code == 1
    assert f"{f}:2: response 33013301 9000 (success) does not match the pattern 3301 3302 9000" in r.stderr


def test_expect_failure(card, tmp_path, run_cli):
    f = write(tmp_path, "select A00000000386980701\n00B0950002 => IC\nexpect ${IC} == 9999\n")
    r = run_cli("script", "run", f, "--sim", str(card))
    assert r.exit_code == 1 and f"{f}:3: expect failed: '3301' == '9999'" in r.stderr


def test_syntax_error_exits_2_before_touching_the_card(card, tmp_path, run_cli):
    f = write(tmp_path, "00A40000023F00\n00A4 04 00 zz\n")
    before = card.read_bytes()
    r = run_cli("--transcript", str(tmp_path / "wire.txt"), "script", "run", f, "--sim", str(card))
    assert r.exit_code == 2
    assert f"citycard: error: {f}:2: " in r.stderr
    assert r.stdout == "" and not (tmp_path / "wire.txt").exists() and card.read_bytes() == before


def test_unknown_variable(card, tmp_path, run_cli):
    f = write(tmp_path, "set A = 00\n00A40000023F00\n00B0950000 =${B}\n")
    r = run_cli("script", "run", f, "--sim", str(card))
    assert r.exit_code == 2 and f"{f}:3: " in r.stderr
    f2 = write(tmp_path, "00A4040009 ${AID}\n", "v.cardscript")
    r2 = run_cli("script", "run", f2, "--sim", str(card))
    assert r2.exit_code == 2 and f"{f2}:1: variable 'AID' is used before it is set" in r2.stderr
    r3 = run_cli("script", "run", f2, "--sim", str(card), "-D", "AID=A00000000386980701", "-q")
    assert r3.exit_code == 0, r3.stderr


def test_missing_key_source_and_profile(card, tmp_path, run_cli):
    f = write(tmp_path, "select transit\nauth transit\n")
    r = run_cli("script", "run", f, "--sim", str(card), "--profile", PROFILE)
    assert r.exit_code == 2 and f"{f}:2: auth needs a key source (--keys)" in r.stderr and r.stdout == ""
    r2 = run_cli("script", "run", f, "--sim", str(card), "--keys", KEYS)
    assert r2.exit_code == 2 and f"{f}:2: auth needs a profile (--profile)" in r2.stderr


def test_auth_with_a_wrong_key_is_a_mismatch(card, tmp_path, run_cli):
    f = write(tmp_path, "auth transit\nauth transit =63CX\n")
    other = str(ROOT / "tests/data/other-keys.toml")
    r = run_cli("script", "run", f, "--sim", str(card), "--profile", PROFILE, "--keys", other)
    assert r.exit_code == 1 and f"{f}:1: expected SW 9000, card answered 63C4" in r.stderr


def test_verify_pin_comes_from_the_environment_and_is_masked(card, tmp_path, run_cli, monkeypatch):
    f = write(tmp_path, "select social\nverify-pin social\n00B2013400 -> 08 12 * 9000\n")
    monkeypatch.delenv("CITYCARD_PIN", raising=False)
    r = run_cli("script", "run", f, "--sim", str(card), "--profile", PROFILE)
    assert r.exit_code == 2 and f"{f}:2: verify-pin: set the PIN in the environment variable CITYCARD_PIN" in r.stderr
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    rec, wire = tmp_path / "rec.cardscript", tmp_path / "wire.txt"
    r = run_cli("--transcript", str(wire), "script", "run", f, "--sim", str(card), "--profile", PROFILE,
                "--transcript", str(rec))
    assert r.exit_code == 0, r.stderr
    assert "> 0020000003 <3 bytes masked>" in r.stdout
    for text in (r.stdout, r.stderr, rec.read_text(), wire.read_text()):
        assert "123456" not in text and "12345" not in text
    assert "verify-pin social" in rec.read_text()
    monkeypatch.setenv("CITYCARD_PIN", "654321")
    bad = run_cli("script", "run", f, "--sim", str(card), "--profile", PROFILE)
    assert bad.exit_code == 1 and f"{f}:2: expected SW 9000, card answered 63C2" in bad.stderr


ROUND_TRIP = """\
# everything that does not replay byte for byte, and everything that does
set NEW = BEEF
select transit -> 6F..84 09 A00000000386980701 * 9000
00B0950000 => EF15
echo serial ${EF15[12:20]}
auth transit
protect transit/damk 00D6951C02 ${NEW}
select ef0015
00B0000000 -> * BEEF 9000
0084000004 => CHAL
mac transit/damk 04D6951C06 CAFE iv=${CHAL} => M
04D6951C06 CAFE ${M}
00B0951C02 -> CAFE 9000
select mf
00B2010C00 => DIR
expect ${DIR[0:1]} == 61
805C000204 =XXXX
select transit
0084000004
04D6951C06 CAFE 00000000 =9302                 # a wrong MAC, after a challenge
"""


def test_transcript_record_and_replay(perso_image, tmp_path, run_cli):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    shutil.copy(perso_image, a)
    shutil.copy(perso_image, b)
    f = write(tmp_path, ROUND_TRIP)
    rec = tmp_path / "rec.cardscript"
    r = run_cli("script", "run", f, "--sim", str(a), *PK, "--transcript", str(rec))
    assert r.exit_code == 0, r.stderr
    text = rec.read_text()
    assert text.startswith("# citycard script transcript: reader")
    lines = text.splitlines()
    assert "> 00A4040009 A00000000386980701" in lines
    assert "< 6F..84 09 A00000000386980701 * 9000" in lines          # the script's own pattern
    assert any(line.startswith("< 3301") and line.endswith(" 9000 => EF15") for line in lines)
    assert "< ........ 9000 => CHAL" in lines                         # a challenge: random
    assert "auth transit" in lines and "protect transit/damk 00D6951C02 ${NEW}" in lines
    assert "04D6951C06 CAFE ${M}" in lines                            # built from a MAC: as written
    assert any(line.startswith("#> 0082000008 ") for line in lines)   # what auth exchanged, for reading
    for secret in per_card_keys():
        assert secret not in text and secret not in r.stdout
    # replay on a card in the same state: passes
    replay = run_cli("script", "run", str(rec), "--sim", str(b), *PK)
    assert replay.exit_code == 0, replay.stderr
    # the replay checks what was recorded: a changed answer fails at its line
    bad_lines = [line.replace("< 3301", "< 3302", 1) if " => EF15" in line else line for line in lines]
    bad = tmp_path / "bad.cardscript"
    bad.write_text("\n".join(bad_lines) + "\n")
    no = next(i for i, line in enumerate(bad_lines, 1) if " => EF15" in line) - 1     # its '>' line
    assert bad_lines[no - 1] == "> 00B0950000"
    c = tmp_path / "c.json"
    shutil.copy(perso_image, c)
    r2 = run_cli("script", "run", str(bad), "--sim", str(c), *PK)
    assert r2.exit_code == 1 and f"{bad}:{no}: response 3301" in r2.stderr
    # replaying needs the key source, as the original did
    r3 = run_cli("script", "run", str(rec), "--sim", str(b), "--profile", PROFILE)
    assert r3.exit_code == 2 and "needs a key source" in r3.stderr


def test_failed_run_records_up_to_the_failure(card, tmp_path, run_cli):
    f = write(tmp_path, "select A00000000386980701\n00B2011C00\n")
    rec = tmp_path / "rec.cardscript"
    r = run_cli("script", "run", f, "--sim", str(card), "--transcript", str(rec))
    assert r.exit_code == 1
    text = rec.read_text()
    assert "#< 6A82" in text and f"# FAILED: {f}:2: expected SW 9000" in text


def test_wire_transcript_replays(card, tmp_path, run_cli):
    wire = tmp_path / "wire.txt"
    r = run_cli("--transcript", str(wire), "apdu", "--sim", str(card), "00A4040009A00000000386980701",
                "00B0950000", "0084000008", "805C000204", "00B2011C00")
    assert r.exit_code == 0
    assert wire.read_text().startswith("# citycard transcript: ")
    replay = run_cli("script", "run", str(wire), "--sim", str(card))
    assert replay.exit_code == 0, replay.stderr
    # a different answer is a mismatch at the '>' line of the exchange
    lines = wire.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("> 805C"))
    lines[i + 1] = "< 00000001 9000"
    wire.write_text("\n".join(lines) + "\n")
    r2 = run_cli("script", "run", str(wire), "--sim", str(card))
    assert r2.exit_code == 1 and f"{wire}:{i + 1}: response 00000000 9000" in r2.stderr


def test_wire_transcripts_that_cannot_replay_say_where(card, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    pin = tmp_path / "pin.txt"
    assert run_cli("--transcript", str(pin), "pin", "verify", "--sim", str(card), "--profile", PROFILE).exit_code == 0
    r = run_cli("script", "run", str(pin), "--sim", str(card))
    no = next(n for n, line in enumerate(pin.read_text().splitlines(), 1) if "masked" in line)
    assert r.exit_code == 2 and f"{pin}:{no}: this command's data (3 bytes) was masked" in r.stderr
    dump = tmp_path / "dump.txt"
    assert run_cli("--transcript", str(dump), "dump", "--sim", str(card), *PK).exit_code == 0
    r = run_cli("script", "run", str(dump), "--sim", str(card))
    assert r.exit_code == 2 and "carries a cryptogram or MAC computed over the card's random" in r.stderr


def test_no_key_in_any_output(card, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    rec, wire = tmp_path / "rec.cardscript", tmp_path / "wire.txt"
    f = write(tmp_path, ROUND_TRIP + "select transit\n"
              "protect transit/damk encrypt 00D6951C02 0000 =6700\n"   # EF0015 wants a MAC, not a cryptogram
              "serial mf => S\n")
    r = run_cli("-l", "DEBUG", "--transcript", str(wire), "script", "run", f, "--sim", str(card), *PK,
                "--transcript", str(rec))
    assert r.exit_code == 0, r.stderr
    for secret in per_card_keys():
        for text in (r.stdout, r.stderr, rec.read_text(), wire.read_text()):
            assert secret not in text


def test_script_check_without_a_card(tmp_path, run_cli):
    f = write(tmp_path, "select transit\nauth transit\n")
    assert run_cli("script", "check", f, "--profile", PROFILE, "--with-keys").exit_code == 0
    r = run_cli("script", "check", f, "--profile", PROFILE)
    assert r.exit_code == 2 and f"{f}:2: auth needs a key source" in r.stderr
