"""SM4 line protection (docs/sm4.md "SM4 line protection"): the card model ``fmcos-sm4`` and the
profile citycard-sm4-lp.toml, issued, verified, transacted and serviced in process.

Every MAC, ciphertext and cryptogram checked here is recomputed in the test with the SM4 of
tests/sm4_gbt.py (written from GB/T 32907, sharing no code with citycard) over the bytes the
host sent and the challenges the card gave; the per-card keys likewise, SM4(MK, F ‖ ¬F) from the
TEST KEYS of profiles/demo-keys-sm4.toml.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import pytest

from citycard.commands import walk
from citycard.cos import WrongLineProtection
from citycard.errors import CitycardError
from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import personalize
from citycard.perso.verify import verify_card
from citycard.profile import ProfileError, load_profile, parse_profile
from citycard.sim import SimCard, new_card
from citycard.sim.models import atr_from_historical
from citycard.sim.transport import SimTransport
from citycard.terminal.psam_hotlist import block_application
from citycard.terminal.purse import PurseTerminal
from citycard.terminal.services import CardServices, ServiceRefused
from citycard.transport import CardSession
from tests import sm4_gbt as ref
from tests import simhost
from tests.psamhost import ISSUE, WHEN, sm4_psam_card

ROOT = Path(__file__).resolve().parent.parent
LP_PROFILE = ROOT / "profiles/citycard-sm4-lp.toml"
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
DEMO_KEYS_SM4 = ROOT / "profiles/demo-keys-sm4.toml"
SAMPLE = ROOT / "profiles/citycard-sample.csv"
SERIAL = "3301000000000001"            # row 1 of the sample
H = bytes.fromhex
# TEST KEYS of profiles/demo-keys-sm4.toml (the masters of citycard-sm4-lp.toml)
TRANSIT_MASTER = H("A92BAB549F3158AF425FD596E184B930")    # transit/master-sm4
TRANSIT_DAMK = H("DFAE2FBDD16BBFF87DCA5E9D019B9B09")      # transit/damk-sm4
HRSS_RELOAD = H("B778848386B744E822EC6B1852B95CA9")       # hrss/pin-reload-sm4
HRSS_UNBLOCK = H("2FA2AC2631C5D7B7F622BF1140207749")      # hrss/pin-unblock-sm4
TRANSIT_AID = H("A00000000386980701")


def per_card(master: bytes, serial: str = SERIAL) -> bytes:
    """SM4 diversification, independently: SM4(MK, F ‖ ¬F), F the serial's rightmost 8 bytes."""
    f = walk.diversification_factor(serial)[-8:]
    return ref.encrypt_block(master, f + bytes(b ^ 0xFF for b in f))


def line_mac(key: bytes, challenge: bytes, data: bytes) -> bytes:
    return ref.cbc_mac4(key, data, challenge + bytes(16 - len(challenge)))


class Recording(simhost.Recording):
    """The in-process card, every APDU and answer kept (bytes)."""

    def after_challenge(self, prefix: bytes, start: int = 0) -> tuple[bytes, bytes]:
        """(challenge, command) of the first command from ``start`` on that begins with
        ``prefix`` and follows a GET CHALLENGE."""
        for i in range(max(start, 1), len(self.log)):
            cmd, prev = self.log[i][0], self.log[i - 1]
            if cmd.startswith(prefix) and prev[0][:2] == b"\x00\x84":
                return prev[1][:-2], cmd
        raise AssertionError(f"no {prefix.hex().upper()} after a GET CHALLENGE")

    def index_of(self, prefix: bytes, sw: bytes | None = None) -> int:
        return next(i for i, (c, r) in enumerate(self.log) if c.startswith(prefix) and (sw is None or r[-2:] == sw))


def keys(sm4_file: Path = DEMO_KEYS_SM4) -> KeyRing:
    return KeyRing([DemoKeyFile(DEMO_KEYS), DemoKeyFile(sm4_file)])


def plan_for(spec, ring: KeyRing | None = None, row: int = 1):
    return Planner(spec, ring or keys()).plan(CardData(read_csv(SAMPLE).row(row), row, ISSUE, "row"))


def connect(card: SimCard) -> tuple[CardSession, Recording]:
    t = Recording(card)
    t.connect()
    return CardSession(t), t


