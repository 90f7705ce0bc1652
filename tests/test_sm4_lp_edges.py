"""Edges of SM4 line protection found in review (docs/sm4.md "SM4 line protection"): the room
of an enciphered write and of a protected read with SM4's 16-byte padding.

Every ciphertext and MAC is recomputed with tests/sm4_gbt.py (SM4 from GB/T 32907, no code
shared with citycard) from the TEST KEYS of profiles/demo-keys-sm4.toml.
"""

from __future__ import annotations

import pytest

from citycard.perso.run import personalize
from citycard.profile import ProfileError, parse_profile
from citycard.sim import new_card
from tests import sm4_gbt as ref
from tests.test_sm4_line_protection import H, LP_PROFILE, connect, line_mac, per_card, plan_for

LIBRARY_DAMK = H("E11380F981E061DC0306A6F013E658F7")       # library/damk-sm4 (demo-keys-sm4.toml)
MAX_LC = 239                                               # FM1208 (SPEC §6 R7)


def _lp_text() -> str:
    return LP_PROFILE.read_text(encoding="utf-8")


def test_a_long_enciphered_file_is_written_within_lc_239_on_an_sm4_card():
    """A 300-byte binary file written enciphered + MAC'd on an SM4-LP card: each UPDATE BINARY
    carries at most 222 plain bytes (1 + 222 + 1 padded to 224, + MAC 4 = Lc 228; 230 bytes, the
    3DES room, would give Lc 244 and the card answers 6700), and the protected read of the
    verification asks for no more than its answer can carry within 239 bytes."""
    text = _lp_text().replace('kind = "binary"\nsize = 32\nread = "free"\nwrite = "free"\nwrite_protect = "mac"',
                              'kind = "binary"\nsize = 300\nread = "free"\nwrite = "free"\nwrite_protect = "cipher"', 1)
    assert "size = 300" in text
    spec = parse_profile(text, str(LP_PROFILE))
    plan = plan_for(spec)
    card = new_card("fmcos-sm4")
    session, t = connect(card)
    report = personalize(session, spec, plan)
    assert report.verified
    assert all(len(c) <= 5 + MAX_LC for c, _r in t.log)
    assert all(len(r) <= MAX_LC + 2 for c, r in t.log if c[1] == 0xB0 and c[0] & 0x04)
    damk = per_card(LIBRARY_DAMK)
    content = plan.contents[("library", 0x15)]
    first = next(i for i, (c, r) in enumerate(t.log) if c[:4] == H("04D69500") and r == H("9000")
                 and len(c) == 5 + 224 + 4)
    cmd, chal = t.log[first][0], t.log[first - 1][1][:-2]
    assert cmd[4] == 228
    plain = ref.ecb(damk, cmd[5:-4], decrypt=True)
    assert plain == ref.pad80(b"\xDE" + content[:222])
    assert cmd[-4:] == line_mac(damk, chal, cmd[:-4])


def test_an_sm4_enciphered_record_longer_than_one_command_is_refused_by_the_profile():
    """A fixed record of 226 bytes written enciphered: 3DES fits it in Lc 236, SM4 needs 244:
    refused under line_protection = "sm4", one line naming the file; 222 bytes fit."""
    extra = ('\n[apps.transit.files.big]\nfid = "0019"\nkind = "fixed"\ncount = 2\nlength = 226\n'
             'write = "free"\nwrite_protect = "cipher"\nwrite_key = 0\n')
    text = _lp_text().replace("space = 1024", "space = 1536", 1)      # transit: room for the file
    with pytest.raises(ProfileError) as exc:
        parse_profile(text + extra, "lp.toml")
    msg = str(exc.value)
    assert "\n" not in msg and "apps.transit.files.big.length" in msg and "222" in msg
    assert parse_profile(text + extra.replace("length = 226", "length = 222"), "lp.toml")
    # a record too long for 3DES already: the SM4 limit is named, not the 3DES one (230)
    with pytest.raises(ProfileError, match="at most 222 data bytes with cipher"):
        parse_profile(text + extra.replace("length = 226", "length = 234"), "lp.toml")


