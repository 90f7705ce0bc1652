"""No unrecorded cards (issue 18, point 4): the journal records an attempt (ATR, UID, run,
reader) before the first write to a card; a rerun after a crash and a card swap finds that
the card in the reader is not the one being written, records that one ``void`` and gives the
row a new serial, so every card that ever received keys is in the journal and no two cards
carry one serial's keys.

The crash is a kill at APDU k of the card session (on progress, never on time): the worker
raises a BaseException there, so nothing more reaches the journal, and the run ends as a
killed one (its lock released)."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import pytest

from citycard.keys import open_ring
from citycard.keys.handles import key_bytes
from citycard.perso.batch import Batch
from citycard.perso.context import CardData
from citycard.perso.job import prepare
from citycard.perso.journal import Journal
from citycard.sim import SimCard
from citycard.sim.fs import DF
from citycard.sim.models import FM1208_HISTORICAL, pcsc_contactless_atr
from citycard.sim.transport import SimTransport
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = datetime.date(2026, 11, 24)


class Killed(BaseException):
    """The station dies here (like kill -9: no handler of the batch runs)."""


class Reader(SimTransport):
    """A simulated reader slot: counts the APDUs of the session and dies at ``kill_at``;
    with ``uid`` it is a contactless reader answering PC/SC GET DATA ``FF CA 00 00 00``
    itself (the card never sees it)."""

    def __init__(self, card: SimCard, kill_at: int | None, uid: bytes | None) -> None:
        super().__init__(card, name="slot")
        self.kill_at, self.uid, self.count = kill_at, uid, 0

    def transmit(self, apdu: bytes) -> bytes:
        if apdu[:2] == b"\xFF\xCA":
            return (self.uid + b"\x90\x00") if self.uid is not None else b"\x6A\x81"
        self.count += 1
        if self.count == self.kill_at:
            raise Killed(f"killed at APDU {self.count}")
        return super().transmit(apdu)


class Slot:
    """A card source holding one physical card at a time (the test swaps it)."""

    in_process_card = False
    name = "slot"

    def __init__(self, card: SimCard, kill_at: int | None = None, uid: bytes | None = None) -> None:
        self.card, self.kill_at, self.uid = card, kill_at, uid

    def next_card(self, stop: threading.Event) -> CardSession | None:
        t = Reader(self.card, self.kill_at, self.uid)
        t.connect()
        return CardSession(t)

    def done(self, session: CardSession, serial: str | None) -> None:
        session.close()


def contactless(uid: bytes) -> SimCard:
    return SimCard(atr=pcsc_contactless_atr(FM1208_HISTORICAL + uid))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "one.csv"
    path.write_text("\n".join(DATA.read_text(encoding="utf-8").splitlines()[:2]) + "\n", encoding="utf-8")
    return prepare(PROFILE, path, open_ring([str(KEYS)], []))


def batch(job, journal: Path) -> Batch:
    return Batch(job.spec, job.keys, job.data, str(journal), issue_date=DAY, station="desk")


def card_keys(card: SimCard) -> set[bytes]:
    """Every key value on a simulated card (every KEY file of every DF)."""
    out: set[bytes] = set()
    todo: list[DF] = [card.mf]
    while todo:
        df = todo.pop()
        if df.keyfile is not None:
            out |= {k.value for k in df.keyfile.keys.values()}
        todo += [c for c in df.children.values() if isinstance(c, DF)]
    return out


def serial_keys(job, number: int) -> set[bytes]:
    """The keys a card of card number ``number`` receives (diversified by its serial), computed
    by the planner on the host; keys common to every card (not diversified) are left out."""
    def keys(n: int) -> set[bytes]:
        plan = job.planner.plan(CardData(job.data.row(1), n, DAY))
        return {key_bytes(k) for k in plan.keys.values()}
    return keys(number) - keys(number + 1000)


def number_of(job, serial: str) -> int:
    return int(serial[len(job.spec.serial_prefix):])


def check_accounted(job, journal: Path, cards: list[SimCard]) -> list[dict]:
    """Every card holding any serial's keys is in the journal under that serial (an attempt
    that is not ``resumed``: it is the card's last word), and no serial's keys are on two cards."""
    with Journal(str(journal)) as j:
        attempts = j.attempts(j.batches()[0])
    serials = {a["card_serial"] for a in attempts}
    for s in serials:
        keys = serial_keys(job, number_of(job, s))
        holders = [c for c in cards if card_keys(c) & keys]
        assert len(holders) <= 1, f"two cards hold keys of {s}"
    for c in cards:
        held = [s for s in serials if card_keys(c) & serial_keys(job, number_of(job, s))]
        assert len(held) <= 1
        if held:
            assert any(a["card_serial"] == held[0] and a["status"] != "resumed" for a in attempts)
    return attempts


# the plan of profiles/citycard.toml: APDU 1 is GET DATA (not counted: answered by the reader),
# the identification of a factory card takes the next APDUs, then SELECT MF, EXTERNAL AUTHENTICATE
# (GET CHALLENGE + the command), ERASE DF, CREATE KEY FILE, WRITE KEY of the MF master ...
def first_write_apdu(job) -> int:
    """The APDU number of ERASE DF on a factory card (counted by a dry run)."""
    t = Reader(SimCard(), None, None)
    t.connect()
    session = CardSession(t)
    from citycard.perso.run import personalize

    seen: list[int] = []
    personalize(session, job.spec, job.planner.plan(CardData(job.data.row(1), 1, DAY)), verify=False,
                on_step=lambda i, _s: seen.append(t.count) if i == 3 else None)
    return seen[0] + 1


@pytest.mark.parametrize("after_erase", [0, 2, 4, 10, 14, 60, 140])
def test_kill_swap_rerun_accounts_for_both_cards(job, tmp_path, after_erase):
    """Point 4 of issue 18: killed at APDU k, the card swapped, the batch run again."""
    k = first_write_apdu(job) + after_erase
    journal = tmp_path / "j.db"
    first = SimCard()
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(first, kill_at=k)])
    with Journal(str(journal)) as j:
        (row,) = j.report()
        assert row["status"] == "in_progress"
        (opened,) = j.attempts(row["batch"])
    assert opened["status"] == "writing" and opened["card_serial"] == row["card_serial"]
    assert opened["atr"] == first.atr.hex().upper() and opened["uid"] is None   # no UID: reader gave none
    assert opened["station"] == "desk" and opened["reader"] == "desk/slot" and opened["run"] is not None
    second = SimCard()
    result = batch(job, journal).run([Slot(second)])
    assert result.verified == 1
    with Journal(str(journal)) as j:
        (done,) = j.report()
        voids = j.void_attempts()
    assert done["status"] == "verified" and done["card_serial"] != row["card_serial"]     # a NEW serial
    assert [v["card_serial"] for v in voids] == [row["card_serial"]]
    assert voids[0]["atr"] == first.atr.hex().upper() and "removed mid-personalization" in voids[0]["error"]
    attempts = check_accounted(job, journal, [first, second])
    assert [a["status"] for a in attempts] == ["void", "verified"]
    assert card_keys(second) & serial_keys(job, number_of(job, done["card_serial"]))


def test_kill_before_any_write_keeps_the_serial(job, tmp_path):
    """Killed while the card is being identified (reads only): no attempt, nothing to void;
    the next card gets the row's serial."""
    journal = tmp_path / "j.db"
    first = SimCard()
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(first, kill_at=2)])
    with Journal(str(journal)) as j:
        (row,) = j.report()
        assert j.attempts(row["batch"]) == []
    second = SimCard()
    assert batch(job, journal).run([Slot(second)]).verified == 1
    with Journal(str(journal)) as j:
        (done,) = j.report()
        assert [a["status"] for a in j.attempts(done["batch"])] == ["verified"]
    assert done["card_serial"] == row["card_serial"] and not card_keys(first) & card_keys(second)