@lru_cache(maxsize=None)
def _issued() -> tuple[SimCard, tuple[tuple[bytes, bytes], ...]]:
    card = new_card("fmcos-sm4", rng=lambda n: b"\x5A" * n)
    session, t = connect(card)
    spec = load_profile(LP_PROFILE)
    report = personalize(session, spec, plan_for(spec))
    assert report.verified
    card.power_off()
    return card, tuple(t.log)


def issued() -> SimCard:
    return copy.deepcopy(_issued()[0])


def key_record(card: SimCard, df: SimCard | None, ktype: int, kid: int):
    node = card.mf if df is None else df
    return node.keyfile.keys[(ktype, kid)]


def transit(card: SimCard):
    return card.mf.children[0x3F01]


# ------------------------------------------------------------------ issuance: the APDU bytes
def test_perso_sends_sm4_key_loading_mac_and_cryptograms():
    _card, log = _issued()
    t = Recording(SimCard())
    t.log = list(log)
    # EXTERNAL AUTHENTICATE with the factory SM4 transport key 16xFF: 16 bytes, SM4(K, R ‖ 0..)
    chal, cmd = t.after_challenge(H("0082000010"))
    assert cmd == H("0082000010") + ref.encrypt_block(b"\xFF" * 16, chal + bytes(12))
    # the transit DAMK loaded in TY's SM4 form: 84 D4 01 00 24 ‖ SM4-ECB(MK, 15 ‖ record ‖ 80..) ‖ MAC
    start = t.index_of(H("00A40400") + bytes((len(TRANSIT_AID),)) + TRANSIT_AID, sw=H("9000"))
    mk = per_card(TRANSIT_MASTER)
    record = bytes((0xF6, 0xF0, 0xF1, 0xFF, 0x33)) + per_card(TRANSIT_DAMK)    # F6: DAMK, change under cipher
    chal, cmd = t.after_challenge(H("84D40100"), start)
    ct = ref.ecb(mk, ref.pad80(b"\x15" + record))
    assert len(ct) == 32
    assert cmd == H("84D4010024") + ct + line_mac(mk, chal, H("84D4010024") + ct)
    # the transit EF0015 written with the SM4 MAC of its DAMK (04 D6 95 00, SPEC §1.6)
    chal, cmd = t.after_challenge(H("04D69500"), start)
    lc = cmd[4]
    assert lc == len(cmd) - 5 and cmd[5:-4][:2] == H("3301")
    assert cmd[-4:] == line_mac(per_card(TRANSIT_DAMK), chal, cmd[:-4])


def test_issued_card_holds_sm4_keys_and_answers_only_sm4():
    card = issued()
    t_df = transit(card)
    assert key_record(card, t_df, 0x36, 0).value == per_card(TRANSIT_DAMK)
    assert key_record(card, t_df, 0x39, 0).value == per_card(TRANSIT_MASTER)
    assert key_record(card, t_df, 0x3E, 0x41).b4 == 0x04          # the SM4 purse set: algorithm 04
    session, _t = connect(card)
    assert walk.select_df(session, load_profile(LP_PROFILE).app("transit")).sw == 0x9000
    # the 3DES form of the master's cryptogram (8 bytes) is refused for its length: no try spent
    session.send(H("0084000004"))
    assert session.send(H("0082000008") + bytes(8)).sw == 0x6700
    assert key_record(card, t_df, 0x39, 0).b4 == 0x55


def test_calc_secure_apdu_sm4_agrees_with_the_card(run_cli):
    """`citycard calc secure-apdu --alg sm4` gives the APPLICATION BLOCK the card takes."""
    card = issued()
    session, _t = connect(card)
    assert walk.select_df(session, load_profile(LP_PROFILE).app("transit")).sw == 0x9000
    chal = session.get_challenge(4)
    damk = per_card(TRANSIT_DAMK)
    r = run_cli("calc", "secure-apdu", "--alg", "sm4", "--key", damk.hex(), "--challenge", chal.hex(),
                "--apdu", "801E0000", "--json")
    assert r.exit_code == 0, r.stderr
    apdu = H(r.json()["apdu"])
    assert apdu == H("841E000004") + line_mac(damk, chal, H("841E000004"))
    assert session.send(apdu).sw == 0x9000
    assert transit(card).block == 1