def test_data_room_of_an_sm4_ciphertext_matches_lc_239():
    import math

    from citycard.spec import data_room

    assert data_room("cipher", "sm4") == max(n for n in range(300) if 16 * math.ceil((1 + n + 1) / 16) + 4 <= MAX_LC)
    assert data_room("mac", "sm4") == data_room("mac") and data_room("plain", "sm4") == data_room("plain")


def test_a_3des_profile_on_an_issued_sm4_card_is_refused_for_its_cipher_not_called_issued():
    """The card of this cardholder issued with SM4 line protection, and perso with the 3DES
    profile of the same layout: refused for the cipher at identification (one line), not
    "already issued ... run perso again with --reissue-card" (which would then fail)."""
    from citycard.cos import WrongLineProtection
    from citycard.profile import load_profile
    from tests.test_sm4_line_protection import ROOT, issued, keys

    card = issued()
    session, t = connect(card)
    spec = load_profile(ROOT / "profiles/citycard.toml")
    with pytest.raises(WrongLineProtection) as exc:
        personalize(session, spec, plan_for(spec, keys()))
    assert "\n" not in str(exc.value) and "line protection is 3DES" in str(exc.value)
    assert not t.log                                                     # nothing sent at all


def test_a_card_of_the_other_cipher_is_a_card_refusal_for_every_command(run_cli, tmp_path):
    """The CLI's exit code for a card whose ATR shows the other line-protection cipher: 1 (the
    card refused, as "not a card of profile"), the same for perso (of an issued SM4 card:
    refused at identification), the card services and dump, one error line, no key in it."""
    from tests.test_sm4_line_protection import DEMO_KEYS, DEMO_KEYS_SM4, ROOT, SAMPLE

    import re

    img = tmp_path / "sm4.json"
    assert run_cli("sim", "new", "--model", "fmcos-sm4", str(img)).exit_code == 0
    k = ["--keys", str(DEMO_KEYS), "--keys", str(DEMO_KEYS_SM4)]
    r = run_cli("perso", "--profile", str(LP_PROFILE), *k, "--data", str(SAMPLE), "--row", "1", "--sim", str(img))
    assert r.exit_code == 0, r.stderr
    secrets = set(re.findall(r"[0-9A-F]{32}", (DEMO_KEYS.read_text() + DEMO_KEYS_SM4.read_text()).upper()))
    assert len(secrets) > 20
    p3 = ["--profile", str(ROOT / "profiles/citycard.toml")]
    for args in (["perso", *p3, *k, "--data", str(SAMPLE), "--row", "1", "--sim", str(img)],
                 ["app", "block", *p3, *k, "--app", "transit", "--sim", str(img)],
                 ["dump", *p3, *k, "--sim", str(img)]):
        r = run_cli(*args)
        errors = [line for line in r.stderr.splitlines() if "error" in line]
        assert r.exit_code == 1, (args[0], r.stderr)
        assert len(errors) == 1 and "line protection is 3DES" in errors[0]
        assert not [m for m in secrets if m in (r.stdout + r.stderr).upper()]    # no master in any output


def test_every_card_model_is_listed_by_the_cli_help(run_cli):
    """`sim new --model` and `batch run --sim-model` name every model `MODELS` has, fmcos-sm4
    included (docs/sm4.md's commands use both)."""
    from citycard.sim.models import MODELS

    sim_help = " ".join(run_cli("sim", "new", "--help").stdout.split())
    assert [name for name in MODELS if name not in sim_help] == []
    assert "fmcos-sm4" in " ".join(run_cli("batch", "run", "--help").stdout.split())


