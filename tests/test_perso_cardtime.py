"""Less card time per card (issue 19 item 5) without weakening verification: what the
verifier and the runner send instead, and that every proof is still there.

The MACs are pinned by an independent computation written here (DES on ``cryptography``,
ISO 9797-1 padding 2, CBC from IV = challenge ‖ 00000000, retail MAC for a 16-byte key:
SPEC §1.6, D6), not by citycard's crypto.  SPEC §6 R14 gives the form of a protected read
(``04 B0 .. 04 MAC Le``, data ‖ MAC) but no bytes of one.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import personalize
from citycard.perso.verify import verify_card
from citycard.profile import load_profile, parse_profile
from citycard.sim import SimCard
from citycard.transport import CardSession

from tests.simhost import Recording

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = datetime.date(2026, 11, 24)
H = bytes.fromhex


def ref_des(key8: bytes, block: bytes, decrypt: bool = False) -> bytes:
    c = Cipher(TripleDES(key8 * 3), modes.ECB())
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(block) + op.finalize()


def ref_line_mac(key: bytes, data: bytes, challenge: bytes) -> bytes:
    data = data + b"\x80" + bytes(-(len(data) + 1) % 8)
    h = challenge + bytes(8 - len(challenge))
    for i in range(0, len(data), 8):
        h = ref_des(key[:8], bytes(a ^ b for a, b in zip(h, data[i:i + 8])))
    if len(key) == 16:
        h = ref_des(key[:8], ref_des(key[8:], h, decrypt=True))
    return h[:4]


@pytest.fixture(scope="module")
def demo():
    return load_profile(PROFILE), KeyRing([DemoKeyFile(KEYS)]), read_csv(DATA)


def _plan(spec, keys, data, row=1):
    return Planner(spec, keys).plan(CardData(data.row(row), row, DAY, data.where(row)))


def _personalized(spec, plan):
    card = SimCard()
    t = Recording(card)
    t.connect()
    session = CardSession(t)
    personalize(session, spec, plan, verify=False)
    t.log.clear()
    return card, t, session


def _mac_files(spec):
    return [(df, f) for df in spec.dfs() for f in df.files
            if f.kind == "binary" and f.write_protect != "plain" and not f.read_protect]


def test_protected_read_proves_the_line_protection_key_and_writes_nothing(demo):
    """Each MAC-protected binary file of the demo profile is read once under line protection
    (``04 B0 SFI 00 04 MAC Le``, SPEC §6 R14): the command's MAC and the answer's MAC are the
    ones computed here with the DF's line-protection key and the GET CHALLENGE just before;
    the data is the planned content.  The plain write is still refused (6900); nothing is
    written during verification (no write-back)."""
    spec, keys, data = demo
    plan = _plan(spec, keys, data)
    card, t, session = _personalized(spec, plan)
    generation = card.generation
    checks = verify_card(session, spec, plan)
    assert checks and all(ok for _l, ok, _d in checks)
    assert card.generation == generation                     # no EEPROM write while verifying
    assert not [c for c, _r in t.log if c[0] == 0x04 and c[1] == 0xD6]      # no protected write-back
    files = _mac_files(spec)
    assert len(files) == 3
    reads = [(i, c, r) for i, (c, r) in enumerate(t.log) if c[:2] == H("04B0")]
    assert len(reads) == len(files)
    for (df, f), (i, cmd, rsp) in zip(files, reads):
        key = plan.keys[f"{df.name}/damk"]
        chal_cmd, chal_rsp = t.log[i - 1]
        assert chal_cmd == H("0084000004") and chal_rsp[-2:] == H("9000")
        challenge = chal_rsp[:-2]
        # the command: 04 B0 (80 | SFI) 00, Lc 04, MAC over CLA INS P1 P2 Lc, Le = the file's size
        assert cmd[:5] == bytes((0x04, 0xB0, 0x80 | f.sfi, 0x00, 0x04)) and cmd[-1] == f.size
        assert cmd[5:9] == ref_line_mac(key, cmd[:5], challenge)
        # the answer: data ‖ MAC(data) under the same key and challenge, 9000
        assert rsp[-2:] == H("9000")
        body, mac = rsp[:-6], rsp[-6:-2]
        assert body == plan.contents[(df.name, f.fid)]
        assert mac == ref_line_mac(key, body, challenge)
        # and the protection proof stays: a plain UPDATE BINARY of the file answers 6900
        plain = [(c, r) for c, r in t.log[i:] if c[:4] == bytes((0x00, 0xD6, 0x80 | f.sfi, 0x00))]
        assert plain and plain[0][1] == H("6900")
        # one byte, the file's first (already there): the refusal does not depend on the length
        assert plain[0][0][4:] == bytes((1, body[0]))
    labels = [label for label, _ok, _d in checks]
    for df, f in files:
        assert f"{df.name}: line-protection key 00 MACs the read of {f.name}" in labels
        assert f"{df.name}: {f.name} refuses a plain write" in labels


class MacFlipped(Recording):
    """A card whose protected reads answer a wrong MAC (the last MAC byte flipped)."""

    def transmit(self, apdu: bytes) -> bytes:
        rsp = super().transmit(apdu)
        if apdu[:2] == H("04B0") and rsp[-2:] == H("9000"):
            rsp = rsp[:-3] + bytes((rsp[-3] ^ 1,)) + rsp[-2:]
        return rsp


def test_a_wrong_mac_in_the_protected_read_fails_verification(demo):
    spec, keys, data = demo
    plan = _plan(spec, keys, data, 2)
    card = SimCard()
    t = MacFlipped(card)
    t.connect()
    session = CardSession(t)
    personalize(session, spec, plan, verify=False)
    checks = verify_card(session, spec, plan, raise_on_failure=False)
    failed = [(label, detail) for label, ok, detail in checks if not ok]
    assert failed and all("MACs the read" in label and "MAC differs" in detail for label, detail in failed)
    assert len(failed) == len(_mac_files(spec))


def test_a_file_read_under_another_key_keeps_the_write_back(demo):
    """Where the file's read line-protection key is not its write key, a protected read would
    prove the read key only: the write key is still proven by the MAC'd write of the same data."""
    _spec, keys, data = demo
    text = PROFILE.read_text().replace('write_key = 0\nlayout = "mohurd_ef0015"',
                                       'write_key = 0\nread_key = 1\nlayout = "mohurd_ef0015"')
    assert "read_key = 1" in text
    spec = parse_profile(text, PROFILE)
    plan = _plan(spec, keys, data, 3)
    card, t, session = _personalized(spec, plan)
    generation = card.generation
    checks = verify_card(session, spec, plan)
    assert all(ok for _l, ok, _d in checks)
    transit = next(df for df in spec.dfs() if df.name == "transit")
    sfi = next(f.sfi for f in transit.files if f.fid == 0x15)
    written = [c for c, r in t.log if c[:4] == bytes((0x04, 0xD6, 0x80 | sfi, 0x00)) and r == H("9000")]
    assert len(written) == 1                                   # the transit EF0015: written back
    assert card.generation == generation + 1
    name = next(f.name for f in transit.files if f.fid == 0x15)
    assert f"transit: line-protection key 00 writes {name}" in [label for label, _ok, _d in checks]
    assert len([c for c, _r in t.log if c[:2] == H("04B0")]) == len(_mac_files(spec)) - 1