@pytest.mark.parametrize("after_erase", [12, 14, 60, 140])
def test_the_same_card_is_taken_up_under_its_serial(job, tmp_path, after_erase):
    """Killed after the card got its serial (read freely) and put back: the same card, the same
    serial, its first attempt ``resumed``; from 14 on the card carries the serial."""
    k = first_write_apdu(job) + after_erase
    journal = tmp_path / "j.db"
    card = SimCard()
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(card, kill_at=k)])
    with Journal(str(journal)) as j:
        (row,) = j.report()
    assert batch(job, journal).run([Slot(card)]).verified == 1
    with Journal(str(journal)) as j:
        (done,) = j.report()
        statuses = [a["status"] for a in j.attempts(done["batch"])]
    assert done["card_serial"] == row["card_serial"] and statuses == ["resumed", "verified"]
    check_accounted(job, journal, [card])


def test_same_card_cut_before_its_serial_is_proved_by_its_master(job, tmp_path):
    """Cut after the MF master and some MF files, before the serial was written: the card has
    the profile's structure but no serial.  The rerun's take-over with the row's MF master
    (the one key try perso allows) proves it is the same card: same serial, redone."""
    k = first_write_apdu(job) + 6             # CREATE EFs of the MF done, no serial yet
    journal = tmp_path / "j.db"
    card = SimCard()
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(card, kill_at=k)])
    with Journal(str(journal)) as j:
        (row,) = j.report()
    assert batch(job, journal).run([Slot(card)]).verified == 1
    with Journal(str(journal)) as j:
        (done,) = j.report()
        statuses = [a["status"] for a in j.attempts(done["batch"])]
    assert done["card_serial"] == row["card_serial"] and statuses == ["resumed", "verified"]


