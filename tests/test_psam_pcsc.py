"""The terminal scene through one pcscd: the user card served by `citycard sim serve` in
vpcd slot 0, the PSAM in slot 1, a purchase through the PSAM by `citycard terminal
purchase --card R0 --psam R1`, then the back office's TAC check with its keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

from citycard.sim import image
from citycard.testing.pcscd import wait_for_card
from tests.psamhost import (CARD_PROFILE, DEMO_KEYS, DEMO_KEYS_SM4, SM4_CARD_PROFILE, loaded, psam_card,
                            sm4_loaded, sm4_psam_card)

pytestmark = pytest.mark.pcsc


def _serve(pcscd, path, slot: int, log):
    env = dict(os.environ, **pcscd.env)
    return subprocess.Popen([sys.executable, "-m", "citycard", "sim", "serve", str(path), "--vpcd",
                             f"127.0.0.1:{pcscd.port + slot}"], env=env, stdout=log, stderr=log, text=True)


@contextmanager
def _two_readers(pcscd, tmp_path, card, sam):
    """``card`` served in vpcd slot 0 and ``sam`` in slot 1 of one pcscd; yields the image paths
    and reader names; the served images are saved when the servers stop."""
    card_img, psam_img = tmp_path / "card.json", tmp_path / "psam.json"
    image.save(card, card_img)
    image.save(sam, psam_img)
    out = open(tmp_path / "serve.log", "w")
    procs = [_serve(pcscd, card_img, 0, out), _serve(pcscd, psam_img, 1, out)]
    card_reader, psam_reader = pcscd.reader_names[0], pcscd.reader_names[1]
    try:
        wait_for_card(card_reader, present=True, timeout=10)
        wait_for_card(psam_reader, present=True, timeout=10)
        yield card_img, psam_img, card_reader, psam_reader
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


def test_two_readers_one_pcscd_purchase_through_the_psam(pcscd, tmp_path, run_cli):
    tlog = tmp_path / "terminal.log"
    with _two_readers(pcscd, tmp_path, loaded(), psam_card()) as (card_img, psam_img, card_reader, psam_reader):
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
    # the served images were saved: the card was charged once, the PSAM's TTSN moved on
    card = image.load(card_img)
    assert card.mf.children[0x3F01].children[0x0002].balance == 750
    assert image.load(psam_img).mf.children[0x1001].children[0x0019].data == bytes.fromhex("00000002")


def test_two_readers_one_pcscd_sm4_purchase_through_the_sm4_psam(pcscd, tmp_path, run_cli):
    """The SM4 card (profiles/citycard-sm4.toml) and the SM4 PSAM (profiles/psam-sm4.toml) in two
    vpcd readers: the purchase is SM4 (algorithm 04) and its log record clears as accepted."""
    tlog, db = tmp_path / "terminal.log", str(tmp_path / "l.db")
    keys = ["-k", str(DEMO_KEYS), "-k", str(DEMO_KEYS_SM4)]
    with _two_readers(pcscd, tmp_path, sm4_loaded(), sm4_psam_card()) as (card_img, psam_img, card_reader,
                                                                          psam_reader):
        info = run_cli("terminal", "info", "--psam", psam_reader, "--json")
        assert info.exit_code == 0, info.stderr
        assert (info.json()["version"], info.json()["key_index"]) == (5, 0x41)
        r = run_cli("terminal", "purchase", "-p", str(SM4_CARD_PROFILE), "--card", card_reader, "--psam",
                    psam_reader, "--amount", "2.50", "--log", str(tlog), "--json")
        assert r.exit_code == 0, r.stderr
        assert r.json()["balance_after_fen"] == 750 and r.json()["algorithm"] == 4
    assert run_cli("terminal", "check-log", "-p", str(SM4_CARD_PROFILE), *keys, "--log", str(tlog),
                   "--json").json() == {"ok": True, "transactions": 1, "bad": []}
    r = run_cli("clearing", "import", str(tlog), "--ledger", db, "--profile", str(SM4_CARD_PROFILE), *keys, "--json")
    assert r.exit_code == 0 and r.json()["verdicts"] == {"accepted": 1}, r.stdout + r.stderr
    assert image.load(card_img).mf.children[0x3F01].children[0x0002].balance == 750
    assert image.load(psam_img).mf.children[0x1001].children[0x0019].data == bytes.fromhex("00000002")
