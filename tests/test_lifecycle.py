"""The card register and hotlists (issue 23 items 1-2): states and their history, the journal
feeding the register, signed full and delta hotlists, and a terminal's copy refusing forged,
rolled-back and out-of-sequence lists.

The hotlist bytes are checked here by an independent reading written in the test (struct and
cryptography's Ed25519 directly, over SHA-256 of the content), not by citycard's reader."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from tests.test_batch import batch_args, make_csv

from citycard.bureau import create_credential, unlock

PROFILE = __import__("pathlib").Path(__file__).resolve().parents[1] / "profiles/citycard.toml"
from citycard.lifecycle import HotlistError, Register, RegisterError, TerminalHotlist, read_hotlist, write_hotlist

PW = "hotlist signer passphrase"


@pytest.fixture(scope="module")
def signer_cred(tmp_path_factory):
    d = tmp_path_factory.mktemp("signer")
    cred = d / "issuer.cred"
    create_credential(cred, "issuer", PW)
    (d / "pw").write_text(PW + "\n")
    return cred


def _register(tmp_path, url=None) -> Register:
    reg = Register(url or str(tmp_path / "register.db"), operator="dora", station="counter-3")
    for n in range(1, 6):
        reg.add_card(f"33010000000000{n:02d}", f"CH{n}", "citycard", batch="b1", row=n)
    return reg


def _states(reg, serials):
    return [reg.card(s).state for s in serials]


def test_states_and_history(tmp_path):
    reg = _register(tmp_path)
    s1, s2, s3 = "3301000000000001", "3301000000000002", "3301000000000003"
    assert reg.add_card(s1, "CH1", "citycard") is False               # idempotent
    assert reg.change(s1, "lost", "reported at the counter").state == "lost"
    with pytest.raises(RegisterError, match="is lost: it cannot be reported lost"):
        reg.change(s1, "lost", "twice")
    assert reg.change(s1, "found", "found by the cardholder").state == "issued"
    reg.change(s1, "lost", "lost again")
    reg.change(s2, "close", "cardholder moved away")
    with pytest.raises(RegisterError, match="is closed: it cannot be reported found"):
        reg.change(s2, "found", "x")
    with pytest.raises(RegisterError, match="not in the register"):
        reg.change("3301999999999999", "lost", "x")
    with pytest.raises(Exception, match="say why"):
        reg.change(s3, "lost", " ")
    assert _states(reg, [s1, s2, s3]) == ["lost", "closed", "issued"]
    ev = reg.events(s1)
    assert [(e["action"], e["from"], e["to"]) for e in ev] == [
        ("issue", None, "issued"), ("lost", "issued", "lost"), ("found", "lost", "issued"), ("lost", "issued", "lost")]
    assert {(e["operator"], e["station"]) for e in ev} == {("dora", "counter-3")}
    assert ev[1]["reason"] == "reported at the counter"
    # every change of hotlist membership is a version: lost, found, lost again (no primary-key
    # clash on the second add), closed
    assert reg.hotlist_version() == 4
    assert list(reg.hotlist_changes(0)) == [(1, s1, "add"), (2, s1, "remove"), (3, s1, "add"), (4, s2, "add")]
    version, serials = reg.hotlist_snapshot()
    assert version == 4 and list(serials) == [s1, s2]
    reg.close()


def _independent_read(path: Path, public_key: bytes) -> tuple[tuple, list[tuple[str, int]]]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = path.read_bytes()
    head = struct.unpack(">4sBcIII8sI", raw[:30])
    n = head[-1]
    body, sig = raw[:30 + 9 * n], raw[30 + 9 * n:]
    assert len(sig) == 64
    Ed25519PublicKey.from_public_bytes(public_key).verify(sig, hashlib.sha256(body).digest())
    assert head[6] == hashlib.sha256(public_key).digest()[:8]
    entries = [(body[30 + 9 * i:38 + 9 * i].hex(), body[38 + 9 * i]) for i in range(n)]
    return head, entries


def test_hotlists_full_and_delta(tmp_path, signer_cred):
    signer = unlock(signer_cred, PW)
    reg = _register(tmp_path)
    s = [f"33010000000000{n:02d}" for n in range(1, 6)]
    reg.change(s[0], "lost", "r")
    reg.change(s[3], "lost", "r")
    v, serials = reg.hotlist_snapshot()
    full = tmp_path / "full.bin"
    write_hotlist(full, signer, version=v, entries=((x, True) for x in serials))
    head, entries = _independent_read(full, signer.public.public_key)
    assert head[:6] == (b"CCHL", 1, b"F", 2, 0, head[5]) and entries == [(s[0], 1), (s[3], 1)]

    reg.change(s[0], "found", "r")
    reg.change(s[4], "close", "r")
    delta = tmp_path / "delta.bin"
    write_hotlist(delta, signer, version=reg.hotlist_version(),
                  entries=((x, c == "add") for _v, x, c in reg.hotlist_changes(2)), base=2)
    head, entries = _independent_read(delta, signer.public.public_key)
    assert head[2:5] == (b"D", 4, 2) and entries == [(s[0], 0), (s[4], 1)]

    term = TerminalHotlist(tmp_path / "terminal.json")
    trusted = [signer.public]
    with pytest.raises(HotlistError, match="a delta, but this terminal holds no hotlist yet"):
        term.load(delta, trusted)
    term.load(full, trusted)
    assert s[0] in term and s[3] in term and s[1] not in term
    term.load(delta, trusted)
    assert s[0] not in term and s[4] in term and term.version == 4
    with pytest.raises(HotlistError, match="not newer than the version held .4.: refused .rollback."):
        term.load(full, trusted)
    again = TerminalHotlist(tmp_path / "terminal.json")         # kept across a restart
    assert again.version == 4 and s[4] in again and len(again) == 2


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], "signature does not verify"),
    (lambda b: b[:-1], "cut or padded"),
    (lambda b: b[:9] + b"\x00\x00\x00\x09" + b[13:], "signature does not verify"),     # version raised
    (lambda b: b"XXXX" + b[4:], "magic"),
])
def test_damaged_or_forged_lists_are_refused(tmp_path, signer_cred, damage, message):
    signer = unlock(signer_cred, PW)
    path = tmp_path / "h.bin"
    write_hotlist(path, signer, version=3, entries=[("3301000000000001", True), ("3301000000000007", True)])
    path.write_bytes(damage(path.read_bytes()))
    term = TerminalHotlist()
    with pytest.raises(HotlistError, match=message):
        term.load(path, [signer.public])
    assert not term.loaded and len(term) == 0


def test_an_untrusted_signer_is_refused(tmp_path, signer_cred):
    other = tmp_path / "other.cred"
    create_credential(other, "mallory", "mallory passphrase 1")
    path = tmp_path / "h.bin"
    write_hotlist(path, unlock(other, "mallory passphrase 1"), version=9, entries=[("3301000000000001", True)])
    with pytest.raises(HotlistError, match="not a trusted hotlist key"):
        read_hotlist(path, [unlock(signer_cred, PW).public])


@pytest.mark.postgres
def test_register_on_postgres(postgres):
    url = postgres.fresh_database("register")
    a = Register(url, operator="a", station="s1")
    b = Register(url, operator="b", station="s2")
    a.add_card("3301000000000001", "CH1", "citycard")
    b.change("3301000000000001", "lost", "phone call")
    with pytest.raises(RegisterError, match="is lost"):
        a.change("3301000000000001", "lost", "again")
    v, serials = a.hotlist_snapshot()
    assert v == 1 and list(serials) == ["3301000000000001"]
    assert [e["operator"] for e in a.events("3301000000000001")] == ["a", "b"]
    a.close()
    b.close()


def test_cli_from_journal_to_terminal_list(run_cli, tmp_path, signer_cred):
    data = make_csv(tmp_path / "d.csv", 3)
    journal = tmp_path / "j.db"
    r = run_cli(*batch_args(data, journal, "--sims", "1"))
    assert r.exit_code == 0, r.stderr
    reg = ["--register", str(tmp_path / "reg.db")]
    log = tmp_path / "audit.log"
    r = run_cli("cards", "import", *reg, "--journal", str(journal), "--profile", str(PROFILE))
    assert r.exit_code == 0 and "registered 3 cards (0 already" in r.stdout, r.stderr
    assert "registered 0 cards (3 already" in run_cli("cards", "import", *reg, "--journal", str(journal)).stdout
    serial = json.loads(run_cli("cards", "show", *reg, _first_serial(journal), "--json").stdout)["serial"]
    r = run_cli("--audit-log", str(log), "--operator", "eve", "cards", "lost", *reg, serial, "--reason", "stolen bag")
    assert r.exit_code == 0 and "on the hotlist" in r.stdout
    assert json.loads(log.read_text())["action"] == "card.lost"
    r = run_cli("cards", "lost", *reg, serial, "--reason", "x")
    assert r.exit_code == 2 and "is lost: it cannot be reported lost" in r.stderr
    shown = run_cli("cards", "show", *reg, serial).stdout
    assert "lost (hotlisted)" in shown and "stolen bag" in shown
    assert "applications social, transit, library, bike, health" in shown
    assert json.loads(run_cli("cards", "show", *reg, serial, "--json").stdout)["profile"].endswith("citycard.toml")

    pub = tmp_path / "issuer.pub"
    assert run_cli("hotlist", "key", str(signer_cred), "--out", str(pub)).exit_code == 0
    out = tmp_path / "full.bin"
    pw = signer_cred.parent / "pw"
    r = run_cli("hotlist", "export", *reg, "--full", "--out", str(out), "--sign", str(signer_cred),
                "--sign-passphrase-file", str(pw))
    assert r.exit_code == 0 and "full hotlist version 1: 1 entries" in r.stdout, r.stderr
    shown = json.loads(run_cli("hotlist", "show", str(out), "--trust", str(pub), "--json").stdout)
    assert shown["version"] == 1 and shown["entries"] == [{"serial": serial, "listed": True}]
    r = run_cli("hotlist", "export", *reg, "--out", str(out), "--sign", str(signer_cred))
    assert r.exit_code == 2 and "give --full or --since" in r.stderr


def _first_serial(journal: Path) -> str:
    from citycard.perso.journal import Journal

    j = Journal(str(journal), create=False)
    try:
        return next(r["card_serial"] for r in j.iter_report() if r["status"] == "verified")
    finally:
        j.close()


def test_first_list_may_be_empty_and_exports_say_when_nothing_changed(tmp_path, signer_cred, run_cli):
    """A register with nothing hotlisted exports version 0, which a fresh terminal takes; a
    delta since the current version is refused at export (no terminal could load it)."""
    signer = unlock(signer_cred, PW)
    reg = _register(tmp_path)
    v, serials = reg.hotlist_snapshot()
    empty = tmp_path / "empty.bin"
    write_hotlist(empty, signer, version=v, entries=((s, True) for s in serials))
    term = TerminalHotlist()
    assert term.load(empty, [signer.public]).version == 0 and term.loaded and len(term) == 0
    reg.change("3301000000000001", "lost", "r")
    reg.close()
    r = run_cli("hotlist", "export", "--register", str(tmp_path / "register.db"), "--since", "1", "--out",
                str(tmp_path / "d.bin"), "--sign", str(signer_cred), "--sign-passphrase-file",
                str(signer_cred.parent / "pw"))
    assert r.exit_code == 2 and "nothing changed since" in r.stderr


def test_a_file_changed_after_its_check_applies_nothing(tmp_path, signer_cred, monkeypatch):
    signer = unlock(signer_cred, PW)
    good, other = tmp_path / "h.bin", tmp_path / "o.bin"
    write_hotlist(good, signer, version=3, entries=[("3301000000000001", True)])
    write_hotlist(other, signer, version=3, entries=[("3301000000000009", True)])
    header, entries = read_hotlist(good, [signer.public])
    good.write_bytes(other.read_bytes()[:-64] + good.read_bytes()[-64:])   # swapped between check and apply
    with pytest.raises(HotlistError, match="changed while it was read"):
        list(entries)
