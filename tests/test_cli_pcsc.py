"""`citycard readers` and `citycard apdu` through a real (private) pcscd and the vpcd reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from citycard.testing.democard import DEMO_ATR, DEMO_BINARY, DEMO_FCI

pytestmark = pytest.mark.pcsc

CLI = [sys.executable, "-m", "citycard"]


def cli_proc(args, env_extra, **kw):
    env = dict(os.environ)
    env.update(env_extra)
    return subprocess.run(CLI + list(args), env=env, text=True, capture_output=True, timeout=60, **kw)


def test_readers_lists_card_and_atr(vcard, run_cli):
    r = run_cli("readers")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    slot0 = [line for line in lines if vcard.reader in line]
    assert len(slot0) == 1 and DEMO_ATR.hex().upper() in slot0[0]
    assert any(vcard.daemon.reader_names[1] in line and "no card" in line for line in lines)
    data = run_cli("readers", "--json").json()
    by_name = {d["name"]: d for d in data}
    assert by_name[vcard.reader]["card_present"] is True
    assert by_name[vcard.reader]["atr"] == DEMO_ATR.hex().upper()
    assert by_name[vcard.daemon.reader_names[1]] == {
        "index": 1, "name": vcard.daemon.reader_names[1], "card_present": False, "atr": None}


def test_apdu_fetches_61xx_and_decodes_tlv(vcard, run_cli):
    r = run_cli("apdu", "--reader", vcard.reader, "00A40000023F00=9000")
    assert r.exit_code == 0, r.stderr
    assert f"< {DEMO_FCI.hex().upper()} 9000  (success)" in r.stdout
    assert '84 (DF name) 0E 315041592E5359532E4444463031 "1PAY.SYS.DDF01"' in r.stdout
    raw = run_cli("apdu", "--reader", vcard.reader, "--raw", "00A40000023F00")
    assert "< 6117  (23 more response bytes available (GET RESPONSE))" in raw.stdout


def test_apdu_6cxx_resend_json_and_reader_fragment(vcard, run_cli):
    r = run_cli("apdu", "--reader", "virtual 00 00", "--json", "00B0000000=9000", "00 84 00 00 08")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["reader"] == vcard.reader and out["atr"] == DEMO_ATR.hex().upper() and out["ok"] is True
    first, second = out["exchanges"]
    assert first == {"command": "00B0000000", "data": DEMO_BINARY.hex().upper(), "sw": "9000",
                     "meaning": "success", "expected_sw": "9000", "ok": True}
    assert second["sw"] == "9000" and len(bytes.fromhex(second["data"])) == 8
    by_index = run_cli("apdu", "--reader", "0", "0084000004=9000")
    assert by_index.exit_code == 0


def test_apdu_expected_sw_mismatch_exits_1_and_stops(vcard, run_cli):
    r = run_cli("apdu", "--reader", vcard.reader, "00A4000002DF01=9000", "0084000008")
    assert r.exit_code == 1
    assert "APDU 1: expected SW 9000, card answered 6A82 (file or application not found)" in r.stderr
    assert "0084000008" not in r.stdout  # stopped at the first mismatch
    wildcard = run_cli("apdu", "--reader", vcard.reader, "--raw", "00A40000023F00=61XX")
    assert wildcard.exit_code == 0


def test_apdu_bad_input_changes_nothing(vcard, run_cli):
    r = run_cli("apdu", "--reader", vcard.reader, "0084000008", "00A4000002 3F0")
    assert r.exit_code == 2
    assert r.stderr.strip() == "citycard: error: APDU 2: odd number of hex digits (13)"
    assert r.stdout == ""   # nothing was sent: every APDU is checked first
    unknown = run_cli("apdu", "--reader", "no such reader", "0084000008")
    assert unknown.exit_code == 2
    assert "no reader matches 'no such reader'; readers: " in unknown.stderr
    assert unknown.stderr.count("\n") == 1


def test_transcript_masks_pin_and_key(vcard, run_cli, tmp_path):
    log = tmp_path / "t.txt"
    pin = "123456"
    key = "00112233445566778899AABBCCDDEEFF"
    r = run_cli("--transcript", str(log), "-l", "DEBUG", "apdu", "--reader", vcard.reader,
                f"0020000003{pin}", f"80D4010015 39F0F0AA33{key}", "00A40000023F00")
    assert r.exit_code == 0
    text = log.read_text()
    assert text.startswith(f'# citycard transcript: reader "{vcard.reader}", ATR {DEMO_ATR.hex().upper()}')
    assert "> 0020000003 <3 bytes masked>" in text and "> 80D4010015 <21 bytes masked>" in text
    assert "> 00C0000017" in text  # the GET RESPONSE on the wire is recorded too
    for out in (text, r.stdout, r.stderr):
        assert pin not in out and key not in out.upper() and key[:16] not in out.upper()


def test_readers_without_pcscd_says_why(tmp_path):
    p = cli_proc(["readers"], {"PCSCLITE_CSOCK_NAME": str(tmp_path / "none" / "pcscd.comm")})
    assert p.returncode == 2
    assert "pcscd is not running" in p.stderr and "start it" in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_cli_subprocess_reaches_card(vcard):
    p = cli_proc(["apdu", "--reader", vcard.reader, "--json", "00A404000E315041592E5359532E4444463031"],
                 vcard.daemon.env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["exchanges"][0]["data"] == DEMO_FCI.hex().upper()


def test_readers_with_no_reader_configured_says_how_to_fix(pcscd):
    from citycard.testing.pcscd import PrivatePcscd

    with PrivatePcscd(with_reader=False) as empty:
        p = cli_proc(["readers"], empty.env)
        assert p.returncode == 2
        assert "pcscd is running but has no reader" in p.stderr
        assert "citycard sim serve" in p.stderr and p.stderr.count("\n") == 1
