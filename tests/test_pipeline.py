"""The library's pipeline calls, scripted as a developer would without the CLI: opening a
session, preparing a job, a batch with a station and a progress callback, the simulated
readers and the image saver of the simulator side, the key-ceremony rules."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest

from citycard import crypto
from citycard.errors import CitycardError, InputError
from citycard.keys import KeyRing, open_ring
from citycard.keys.ceremony import MAX_ATTEMPTS, Ceremony, ComponentRejected, too_many_attempts, weak
from citycard.keys.demo import DemoKeyFile
from citycard.keys.keystore import key_kcv
from citycard.perso.batch import Batch, BatchProgress, PcscSource
from citycard.perso.journal import Journal
from citycard.perso.job import PersoJob, check_profile, prepare
from citycard.perso.run import personalize
from citycard.sim import SimCard
from citycard.sim import image as sim_image
from citycard.sim.batch_readers import SimSource, simulated_readers
from citycard.sim.saver import ImageSaver, open_image
from citycard.sim.transport import SimTransport
from citycard.transport.open import open_session
from citycard.transport.processors import T0Fetch
from citycard.transport.transcript import Transcript

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = datetime.date(2026, 11, 24)
SELECT_MF = bytes.fromhex("00A40000023F00")


def demo_ring() -> KeyRing:
    return KeyRing([DemoKeyFile(KEYS)])


def small_csv(tmp_path: Path, rows: int) -> Path:
    lines = DATA.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "few.csv"
    path.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ open_session
def test_open_session_stacks_t0_and_a_transcript(tmp_path):
    image = tmp_path / "card.json"
    sim_image.save(SimCard(), image)
    sink = io.StringIO()
    with open_session(transport=open_image(image), transcript=sink) as session:
        assert [type(p) for p in session.processors] == [T0Fetch, Transcript]
        assert session.send(SELECT_MF).sw == 0x9000
    lines = sink.getvalue().splitlines()
    assert lines[0].startswith(f'# citycard transcript: reader "sim:{image}", ATR ')
    assert lines[1] == "> 00A4000002 3F00"


def test_open_session_raw_and_silent(tmp_path):
    image = tmp_path / "card.json"
    sim_image.save(SimCard(), image)
    session = open_session(transport=open_image(image), fetch=False, log_apdus=False)
    try:
        assert session.processors == []
    finally:
        session.close()
    with pytest.raises(InputError, match="either a reader or a transport"):
        open_session("0", transport=open_image(image))


def test_open_session_asks_for_the_transcript_only_once_connected(tmp_path):
    from citycard.errors import TransportError

    class Dead(SimTransport):
        def connect(self) -> None:
            raise TransportError("no card", self.name)

    asked: list[str] = []

    def sink() -> io.StringIO:
        asked.append("sink")
        return io.StringIO()

    with pytest.raises(TransportError, match="no card"):
        open_session(transport=Dead(SimCard()), transcript=sink)
    assert asked == []
    with open_session(transport=SimTransport(SimCard()), transcript=sink) as session:
        assert isinstance(session.processors[-1], Transcript)
    assert asked == ["sink"]
    closed = []

    class Watched(SimTransport):
        def close(self) -> None:
            closed.append(True)
            super().close()

    def broken() -> io.StringIO:
        raise InputError("transcript: cannot open")

    with pytest.raises(InputError, match="cannot open"):
        open_session(transport=Watched(SimCard()), transcript=broken)
    assert closed == [True]                   # the card is not left connected


# ------------------------------------------------------------------ image saver
def test_open_image_saves_on_close_only_when_changed(tmp_path):
    image = tmp_path / "card.json"
    sim_image.save(SimCard(), image)
    before = image.read_bytes()
    with open_session(transport=open_image(image), log_apdus=False) as session:
        session.send(SELECT_MF)            # reads change nothing
    assert image.read_bytes() == before
    job = prepare(PROFILE, DATA, demo_ring())
    with open_session(transport=open_image(image), log_apdus=False) as session:
        personalize(session, job.spec, job.plan(1, issue_date=DAY), verify=False)
        assert image.read_bytes() == before    # nothing written before the session closes
    assert image.read_bytes() != before
    aid = job.spec.apps[0].aid
    with open_session(transport=open_image(image), log_apdus=False) as session:   # the card kept its DFs
        assert session.send(bytes([0x00, 0xA4, 0x04, 0x00, len(aid)]) + aid).sw == 0x9000


def test_image_saver_after_apdu_and_swapped_card(tmp_path):
    class Holder:                           # like the dispenser: its card may be replaced
        def __init__(self) -> None:
            self.card = SimCard()

    path = tmp_path / "served.json"
    holder = Holder()
    saver = ImageSaver(holder, path)
    saver.after_apdu(b"", b"")
    assert not path.exists()                # nothing changed: nothing saved
    holder.card = SimCard()                 # a fresh card inserted: a change by identity
    assert saver.changed
    saver.after_apdu(b"", b"")
    assert path.exists() and not saver.changed
    saver.close()


# ------------------------------------------------------------------ prepare
def test_prepare_then_personalize_in_a_few_lines(tmp_path):
    job = prepare(PROFILE, DATA, lambda: open_ring([str(KEYS)]))
    assert isinstance(job, PersoJob) and len(job.data.rows) == 240
    plan = job.plan(2, issue_date=DAY)
    assert plan.card_serial == job.card(2, issue_date=DAY).serial(job.spec)
    assert job.plan(2, issue_date=DAY, card_number=7).card_serial.endswith("7")
    with open_session(transport=SimTransport(SimCard()), log_apdus=False) as session:
        report = personalize(session, job.spec, plan)
    assert report.verified and report.card_serial == plan.card_serial


def test_prepare_checks_data_before_asking_for_keys(tmp_path):
    asked = []

    def keys() -> KeyRing:
        asked.append(True)
        return demo_ring()

    bad = tmp_path / "bad.csv"
    bad.write_text("name,phone\nA,1\n", encoding="utf-8")
    with pytest.raises(CitycardError, match="bad.csv"):
        prepare(PROFILE, bad, keys)
    with pytest.raises(InputError, match="no such data file"):
        prepare(PROFILE, tmp_path / "none.csv", keys)
    assert asked == []                       # no passphrase asked for a job bad data stops
    partial = tmp_path / "partial.toml"
    partial.write_text("[transit]\ndlk = '" + "11" * 16 + "'\n", encoding="utf-8")
    with pytest.raises(CitycardError, match="not in the key sources"):
        prepare(PROFILE, DATA, KeyRing([DemoKeyFile(partial)]))
    assert check_profile(PROFILE, DATA, keys).name == prepare(PROFILE, DATA, keys).spec.name
    assert asked == [True, True]


# ------------------------------------------------------------------ batch
def test_batch_station_label_and_progress_callback(tmp_path):
    data = small_csv(tmp_path, 4)
    job = prepare(PROFILE, data, demo_ring())
    events: list[BatchProgress] = []
    journal = tmp_path / "j.db"
    b = Batch(job.spec, job.keys, job.data, str(journal), issue_date=DAY, station="desk-7")
    result = b.run(simulated_readers(2, tmp_path / "cards"), on_progress=events.append)
    assert result.verified == 4
    assert [e.done for e in events] == [1, 2, 3, 4, 4] and [e.final for e in events] == [False] * 4 + [True]
    assert all(e.total == 4 and e.failed == 0 for e in events)
    with Journal(str(journal)) as j:
        readers = {r["reader"] for r in j.report(result.batch)}
    assert readers <= {"desk-7/sim-1", "desk-7/sim-2"} and readers
    with Journal(str(journal)) as j:
        serials = {r["card_serial"] for r in j.report(result.batch)}
    assert {p.stem for p in (tmp_path / "cards").glob("*.json")} == serials


def test_batch_without_station_records_bare_reader_names(tmp_path):
    data = small_csv(tmp_path, 2)
    job = prepare(PROFILE, data, demo_ring())
    b = Batch(job.spec, job.keys, job.data, str(tmp_path / "j.db"), issue_date=DAY)
    assert b.label(SimSource("sim-1")) == "sim-1"
    result = b.run([SimSource("sim-1")])
    with Journal(str(tmp_path / "j.db")) as j:
        assert {r["reader"] for r in j.report(result.batch)} == {"sim-1"}
    assert Batch(job.spec, job.keys, job.data, str(tmp_path / "j.db"), station="s").label(SimSource("x")) == "s/x"


def test_the_batch_rehearses_on_a_throwaway_card_that_never_sleeps_and_leaves_no_trace(tmp_path):
    """Before forking its workers the batch personalizes the first row once on a rehearsal
    card (warm caches in every worker, issue 19); that card sleeps nothing, is not kept, and
    the journal and the kept images are those of the real cards only."""
    rehearsals: list[object] = []

    class Counting(SimSource):
        def rehearsal_card(self):
            session = super().rehearsal_card()
            rehearsals.append(session)
            return session

    slept: list[float] = []
    (tmp_path / "keep").mkdir()
    readers = [Counting(f"sim-{i}", tmp_path / "keep", timing="contact-115200", sleep=slept.append, max_lag=0.05)
               for i in (1, 2)]
    job = prepare(PROFILE, small_csv(tmp_path, 2), demo_ring())
    b = Batch(job.spec, job.keys, job.data, str(tmp_path / "j.db"), issue_date=DAY)
    result = b.run(readers)
    assert result.verified == 2 and len(rehearsals) == 1
    assert rehearsals[0].transport.card.clock.seconds > 0.3   # a whole card's modelled time ...
    assert slept == []                  # ... slept by none (the real cards slept in their workers)
    with Journal(str(tmp_path / "j.db")) as j:
        serials = {r["card_serial"] for r in j.report(result.batch)}
    assert len(serials) == 2 and {p.stem for p in (tmp_path / "keep").glob("*.json")} == serials


def test_progress_event_rates():
    p = BatchProgress(total=100, done=25, failed=1, elapsed=30.0)
    assert p.cards_per_minute == 50.0 and p.seconds_left == 90.0
    assert BatchProgress(10, 0, 0, 0.0).seconds_left == 0.0


def test_simulated_readers_are_named_and_fork_marked(tmp_path):
    readers = simulated_readers(3, tmp_path / "keep")
    assert [r.name for r in readers] == ["sim-1", "sim-2", "sim-3"]
    assert all(r.in_process_card for r in readers) and (tmp_path / "keep").is_dir()
    assert PcscSource("any").in_process_card is False


# ------------------------------------------------------------------ ceremony
K1 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
K2 = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


def test_ceremony_combines_by_xor_and_shows_kcvs():
    c = Ceremony(2, "3des")
    assert c.add(" ".join(K1.hex()[i:i + 4] for i in range(0, 32, 4))) == key_kcv(K1, "3des")
    assert c.next_index == 2 and not c.complete
    assert c.add(K2.hex().upper()) == key_kcv(K2, "3des")
    expected = bytes(a ^ b for a, b in zip(K1, K2))
    assert c.key() == expected == crypto.xor(K1, K2)
    c.forget()
    with pytest.raises(InputError, match="0 of 2"):
        c.key()


def test_ceremony_refusals_never_show_key_material():
    c = Ceremony(3, "sm4")
    for typed, why in (("zz", "not hex digits"), ("0011", "4 hex digits, expected 32"), ("00" * 16, "all zeros")):
        with pytest.raises(ComponentRejected, match=f"component 1: {why}"):
            c.add(typed)
    c.add(K1.hex())
    with pytest.raises(InputError, match="component 2 equals component 1") as err:
        c.add(K1.hex())
    assert not isinstance(err.value, ComponentRejected) and K1.hex() not in str(err.value).lower()
    zero = Ceremony(2, "3des")
    zero.add(K1.hex())
    zero.add(K1.hex().replace("0", "1", 1))          # differs: fine as a component
    assert zero.key() != bytes(16)
    three = Ceremony(3, "3des")
    for k in (K1, K2, crypto.xor(K1, K2)):           # all three cancel out
        three.add(k.hex())
    with pytest.raises(InputError, match="all-zero key"):
        three.key()
    with pytest.raises(InputError, match="2 or 3 components"):
        Ceremony(4, "3des")
    assert str(too_many_attempts(2)) == f"component 2: no valid component after {MAX_ATTEMPTS} attempts; nothing stored"


def test_weak_key_has_equal_halves():
    assert weak(K1[:8] * 2, "3des") and not weak(K1, "3des") and not weak(K1[:8] * 2, "sm4")


def test_open_ring_closes_what_it_opened_when_one_source_fails(tmp_path):
    closed = []

    class Probe(DemoKeyFile):
        def close(self) -> None:
            closed.append(self.name)

    import citycard.keys as keys_pkg
    real = keys_pkg.open_source
    try:
        keys_pkg.open_source = lambda name, *a, **kw: Probe(name) if name.endswith(".toml") else real(name, *a, **kw)
        with pytest.raises(CitycardError, match="passphrase"):
            open_ring([str(KEYS), str(tmp_path / "missing.cks")])
    finally:
        keys_pkg.open_source = real
    assert len(closed) == 1
    with pytest.raises(CitycardError, match="no key source"):
        open_ring([])


def test_the_cli_draws_a_bar_on_a_terminal_and_lines_without():
    from citycard.cli.batch_cmd import ProgressBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(stream)
        bar(BatchProgress(total=4, done=1, failed=0, elapsed=30.0))
        bar(BatchProgress(total=4, done=4, failed=1, elapsed=60.0, final=True))
    # without a terminal: a line every few seconds (none at card 1) and one at the end (issue 17)
    assert pipe.getvalue() == "batch: done: 4/4 cards, 1 failed, 4/min, ETA 00:00:00\n"
    assert tty.getvalue() == ("\r[#######.......................] 1/4 cards, 0 failed, 2/min, ETA 00:01:30"
                              "\r[##############################] 4/4 cards, 1 failed, 4/min, ETA 00:00:00\n")
