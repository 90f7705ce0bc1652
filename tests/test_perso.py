"""Personalization of the demo profiles onto simulated cards, in process."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path

import pytest

from citycard import crypto
from citycard.errors import TransportError
from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.dump import dump_card
from citycard.perso.plan import Plan, Planner
from citycard.perso.run import AuthenticationRefused, CardAlreadyIssued, PersoError, personalize
from citycard.profile import load_profile, parse_profile
from citycard.sim import SimCard
from citycard.sim.transport import SimTransport
from citycard.terminal.purse import PurseError, PurseTerminal
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = datetime.date(2026, 11, 24)


@pytest.fixture(scope="module")
def demo():
    spec = load_profile(PROFILE)
    keys = KeyRing([DemoKeyFile(KEYS)])
    data = read_csv(DATA)
    return spec, keys, data


def card_data(data, row, number=None):
    return CardData(data.row(row), number if number is not None else row, DAY, data.where(row))


def fresh_session(card=None):
    card = card or SimCard()
    t = SimTransport(card)
    t.connect()
    return card, CardSession(t)


def master(keys_file, unit, role):
    import tomllib
    return bytes.fromhex(tomllib.loads(Path(keys_file).read_text())[unit][role])


def test_personalize_and_verify_demo_cards(demo):
    spec, keys, data = demo
    for row in (1, 2, 3):
        card, session = fresh_session()
        plan = Planner(spec, keys).plan(card_data(data, row))
        report = personalize(session, spec, plan)
        assert report.verified and len(report.checks) >= 60
        assert not report.rerun
        # the card holds per-card keys: the transit DLK is the unit master diversified with
        # the rightmost 8 bytes of the application serial (SPEC §2.4), computed here independently
        transit = card.mf.children[0x3F01]
        serial = bytes.fromhex(plan.card_serial)
        dlk = transit.keyfile.keys[(0x3F, 0)].value
        assert dlk == crypto.diversify(master(KEYS, "transit", "dlk"), serial[-8:])
        assert dlk != master(KEYS, "transit", "dlk")
        # each application under its own unit's master
        lib_master = card.mf.children[0x3F02].keyfile.keys[(0x39, 0)].value
        assert lib_master == crypto.diversify(master(KEYS, "library", "master"), serial[-8:])


def test_cards_get_different_keys(demo):
    spec, keys, data = demo
    a = Planner(spec, keys).plan(card_data(data, 1, 1))
    b = Planner(spec, keys).plan(card_data(data, 1, 2))
    assert a.card_serial != b.card_serial
    assert a.keys["transit/dlk"] != b.keys["transit/dlk"]


def test_plan_is_minimal(demo):
    spec, keys, data = demo
    plan = Planner(spec, keys).plan(card_data(data, 1))
    selects = [s for s in plan.steps if s.cmd.ins == 0xA4]
    assert len(selects) == 1 + len(spec.apps)               # MF once, each application once
    for df in spec.dfs():
        for f in df.files:
            if f.kind == "binary" and f.data:
                writes = [s for s in plan.steps if s.cmd.ins == 0xD6 and s.cmd.p1 == 0x80 | f.sfi
                          and s.df == df.name]
                assert len(writes) == 1, f"{df.name}/{f.name}"  # one UPDATE BINARY per file (all fit)
    creates = [s for s in plan.steps if s.cmd.ins == 0xE0]
    n_files = sum(len(df.files) for df in spec.dfs())
    assert len(creates) == n_files + 2 * len(spec.apps) + 1   # EFs, app key files, app DFs, and the MF's new
                                                              # KEY file after ERASE DF (SPEC §6 R2)
    keys_written = [s for s in plan.steps if s.cmd.ins == 0xD4]
    assert len(keys_written) == sum(len(df.keys) for df in spec.dfs())


def test_dry_run_and_plan_never_show_keys(demo, run_cli):
    spec, keys, data = demo
    r = run_cli("perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--data", str(DATA), "--row", "2",
                "--sim", "unused.json", "--dry-run", "--issue-date", "20261124")
    assert r.exit_code == 0, r.stderr
    out = r.stdout.upper()
    plan = Planner(spec, keys).plan(card_data(data, 2))
    secrets = list(plan.keys.values()) + list(plan.pins.values())
    import tomllib
    for unit in tomllib.loads(KEYS.read_text()).values():
        secrets += [bytes.fromhex(v) for v in unit.values()]
    for s in secrets:
        h = s.hex().upper()
        for part in (h[:16], h[16:]) if len(h) > 16 else (h,):
            assert part not in out
    assert "857299" not in out                             # row 2's PIN
    assert "MASKED" in out
    assert repr(plan.steps[1]).find(plan.steps[1].key.hex()) == -1


class Pulled(SimTransport):
    """The card is pulled out after ``limit`` APDUs."""

    def __init__(self, card, limit):
        super().__init__(card)
        self.limit = limit
        self.count = 0

    def transmit(self, apdu):
        self.count += 1
        if self.count > self.limit:
            raise TransportError("card removed", self.name)
        return super().transmit(apdu)


def _identify_apdus() -> int:
    """APDUs the identification (issue 17 item 1) spends on a factory card before the plan."""
    spec = load_profile(PROFILE)
    plan = Planner(spec, KeyRing([DemoKeyFile(KEYS)])).plan(card_data(read_csv(DATA), 4))
    t = Pulled(SimCard(), 10 ** 6)
    t.connect()
    from citycard.perso.run import identify_card
    identify_card(CardSession(t), spec, plan)
    return t.count


def cut(limit: int) -> int:
    """The APDU limit of a cut at APDU ``limit`` of a first run counted as below (the
    identification took 1 SELECT when these were written; it now takes a few more)."""
    return limit - 1 + _identify_apdus()


# APDUs of a first run: 1 SELECT (is the card personalized?), 2 SELECT MF, 3-4 GET CHALLENGE +
# EXTERNAL AUTHENTICATE (transport key), 5 ERASE DF, 6 CREATE KEY FILE, 7 WRITE KEY master, ...
# A cut at 6 (the MF's KEY file made, no key in it) is the one a real card cannot come back from
# (test_cut_inside_the_issuance_window_is_said_plainly).  A cut at 7-9 (the MF master written,
# no file of the profile yet) leaves a card that cannot be told from another issuer's without a
# key: the transport key is tried once (63Cx) and perso stops; with --reissue-card it is redone.
@pytest.mark.parametrize("limit", [3, 4, 5, 7, 9, 20, 45, 70, 90, 110])
def test_stopped_half_way_is_reported_and_redone(demo, limit):
    spec, keys, data = demo
    card = SimCard()
    plan = Planner(spec, keys).plan(card_data(data, 4))
    t = Pulled(card, cut(limit))
    t.connect()
    with pytest.raises(PersoError) as info:
        personalize(CardSession(t), spec, plan)
    err = info.value
    assert err.step is not None or "verification" in str(err)
    if err.step is not None:
        assert f"step {err.step}/{len(plan.steps)} ({plan.steps[err.step - 1].label})" in str(err)
        assert "card removed" in str(err)
    # the card is put back: running again redoes it and it verifies
    _card, session = fresh_session(card)
    if limit in (7, 9):
        master_key = card.mf.keyfile.keys[(0x39, 0)]
        tries = master_key.tries_left
        with pytest.raises(AuthenticationRefused, match="cut right after WRITE KEY of the MF master.*--reissue-card"):
            personalize(session, spec, plan)
        assert master_key.tries_left == tries - 1                       # one try, no second key
        report = personalize(fresh_session(card)[1], spec, plan, reissue=True)
    elif err.step is None:
        # cut while verifying: the plan was played whole, the card is issued; only an explicit
        # re-issuance redoes it
        with pytest.raises(CardAlreadyIssued, match="card 3301000000000004 is already issued.*--reissue-card"):
            personalize(session, spec, plan)
        report = personalize(fresh_session(card)[1], spec, plan, reissue=True)
    else:
        report = personalize(session, spec, plan)
    assert report.verified


def test_cut_inside_the_issuance_window_is_said_plainly(demo):
    """SPEC §6 R2, R5: cut between CREATE KEY FILE and WRITE KEY of the MF master, the MF holds a
    KEY file without keys: no key authenticates, ERASE DF is refused; perso says so and stops."""
    spec, keys, data = demo
    card = SimCard()
    plan = Planner(spec, keys).plan(card_data(data, 4))
    t = Pulled(card, cut(6))
    t.connect()
    with pytest.raises(PersoError) as info:
        personalize(CardSession(t), spec, plan)
    assert info.value.step == Plan.CREATE_KEYFILE + 2            # the WRITE KEY of the master was cut
    assert plan.steps[Plan.CREATE_KEYFILE].label == "CREATE KEY FILE in mf"
    with pytest.raises(PersoError, match="cut inside the issuance window, between CREATE KEY FILE and WRITE KEY"):
        personalize(fresh_session(card)[1], spec, plan)
    assert card.mf.keyfile is not None and not card.mf.keyfile.keys and not card.mf.children


def test_cut_after_erase_leaves_a_free_mf_that_is_redone(demo):
    """Cut between ERASE DF and CREATE KEY FILE: the MF has no KEY file, so it is free (R5); the
    transport key is gone (6A88), perso erases again and goes on."""
    spec, keys, data = demo
    card = SimCard()
    plan = Planner(spec, keys).plan(card_data(data, 4))
    t = Pulled(card, cut(5))
    t.connect()
    with pytest.raises(PersoError):
        personalize(CardSession(t), spec, plan)
    assert card.mf.keyfile is None
    report = personalize(fresh_session(card)[1], spec, plan)
    assert report.rerun and report.verified


@pytest.mark.parametrize("limit, why", [(5, "holds no transport key"), (7, "no longer takes the transport key")])
def test_rerun_refuse_also_stops_on_a_card_cut_early(demo, limit, why):
    """rerun = "refuse": a card cut after ERASE DF (free MF) or after the MF master (63Cx) is not redone."""
    spec, keys, data = demo
    refusing = parse_profile(PROFILE.read_text().replace('rerun = "erase"', 'rerun = "refuse"'), str(PROFILE))
    plan = Planner(refusing, keys).plan(card_data(data, 4))
    card = SimCard()
    t = Pulled(card, cut(limit))
    t.connect()
    with pytest.raises(PersoError):
        personalize(CardSession(t), refusing, plan)
    before = copy.deepcopy(card.mf)
    with pytest.raises(PersoError, match=f"{why}.*rerun = .refuse"):
        personalize(fresh_session(card)[1], refusing, plan)
    assert (card.mf.keyfile is None) == (before.keyfile is None) and card.mf.children.keys() == before.children.keys()


def test_rerun_refused_by_profile(demo, tmp_path):
    spec, keys, data = demo
    text = PROFILE.read_text().replace('rerun = "erase"', 'rerun = "refuse"')
    refusing = parse_profile(text, str(PROFILE))
    plan = Planner(refusing, keys).plan(card_data(data, 5))
    card, session = fresh_session()
    assert personalize(session, refusing, plan).verified
    with pytest.raises(PersoError, match="already .partly. personalized"):
        personalize(fresh_session(card)[1], refusing, plan)


def test_rerun_of_another_cards_plan_fails_cleanly(demo):
    spec, keys, data = demo
    card, session = fresh_session()
    personalize(session, spec, Planner(spec, keys).plan(card_data(data, 6)))
    other = Planner(spec, keys).plan(card_data(data, 7))
    with pytest.raises(PersoError, match="cannot take over the card"):
        personalize(fresh_session(card)[1], spec, other)


def test_dump_decodes_every_application(demo):
    spec, keys, data = demo
    card, session = fresh_session()
    personalize(session, spec, Planner(spec, keys).plan(card_data(data, 1)))
    out = dump_card(session, spec, keys)
    assert out["card_serial"] == "3301000000000001"
    apps = {a["name"]: a for a in out["applications"]}
    assert set(apps) == {"mf", "social", "transit", "library", "bike", "health"}
    for a in apps.values():
        assert a["sw"] == "9000"
        for f in a["files"]:
            assert "error" not in f, (a["name"], f)
    row = data.row(1)
    ef06 = next(f for f in apps["social"]["files"] if f["name"] == "ef06")["decoded"]
    assert ef06["name"] == row["name"] and ef06["ss_number"] == row["id_number"]
    health = next(f for f in apps["health"]["files"] if f["name"] == "ef0005")["decoded"]
    assert health["blood_type"] == row["blood_type"]
    assert next(f for f in apps["transit"]["files"] if f["kind"] == "ep")["balance_fen"] == 0
    without_keys = dump_card(session, spec)
    social = next(a for a in without_keys["applications"] if a["name"] == "social")
    assert next(f for f in social["files"] if f["name"] == "ef06")["sw"] == "6982"   # needs the PIN or master


def test_terminal_loads_and_spends_with_its_own_derivation(demo):
    spec, keys, data = demo
    card, session = fresh_session()
    personalize(session, spec, Planner(spec, keys).plan(card_data(data, 8)))
    # a terminal with only the masters (a fresh key ring) and the profile
    term = PurseTerminal(session, spec, KeyRing([DemoKeyFile(KEYS)]))
    assert term.select() == "3301000000000008"
    assert term.load(10000).balance_after == 10000
    assert term.purchase(250, terminal_serial=7).balance_after == 9750
    assert term.balance() == 9750
    # a terminal with other masters is caught at MAC1, before anything is credited
    import tomllib
    other = ROOT / "tests/data/other-keys.toml"
    wrong = PurseTerminal(session, spec, KeyRing([DemoKeyFile(other)]))
    wrong.select()
    with pytest.raises(PurseError, match="MAC1 from the card is wrong"):
        wrong.load(100)
    assert term.balance() == 9750
    assert tomllib.loads(other.read_text())["transit"]["dlk"] != tomllib.loads(KEYS.read_text())["transit"]["dlk"]


def test_pboc_ep_profile(demo):
    _spec, keys, data = demo
    spec = load_profile(ROOT / "profiles/pboc-ep.toml")
    card, session = fresh_session()
    plan = Planner(spec, keys).plan(card_data(data, 3))
    assert len(plan.card_serial) == 20
    assert personalize(session, spec, plan).verified
    term = PurseTerminal(session, spec, keys)
    term.load(500)
    assert term.purchase(123).balance_after == 377


def test_verification_with_wrong_keys_stops_at_the_first_refused_key(demo):
    """Never retry keys: verification against a plan of other keys spends one try of one key
    (the first it tests) and stops; every other key keeps its full try counter."""
    from citycard.perso.verify import verify_card

    spec, keys, data = demo
    card, session = fresh_session()
    plan = Planner(spec, keys).plan(card_data(data, 4))
    personalize(session, spec, plan)
    full = {(id(kf), k): rec.b4 for df in [card.mf, *card.mf.children.values()] if hasattr(df, "keyfile")
            and df.keyfile is not None for kf in [df.keyfile] for k, rec in kf.keys.items()}
    import dataclasses
    flip = lambda v: bytes(b ^ 0x5A for b in v)                      # every key and PIN of the plan wrong
    wrong = dataclasses.replace(plan, keys={k: flip(v) for k, v in plan.keys.items()},
                                pins={k: flip(v) for k, v in plan.pins.items()})
    checks = verify_card(session, spec, wrong, raise_on_failure=False)
    assert checks[-1] == ("verification stopped at the first refused key (no further key is tried)", False, "")
    after = {(id(kf), k): rec.b4 for df in [card.mf, *card.mf.children.values()] if hasattr(df, "keyfile")
             and df.keyfile is not None for kf in [df.keyfile] for k, rec in kf.keys.items()}
    spent = [k for k in full if after[k] != full[k]]
    assert len(spent) == 1, spent


def test_dump_with_wrong_keys_tries_one_key_and_stops(demo):
    """dump --keys with another set of masters: one master refused, no further key tried."""
    spec, keys, data = demo
    card, session = fresh_session()
    personalize(session, spec, Planner(spec, keys).plan(card_data(data, 6)))
    counters = lambda: {df.fid: df.keyfile.keys[(0x39, 0)].b4 for df in [card.mf, *card.mf.children.values()]
                        if getattr(df, "keyfile", None) is not None and (0x39, 0) in df.keyfile.keys}
    before = counters()
    out = dump_card(session, spec, KeyRing([DemoKeyFile(ROOT / "tests/data/other-keys.toml")]))
    assert "no further key was tried" in out["keys_refused"]
    assert sum(1 for a in out["applications"] if "authenticated" in a) == 1
    after = counters()
    assert sum(1 for fid in before if before[fid] != after[fid]) == 1


def test_dump_cli_says_when_the_card_refused_the_keys(run_cli, tmp_path):
    """`citycard dump --keys` with another set of masters: the text output says that the card
    refused a key and that no further key was tried (it used to list the files behind an
    access condition as 6982 with no word about the keys)."""
    img = tmp_path / "card.json"
    assert run_cli("sim", "new", str(img)).exit_code == 0
    assert run_cli("perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--data", str(DATA), "--row", "6",
                   "--sim", str(img)).exit_code == 0
    common = ("dump", "--sim", str(img), "--profile", str(PROFILE))
    right = run_cli(*common, "--keys", str(KEYS))
    assert right.exit_code == 0 and "refused" not in right.stderr
    wrong = run_cli(*common, "--keys", str(ROOT / "tests/data/other-keys.toml"))
    assert "6982" in wrong.stdout                    # what the keys would have opened is not read
    refusals = [line for line in wrong.stderr.splitlines() if "refused" in line]
    assert len(refusals) == 1 and "social: SW 63C4" in refusals[0] and "no further key was tried" in refusals[0]