def _serial_reads(spec, log):
    from citycard.commands import walk

    f, _name = walk.serial_field(spec.mf, "@card_serial")
    return [c for c, _r in log if c[1] == 0xB0 and c[2] == 0x80 | f.sfi]


def test_identification_reads_the_serial_file_once(demo):
    """issue 17's identification, blank and issued card: the card serial file is read once
    (the MF's probe takes that read's result); the state found is unchanged."""
    from citycard.perso.run import CardState, identify_card

    spec, keys, data = demo
    plan = _plan(spec, keys, data, 4)
    card = SimCard()
    t = Recording(card)
    t.connect()
    session = CardSession(t)
    assert identify_card(session, spec, plan).state is CardState.FACTORY
    assert len(_serial_reads(spec, t.log)) == 1
    t.log.clear()
    personalize(session, spec, plan, verify=False)
    t.log.clear()
    ident = identify_card(session, spec, plan)
    assert ident.state is CardState.ISSUED and ident.serial == plan.card_serial
    assert len(_serial_reads(spec, t.log)) == 1


# ------------------------------------------------------------------ T=0 answers the host does not use
ETU_115200 = 31 / 3_571_200          # ISO 7816-3: F = 372, D = 12 at 3.5712 MHz
PROC = 0.001                         # the presets' processing time per command (docs/sim.md)


