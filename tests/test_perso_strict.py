"""The strict host (issue 16 item 4): the planner refuses, with the profile's file, line and key
path, what a real FM1208 would refuse, and plans real issuance (SPEC §6 R1, R2, R4, R7)."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import pytest

from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Plan, Planner
from citycard.perso.run import personalize
from citycard.profile import ProfileError, load_profile
from citycard.sim import SimCard, new_card
from citycard.sim.transport import SimTransport
from citycard.spec import data_room
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = datetime.date(2026, 11, 24)


def _profile(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    text = PROFILE.read_text()
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / "variant.toml"
    p.write_text(text)
    return p


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _plan(profile: Path, keys: Path = KEYS, row: int = 1) -> tuple[object, Plan]:
    spec = load_profile(profile)
    data = read_csv(DATA)
    plan = Planner(spec, KeyRing([DemoKeyFile(keys)])).plan(CardData(data.row(row), row, DAY, data.where(row)))
    return spec, plan


def _session(card: SimCard) -> CardSession:
    t = SimTransport(card)
    t.connect()
    return CardSession(t)


TRANSPORT_LINE = 'transport_key = "factory/transport"'


def test_the_plan_opens_with_real_issuance():
    """SPEC §6 R1, R2: transport key 8×FF id 00, ERASE DF, a new KEY file, the master in plaintext."""
    spec, plan = _plan(PROFILE)
    head = plan.steps[:5]
    assert [s.cmd.ins for s in head] == [0xA4, 0x82, 0x0E, 0xE0, 0xD4]
    assert head[Plan.AUTHENTICATE].key == b"\xFF" * 8 and head[Plan.AUTHENTICATE].cmd.p2 == 0x00
    assert head[Plan.ERASE].cmd.encode() == bytes.fromhex("800E0000")
    assert head[Plan.CREATE_KEYFILE].cmd.data[0] == 0x3F
    master = head[Plan.WRITE_MASTER]
    assert master.kind == "apdu" and master.cmd.cla == 0x80 and master.cmd.p1 == 0x01 and master.cmd.data[0] == 0x39
    assert all(s.source for s in plan.steps)                      # every step names its rule
    assert head[Plan.ERASE].source.startswith("SPEC §6 R2")
    # no key is ever updated (P1 01 only), and only flagged types are added enciphered (R4)
    writes = [s for s in plan.steps if s.cmd.ins == 0xD4]
    assert all(s.cmd.p1 == 0x01 for s in writes)
    assert all(s.cmd.data[0] & 0xC0 == 0xC0 for s in writes if s.encrypt)
    assert any(s.kind == "protected" and not s.encrypt for s in writes)     # dlk: plaintext + MAC


def test_default_transport_key_and_a_literal_one(tmp_path):
    """No [card] transport_key: the blank FM1208's 8×FF, id 00 (R1); a literal value works alike."""
    for change in ("", 'transport_key = { value = "FFFFFFFFFFFFFFFF", id = 0 }'):
        p = _profile(tmp_path, (TRANSPORT_LINE, change))
        spec, plan = _plan(p)
        assert plan.steps[Plan.AUTHENTICATE].key == b"\xFF" * 8
        assert personalize(_session(new_card("fm1208")), spec, plan).verified


def test_a_16_byte_transport_key_for_cards_that_have_one(tmp_path):
    """``length = 16`` (CSDN's 16×FF cards, the legacy model)."""
    p = _profile(tmp_path, (TRANSPORT_LINE, 'transport_key = { source = "factory/transport", length = 16 }'))
    spec, plan = _plan(p)
    assert plan.steps[Plan.AUTHENTICATE].key == b"\xFF" * 16
    assert personalize(_session(new_card("fm1208-16ff")), spec, plan).verified
    # FF×16 as 2-key 3DES is single-DES FF×8: the default plan opens such a card too
    spec8, plan8 = _plan(PROFILE)
    assert personalize(_session(new_card("fm1208-16ff")), spec8, plan8).verified


def test_a_transport_key_that_cannot_be_the_cards_is_refused_where_it_is_written(tmp_path):
    """A 16-byte key-source entry whose halves differ cannot be an 8-byte card key (R1)."""
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS.read_text().replace('transport = "' + "F" * 32 + '"',
                                             'transport = "00112233445566778899AABBCCDDEEFF"'))
    with pytest.raises(ProfileError) as info:
        _plan(PROFILE, keys)
    msg = str(info.value)
    assert msg.startswith(f"{PROFILE}:{_line_of(PROFILE, TRANSPORT_LINE)}: card.transport_key: key-source entry "
                          "factory/transport is a 16-byte key (its halves differ) but the card's transport key is "
                          "8 bytes"), msg
    assert "\n" not in msg and "00112233" not in msg.upper()


