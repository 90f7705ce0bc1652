"""CLI conventions (issue 17 items 2, 6, 7): exit codes, JSON errors, one sensitivity rule,
no implicit reader for writing commands, `apdu` shorthands, amounts, help texts, batch
progress, and no traceback for any user mistake."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from citycard.cli import main as climain
from citycard.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = "20261124"
PIN = "123456"


@pytest.fixture
def fresh(run_cli, tmp_path):
    img = tmp_path / "fresh.json"
    assert run_cli("sim", "new", str(img)).exit_code == 0
    return img


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    """A card personalized from row 1 of the sample data with the demo keys."""
    from click.testing import CliRunner

    img = tmp_path_factory.mktemp("issued") / "card.json"
    runner = CliRunner()
    assert runner.invoke(cli, ["sim", "new", str(img), "--model", "fm1208-16ff"]).exit_code == 0
    r = runner.invoke(cli, ["perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--data", str(DATA),
                            "--row", "1", "--issue-date", DAY, "--sim", str(img)])
    assert r.exit_code == 0, r.output
    return img


# ------------------------------------------------------------------ exit codes
def test_exit_codes_by_family():
    from citycard.errors import CardError, InputError, NoReaderError
    from citycard.perso.steps import PersoError
    from citycard.terminal.purse import PurseError

    assert climain.exit_code_for(InputError("x")) == 2
    assert climain.exit_code_for(NoReaderError("x")) == 2
    assert climain.exit_code_for(click.UsageError("x")) == 2
    assert climain.exit_code_for(CardError(0x6983, "EXTERNAL AUTHENTICATE")) == 1
    assert climain.exit_code_for(PersoError("verification failed: EF0015")) == 1
    assert climain.exit_code_for(PurseError("MAC2 from the card is wrong")) == 1
    assert climain.exit_code_for(KeyboardInterrupt()) == 130


def test_card_refusal_is_1_usage_is_2_interrupt_is_130(run_cli, fresh, monkeypatch):
    refused = run_cli("purse", "balance", "--profile", str(PROFILE), "--sim", str(fresh))
    assert refused.exit_code == 1 and "6A82" in refused.stderr
    assert run_cli("apdu", "--sim", str(fresh), "--nosuch").exit_code == 2
    assert run_cli("apdu", "--sim", str(fresh), "00A4").exit_code == 2

    import citycard.sim.saver as saver

    def interrupted(_path):
        raise KeyboardInterrupt

    monkeypatch.setattr(saver, "open_image", interrupted)
    r = run_cli("apdu", "--sim", str(fresh), "00A40000023F00")
    assert r.exit_code == 130 and "Traceback" not in r.stderr


# ------------------------------------------------------------------ JSON errors
def _error(r) -> dict:
    out = r.json()
    assert out["ok"] is False and set(out["error"]) <= {"kind", "message", "exit_code", "sw"}
    assert out["error"]["exit_code"] == r.exit_code
    return out["error"]


def test_json_errors_have_one_shape(run_cli, fresh):
    bad_hex = run_cli("apdu", "--json", "--sim", str(fresh), "00A4000002 3F0")
    assert bad_hex.exit_code == 2
    assert _error(bad_hex) == {"kind": "input", "exit_code": 2,
                               "message": "APDU 1: odd number of hex digits (13)"}
    card = run_cli("purse", "balance", "--json", "--profile", str(PROFILE), "--sim", str(fresh))
    err = _error(card)
    assert card.exit_code == 1 and err["kind"] == "card" and err["sw"] == "6A82"
    usage = run_cli("calc", "des", "--json", "--nosuch")
    assert usage.exit_code == 2 and _error(usage)["kind"] == "usage"
    calc = run_cli("calc", "kcv", "--json", "--key", "0011")
    assert calc.exit_code == 2 and "--key" in _error(calc)["message"]
    mismatch = run_cli("apdu", "--json", "--sim", str(fresh), "00A40000023F01=9000")
    out = mismatch.json()
    assert mismatch.exit_code == 1 and out["ok"] is False
    assert out["error"]["kind"] == "card" and out["error"]["sw"] == "6A82"
    assert out["exchanges"][0]["sw"] == "6A82"      # what was exchanged stays reported


# ------------------------------------------------------------------ one sensitivity rule
def test_verify_data_is_masked_in_every_output(run_cli, fresh, tmp_path, capture):
    transcript = tmp_path / "t.txt"
    args = ["-l", "DEBUG", "--transcript", str(transcript), "apdu", "--sim", str(fresh)]
    as_json = run_cli(*args, "--json", f"0020000003{PIN}")
    assert as_json.exit_code == 0
    assert as_json.json()["exchanges"][0]["command"] == "0020000003 <3 bytes masked>"
    text = run_cli(*args, f"0020000003{PIN}")
    assert "> 0020000003 <3 bytes masked>" in text.stdout
    logs = "\n".join(r.getMessage() for r in capture.records)
    for out in (as_json.stdout, as_json.stderr, text.stdout, text.stderr, transcript.read_text(), logs):
        assert PIN not in out
    assert "0020000003 <3 bytes masked>" in transcript.read_text()


def test_one_rule_decides_text_and_json():
    from citycard.apdu import CommandApdu, is_sensitive
    from citycard.transport.transcript import command_hex, format_command

    marked = CommandApdu(0x04, 0xD6, 0x95, 0x00, bytes.fromhex("1122334455"), sensitive=True)
    pin = CommandApdu(0x00, 0x20, 0x00, 0x00, bytes.fromhex(PIN))
    plain = CommandApdu(0x00, 0xB0, 0x95, 0x00, ne=4)
    for cmd in (marked, pin):
        assert is_sensitive(cmd)
        assert "masked" in command_hex(cmd) and command_hex(cmd) == format_command(cmd)
        assert cmd.data.hex().upper() not in command_hex(cmd)
    assert not is_sensitive(plain) and command_hex(plain) == "00B0950004"


# ------------------------------------------------------------------ reader choice
def test_writing_commands_never_pick_a_reader_silently(run_cli, monkeypatch, tmp_path):
    import citycard.transport.pcsc as pcsc
    from citycard.transport.pcsc import ReaderStatus

    monkeypatch.delenv("CITYCARD_READER", raising=False)
    monkeypatch.setattr(pcsc, "list_readers", lambda: [ReaderStatus("Reader A", False, False, b""),
                                                       ReaderStatus("Reader B", False, False, b"")])
    r = run_cli("perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--data", str(DATA), "--row", "1")
    assert r.exit_code == 2
    assert "writes to a card: name it with --reader or --sim" in r.stderr and "no reader holds a card" in r.stderr

    from citycard.cli.common import default_reader_for_writing

    monkeypatch.setattr(pcsc, "list_readers", lambda: [ReaderStatus("Reader A", False, False, b""),
                                                       ReaderStatus("Reader B", True, False, b"\x3b\x00")])
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert default_reader_for_writing() == "Reader B"
    assert "using reader 'Reader B', the only reader holding a card" in err.getvalue()


# ------------------------------------------------------------------ apdu conventions
def test_apdu_equals_alone_means_9000_and_dash_reads_stdin(run_cli, fresh):
    ok = run_cli("apdu", "--sim", str(fresh), "--json", "00A40000023F00=")
    assert ok.exit_code == 0 and ok.json()["exchanges"][0]["expected_sw"] == "9000"
    bad = run_cli("apdu", "--sim", str(fresh), "00A40000023F01=")
    assert bad.exit_code == 1 and "expected SW 9000" in bad.stderr
    script = "# select the MF\n00A40000023F00=9000\n\n0084000004\n"
    r = run_cli("apdu", "--sim", str(fresh), "--json", "-", input=script)
    assert r.exit_code == 0
    assert [e["command"] for e in r.json()["exchanges"]] == ["00A40000023F00", "0084000004"]
    wrong = run_cli("apdu", "--sim", str(fresh), "-", input="00A40000023F00\n00A4 0\n")
    assert wrong.exit_code == 2 and "standard input line 2" in wrong.stderr and wrong.stdout == ""


# ------------------------------------------------------------------ amounts
@pytest.mark.parametrize("amount, message", [
    ("1e3", "no exponent"), ("1E3", "no exponent"), ("-1", "no exponent, sign"), ("1,000.00", "separator"),
    ("1.234", "at most 2 decimals"), ("0", "must be positive"), ("0.00", "must be positive"),
    ("42949673", "too large: at most 42949672.95 yuan (4294967295 fen"), ("nan", "expected yuan"),
])
def test_amounts_refuse_exponents_and_state_the_limit(amount, message):
    from citycard.cli.purse_cmd import parse_yuan
    from citycard.errors import InputError

    with pytest.raises(InputError, match=None) as exc:
        parse_yuan(amount)
    assert message in str(exc.value) and str(exc.value).startswith(f"--amount {amount!r}")


def test_amounts_in_fen():
    from citycard.cli.purse_cmd import parse_yuan
    from citycard.money import yuan

    assert [parse_yuan(v) for v in ("10", "10.5", "10.05", ".5", "42949672.95")] == [1000, 1050, 1005, 50,
                                                                                       4294967295]
    assert [yuan(f) for f in (0, 5, 1050, 4294967295)] == ["0.00", "0.05", "10.50", "42949672.95"]


def test_purse_load_1e3_changes_nothing(run_cli, issued, tmp_path):
    img = tmp_path / "card.json"
    img.write_bytes(issued.read_bytes())
    r = run_cli("purse", "load", "--profile", str(PROFILE), "--keys", str(KEYS), "--sim", str(img),
                "--amount", "1e3")
    assert r.exit_code == 2 and "no exponent" in r.stderr
    assert img.read_bytes() == issued.read_bytes()


# ------------------------------------------------------------------ purse balance needs no keys
def test_purse_balance_of_an_ep_needs_no_keys(run_cli, issued):
    r = run_cli("purse", "balance", "--profile", str(PROFILE), "--sim", str(issued), "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json() == {"balance_fen": 0, "balance_yuan": "0.00"}


# ------------------------------------------------------------------ PINs
def test_pin_without_a_terminal_needs_pin_stdin(run_cli, issued, tmp_path, monkeypatch, recwarn):
    monkeypatch.delenv("CITYCARD_PIN", raising=False)
    img = tmp_path / "card.json"
    img.write_bytes(issued.read_bytes())
    common = ["--profile", str(PROFILE), "--sim", str(img)]
    piped = run_cli("pin", "verify", *common, input=f"{PIN}\n")
    assert piped.exit_code == 2 and "--pin-stdin" in piped.stderr
    assert not [w for w in recwarn if "GetPass" in type(w.message).__name__]
    assert img.read_bytes() == issued.read_bytes()     # no VERIFY sent, no try spent


# ------------------------------------------------------------------ help texts
def _options_without_help(cmd: click.Command, path: list[str]) -> list[str]:
    out = []
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(click.Context(cmd)):
            sub = cmd.get_command(click.Context(cmd), name)
            assert sub is not None, name
            out += _options_without_help(sub, [*path, name])
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden and not p.help:
            out.append(f"{' '.join(path)} {p.opts[-1]}")
    return out


def test_every_option_has_help():
    assert _options_without_help(cli, ["citycard"]) == []


def test_units_are_stated_in_help(run_cli):
    assert "in fen" in run_cli("calc", "load", "--help").stdout
    assert "yuan" in run_cli("purse", "load", "--help").stdout
    assert "Block an application" in run_cli("app", "--help").stdout


# ------------------------------------------------------------------ batch
def test_batch_status_and_report_refuse_a_missing_journal(run_cli, tmp_path):
    typo = tmp_path / "typo.db"
    for args in (("batch", "status", str(typo)), ("batch", "report", str(typo))):
        r = run_cli(*args)
        assert r.exit_code == 2 and "no such journal" in r.stderr
    assert not typo.exists()


def test_batch_report_refuses_a_missing_batch(run_cli, tmp_path):
    from citycard.perso.journal import Journal

    url = str(tmp_path / "j.db")
    Journal(url).close()
    r = run_cli("batch", "report", url, "--batch", "nosuch")
    assert r.exit_code == 2 and "no batch 'nosuch' in this journal" in r.stderr


def test_batch_progress_throttled_on_a_terminal_and_lines_without():
    from citycard.cli.common import ProgressDrawer
    from citycard.perso.batch import BatchProgress

    now = [0.0]
    tty, pipe = io.StringIO(), io.StringIO()
    bar = ProgressDrawer(tty, tty=True, tty_interval=0.2, clock=lambda: now[0])
    lines = ProgressDrawer(pipe, tty=False, line_interval=5.0, clock=lambda: now[0])
    for done in range(1, 6001):                 # 6,000 cards in 600 s
        now[0] = done * 0.1
        p = BatchProgress(total=6000, done=done, failed=0, elapsed=now[0], final=done == 6000)
        bar(p)
        lines(p)
    assert 1000 <= tty.getvalue().count("\r") <= 3001           # at most one redraw per 0.2 s
    assert len(tty.getvalue()) < 300_000 and tty.getvalue().endswith("ETA 00:00:00\n")
    out = pipe.getvalue().splitlines()
    assert 100 <= len(out) <= 121 and "\r" not in pipe.getvalue()   # a line every 5 s, and the end
    assert out[0].startswith("batch: ") and out[-1].startswith("batch: done: 6000/6000 cards")


# ------------------------------------------------------------------ no traceback for a user mistake
def _cli(args: list[str], env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    e.pop("CITYCARD_PIN", None)
    return subprocess.run([sys.executable, "-m", "citycard", *args], capture_output=True, text=True,
                          input=stdin, env=e, timeout=60)


def test_user_mistakes_give_one_line_and_exit_2(tmp_path):
    img = tmp_path / "card.json"
    assert _cli(["sim", "new", str(img)]).returncode == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    perso = ["perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--row", "1", "--sim", str(img)]
    mistakes = [
        ["sim", "new", "/nonexistent/dir/x.json"],
        ["sim", "show", str(folder)],
        [*perso, "--data", str(folder)],
        [*perso, "--data", str(tmp_path / "missing.csv")],
        ["profile", "check", str(folder)],
        ["apdu", "--sim", str(tmp_path / "missing.json"), "00A40000023F00"],
        ["apdu", "--sim", str(folder), "00A40000023F00"],
        ["apdu", "--sim", str(img), "00A4 0"],
        ["--transcript", "/nonexistent/dir/t.txt", "apdu", "--sim", str(img), "00A40000023F00"],
        ["purse", "load", "--profile", str(PROFILE), "--keys", str(KEYS), "--sim", str(img), "--amount", "1e3"],
        ["pin", "verify", "--profile", str(PROFILE), "--sim", str(img)],
        ["calc", "des", "--key", "0011", "--data", "00"],
        ["batch", "status", str(tmp_path / "typo.db")],
        ["keys", "list", str(tmp_path / "none.cks")],
        ["dump", "--sim", str(folder)],
    ]
    for args in mistakes:
        p = _cli(args, stdin=f"{PIN}\n")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2, (args, p.stderr)
        assert "Traceback" not in p.stderr, (args, p.stderr)
        if lines[0].startswith("Usage: "):       # click's usage error: usage, hint, one "Error:" line
            assert [x for x in lines if x.startswith("Error: ")] == [lines[-1]], (args, p.stderr)
        else:
            assert len(lines) == 1 and lines[0].startswith("citycard: error: "), (args, p.stderr)
    assert not (tmp_path / "typo.db").exists()


def test_transcripts_are_private_and_a_shared_passphrase_file_is_named(tmp_path, run_cli):
    """Issue 18 point 8: transcripts hold cardholder data: created 0600 (global --transcript and
    script run --transcript); a passphrase file others can read gets a warning naming it."""
    import stat

    image = tmp_path / "card.json"
    assert run_cli("sim", "new", str(image)).exit_code == 0
    wire, rec = tmp_path / "wire.txt", tmp_path / "rec.cardscript"
    assert run_cli("--transcript", str(wire), "apdu", "--sim", str(image), "00A40000023F00").exit_code == 0
    script = tmp_path / "s.cardscript"
    script.write_text("00A40000023F00 =9000\n")
    assert run_cli("script", "run", str(script), "--sim", str(image), "--transcript", str(rec)).exit_code == 0
    for f in (wire, rec):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    ks = str(tmp_path / "k.cks")
    pw = tmp_path / "pw.txt"
    pw.write_text("a long enough passphrase\n")
    pw.chmod(0o644)
    r = run_cli("keys", "create", ks, "--passphrase-file", str(pw))
    assert r.exit_code == 0, r.stderr
    assert f"--passphrase-file {pw} can be read by other users" in r.stderr
    pw.chmod(0o600)
    r = run_cli("keys", "list", ks, "--passphrase-file", str(pw))
    assert r.exit_code == 0 and "can be read by other users" not in r.stderr