def test_t0_card_answers_61xx_and_the_host_fetches_only_what_it_uses():
    """``t0_get_response="host"``: a case-3 SELECT answered with an FCI shows ``61 17`` on the
    wire (T=0, ISO/IEC 7816-3 clause 12.2; codetd_fmsh_erase.trace: an FMCOS contact card
    answers SELECT ``610F``); the FCI comes only with a GET RESPONSE, charged as its own
    exchange (header → ACK ‖ data ‖ SW) without card processing.  Counts written here:
    SELECT MF = header 5 → ACK 1 → data 2 → SW 2, four changes of direction of 4 etu."""
    from citycard.sim.timing import TimedCard

    card = TimedCard(SimCard(), "contact-115200", t0_get_response="host")
    card.power_on()
    t0 = card.clock.seconds
    assert card.process(H("00A40000023F00")) == H("6117")
    select_s = ((5 + 2 + 1 + 2) * 12 + 4 * 4) * ETU_115200 + PROC
    assert card.clock.seconds - t0 == pytest.approx(select_s)
    fci = card.process(H("00C0000017"))
    assert fci[-2:] == H("9000") and len(fci) == 0x17 + 2 and fci[0] == 0x6F
    get_response_s = ((5 + 1 + 0x17 + 2) * 12 + 2 * 4) * ETU_115200
    assert card.clock.seconds - t0 == pytest.approx(select_s + get_response_s)
    assert card.clock.families["GET RESPONSE"].processing_s == 0
    # the same SELECT when the reader fetches (the default): FCI ‖ 9000, both exchanges charged
    reader = TimedCard(SimCard(), "contact-115200")
    reader.power_on()
    r0 = reader.clock.seconds
    assert reader.process(H("00A40000023F00")) == fci
    assert reader.clock.seconds - r0 == pytest.approx(select_s + get_response_s)
    # an answer not fetched is dropped by the next command, which the card then executes
    assert card.process(H("00A40000023F00")) == H("6117")
    t1 = card.clock.seconds
    chal = card.process(H("0084000004"))
    assert len(chal) == 6 and chal[-2:] == H("9000")
    assert card.clock.seconds - t1 == pytest.approx(((5 + 1 + 4 + 2) * 12 + 2 * 4) * ETU_115200 + PROC)
    assert card.process(H("00C0000017")) == H("6985")      # nothing held: the card's own answer
    # contactless: no T=0, the answer carries the FCI whatever the option
    cl = TimedCard(SimCard(), "contactless-106", t0_get_response="host")
    cl.power_on()
    assert cl.process(H("00A40000023F00")) == fci


def test_perso_fetches_no_fci_it_does_not_use_and_verification_fetches_every_fci_it_checks(demo):
    """On a T=0 card whose 61xx reaches the host: the plan's SELECTs and the identification's
    go without GET RESPONSE (their FCI is not used), every SELECT of the verification fetches
    its FCI (it is checked), and the card is personalized and verified."""
    from citycard.sim.timing import TimedCard

    spec, keys, data = demo
    plan = _plan(spec, keys, data, 5)
    card = TimedCard(SimCard(), "contact-115200", t0_get_response="host")
    t = Recording(card)          # a SimTransport: process() of whatever card it is given
    t.connect()
    session = CardSession(t)
    personalize(session, spec, plan, verify=False)
    selects = [i for i, (c, _r) in enumerate(t.log) if c[1] == 0xA4]
    assert selects and all(t.log[i][1][0] == 0x61 or t.log[i][1][-2:] != H("9000") for i in selects)
    assert not [c for c, _r in t.log if c[1] == 0xC0]              # no GET RESPONSE at all
    t.log.clear()
    checks = verify_card(session, spec, plan)
    assert all(ok for _l, ok, _d in checks)
    selects = [i for i, (c, _r) in enumerate(t.log) if c[1] == 0xA4]
    assert len(selects) == len(list(spec.dfs()))
    for i in selects:
        assert t.log[i][1][0] == 0x61 and t.log[i + 1][0][:4] == H("00C00000")
        assert t.log[i + 1][1][0] == 0x6F and t.log[i + 1][1][-2:] == H("9000")     # the FCI
    assert [label for label, _ok, _d in checks if "FCI names" in label]