# ------------------------------------------------------------------ wrong keys, wrong cards
def test_wrong_sm4_master_is_refused_once_and_locks_nothing(tmp_path):
    """Verification with a wrong SM4 MF master: the card answers 63Cx once, verification stops
    there (no other key tried), the card is not locked, and the right master then resets the
    counter (SPEC §1.5, UM 7.10)."""
    card = issued()
    wrong = tmp_path / "wrong-sm4.toml"
    wrong.write_text(DEMO_KEYS_SM4.read_text().replace("0E389F3A5DC0E4EA119B38CD9FCE469D", "11" * 16))
    spec = load_profile(LP_PROFILE)
    session, _t = connect(card)
    checks = verify_card(session, spec, plan_for(spec, keys(wrong)), raise_on_failure=False)
    assert [c for c in checks if not c[1]][0][0] == "mf: key master authenticates"
    assert checks[-1][0].startswith("verification stopped at the first refused key")
    assert key_record(card, None, 0x39, 0).b4 == 0xFE                          # 15 tries: one spent
    assert all(k.b4 & 0x0F == k.b4 >> 4 for (b, _i), k in transit(card).keyfile.keys.items()
               if b in (0x36, 0x37, 0x38, 0x39))                            # nothing else tried
    right = walk.external_authenticate(session, 0, per_card(H("0E389F3A5DC0E4EA119B38CD9FCE469D")), "sm4")
    assert right.sw == 0x9000 and key_record(card, None, 0x39, 0).b4 == 0xFF


def test_3des_profile_on_an_sm4_card_is_refused_before_any_key():
    card = new_card("fmcos-sm4")
    session, t = connect(card)
    spec = load_profile(ROOT / "profiles/citycard.toml")
    with pytest.raises(CitycardError) as exc:
        personalize(session, spec, Planner(spec, keys()).plan(CardData(read_csv(SAMPLE).row(1), 1, ISSUE, "row")))
    msg = str(exc.value)
    assert "\n" not in msg and "fmcos-sm4" in msg and "line protection is 3DES" in msg
    assert not any(c[1] in (0x82, 0x84, 0xD4, 0x0E) for c, _r in t.log)       # no challenge, no key
    assert key_record(card, None, 0x39, 0).b4 == 0x33


def test_sm4_profile_on_an_fm1208_is_refused_before_any_key():
    card = new_card("fm1208")
    session, t = connect(card)
    spec = load_profile(LP_PROFILE)
    with pytest.raises(CitycardError) as exc:
        personalize(session, spec, plan_for(spec))
    msg = str(exc.value)
    assert "\n" not in msg and "FM1208" in msg and "line protection is SM4" in msg
    assert not any(c[1] in (0x82, 0x84, 0xD4, 0x0E) for c, _r in t.log)
    assert key_record(card, None, 0x39, 0).b4 == 0x33


def test_sm4_profile_on_a_card_of_unknown_atr_spends_no_try():
    """An ATR citycard does not know says nothing of the cipher: the SM4 cryptogram (16 bytes)
    goes to the card, which answers 6700 for its length before it looks at the key."""
    card = SimCard(atr=atr_from_historical(b"SOME OTHER COS"))      # an FM1208 inside
    session, t = connect(card)
    spec = load_profile(LP_PROFILE)
    with pytest.raises(CitycardError) as exc:
        personalize(session, spec, plan_for(spec))
    assert "6700" in str(exc.value)
    assert [c for c, _r in t.log if c[1] == 0x82] == [t.log[t.index_of(H("0082"))][0]]   # one try, refused
    assert t.log[t.index_of(H("0082"))][1] == H("6700")
    assert key_record(card, None, 0x39, 0).b4 == 0x33


def test_wrong_cipher_service_is_refused_before_the_mac():
    card = issued()
    session, t = connect(card)
    spec_3des = load_profile(ROOT / "profiles/citycard.toml")
    with pytest.raises(WrongLineProtection):
        CardServices(session, spec_3des, keys()).block_app(spec_3des.app("transit"))
    assert not any(c[1] == 0x1E for c, _r in t.log)
    assert key_record(card, transit(card), 0x36, 0).b4 == 0x33 and transit(card).block == 0


# ------------------------------------------------------------------ the profile setting
def _lp_text() -> str:
    return LP_PROFILE.read_text(encoding="utf-8")


def test_line_protection_sm4_needs_sm4_line_keys():
    text = _lp_text().replace('damk = { type = "damk", id = 0, alg = "sm4", usage = "free", change = "sr>=1", '
                              'tries = 3, master = "damk-sm4"',
                              'damk = { type = "damk", id = 0, usage = "free", change = "sr>=1", tries = 3, '
                              'master = "damk"', 1)
    with pytest.raises(ProfileError) as exc:
        parse_profile(text, "lp.toml")
    msg = str(exc.value)
    assert "\n" not in msg and "library.keys.damk.alg" in msg and 'line_protection = "sm4"' in msg


