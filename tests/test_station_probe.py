"""``perso --probe`` (issue 18 point 3, optional): after the verification, READ BINARY by every
SFI 1-30 of each DF that no profile file uses finds files the profile does not name; reads only."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from citycard.commands import fmcos
from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import PersoError, personalize
from citycard.perso.verify import probe_files
from citycard.profile import load_profile
from citycard.sim import SimCard
from citycard.sim.transport import SimTransport
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"


def _issue(extra_at_step: int | None):
    spec = load_profile(PROFILE)
    keys = KeyRing([DemoKeyFile(KEYS)])
    plan = Planner(spec, keys).plan(CardData(read_csv(DATA).row(1), 1, datetime.date(2026, 11, 24), "row"))
    t = SimTransport(SimCard())
    t.connect()
    session = CardSession(t)

    def plant(i: int, _step: object) -> None:     # a command slipped in within perso's security state
        if i == extra_at_step:
            assert session.send(fmcos.create_binary(0x0EF9, 8, read_ac=0xF0, write_ac=0xF0)).sw == 0x9000

    return spec, plan, session, plant


def test_probe_finds_a_file_the_profile_does_not_name():
    spec, plan, session, plant = _issue(7)
    report = personalize(session, spec, plan, on_step=plant)
    assert report.verified                                   # verification cannot see it
    found = probe_files(session, spec)
    bad = [(label, detail) for label, ok, detail in found if not ok]
    # EF 0EF9 is SFI 19 (hex, its FID's low five bits); never written: 6281 (SPEC §1, READ BINARY)
    assert bad == [("mf: no file beyond the profile's at SFI 1-30 (probe)", "SFI 19 answers 6281")]
    assert len(found) == len(spec.dfs())


def test_perso_with_probe_stops_on_an_unknown_file_and_passes_a_clean_card():
    spec, plan, session, plant = _issue(7)
    with pytest.raises(PersoError, match="probe found files the profile does not name: mf: .*SFI 19"):
        personalize(session, spec, plan, on_step=plant, probe=True)
    spec, plan, session, plant = _issue(None)
    report = personalize(session, spec, plan, on_step=plant, probe=True)
    assert report.verified and sum(1 for label, _ok, _d in report.checks if "(probe)" in label) == len(spec.dfs())


def test_perso_probe_cli(run_cli, tmp_path):
    image = tmp_path / "card.json"
    assert run_cli("sim", "new", str(image)).exit_code == 0
    args = ["perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--data", str(DATA), "--row", "1",
            "--sim", str(image), "--issue-date", "20261124"]
    r = run_cli(*args, "--probe", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["verified"] is True
    bad = run_cli(*args, "--probe", "--no-verify")
    assert bad.exit_code == 2 and "cannot go with --no-verify" in bad.stderr