def test_same_card_cut_right_after_its_master_is_recorded_twice_never_duplicated(job, tmp_path):
    """The ambiguous case: cut right after WRITE KEY of the MF master, the card looks factory-
    fresh (no file, no serial) and a contact card has no UID.  The rerun cannot tell it from a
    new card: the attempt is void and the row takes a new serial; the transport key is refused
    (one try) because the card holds the old serial's master, so the card is recorded spoiled
    under the new serial too: never two cards with one serial's keys, this one twice accounted."""
    k = first_write_apdu(job) + 3             # after WRITE KEY master (MF), before WRITE KEY damk
    journal = tmp_path / "j.db"
    card = SimCard()
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(card, kill_at=k)])
    with Journal(str(journal)) as j:
        (row,) = j.report()
    assert card_keys(card) & serial_keys(job, number_of(job, row["card_serial"]))     # it holds the master
    result = batch(job, journal).run([Slot(card)])
    assert result.verified == 0 and result.failed == 1
    with Journal(str(journal)) as j:
        (done,) = j.report()
        attempts = j.attempts(done["batch"])
    assert done["status"] == "failed" and done["card_serial"] != row["card_serial"]
    assert [a["status"] for a in attempts] == ["void", "spoiled"]
    assert "transport key" in attempts[1]["error"]
    check_accounted(job, journal, [card])


def test_a_uid_tells_the_same_card_from_another(job, tmp_path):
    """On a contactless reader the UID (GET DATA FF CA) is recorded and tells cards apart even
    when the card shows nothing of the profile yet."""
    k = first_write_apdu(job) + 3             # the ambiguous point above
    journal = tmp_path / "j.db"
    uid = bytes.fromhex("66799D24")
    card = contactless(uid)
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(card, kill_at=k, uid=uid)])
    with Journal(str(journal)) as j:
        (row,) = j.report()
        (opened,) = j.attempts(row["batch"])
    assert opened["uid"] == "66799D24" and opened["atr"] == card.atr.hex().upper()
    # the same chip again: its UID proves it, the serial is kept; the transport key is refused
    # once (the card holds the MF master): perso's one try, and the error says --reissue-card
    again = batch(job, journal).run([Slot(card, uid=uid)])
    with Journal(str(journal)) as j:
        (same,) = j.report()
        statuses = [a["status"] for a in j.attempts(same["batch"])]
    assert same["card_serial"] == row["card_serial"] and statuses == ["resumed", "spoiled"]
    assert again.failed == 1
    check_accounted(job, journal, [card])


def test_another_uid_is_another_card(job, tmp_path):
    k = first_write_apdu(job) + 20
    journal = tmp_path / "j.db"
    first = contactless(bytes.fromhex("11223344"))
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(first, kill_at=k, uid=bytes.fromhex("11223344"))])
    second = contactless(bytes.fromhex("55667788"))
    assert batch(job, journal).run([Slot(second, uid=bytes.fromhex("55667788"))]).verified == 1
    with Journal(str(journal)) as j:
        (done,) = j.report()
        attempts = j.attempts(done["batch"])
    assert [(a["status"], a["uid"]) for a in attempts] == [("void", "11223344"), ("verified", "55667788")]
    check_accounted(job, journal, [first, second])


def test_status_and_report_list_void_cards(job, tmp_path, run_cli):
    k = first_write_apdu(job) + 20
    journal = tmp_path / "j.db"
    first = SimCard()
    with pytest.raises(Killed):
        batch(job, journal).run([Slot(first, kill_at=k)])
    with Journal(str(journal)) as j:
        (row,) = j.report()
    batch(job, journal).run([Slot(SimCard())])
    st = run_cli("batch", "status", str(journal))
    assert st.exit_code == 0 and "1 void card(s)" in st.stdout
    line = f"card {row['card_serial']} (reader desk/slot, ATR {first.atr.hex().upper()}, written from "
    assert line in st.stdout and "find and destroy" in st.stdout
    js = run_cli("batch", "status", str(journal), "--json").json()
    (b,) = js.values()
    assert b["verified"] == 1 and [v["card_serial"] for v in b["void_cards"]] == [row["card_serial"]]
    rep = run_cli("batch", "report", str(journal), "--json").json()
    assert rep[0]["void_cards"][0]["atr"] == first.atr.hex().upper()
    assert f"void: {line}" in run_cli("batch", "report", str(journal)).stdout
    csv_out = run_cli("batch", "report", str(journal), "--csv").stdout.splitlines()
    assert csv_out[0].endswith(",reissue_of,void_cards") and row["card_serial"] in csv_out[1]