# ------------------------------------------------------------------ every host path: the cipher, or one line
def test_dump_authenticates_each_sm4_master_with_the_sm4_cryptogram():
    """`citycard dump` with keys: each application's SM4 master authenticates (16-byte SM4
    cryptogram of the per-card master, recomputed here); no try is spent."""
    from citycard.perso.dump import dump_card
    from citycard.profile import load_profile
    from tests.test_sm4_line_protection import TRANSIT_AID, TRANSIT_MASTER, issued, keys, key_record, transit

    card = issued()
    session, t = connect(card)
    out = dump_card(session, load_profile(LP_PROFILE), keys())
    assert "keys_refused" not in out
    assert [a["name"] for a in out["applications"] if a.get("authenticated")] == [
        "social", "transit", "library", "bike", "health"]
    start = next(i for i, (c, _r) in enumerate(t.log) if c.endswith(TRANSIT_AID))
    i = next(i for i in range(start, len(t.log)) if t.log[i][0][:4] == H("00820000"))
    chal = t.log[i - 1][1][:-2]
    assert t.log[i] == (H("0082000010") + ref.encrypt_block(per_card(TRANSIT_MASTER), chal + bytes(12)), H("9000"))
    assert key_record(card, transit(card), 0x39, 0).b4 == 0x55


def _three_des_on_the_sm4_card():
    from citycard.profile import load_profile
    from tests.test_sm4_line_protection import ROOT, issued

    card = issued()
    session, t = connect(card)
    return card, session, t, load_profile(ROOT / "profiles/citycard.toml")


def _tries(card) -> dict:
    """Every key record's byte 4 (the error counter of 36-39, 3A), by DF, type and id."""
    nodes = [("mf", card.mf), *((f"{fid:04X}", n) for fid, n in card.mf.children.items())]
    return {(df, kt, kid): rec.b4 for df, node in nodes if getattr(node, "keyfile", None) is not None
            for (kt, kid), rec in node.keyfile.keys.items()}


def test_pin_reload_of_the_other_cipher_sends_no_mac():
    """RELOAD PIN is MAC'd under the reload key, which counts a failure (9302): the 3DES
    profile on an SM4 card is refused before the command goes."""
    from citycard.cos import WrongLineProtection
    from citycard.terminal.services import CardServices
    from tests.test_sm4_line_protection import keys

    card, session, t, spec = _three_des_on_the_sm4_card()
    before = _tries(card)
    assert len(before) > 10
    with pytest.raises(WrongLineProtection):
        CardServices(session, spec, keys()).reload_pin(spec.app("social"), "135790")
    assert not [c for c, _r in t.log if c[1] == 0x5E] and _tries(card) == before


def test_psam_block_of_the_other_cipher_sends_no_mac():
    """The hotlist terminal with the 3DES profile on an SM4 card: refused before GET CHALLENGE,
    no APPLICATION BLOCK (whose wrong MAC would spend a DAMK try, 6988)."""
    from citycard.cos import WrongLineProtection
    from citycard.sim.transport import SimTransport
    from citycard.terminal.psam_hotlist import block_application
    from citycard.transport import CardSession
    from tests.psamhost import sm4_psam_card
    from tests.test_sm4_line_protection import transit

    card, session, t, spec = _three_des_on_the_sm4_card()
    before = _tries(card)
    assert len(before) > 10
    ps = SimTransport(sm4_psam_card())
    ps.connect()
    with pytest.raises(WrongLineProtection):
        block_application(session, CardSession(ps), spec)
    assert not [c for c, _r in t.log if c[1] in (0x84, 0x1E)]
    assert _tries(card) == before and transit(card).block == 0


def test_shell_auth_of_the_other_cipher_sends_no_cryptogram():
    from citycard.cos import WrongLineProtection
    from citycard.shell.card import CardContext
    from tests.test_sm4_line_protection import keys

    card, session, t, spec = _three_des_on_the_sm4_card()
    before = _tries(card)
    assert len(before) > 10
    with pytest.raises(WrongLineProtection):
        CardContext(session, spec, keys()).auth(spec.app("transit"))
    assert not [c for c, _r in t.log if c[1] in (0x84, 0x82)] and _tries(card) == before


