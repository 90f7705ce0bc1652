"""The simulated card behind a real pcscd: `citycard sim serve`, built by hand with
`citycard apdu`, loaded and spent with MACs from `citycard calc`, and reached by
independent clients (opensc-tool, scriptor) with the same answers as in process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from citycard.sim import image as sim_image

pytestmark = pytest.mark.pcsc

CLI = [sys.executable, "-m", "citycard"]
AID = "A00000000386980701"
MK = "00112233445566778899AABBCCDDEEFF"            # test keys of this test only
DLK = "3F3F3F3F3F3F3F3F1122334455667788"
DPK = "3E3E3E3E3E3E3E3E1122334455667788"
DTK = "34343434343434341122334455667788"
DAMK = "36363636363636361122334455667788"
TERMINAL = "112233445566"


@pytest.fixture
def served(served_sim):
    """A fresh simulated card served by `citycard sim serve` on slot 1 (tests/pcsc_fixtures.py)."""
    return served_sim


def apdu(run_cli, reader, *apdus):
    """Send APDUs (each `HEX[=SW]`) through the CLI; return the response data of each."""
    r = run_cli("apdu", "--reader", reader, "--json", *apdus)
    assert r.exit_code == 0, (apdus, r.stdout, r.stderr)
    return [e["data"] for e in r.json()["exchanges"]]


def calc(run_cli, *args):
    r = run_cli("calc", *args, "--json")
    assert r.exit_code == 0, r.stderr
    return r.json()


def ext_auth(run_cli, reader, key):
    (chal,) = apdu(run_cli, reader, "0084000004=9000")
    crypt = calc(run_cli, "3des", "--key", key, "--data", chal + "00000000")["result"]
    apdu(run_cli, reader, f"0082000008{crypt}=9000")


def protected(run_cli, reader, key, plain, expect="9000"):
    (chal,) = apdu(run_cli, reader, "0084000004=9000")
    cmd = calc(run_cli, "secure-apdu", "--key", key, "--challenge", chal, "--apdu", plain)["apdu"]
    return apdu(run_cli, reader, f"{cmd}={expect}")


def build_transit_card(run_cli, reader):
    """Personalize by hand: MF, an ADF with its key file, keys, EF0015, EF0018 and an EP."""
    apdu(run_cli, reader, "00A40000023F00=9000")
    ext_auth(run_cli, reader, "FF" * 16)                                   # factory transport key
    apdu(run_cli, reader,
         "800E000000=9000",                                               # ERASE DF (MF)
         "80E00000073F005001F0FFFF=9000",                                 # MF key file
         f"80D401001539F0F00133{MK}=9000",                                # MF master key (bootstrap)
         f"80E03F011138036FF0F095FFFF{AID}=9000",                         # transit ADF (SPEC §1.2)
         f"00A4040009{AID}=9000",
         "80E00000073F018F95F0FFFF=9000",                                 # ADF key file (SPEC §1.2)
         f"80D401001539F0F00133{MK}=9000",
         f"80D40100153FF0F00001{DLK}=9000",                               # DLK
         f"80D40100153EF0F00001{DPK}=9000",                               # DPK
         f"80D401001534F0F00001{DTK}=9000",                               # DTK (TAC)
         f"80D401001536F0F0FF33{DAMK}=9000",                              # DAMK
         "80E0001507A8001EF0F0FFFF=9000",                                 # EF0015 (SPEC §1.2)
         "80E00018072E0A17F0EFFFFF=9000",                                 # EF0018
         "80E00002072F0208F000FF18=9000",                                 # EP
         f"00A4040009{AID}=9000")                                         # re-enter: ACs apply
    # EF0015 is DAMK-protected: a plain write fails, a MAC'd one succeeds
    apdu(run_cli, reader, "00D695001E" + "00" * 30 + "=6900")
    ef15 = "0101" "1000" "0000" "0000" "02" "01" "0000" "0000000000000001" "20260101" "20301231" "0000"
    protected(run_cli, reader, DAMK, f"00D695001E{ef15}")
    return ef15


def load(run_cli, reader, amount_hex, balance_before):
    (init,) = apdu(run_cli, reader, f"805000020B00{amount_hex}{TERMINAL}10=9000")
    bal, ctr, rnd, mac1 = init[0:8], init[8:12], init[16:24], init[24:32]
    assert int(bal, 16) == balance_before
    c = calc(run_cli, "load", "--dlk", DLK, "--dtk", DTK, "--random", rnd, "--counter", ctr,
             "--balance", bal, "--amount", amount_hex, "--terminal", TERMINAL, "--date", "20261124",
             "--time", "101500")
    assert c["mac1"] == mac1                         # the card proved it holds DLK
    (tac,) = apdu(run_cli, reader, f"805200000B20261124101500{c['mac2']}04=9000")
    assert tac == c["tac"]                           # and DTK
    return ctr


def purchase(run_cli, reader, amount_hex, serial):
    (init,) = apdu(run_cli, reader, f"805001020B00{amount_hex}{TERMINAL}0F=9000")
    ctr, rnd = init[8:12], init[22:30]
    c = calc(run_cli, "purchase", "--dpk", DPK, "--dtk", DTK, "--random", rnd, "--counter", ctr,
             "--terminal-serial", serial, "--amount", amount_hex, "--terminal", TERMINAL,
             "--date", "20261124", "--time", "101600")
    (out,) = apdu(run_cli, reader, f"805401000F{serial}20261124101600{c['mac1']}08=9000")
    assert out == c["tac"] + c["mac2"]
    return ctr


def test_build_load_spend_through_sim_serve(served, run_cli):
    r = served.reader
    ef15 = build_transit_card(run_cli, r)
    (fci,) = apdu(run_cli, r, f"00A4040009{AID}=9000")
    assert fci == f"6F328409{AID}A5259F0801029F0C1E{ef15}"    # EF0015 in 9F0C after 9F08 01 02 (SPEC §2.5, §6 R10)
    load(run_cli, r, "00002710", 0)                               # 100.00 yuan
    purchase(run_cli, r, "000001F4", "00000001")                  # 5.00 yuan
    assert apdu(run_cli, r, "805C000204=9000") == ["0000251C"]   # 95.00 yuan
    # a purchase with a wrong MAC1 is refused and changes nothing
    (init,) = apdu(run_cli, r, f"805001020B00000001F4{TERMINAL}0F=9000")
    apdu(run_cli, r, "805401000F000000022026112410170000000000=9302")
    assert apdu(run_cli, r, "805C000204=9000") == ["0000251C"]
    # more than the balance: 9401
    apdu(run_cli, r, f"805001020B00FFFFFFFF{TERMINAL}0F=9401")
    # transaction records, newest first, with the counters after the increment (SPEC §6 R11)
    recs = apdu(run_cli, r, "00B201C400=9000", "00B202C400=9000")
    assert recs[0] == "0001" + "000000" + "000001F4" + "06" + TERMINAL + "20261124101600"
    assert recs[1] == "0001" + "000000" + "00002710" + "02" + TERMINAL + "20261124101500"
    # GET TRANSACTION PROVE of the purchase
    assert len(apdu(run_cli, r, "805A0006020000=9000")[0]) == 16
    # the image is saved as the card changes, while serving
    card = sim_image.load(served.image)
    purse = card.mf.children[0x3F01].children[0x0002]
    assert purse.balance == 0x251C
    assert served.stop() == 0                                     # SIGTERM: clean stop
    assert "saved" in served.output() and "Traceback" not in served.output()
    assert sim_image.load(served.image).mf.children[0x3F01].children[0x0002].balance == 0x251C


READS = ["00A40000023F00", f"00A4040009{AID}", "00B0950000", "00B201C400", "00B2010C00", "805C000204",
         "00A4000002DF99", "00B0990000", "80CA000009", "00A4000002 0015", "00B0000005", "00B0001E01"]


def test_same_answers_as_in_process_and_independent_clients(served, run_cli, tmp_path):
    r = served.reader
    build_transit_card(run_cli, r)
    load(run_cli, r, "00000064", 0)
    through_pcscd = [(e["data"], e["sw"]) for e in
                     run_cli("apdu", "--reader", r, "--json", *READS).json()["exchanges"]]
    assert served.stop() == 0
    copy = tmp_path / "copy.json"
    shutil.copy(served.image, copy)
    in_process = [(e["data"], e["sw"]) for e in
                  run_cli("apdu", "--sim", str(copy), "--json", *READS).json()["exchanges"]]
    assert through_pcscd == in_process
    assert through_pcscd[5] == ("00000064", "9000")
    assert through_pcscd[6][1] == "6A82" and through_pcscd[-1][1] == "6B00"


def opensc_answers(text: str) -> list[tuple[str, str]]:
    """(data, SW) of each answer in opensc-tool's hex dump output."""
    import re

    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        m = re.match(r"Received \(SW1=0x([0-9A-Fa-f]{2}), SW2=0x([0-9A-Fa-f]{2})\)", line)
        if m:
            out.append(("", (m.group(1) + m.group(2)).upper()))
        elif out and not line.startswith("Sending"):
            tokens = []
            for tok in line[:48].split():
                if len(tok) == 2 and all(c in "0123456789ABCDEFabcdef" for c in tok):
                    tokens.append(tok.upper())
            out[-1] = (out[-1][0] + "".join(tokens), out[-1][1])
    return out