# ------------------------------------------------------------------ --keep-cards (issue 18 point 8)
def test_a_kept_card_is_filed_before_its_row_is_done(job, tmp_path, monkeypatch):
    """With --keep-cards, the card's image is on disk before the journal says the row is done
    (a kill between the two leaves the row in progress, never a done row without its card)."""
    from citycard.sim.batch_readers import SimSource

    keep = tmp_path / "cards"
    keep.mkdir()
    seen: list[tuple[str, bool]] = []
    real_finish = Journal.finish

    def finish(self, batch, row, serial, reader, status, *args, **kw):
        seen.append((status, (keep / f"{serial}.json").exists()))
        return real_finish(self, batch, row, serial, reader, status, *args, **kw)

    monkeypatch.setattr(Journal, "finish", finish)
    assert batch(job, tmp_path / "j.db").run([SimSource("sim-1", keep)]).verified == 1
    assert seen == [("verified", True)]


def test_a_card_that_cannot_be_filed_is_not_done(job, tmp_path):
    from citycard.sim.batch_readers import SimSource

    keep = tmp_path / "cards"
    keep.write_text("a file where the images' folder should be")     # every image save fails
    result = batch(job, tmp_path / "j.db").run([SimSource("sim-1", keep)])
    assert result.verified == 0
    with Journal(str(tmp_path / "j.db")) as j:
        (row,) = j.report()
        (attempt,) = j.attempts(row["batch"])
    assert row["status"] == "failed" and "could not be filed" in row["error"]
    assert attempt["status"] == "spoiled"


# ------------------------------------------------------------------ kill -9 of a real batch process
def test_kill_9_mid_card_then_rerun_voids_exactly_the_cards_being_written(tmp_path):
    """A `batch run --sims 2` process is killed (SIGKILL) while cards are being written (on
    journal progress: once it shows verified rows and an open attempt).  The cards being written
    vanish with the process (a simulated reader hands out a new card), so the rerun must record
    exactly those attempts as void, give their rows new serials, and finish every row."""
    import signal
    import sqlite3
    import subprocess
    import time

    from tests.test_batch import CLI, batch_args, check_journal, make_csv

    data = make_csv(tmp_path / "d.csv", 120)
    journal = tmp_path / "j.db"

    def state() -> tuple[int, int]:
        if not journal.exists():
            return 0, 0
        c = sqlite3.connect(journal, timeout=30)
        try:
            done = c.execute("SELECT COUNT(*) FROM cards WHERE status = 'verified'").fetchone()[0]
            writing = c.execute("SELECT COUNT(*) FROM attempts WHERE status = 'writing'").fetchone()[0]
            return done, writing
        except sqlite3.OperationalError:
            return 0, 0
        finally:
            c.close()

    open_at_kill: set[tuple[int, str]] = set()
    kills = 0
    while not open_at_kill and kills < 10:     # the poll may see an attempt that closes before the kill
        before = state()[0]
        p = subprocess.Popen(CLI + batch_args(data, journal, "--sims", "2"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120       # a guard against a hang, not the trigger
        while p.poll() is None and time.monotonic() < deadline:
            done, writing = state()
            if done >= before + 3 and writing:
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        p.wait(30)
        assert p.returncode == -signal.SIGKILL
        kills += 1
        with Journal(str(journal)) as j:
            (b,) = j.batches()
            now_open = {(a["row"], a["card_serial"]) for a in j.attempts(b) if a["status"] == "writing"}
        open_at_kill = now_open                 # empty: no card was mid-write, the next run goes on
    assert open_at_kill, "no kill landed while a card was being written"
    final = subprocess.run(CLI + batch_args(data, journal, "--sims", "2", "--json"), capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    report = check_journal(str(journal), 120)
    with Journal(str(journal)) as j:
        voids = {(v["row"], v["card_serial"]) for v in j.void_attempts(b)}
        assert not [a for a in j.attempts(b) if a["status"] == "writing"]
    assert voids == open_at_kill                                     # every vanished card accounted for
    final_serials = {r["card_serial"] for r in report}
    assert not final_serials & {s for _r, s in voids}                # no void card's serial given again