def test_a_psam_without_the_sm4_maintenance_master_is_named_and_the_card_untouched():
    """The SM4-LP card with the 3DES PSAM of profiles/psam.toml (no key at index 41): the
    PSAM refuses INIT FOR DESCRYPT, the error names the index and the cipher, one line; the
    card gets no APPLICATION BLOCK."""
    from citycard.profile import load_profile
    from citycard.sim.transport import SimTransport
    from citycard.terminal.psam_hotlist import block_application
    from citycard.terminal.psam_purchase import PsamRefused
    from citycard.transport import CardSession
    from tests.psamhost import psam_card
    from tests.test_sm4_line_protection import issued, transit

    card = issued()
    session, t = connect(card)
    ps = SimTransport(psam_card())
    ps.connect()
    with pytest.raises(PsamRefused) as exc:
        block_application(session, CardSession(ps), load_profile(LP_PROFILE))
    msg = str(exc.value)
    assert "\n" not in msg and "index 41 (SM4 line protection)" in msg and "6A88" in msg
    assert not [c for c, _r in t.log if c[1] == 0x1E] and transit(card).block == 0


def test_unknown_atr_and_a_same_layout_profile_of_the_other_cipher_cost_one_try_and_no_retry():
    """What docs/sm4.md decision 16 says of a card whose ATR names no known COS: identified by
    its files only, an SM4-LP card under citycard-sm4.toml (3DES line protection, the same
    layout) gets one 3DES MAC: 6988, one DAMK failure counted, nothing retried, not blocked."""
    from citycard.profile import load_profile
    from citycard.sim.models import atr_from_historical
    from citycard.terminal.services import CardServices, ServiceRefused
    from tests.test_sm4_line_protection import ROOT, issued, keys, transit

    card = issued()
    card.atr = atr_from_historical(b"SOME OTHER COS")
    session, t = connect(card)
    spec = load_profile(ROOT / "profiles/citycard-sm4.toml")
    with pytest.raises(ServiceRefused) as exc:
        CardServices(session, spec, keys()).block_app(spec.app("transit"))
    assert exc.value.sw == 0x6988
    assert len([c for c, _r in t.log if c[1] == 0x1E]) == 1
    assert transit(card).keyfile.keys[(0x36, 0)].b4 == 0x32 and transit(card).block == 0


def test_profile_show_does_not_give_line_keys_an_algorithm_byte(run_cli):
    """`profile show` of the SM4-LP profile: the purse and TAC keys are "SM4 (algorithm 04)";
    the master, DAMK and PIN keys are SM4 by the card's line protection, their byte 4 being the
    error counter (docs/sm4.md items 6, 12), and the card line says the line protection."""
    r = run_cli("profile", "show", str(LP_PROFILE))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "line protection: SM4" in lines[1]
    by_type = {}
    for line in lines:
        if line.strip().startswith("key ") and "SM4" in line:
            by_type.setdefault(line.split("type ")[1][:2], set()).add(line.split(", SM4 ")[1])
    assert by_type["39"] == by_type["F6"] == by_type["F7"] == by_type["F8"] == {"(the card's line protection)"}
    purse = {t: v for t, v in by_type.items() if t not in ("39", "F6", "F7", "F8")}
    assert {"FE", "F4", "3F"} <= set(purse) and all(v == {"(algorithm 04)"} for v in purse.values())


def test_a_batch_reader_of_the_other_cipher_fails_its_rows_without_spoiling_them(tmp_path):
    """Batch on readers (not --sims, whose model is checked up front) holding SM4 cards, with the
    3DES profile: every row "failed" with the one-line cipher refusal, none "spoiled" (nothing
    was written), and the cards keep their factory transport key's tries."""
    import datetime

    from citycard.perso.batch import Batch
    from citycard.perso.job import prepare
    from citycard.perso.journal import Journal
    from citycard.sim.batch_readers import SimSource
    from tests.test_pipeline import PROFILE, demo_ring, small_csv

    job = prepare(PROFILE, small_csv(tmp_path, 2), demo_ring())
    (tmp_path / "keep").mkdir()
    b = Batch(job.spec, job.keys, job.data, str(tmp_path / "j.db"), issue_date=datetime.date(2026, 11, 24))
    result = b.run([SimSource("sim-1", tmp_path / "keep", model="fmcos-sm4")])
    assert result.counts["failed"] == 2 and result.counts["spoiled"] == 0
    with Journal(str(tmp_path / "j.db")) as j:
        rows = list(j.report(result.batch))
    assert all("line protection is 3DES" in r["error"] and "\n" not in r["error"] for r in rows)
    from citycard.sim import image

    kept = [image.load(p) for p in (tmp_path / "keep").glob("*.json")]
    assert kept and all(c.mf.keyfile.keys[(0x39, 0)].b4 == 0x33 for c in kept)     # 3 tries of 3 left