def scriptor_answers(text: str) -> list[str]:
    """Each answer (data ‖ SW) of scriptor's `< ...` lines, continuation lines joined."""
    answers: list[str] = []
    for line in text.splitlines():
        if line.startswith("< "):
            answers.append("")
            line = line[2:]
        elif not answers or line.startswith(">") or line.startswith("Using"):
            continue
        answers[-1] += line.split(":")[0].replace(" ", "").upper()
    return answers


def test_opensc_tool_and_scriptor_reach_the_card(served, run_cli):
    env = dict(os.environ, **served.daemon.env)
    r = served.reader
    build_transit_card(run_cli, r)
    expected_fci = apdu(run_cli, r, f"00A4040009{AID}=9000")[0]
    p = subprocess.run(["opensc-tool", "-r", "1", "-s", "00A40000023F00", "-s", f"00A4040009{AID}",
                        "-s", "805C000204"], env=env, text=True, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    answers = opensc_answers(p.stdout)
    assert answers[1] == (expected_fci, "9000"), p.stdout
    assert answers[2] == ("00000000", "9000")
    s = subprocess.run(["scriptor", "-r", r], input=f"00A4040009{AID}\n805C000204\n", env=env, text=True,
                       capture_output=True, timeout=60)
    assert s.returncode == 0, s.stderr
    assert scriptor_answers(s.stdout) == [expected_fci + "9000", "00000000" + "9000"], s.stdout


def test_sim_serve_survives_a_card_session_and_stops_on_sigterm(served, run_cli):
    assert apdu(run_cli, served.reader, "00A40000023F00=9000")[0].startswith("6F15")
    assert served.stop() == 0          # exit 0 on SIGTERM (stop() waits for the process, bounded)
