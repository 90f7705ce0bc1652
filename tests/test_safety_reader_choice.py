"""Issue 17 item 2: a command that writes to a card (or authenticates with its keys) never picks
a reader silently.  With neither --reader nor --sim it uses the one reader holding a card and
says so; with none or several holding a card it refuses (exit 2) and writes nothing.  Reading
commands may default.  Through a private pcscd with its two vpcd readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from citycard.sim import SimCard
from citycard.sim.vpcd import VpcdServer
from citycard.testing.pcscd import wait_for_card

pytestmark = pytest.mark.pcsc

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles/citycard.toml")
KEYS = str(ROOT / "profiles/demo-keys.toml")
DATA = str(ROOT / "profiles/citycard-sample.csv")
COMMON = ["--profile", PROFILE]

#: every command that writes to a card or uses its keys, without --reader/--sim
WRITING = [
    ["perso", *COMMON, "--keys", KEYS, "--data", DATA, "--row", "1"],
    ["purse", "load", *COMMON, "--keys", KEYS, "--amount", "1.00"],
    ["purse", "purchase", *COMMON, "--keys", KEYS, "--amount", "1.00"],
    ["purse", "unload", *COMMON, "--keys", KEYS, "--amount", "1.00"],
    ["pin", "change", *COMMON],
    ["pin", "reload", *COMMON, "--keys", KEYS],
    ["pin", "unblock", *COMMON, "--keys", KEYS],
    ["app", "block", *COMMON, "--keys", KEYS, "--app", "transit"],
    ["app", "unblock", *COMMON, "--keys", KEYS, "--app", "transit"],
    ["card", "block", *COMMON, "--keys", KEYS, "--yes"],
    ["dump", *COMMON, "--keys", KEYS],
]
IDS = [" ".join(c[:2]) if not c[1].startswith("-") else c[0] for c in WRITING]


@pytest.fixture
def cards(pcscd, monkeypatch):
    """Put factory cards in slots: ``cards(0)``, ``cards(0, 1)``; removed afterwards."""
    monkeypatch.delenv("CITYCARD_READER", raising=False)
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    monkeypatch.setenv("CITYCARD_NEW_PIN", "2468")
    servers: list[VpcdServer] = []

    def insert(*slots: int) -> list[str]:
        for slot in slots:
            server = VpcdServer(SimCard(), port=pcscd.port + slot)
            servers.append(server)
            server.start_thread()
            wait_for_card(pcscd.reader_names[slot], present=True, timeout=10)
        return [pcscd.reader_names[s] for s in slots]

    yield insert
    for s in servers:
        s.stop()
    for name in pcscd.reader_names:
        wait_for_card(name, present=False, timeout=10)


@pytest.mark.parametrize("args", WRITING, ids=IDS)
def test_no_card_anywhere_is_refused(cards, run_cli, args):
    r = run_cli(*args)
    assert r.exit_code == 2, r.stderr
    assert "writes to a card: name it with --reader or --sim" in r.stderr and "no reader holds a card" in r.stderr


@pytest.mark.parametrize("args", WRITING, ids=IDS)
def test_the_only_reader_holding_a_card_is_used_and_named(cards, run_cli, args):
    (reader,) = cards(0)
    r = run_cli(*args)
    assert f"using reader '{reader}', the only reader holding a card" in r.stderr, r.stderr
    assert r.exit_code in (0, 1), r.stderr      # the command ran on that card (services refuse a factory card)


@pytest.mark.parametrize("args", WRITING[:3] + WRITING[-2:], ids=IDS[:3] + IDS[-2:])
def test_two_readers_holding_a_card_are_refused(cards, run_cli, args):
    cards(0, 1)
    r = run_cli(*args)
    assert r.exit_code == 2 and "2 readers hold a card" in r.stderr and "choose one with --reader" in r.stderr


def test_batch_run_needs_its_readers_named(cards, run_cli, tmp_path):
    cards(0)
    r = run_cli("batch", "run", *COMMON, "--keys", KEYS, "--data", DATA, "--journal", str(tmp_path / "j.db"))
    assert r.exit_code == 2 and "give --reader NAME" in r.stderr
    assert not (tmp_path / "j.db").exists()


def test_reading_commands_default_to_the_one_card(cards, run_cli):
    (reader,) = cards(0)
    r = run_cli("dump", *COMMON)
    assert r.exit_code == 0, r.stderr
    assert "using reader" not in r.stderr       # reading: no need to say it
