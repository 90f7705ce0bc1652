"""Terminals enforce the hotlist (issue 23 item 3): a card reported lost in the register goes
onto a signed hotlist, a terminal loads it, and when the card is presented for a purchase the
terminal refuses it and blocks its purse application on the spot (APPLICATION BLOCK MAC'd by
the PSAM's maintenance master: the terminal holds no key); the block goes through the terminal
log into clearing and back into the register."""

from __future__ import annotations

import json

from citycard.bureau import create_credential
from citycard.lifecycle import Register
from citycard.sim import SimCard, image
from citycard.terminal.purse import PurseTerminal
from tests.psamhost import CARD_PROFILE, DEMO_KEYS, ROOT, _perso, card_spec, keys, loaded, psam_card, session

PW = "hotlist signer passphrase"


def test_a_lost_card_is_refused_and_blocked_at_the_terminal(run_cli, tmp_path):
    lost_img, other_img, psam_img = tmp_path / "lost.json", tmp_path / "other.json", tmp_path / "psam.json"
    lost_card = loaded()
    serial = PurseTerminal(session(lost_card), card_spec(), keys()).select()
    image.save(lost_card, lost_img)
    image.save(psam_card(), psam_img)
    other = _perso(SimCard(), CARD_PROFILE, ROOT / "profiles/citycard-sample.csv", row=2)   # another cardholder
    PurseTerminal(session(other), card_spec(), keys()).load(500)
    other.power_off()
    image.save(other, other_img)

    register = str(tmp_path / "reg.db")
    with Register(register) as reg:
        reg.add_card(serial, "CH1", "citycard")
        reg.change(serial, "lost", "reported at the counter")
    cred, pw = tmp_path / "issuer.cred", tmp_path / "pw"
    create_credential(cred, "issuer", PW)
    pw.write_text(PW + "\n")
    pub, hot, state = tmp_path / "issuer.pub", tmp_path / "hot.bin", tmp_path / "terminal-hotlist.json"
    assert run_cli("hotlist", "key", str(cred), "--out", str(pub)).exit_code == 0
    assert run_cli("hotlist", "export", "--register", register, "--full", "--out", str(hot), "--sign", str(cred),
                   "--sign-passphrase-file", str(pw)).exit_code == 0
    buy = ["terminal", "purchase", "-p", str(CARD_PROFILE), "--psam-sim", str(psam_img), "--amount", "1.00",
           "--log", str(tmp_path / "t.log"), "--hotlist-state", str(state)]
    r = run_cli(*buy, "--card-sim", str(lost_img))
    assert r.exit_code == 2 and "no hotlist loaded yet" in r.stderr              # nothing loaded: refused
    r = run_cli("terminal", "hotlist", str(hot), "--state", str(state), "--trust", str(pub))
    assert r.exit_code == 0 and "version 1" in r.stdout and "1 cards" in r.stdout

    before = image.load(lost_img)
    r = run_cli(*buy, "--card-sim", str(lost_img))
    assert r.exit_code == 1, r.stdout + r.stderr
    assert f"card {serial} is on the hotlist" in r.stderr and "application is blocked" in r.stderr
    # the purse was not touched; the application now answers 6A81 (blocked, SPEC D5) to any terminal
    after = image.load(lost_img)
    term = PurseTerminal(session(after), card_spec(), keys())
    try:
        term.select()
        raise AssertionError("a blocked application answered its SELECT")
    except Exception as exc:
        assert "6A81" in str(exc)
    assert _balance(before) == _balance(after) == 1000

    r = run_cli(*buy, "--card-sim", str(other_img))                  # another card: business as usual
    assert r.exit_code == 0, r.stderr

    log = [json.loads(x) for x in (tmp_path / "t.log").read_text().splitlines()]
    assert [(x["kind"], x["card"]) for x in log][0] == ("block", serial)
    ledger = str(tmp_path / "l.db")
    r = run_cli("clearing", "import", str(tmp_path / "t.log"), "--ledger", ledger, "--profile", str(CARD_PROFILE),
                "--keys", str(DEMO_KEYS), "--json")
    assert r.exit_code == 0 and r.json()["verdicts"] == {"event": 1, "accepted": 1}, r.stdout + r.stderr
    r = run_cli("cards", "import", "--register", register, "--ledger", ledger)
    assert r.exit_code == 0 and "1 cards blocked by terminals" in r.stdout
    with Register(register) as reg:
        assert reg.card(serial).state == "blocked"
        assert reg.events(serial)[-1]["reason"].startswith("blocked by terminal 330100000001")
    assert "0 cards blocked" in run_cli("cards", "import", "--register", register, "--ledger", ledger).stdout


def _balance(card) -> int:
    purses = [c for df in image.to_dict(card)["mf"]["children"] if df.get("type") == "DF"
              for c in df.get("children", []) if c.get("type") == "purse"]
    return purses[0]["balance"]