def test_without_line_protection_sm4_an_sm4_master_is_refused():
    text = _lp_text().replace('line_protection = "sm4"', "")
    with pytest.raises(ProfileError) as exc:
        parse_profile(text, "lp.toml")
    msg = str(exc.value)
    assert "\n" not in msg and ".alg" in msg and "cannot be SM4" in msg


def test_profile_check_names_the_card_model(run_cli):
    r = run_cli("profile", "check", str(LP_PROFILE))
    assert r.exit_code == 0 and "fmcos-sm4" in r.stdout
    assert load_profile(LP_PROFILE).transport_key.length == 16


# ------------------------------------------------------------------ transactions and services
def test_load_purchase_on_the_sm4_lp_card():
    card = issued()
    spec = load_profile(LP_PROFILE)
    session, _t = connect(card)
    term = PurseTerminal(session, spec, keys())
    term.load(3000, when=WHEN)
    tx = term.purchase(250, when=WHEN)
    assert term.balance() == 2750
    # the SM4 TAC of the purchase, independently (SM4 DTK whole, docs/sm4.md item 3)
    dtk = per_card(H("FFC9C066F62E8CB61EBDFDF12D06107B"))
    want = ref.cbc_mac4(dtk, (250).to_bytes(4, "big") + b"\x06" + b"\x00\x00\x00\x00\x00\x01"
                        + (1).to_bytes(4, "big") + H(WHEN.strftime("%Y%m%d%H%M%S")))
    assert tx.tac == want


def test_pin_services_with_sm4_macs():
    card = issued()
    spec = load_profile(LP_PROFILE)
    social = spec.app("social")
    session, t = connect(card)
    svc = CardServices(session, spec, keys())
    svc.verify_pin(social, "123456")
    svc.change_pin(social, "123456", "2468")
    svc.verify_pin(social, "2468")
    # RELOAD PIN: 80 5E 00 00 ‖ PIN ‖ SM4 MAC with the whole reload key, IV zero (docs/sm4.md)
    svc.reload_pin(social, "135790")
    cmd = next(c for c, _r in t.log if c.startswith(H("805E0000")))
    assert cmd == H("805E000007") + H("135790") + ref.cbc_mac4(per_card(HRSS_RELOAD), H("135790"))
    svc.verify_pin(social, "135790")
    # lock the PIN, unblock it: 84 24 with SM4-ECB(LD ‖ PIN ‖ 80..) ‖ SM4 MAC under the unblock key
    for _ in range(3):
        with pytest.raises(ServiceRefused):
            svc.verify_pin(social, "000000")
    with pytest.raises(ServiceRefused) as exc:
        svc.verify_pin(social, "135790")
    assert exc.value.sw == 0x6983
    svc.unblock_pin(social, "112233")
    chal, cmd = t.after_challenge(H("8424"))
    puk = per_card(HRSS_UNBLOCK)
    ct = ref.ecb(puk, ref.pad80(b"\x03" + H("112233")))
    assert len(ct) == 16 and cmd[4] == 0x14 == len(cmd) - 5
    assert cmd[5:-4] == ct and cmd[-4:] == line_mac(puk, chal, cmd[:-4])
    svc.verify_pin(social, "112233")


def test_app_block_unblock_and_card_block_with_sm4_macs():
    card = issued()
    spec = load_profile(LP_PROFILE)
    app = spec.app("transit")
    session, t = connect(card)
    svc = CardServices(session, spec, keys())
    svc.block_app(app)
    chal, cmd = t.after_challenge(H("841E"))
    assert cmd == H("841E000004") + line_mac(per_card(TRANSIT_DAMK), chal, H("841E000004"))
    assert transit(card).block == 1
    svc.unblock_app(app)
    chal, cmd = t.after_challenge(H("8418"))
    assert cmd == H("8418000004") + line_mac(per_card(TRANSIT_DAMK), chal, H("8418000004"))
    assert transit(card).block == 0
    svc.block_card()
    chal, cmd = t.after_challenge(H("8416"))
    mf_damk = per_card(H("1EEECDC93CFAEC50620A0420AC978462"))                 # card/damk-sm4
    assert cmd == H("8416000004") + line_mac(mf_damk, chal, H("8416000004"))
    assert card.card_blocked