def test_enciphered_add_of_an_unflagged_key_type_is_refused(tmp_path):
    """R4 (UM 7.12): a real card takes the ciphertext of an unflagged add as a plain record."""
    old = 'dpk = { type = "purchase", id = 0, usage = "free", change = "sr>=1", version = 1, algorithm = 0, ' \
          'master = "dpk", write = "cipher", protect_change = "cipher" }'
    p = _profile(tmp_path, (old, old.replace(', protect_change = "cipher"', '')))
    with pytest.raises(ProfileError) as info:
        load_profile(p)
    assert str(info.value).startswith(f"{p}:{_line_of(p, 'dpk = {')}: apps.transit.keys.dpk.write: a real card "
                                      "takes no enciphered add of key type 3E"), str(info.value)
    # and the real-card model indeed refuses that add (the legacy model took it)
    assert _add_enciphered(new_card("fm1208"), 0x3E) != 0x9000
    assert _add_enciphered(new_card("fm1208"), 0xFE) == 0x9000


def _add_enciphered(card: SimCard, ktype: int) -> int:
    from citycard.commands import fmcos, iso, walk
    from citycard.transport import LineProtection

    s = _session(card)
    s.send(iso.select_mf(), expect=0x9000)
    assert walk.external_authenticate(s, 0, b"\xFF" * 8).sw == 0x9000
    s.send(fmcos.erase_df(), expect=0x9000)
    s.send(fmcos.create_key_file(0x0000, space=0x80, df_sfi=0x01, add_ac=0xF1), expect=0x9000)
    master = bytes(range(16))
    s.send(fmcos.write_key(0, fmcos.key_record(0x39, 0xF0, 0xF1, 0x11, 0x33, master)), expect=0x9000)
    rec = fmcos.key_record(ktype, 0xF0, 0xF1, 0x01, 0x00, bytes(range(16, 32)))
    return s.send(fmcos.write_key(0, rec), protect=LineProtection(master, encrypt=True)).sw


def test_a_record_longer_than_one_command_is_refused(tmp_path):
    """R7: Lc ≤ 239; a record is one APPEND RECORD and cannot be split."""
    big = ('[mf.files.card]', '[mf.files.big]\nfid = "0007"\nkind = "variable"\nspace = 300\nread = "free"\n'
           'write = "sr>=1"\nrecords = ["01EE' + "AA" * 238 + '"]\n\n[mf.files.card]')   # TLV, 240 bytes
    p = _profile(tmp_path, big)
    with pytest.raises(ProfileError) as info:
        _plan(p)
    assert str(info.value).startswith(f"{p}:{_line_of(p, '[mf.files.big]')}: mf.files.big: "), str(info.value)
    assert "record 1 is 240 bytes" in str(info.value) and "at most 239" in str(info.value)
    ok = _profile(tmp_path, (big[0], big[1].replace("01EE" + "AA" * 238, "01ED" + "AA" * 237)))
    spec, plan = _plan(ok)
    assert personalize(_session(new_card("fm1208")), spec, plan).verified


def test_data_room_matches_lc_239():
    """Independent: the largest n whose command data (plain; +MAC; enciphered LD‖data‖80.. + MAC) is ≤ 239."""
    assert data_room("plain") == max(n for n in range(300) if n <= 239)
    assert data_room("mac") == max(n for n in range(300) if n + 4 <= 239)
    assert data_room("cipher") == max(n for n in range(300) if 8 * math.ceil((1 + n + 1) / 8) + 4 <= 239)


def test_every_planned_command_fits_lc_239():
    _spec, plan = _plan(PROFILE)
    for s in plan.steps:
        n = len(s.cmd.data)
        if s.kind == "protected":
            n = (8 * math.ceil((n + 2) / 8) if s.encrypt else n) + 4
        assert n <= 239, s.label


def test_dry_run_names_the_rule_of_every_step(run_cli):
    r = run_cli("perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--data", str(DATA), "--row", "1",
                "--issue-date", "20261124", "--dry-run")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()[1:]
    assert lines[2] == "  3. ERASE DF (MF): the factory KEY file goes: 800E0000 [SPEC §6 R2; UM 7.3]"
    assert lines[1].endswith("[GET CHALLENGE, then the cryptogram] [SPEC §6 R1]")
    assert all(line.endswith("]") and any(tag in line for tag in ("[SPEC", "[UM", "[CIPHK")) for line in lines)
    js = run_cli("perso", "--profile", str(PROFILE), "--keys", str(KEYS), "--data", str(DATA), "--row", "1",
                 "--issue-date", "20261124", "--dry-run", "--json").json()
    assert [s["source"] for s in js["steps"][:5]] == ["SPEC §1.5", "SPEC §6 R1", "SPEC §6 R2; UM 7.3",
                                                      "SPEC §6 R2; UM 7.13", "SPEC §6 R4; UM 7.12"]
