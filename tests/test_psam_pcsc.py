"""The terminal scene through one pcscd: the user card served by `citycard sim serve` in
vpcd slot 0, the PSAM in slot 1, a purchase through the PSAM by `citycard terminal
purchase --card R0 --psam R1`, then the back office's TAC check with its keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from citycard.sim import image
from citycard.testing.pcscd import wait_for_card
from tests.psamhost import CARD_PROFILE, DEMO_KEYS, loaded, psam_card

pytestmark = pytest.mark.pcsc


def _serve(pcscd, path, slot: int, log):
    env = dict(os.environ, **pcscd.env)
    return subprocess.Popen([sys.executable, "-m", "citycard", "sim", "serve", str(path), "--vpcd",
                             f"127.0.0.1:{pcscd.port + slot}"], env=env, stdout=log, stderr=log, text=True)


def test_two_readers_one_pcscd_purchase_through_the_psam(pcscd, tmp_path, run_cli):
    card_img, psam_img, tlog = tmp_path / "card.json", tmp_path / "psam.json", tmp_path / "terminal.log"
    image.save(loaded(), card_img)
    image.save(psam_card(), psam_img)
    out = open(tmp_path / "serve.log", "w")
    procs = [_serve(pcscd, card_img, 0, out), _serve(pcscd, psam_img, 1, out)]
    card_reader, psam_reader = pcscd.reader_names[0], pcscd.reader_names[1]
    try:
        wait_for_card(card_reader, present=True, timeout=10)
        wait_for_card(psam_reader, present=True, timeout=10)
        info = run_cli("terminal", "info", "--psam", psam_reader, "--json")
        assert info.exit_code == 0, info.stderr
        assert info.json()["next_ttsn"] == 1
        r = run_cli("terminal", "purchase", "-p", str(CARD_PROFILE), "--card", card_reader, "--psam", psam_reader,
                    "--amount", "2.50", "--log", str(tlog), "--json")
        assert r.exit_code == 0, r.stderr
        assert r.json()["balance_after_fen"] == 750 and r.json()["ttsn"] == 1
        assert run_cli("terminal", "info", "--psam", psam_reader, "--json").json()["next_ttsn"] == 2
        ok = run_cli("terminal", "check-log", "-p", str(CARD_PROFILE), "-k", str(DEMO_KEYS), "--log", str(tlog),
                     "--json")
        assert ok.json() == {"ok": True, "transactions": 1, "bad": []}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        out.close()
        wait_for_card(card_reader, present=False, timeout=10)
        wait_for_card(psam_reader, present=False, timeout=10)
    # the served images were saved: the card was charged once, the PSAM's TTSN moved on
    card = image.load(card_img)
    assert card.mf.children[0x3F01].children[0x0002].balance == 750
    assert image.load(psam_img).mf.children[0x1001].children[0x0019].data == bytes.fromhex("00000002")