def test_purse_balance_is_proven_by_the_initialize_for_load_answer(demo):
    """The purse whose load key is proven by INITIALIZE FOR LOAD gets its balance check from
    that answer's first field (under MAC1, SPEC §2.1/§2.2) instead of a GET BALANCE; a card
    with money on it fails the check."""
    from citycard.terminal.purse import PurseTerminal

    spec, keys, data = demo
    plan = _plan(spec, keys, data, 6)
    card, t, session = _personalized(spec, plan)
    checks = verify_card(session, spec, plan)
    assert ("transit: EP balance is zero", True, "00000000 (INITIALIZE FOR LOAD)") in checks
    assert not [c for c, _r in t.log if c[:2] == H("805C")]              # no GET BALANCE
    PurseTerminal(session, spec, keys).load(500)
    checks = verify_card(session, spec, plan, raise_on_failure=False)
    failed = [(label, detail) for label, ok, detail in checks if not ok]
    # (the load also left its record in EF0018: that check fails too)
    assert ("transit: EP balance is zero", "000001F4 (INITIALIZE FOR LOAD)") in failed


def ref_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    k = key * 3 if len(key) == 8 else key + key[:8]
    d = Cipher(TripleDES(k), modes.ECB()).decryptor()
    return d.update(data) + d.finalize()


def test_an_enciphered_file_is_read_back_enciphered_under_its_key(demo):
    """A binary file written enciphered + MAC'd: the protected read answers
    E(LD ‖ data ‖ 80 00..) ‖ MAC (SPEC §6 R14); the verifier deciphers and compares it, and the
    MAC is over the ciphertext (checked here with the test's own 3DES)."""
    _spec, keys, data = demo
    text = PROFILE.read_text().replace('write_protect = "mac"       # with the DAMK',
                                       'write_protect = "cipher"    # with the DAMK', 1)
    assert 'write_protect = "cipher"    # with the DAMK' in text
    spec = parse_profile(text, PROFILE)
    plan = _plan(spec, keys, data, 7)
    card, t, session = _personalized(spec, plan)
    checks = verify_card(session, spec, plan)
    assert all(ok for _l, ok, _d in checks)
    key = plan.keys["transit/damk"]
    reads = [(i, c, r) for i, (c, r) in enumerate(t.log) if c[:3] == H("04B095")]
    i, cmd, rsp = reads[0]                                    # the transit's EF0015 comes first
    challenge = t.log[i - 1][1][:-2]
    body, mac = rsp[:-6], rsp[-6:-2]
    assert len(body) % 8 == 0 and mac == ref_line_mac(key, body, challenge)
    plain = ref_ecb_decrypt(key, body)
    content = plan.contents[("transit", 0x15)]
    assert plain[0] == len(content) and plain[1:1 + len(content)] == content
    assert plain[1 + len(content)] == 0x80 and not any(plain[2 + len(content):])
    transit = next(df for df in spec.dfs() if df.name == "transit")
    name = next(f.name for f in transit.files if f.fid == 0x15)
    assert (f"transit: {name} reads back what was written", True, "") in checks


def test_a_long_file_is_read_under_mac_then_plainly_from_where_the_protected_read_stopped(demo):
    """A 300-byte MAC-protected file: the protected read takes the first 224 bytes (its answer,
    with the MAC, within an FM1208's 239-byte data field: SPEC §6 R7), the rest is read plainly
    from offset 224; content and size proven as before."""
    _spec, keys, data = demo
    text = PROFILE.read_text().replace('kind = "binary"\nsize = 32\n', 'kind = "binary"\nsize = 300\n', 1)
    assert "size = 300" in text
    spec = parse_profile(text, PROFILE)
    plan = _plan(spec, keys, data, 8)
    card, t, session = _personalized(spec, plan)
    checks = verify_card(session, spec, plan)
    assert all(ok for _l, ok, _d in checks)
    i = next(i for i, (c, _r) in enumerate(t.log) if c[:2] == H("04B0") and c[-1] == 0xE0)
    assert len(t.log[i][1]) == 224 + 4 + 2
    assert t.log[i + 1] == (H("00B000E04C"), plan.contents[("library", 0x15)][224:] + H("9000"))
    assert t.log[i + 2] == (H("00B0012C01"), H("6B00"))
