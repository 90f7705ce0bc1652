"""A malformed or short answer of the PSAM or the card in ``citycard terminal ...`` is a card
failure (exit 1), said in one line naming the command and the answer byte at fault, never a
usage error (exit 2) (leftovers item 2; README "Exit codes")."""

from __future__ import annotations

from pathlib import Path

import pytest

from citycard.sim import image
from citycard.sim.transport import SimTransport
from tests.psamhost import CARD_PROFILE, ROOT, _perso, loaded, psam_card


def _mangle(monkeypatch: pytest.MonkeyPatch, command_hex: str, keep: int | None = None, extra: bytes = b"") -> list[str]:
    """Every simulated card (card or PSAM) answers the command starting with ``command_hex``
    with only its first ``keep`` data bytes (or with ``extra`` appended), status word kept."""
    seen: list[str] = []
    orig = SimTransport.transmit

    def transmit(self: SimTransport, apdu: bytes) -> bytes:
        out = orig(self, apdu)
        if apdu.hex().upper().startswith(command_hex) and out[-2:] == b"\x90\x00":
            seen.append(apdu.hex().upper())
            data = out[:-2] if keep is None else out[:-2][:keep]
            return data + extra + out[-2:]
        return out
    monkeypatch.setattr(SimTransport, "transmit", transmit)
    return seen


def _images(tmp_path: Path, card=None) -> tuple[str, str]:
    card_img, psam_img = tmp_path / "card.json", tmp_path / "psam.json"
    image.save(card if card is not None else loaded(), card_img)
    image.save(psam_card(), psam_img)
    return str(card_img), str(psam_img)


def _one_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("keep, extra, byte", [(5, b"", "answer byte 6 missing"), (0, b"", "answer byte 1 missing"),
                                               (None, b"\x00", "answer byte 9 is extra")])
def test_init_sam_for_purchase_answer_of_the_wrong_length(run_cli, tmp_path, monkeypatch, keep, extra, byte):
    card_img, psam_img = _images(tmp_path)
    seen = _mangle(monkeypatch, "8070", keep, extra)
    r = run_cli("terminal", "purchase", "-p", str(CARD_PROFILE), "--card-sim", card_img, "--psam-sim", psam_img,
                "--amount", "1")
    assert seen and r.exit_code == 1, r.stderr
    line = _one_line(r)
    assert "INIT SAM FOR PURCHASE" in line and "expected 8" in line and byte in line
    # the card was not debited: INIT SAM comes before DEBIT
    monkeypatch.undo()
    bal = run_cli("purse", "balance", "--sim", card_img, "-p", str(CARD_PROFILE), "--json")
    assert bal.exit_code == 0 and bal.json()["balance_fen"] == 1000


def test_json_error_of_a_short_psam_answer_is_a_card_error(run_cli, tmp_path, monkeypatch):
    card_img, psam_img = _images(tmp_path)
    _mangle(monkeypatch, "8070", 7)
    r = run_cli("terminal", "purchase", "-p", str(CARD_PROFILE), "--card-sim", card_img, "--psam-sim", psam_img,
                "--amount", "1", "--json")
    err = r.json()["error"]
    assert r.exit_code == 1 and err["kind"] == "card" and err["exit_code"] == 1
    assert "INIT SAM FOR PURCHASE" in err["message"] and "answer byte 8 missing" in err["message"]


def test_short_mohurd_code_from_the_card(run_cli, tmp_path, monkeypatch):
    from citycard.sim import SimCard
    from citycard.terminal.purse import PurseTerminal
    from tests.psamhost import WHEN, keys, session

    text = CARD_PROFILE.read_text(encoding="utf-8")
    profile = tmp_path / "mohurd.toml"
    profile.write_text(text.replace("[apps.transit.keys]", "auth_code = true\n\n[apps.transit.keys]"), encoding="utf-8")
    from citycard.profile import load_profile

    card = _perso(SimCard(rng=lambda n: b"\x5A" * n), profile, ROOT / "profiles/citycard-sample.csv")
    PurseTerminal(session(card), load_profile(profile), keys()).load(1000, when=WHEN)
    card.power_off()
    card_img, psam_img = _images(tmp_path, card)
    seen = _mangle(monkeypatch, "80CA000009", 4)     # the card's GET DATA (the PSAM's 80 CA carries data)
    r = run_cli("terminal", "purchase", "-p", str(profile), "--card-sim", card_img, "--psam-sim", psam_img,
                "--amount", "1")
    assert seen == ["80CA000009"] and r.exit_code == 1, r.stderr
    line = _one_line(r)
    assert "GET DATA" in line and "card" in line and "expected 9" in line and "answer byte 5 missing" in line


@pytest.mark.parametrize("command, name", [("00B09700", "EF0017"), ("00B09500", "EF0015"), ("00B09900", "EF0019")])
def test_short_psam_file_in_terminal_info(run_cli, tmp_path, monkeypatch, command, name):
    _card_img, psam_img = _images(tmp_path)
    _mangle(monkeypatch, command, 3)
    r = run_cli("terminal", "info", "--psam-sim", psam_img)
    assert r.exit_code == 1, r.stderr
    line = _one_line(r)
    assert f"READ BINARY {name}" in line and "answer byte 4 missing" in line


@pytest.mark.parametrize("command, keep, words", [
    ("80FA0500", 3, ("CIPHER DATA", "PSAM", "expected 4", "answer byte 4 missing")),
    ("0084000004", 2, ("GET CHALLENGE", "card", "expected 4", "answer byte 3 missing")),
])
def test_short_answers_in_terminal_block(run_cli, tmp_path, monkeypatch, command, keep, words):
    card_img, psam_img = _images(tmp_path)
    _mangle(monkeypatch, command, keep)
    r = run_cli("terminal", "block", "-p", str(CARD_PROFILE), "--card-sim", card_img, "--psam-sim", psam_img)
    assert r.exit_code == 1, r.stderr
    line = _one_line(r)
    for w in words:
        assert w in line
    assert image.load(card_img).mf.children[0x3F01].block == 0       # nothing was blocked