def test_a_wrong_sm4_damk_counts_once_and_blocks_nothing(tmp_path):
    card = issued()
    wrong = tmp_path / "wrong-sm4.toml"
    wrong.write_text(DEMO_KEYS_SM4.read_text().replace("DFAE2FBDD16BBFF87DCA5E9D019B9B09", "22" * 16))
    spec = load_profile(LP_PROFILE)
    session, _t = connect(card)
    with pytest.raises(ServiceRefused) as exc:
        CardServices(session, spec, keys(wrong)).block_app(spec.app("transit"))
    assert exc.value.sw == 0x6988                                                 # SPEC §6 R15
    assert transit(card).block == 0 and key_record(card, transit(card), 0x36, 0).b4 == 0x32
    CardServices(session, spec, keys()).block_app(spec.app("transit"))
    assert transit(card).block == 1 and key_record(card, transit(card), 0x36, 0).b4 == 0x33


# ------------------------------------------------------------------ the PSAM terminal's hotlist block
def test_hotlisted_sm4_lp_card_is_blocked_by_the_psam_terminal():
    """The PSAM's SM4 maintenance master (index 41, algorithm 04) diversified by the card serial
    is the card's SM4 DAMK: the PSAM's MAC of APPLICATION BLOCK, recomputed here."""
    card = issued()
    spec = load_profile(LP_PROFILE)
    session, t = connect(card)
    psam = sm4_psam_card()
    ps = SimTransport(psam)
    ps.connect()
    res = block_application(session, CardSession(ps), spec)
    assert res.application == "transit" and res.card_serial == SERIAL
    chal, cmd = t.after_challenge(H("841E"))
    assert cmd == H("841E000004") + line_mac(per_card(TRANSIT_DAMK), chal, H("841E000004"))
    assert transit(card).block == 1
    assert walk.select_df(session, spec.app("transit")).sw == 0x6A81


def test_batch_of_sm4_lp_cards_on_simulated_readers(run_cli, tmp_path):
    common = ["batch", "run", "--profile", str(LP_PROFILE), "--keys", str(DEMO_KEYS), "--keys", str(DEMO_KEYS_SM4),
              "--data", str(SAMPLE), "--limit", "2", "--keep-cards", str(tmp_path)]
    r = run_cli(*common, "--journal", str(tmp_path / "bad.db"), "--sims", "1")
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert r.exit_code == 2 and len(errors) == 1 and "--sim-model fmcos-sm4" in errors[0]
    assert not (tmp_path / "bad.db").exists()
    r = run_cli(*common, "--journal", str(tmp_path / "j.db"), "--sims", "2", "--sim-model", "fmcos-sm4")
    assert r.exit_code == 0, r.stderr
    from citycard.sim import image

    kept = sorted(tmp_path.glob("*.json"))
    assert len(kept) == 2 and all(image.load(p).model.name == "fmcos-sm4" for p in kept)


def test_shell_authenticates_and_writes_with_sm4(run_cli, tmp_path):
    """`citycard shell` on a card with SM4 line protection: EXTERNAL AUTHENTICATE and a MAC'd
    write take the profile's cipher."""
    import io

    from citycard.shell.card import CardContext
    from citycard.shell.interactive import CardShell
    from citycard.sim.transport import ImageTransport

    img = tmp_path / "card.json"
    assert run_cli("sim", "new", "--model", "fmcos-sm4", str(img)).exit_code == 0
    r = run_cli("perso", "--profile", str(LP_PROFILE), "--keys", str(DEMO_KEYS), "--keys", str(DEMO_KEYS_SM4),
                "--data", str(SAMPLE), "--row", "1", "--sim", str(img), "--issue-date", "20261124")
    assert r.exit_code == 0, r.stderr
    transport = ImageTransport(img)
    transport.connect()
    session = CardSession(transport)
    out = io.StringIO()
    lines = ["select transit", "auth", "protect transit/damk 00D6951C02 ABCD", "read ef0015", "quit"]
    sh = CardShell(CardContext(session, load_profile(LP_PROFILE), keys()),
                   stdin=io.StringIO("".join(line + "\n" for line in lines)), stdout=out, use_readline=False)
    sh.use_rawinput = False
    try:
        sh.cmdloop()
    finally:
        session.close()
    text = out.getvalue()
    assert "authenticated" in text and "> 04D6951C06 ABCD" in text and "rfu3           ABCD" in text