def test_no_key_in_the_repr_of_the_transport_key_the_psam_temporary_key_or_a_profile():
    from citycard.sim.psam import SamTempKey
    from citycard.spec import TransportKey

    secret = H("0123456789ABCDEFFEDCBA9876543210")
    for obj in (TransportKey(value=secret, length=16), SamTempKey(0x05, secret, alg="sm4")):
        assert repr(secret) not in repr(obj) and secret.hex() not in repr(obj).lower()
    text = _lp_text().replace('transport_key = "factory/transport"',
                              f'transport_key = {{ value = "{secret.hex()}" }}', 1)
    assert secret.hex() in text
    assert repr(secret) not in repr(parse_profile(text, "lp.toml"))


def test_shell_mac_of_an_sm4_lp_card_is_the_sm4_line_mac():
    """The shell's/script's `mac APP/KEY DATA iv=..` under the SM4-LP profile: the SM4 line MAC
    (IV = challenge ‖ zeros to 16), recomputed here; the card takes it."""
    from citycard.profile import load_profile
    from citycard.shell.card import CardContext
    from tests.test_sm4_line_protection import TRANSIT_DAMK, issued, keys, transit

    card = issued()
    session, _t = connect(card)
    spec = load_profile(LP_PROFILE)
    ctx = CardContext(session, spec, keys())
    app = spec.app("transit")
    # no challenge: IV zero (this also reads the serial the key is diversified with)
    assert ctx.mac(app, "damk", H("841E000004")) == line_mac(per_card(TRANSIT_DAMK), bytes(4), H("841E000004"))
    ctx.enter(app)
    chal = session.get_challenge(4)
    mac = ctx.mac(app, "damk", H("841E000004"), chal)
    assert mac == line_mac(per_card(TRANSIT_DAMK), chal, H("841E000004"))
    assert session.send(H("841E000004") + mac).sw == 0x9000 and transit(card).block == 1


# ------------------------------------------------------------------ a personalization cut, then redone
def _identify_apdus(spec, plan) -> int:
    from citycard.perso.run import identify_card
    from tests.test_perso import Pulled

    t = Pulled(new_card("fmcos-sm4"), 10 ** 6)
    t.connect()
    from citycard.transport import CardSession

    identify_card(CardSession(t), spec, plan)
    return t.count


@pytest.mark.parametrize("limit", [4, 5, 7, 9, 20, 45, 70, 90])
def test_an_sm4_lp_card_cut_half_way_is_redone_with_sm4_and_at_most_one_try(limit):
    """The cut-and-redo of tests/test_perso.py on the SM4-LP card: each rerun takes the card over
    with SM4 cryptograms; a card cut right after its MF master (the limits 7, 9 of a first run)
    spends one try of that master on the transport key, and --reissue-card then redoes it."""
    from citycard.errors import CitycardError
    from citycard.perso.steps import AuthenticationRefused
    from citycard.profile import load_profile
    from citycard.transport import CardSession
    from tests.test_perso import Pulled

    spec = load_profile(LP_PROFILE)
    plan = plan_for(spec)
    card = new_card("fmcos-sm4")
    t = Pulled(card, limit - 1 + _identify_apdus(spec, plan))
    t.connect()
    with pytest.raises(CitycardError):
        personalize(CardSession(t), spec, plan)
    session, _t = connect(card)
    if limit in (7, 9):
        mk = card.mf.keyfile.keys[(0x39, 0)]
        tries = mk.tries_left
        with pytest.raises(AuthenticationRefused, match="--reissue-card"):
            personalize(session, spec, plan)
        assert mk.tries_left == tries - 1
        session, _t = connect(card)
        report = personalize(session, spec, plan, reissue=True)
    else:
        report = personalize(session, spec, plan)
    assert report.verified
    assert card.mf.keyfile.keys[(0x39, 0)].value == per_card(H("0E389F3A5DC0E4EA119B38CD9FCE469D"))
    assert card.mf.keyfile.keys[(0x39, 0)].tries_left == 15


# ------------------------------------------------------------------ a key held in a token (HSM): DES/3DES only
class _TokenKey:
    """A key handle as a PKCS#11 token gives one (citycard.keys.handles): DES/3DES ECB inside,
    by its length; the test's own 3DES (cryptography directly)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __len__(self) -> int:
        return len(self._key)

    def __getitem__(self, item: slice) -> "_TokenKey":
        return _TokenKey(self._key[item])

    def ecb_encrypt(self, data: bytes) -> bytes:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
        from cryptography.hazmat.primitives.ciphers import Cipher, modes

        k = self._key + self._key[:8] if len(self._key) == 16 else self._key * 3
        enc = Cipher(TripleDES(k), modes.ECB()).encryptor()
        return enc.update(data) + enc.finalize()

    def cbc_mac(self, data: bytes, iv: bytes | None = None) -> bytes:
        h = iv or bytes(8)
        for i in range(0, len(data), 8):
            h = self.ecb_encrypt(bytes(a ^ b for a, b in zip(h, data[i:i + 8])))
        return h


def _token_ring():
    """The demo keys, with the factory transport entry held in a token (as after `keys
    hsm-import`) and the SM4 masters in a file."""
    from citycard.keys import KeyRing
    from citycard.keys.demo import DemoKeyFile
    from tests.test_sm4_line_protection import DEMO_KEYS, DEMO_KEYS_SM4

    class TokenForTransport(DemoKeyFile):
        def derive(self, unit, role, factor, levels=1, *, version=None, alg="des", **kw):   # noqa: ANN001
            value = super().derive(unit, role, factor, levels, version=version, alg=alg)
            return _TokenKey(value) if (unit, role) == ("factory", "transport") else value

    return KeyRing([TokenForTransport(DEMO_KEYS), DemoKeyFile(DEMO_KEYS_SM4)])


def test_a_transport_key_held_in_a_token_is_refused_for_an_sm4_card_before_the_card():
    """A token does 3DES only: its 16-byte 'SM4' cryptogram would be 3DES, and the card would
    count one of its 3 transport-key tries (63C2).  The plan refuses it, naming
    [card] transport_key; nothing goes to the card."""
    from citycard.profile import load_profile

    spec = load_profile(LP_PROFILE)
    with pytest.raises(ProfileError) as exc:
        plan_for(spec, _token_ring())
    msg = str(exc.value)
    assert "\n" not in msg and "card.transport_key" in msg and "factory/transport" in msg and "SM4" in msg


def test_a_token_key_asked_for_sm4_is_refused_not_computed_as_3des():
    """The crypto library's safety net: a handle's block operations are DES/3DES, so asking one
    for SM4 (a cryptogram, a MAC, a deciphering) raises instead of computing 3DES."""
    from citycard.crypto.cipher import cbc_mac_last, ecb_decrypt, ecb_encrypt
    from citycard.crypto.secure import auth_cryptogram, line_mac
    from citycard.errors import InputError

    k = _TokenKey(b"\xFF" * 16)
    assert ecb_encrypt(k, bytes(8)) == k.ecb_encrypt(bytes(8))        # DES/3DES: the token's
    for call in (lambda: ecb_encrypt(k, bytes(16), "sm4"), lambda: ecb_decrypt(k, bytes(16), "sm4"),
                 lambda: cbc_mac_last(k, bytes(16), None, "sm4"), lambda: auth_cryptogram(k, bytes(4), "sm4"),
                 lambda: line_mac(k, bytes(4), H("841E000004"), "sm4")):
        with pytest.raises(InputError, match="DES/3DES only"):
            call()


def test_an_sm4_pin_is_refused_naming_every_key_that_can_be_sm4():
    """Under line_protection = "sm4" the refusal of an SM4 PIN names the keys that can be SM4,
    the line keys included (the message named the purse keys only)."""
    text = _lp_text().replace('pin = { type = "pin", id = 0, usage = "free", state = 1,',
                              'pin = { type = "pin", id = 0, alg = "sm4", usage = "free", state = 1,', 1)
    assert text != _lp_text()
    with pytest.raises(ProfileError) as exc:
        parse_profile(text, "lp.toml")
    msg = str(exc.value)
    assert "\n" not in msg and "apps.social.keys.pin.alg" in msg and "line_protection" in msg and "master" in msg


# ------------------------------------------------------------------ no SM4 key in any output
def test_no_sm4_master_or_per_card_key_escapes_the_cli(run_cli, capture, tmp_path):
    """Issue, re-issue, transact, service, dump and fail on an SM4-LP card at DEBUG logging
    with a transcript: no SM4 master, no per-card SM4 key (recomputed with tests/sm4_gbt.py),
    nor any 8-byte half of one, and no PIN appear in stdout, stderr, the log or the transcript."""
    import tomllib

    from tests.test_sm4_line_protection import DEMO_KEYS, DEMO_KEYS_SM4, SAMPLE, SERIAL

    masters = [bytes.fromhex(v) for roles in tomllib.loads(DEMO_KEYS_SM4.read_text()).values() for v in roles.values()]
    secrets = {m.hex().upper() for m in masters} | {per_card(m, SERIAL).hex().upper() for m in masters}
    secrets |= {s[i:i + 16] for s in list(secrets) for i in (0, 16)}
    pins = {"135790", "112233", "246801"}
    transcript = tmp_path / "t.txt"
    img = tmp_path / "lp.json"
    k = ["--keys", str(DEMO_KEYS), "--keys", str(DEMO_KEYS_SM4)]
    prof = ["--profile", str(LP_PROFILE)]
    texts: list[str] = []

    def cli(*args: str, expect: int = 0, stdin: str | None = None) -> None:
        r = run_cli("-l", "DEBUG", "--transcript", str(transcript), *args, input=stdin)
        assert r.exit_code == expect, (args, r.stderr)
        texts.append(r.stdout + r.stderr)

    cli("sim", "new", "--model", "fmcos-sm4", str(img))
    perso = ["perso", *prof, *k, "--data", str(SAMPLE), "--row", "1", "--sim", str(img)]
    cli(*perso)
    cli(*perso, "--reissue-card", "--json")
    sim = [*prof, *k, "--sim", str(img)]
    cli("purse", "load", *sim, "--amount", "5.00")
    cli("purse", "purchase", *sim, "--amount", "1.00")
    cli("pin", "reload", *sim, "--app", "social", "--pin-stdin", stdin="135790\n")
    cli("pin", "change", *sim, "--app", "social", "--pin-stdin", stdin="135790\n246801\n")
    cli("pin", "unblock", *sim, "--app", "social", "--pin-stdin", stdin="112233\n")
    cli("app", "block", *sim, "--app", "library")
    cli("app", "unblock", *sim, "--app", "library")
    cli("dump", *sim, "--json")
    wrong = tmp_path / "wrong-sm4.toml"                  # a wrong DAMK master: refused once, one line
    wrong.write_text(DEMO_KEYS_SM4.read_text().replace("E11380F981E061DC0306A6F013E658F7", "33" * 16))
    cli("app", "block", *prof, "--keys", str(DEMO_KEYS), "--keys", str(wrong), "--sim", str(img),
        "--app", "library", expect=1)
    cli("card", "block", *sim, "--yes")
    text = "\n".join(texts) + transcript.read_text() + capture.text
    upper = text.upper()
    assert len(secrets) > 40 and transcript.stat().st_size > 1000
    assert [s for s in secrets if s in upper] == [] and [p for p in pins if p in text] == []
