"""Issue 17 item 3: a batch reader never reuses a card for the next row until the card has been
removed (card change seen by presence and by pcsc-lite's card event counter; identity as a
second guard).  Through a real pcscd with vpcd readers; every wait is for an event or a
prompt, never for a time."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import pytest

from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.batch import Batch
from citycard.perso.card_sources import CardSeen, PcscSource, card_left
from citycard.perso.job import prepare
from citycard.perso.journal import Journal
from citycard.sim import SimCard
from citycard.sim.dispenser import Dispenser
from citycard.sim.vpcd import VpcdServer
from citycard.terminal.identify import free_card_serial
from citycard.testing.pcscd import wait_for_card
from citycard.transport.pcsc import ReaderStatus, ReaderWatch

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "profiles/citycard.toml"
KEYS = ROOT / "profiles/demo-keys.toml"
DATA = ROOT / "profiles/citycard-sample.csv"
DAY = datetime.date(2026, 11, 24)


def _csv(tmp_path: Path, rows: int) -> Path:
    lines = DATA.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
    return path


def _until(cond, what: str, stop: threading.Event | None = None, polls: int = 600) -> None:
    """Wait for ``cond()`` (a batch's progress, a prompt); fail naming ``what`` if it never comes."""
    pause = threading.Event()
    for _ in range(polls):
        if cond():
            return
        pause.wait(0.05)
    raise AssertionError(f"never happened: {what}")


class Station:
    """A batch over one PC/SC reader in a thread, its prompts collected."""

    def __init__(self, tmp_path: Path, reader: str, rows: int) -> None:
        job = prepare(PROFILE, _csv(tmp_path, rows), KeyRing([DemoKeyFile(KEYS)]))
        self.journal = str(tmp_path / "j.db")
        self.batch = Batch(job.spec, job.keys, job.data, self.journal, issue_date=DAY, limit=rows)
        self.said: list[str] = []
        self.source = PcscSource(reader, on_prompt=self.said.append,
                                 read_serial=lambda session: free_card_serial(session, job.spec))
        self.source.remove_grace = 0.3
        self.result = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = self.batch.run([self.source], processes=False)

    def start(self) -> "Station":
        self.thread.start()
        return self

    def prompts(self, what: str) -> int:
        return sum(1 for s in self.said if what in s)

    def report(self) -> list[dict]:
        with Journal(self.journal) as j:
            return j.report(self.batch.batch)

    def stop(self) -> None:
        self.batch.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture
def slot(pcscd):
    """Slot 0 of the private pcscd, empty before and after."""
    reader = pcscd.reader_names[0]
    servers: list[VpcdServer] = []
    yield reader, pcscd.port, servers
    for s in servers:
        s.stop()
    wait_for_card(reader, present=False, timeout=10)


def _insert(port: int, card, servers: list[VpcdServer]) -> VpcdServer:
    server = VpcdServer(card, port=port)
    servers.append(server)
    server.start_thread()
    return server


@pytest.mark.pcsc
def test_a_card_never_removed_gets_no_second_row(slot, tmp_path):
    reader, port, servers = slot
    card = SimCard()
    _insert(port, card, servers)
    wait_for_card(reader, present=True, timeout=10)
    station = Station(tmp_path, reader, rows=2)
    station.source.remind_every = 0.2            # the reminders, not a time, are what is awaited
    station.start()
    try:
        _until(lambda: station.prompts("remove the card") >= 3, "the station keeps asking for the card")
        rows = station.report()
        assert [r["status"] for r in rows] == ["verified", "in_progress"]   # the second row waits
        first_serial = rows[0]["card_serial"]
        assert station.said[0] == f"{reader}: remove the card {first_serial}"
        image_before = card.generation
        _until(lambda: station.prompts("remove the card") >= 5, "more reminders")
        assert card.generation == image_before        # nothing was sent to write the card meanwhile
    finally:
        station.stop()
    assert station.result is not None and station.result.processed == 1
    assert [r["status"] for r in station.report()] == ["verified", "in_progress"]   # retryable, not spoiled


@pytest.mark.pcsc
def test_a_card_removed_and_a_new_one_inserted_proceeds(slot, tmp_path):
    reader, port, servers = slot
    first, second = SimCard(), SimCard()
    server = _insert(port, first, servers)
    wait_for_card(reader, present=True, timeout=10)
    station = Station(tmp_path, reader, rows=2).start()
    try:
        _until(lambda: station.prompts("remove the card") >= 1, "the first card asked out")
        server.stop()                                             # the operator takes it out ...
        wait_for_card(reader, present=False, timeout=10)
        _insert(port, second, servers)                            # ... and puts a factory card in
        _until(lambda: not station.thread.is_alive(), "the batch ends")
    finally:
        station.stop()
    rows = station.report()
    assert [r["status"] for r in rows] == ["verified", "verified"]
    assert rows[0]["card_serial"] != rows[1]["card_serial"]
    assert first.generation > 0 and second.generation > 0       # each card got one row


@pytest.mark.pcsc
def test_the_same_card_put_back_is_taken_and_refused_by_identification(slot, tmp_path):
    """Re-inserted after a removal, the same card is a card like any other: the batch takes it,
    and the identification (no key tried) refuses it for another row: the row stays retryable."""
    reader, port, servers = slot
    card = SimCard()
    server = _insert(port, card, servers)
    wait_for_card(reader, present=True, timeout=10)
    station = Station(tmp_path, reader, rows=2).start()
    try:
        _until(lambda: station.prompts("remove the card") >= 1, "the card asked out")
        server.stop()
        wait_for_card(reader, present=False, timeout=10)
        _insert(port, card, servers)                              # the same card, back in
        _until(lambda: [r["status"] for r in station.report()] == ["verified", "failed"],
               "the second row refused on it")
        assert "another cardholder" in station.report()[1]["error"]
    finally:
        station.stop()


@pytest.mark.pcsc
def test_a_dispenser_swap_is_seen_as_a_card_change(slot, tmp_path):
    """The simulator's dispenser takes a written card out and puts a fresh one in: the reader
    stays empty long enough for pcscd to count it, and every row gets its own card."""
    reader, port, servers = slot
    dispenser = Dispenser(SimCard(), tmp_path / "out")
    server = VpcdServer(dispenser, port=port)
    dispenser.server = server
    servers.append(server)
    server.start_thread()
    wait_for_card(reader, present=True, timeout=10)
    watch = ReaderWatch(reader)
    try:
        events0 = watch.state().events
        station = Station(tmp_path, reader, rows=3).start()
        try:
            _until(lambda: not station.thread.is_alive(), "the batch ends", polls=1200)
        finally:
            station.stop()
        # every swap counted by pcscd (out, in), the last fresh card back in before the teardown
        _until(lambda: watch.state().events == events0 + 6 and watch.state().card_present,
               "pcscd counts three card swaps")
    finally:
        watch.close()
    assert [r["status"] for r in station.report()] == ["verified"] * 3
    assert dispenser.swaps == 3 and len(list((tmp_path / "out").glob("card-*.json"))) == 3


# ------------------------------------------------------------------ the rules, without a reader
def _status(present: bool, events: int) -> ReaderStatus:
    return ReaderStatus("r", present, False, b"\x3b" if present else b"", events)


def test_card_left_by_presence_or_counted_events():
    card = CardSeen(events=4, atr=b"\x3b", serial="3301")
    assert not card_left(card, _status(True, 4))            # still there, nothing counted
    assert card_left(card, _status(False, 5))               # taken out
    assert card_left(card, _status(True, 6))                # out and in again between two looks
    assert card_left(card, _status(False, 4))               # no card now (a stack without a counter)


def test_identity_guard_refuses_the_same_serial_without_a_whole_card_change():
    """Second guard: a counter moved by one event while a card stayed present is no card change;
    the card showing the serial just finished is then not taken.  After an empty slot or two
    counted events (out, in) it is."""
    src = PcscSource("r")
    src._last = CardSeen(events=4, atr=b"\x3b", serial="3301")
    src._seen_empty = False
    assert src._same_card_again("3301", b"\x3b", _status(True, 5))
    assert not src._same_card_again("3302", b"\x3b", _status(True, 5))     # another card
    assert not src._same_card_again("3301", b"\x3b", _status(True, 6))    # out and in: counted twice
    src._seen_empty = True
    assert not src._same_card_again("3301", b"\x3b", _status(True, 5))    # the slot was seen empty


class _Slot:
    """A fake reader for the waiting loop: presence and event counter set by the test."""

    def __init__(self, card: SimCard) -> None:
        self.card, self.present, self.events = card, True, 1

    def status(self) -> ReaderStatus:
        return _status(self.present, self.events)


class _FakeWatch:
    def __init__(self, slot: _Slot) -> None:
        self.slot = slot

    def state(self) -> ReaderStatus:
        return self.slot.status()

    def wait(self, known: ReaderStatus, timeout: float) -> ReaderStatus:
        threading.Event().wait(min(timeout, 0.01))
        return self.slot.status()

    def close(self) -> None:
        pass


class _FakeSource(PcscSource):
    def __init__(self, slot: _Slot, said: list[str]) -> None:
        super().__init__("r", on_prompt=said.append, read_serial=lambda session: "3301000000000001")
        self.slot = slot
        self.remove_grace = 0.0

    def _watch(self):
        return _FakeWatch(self.slot)

    def _transport(self):
        from citycard.sim.transport import SimTransport

        class Unpowering(SimTransport):
            def close(self, unpower: bool = False) -> None:
                super().close()

        return Unpowering(self.slot.card, name="r")


def test_a_counter_glitch_does_not_give_the_same_card_a_second_row():
    """A reader whose counter moves by one event while the finished card stays (a glitch) gets
    the card read: its serial is the one just finished, so it is asked out, not taken, and asked
    for again until a real change; then the next card is taken."""
    said: list[str] = []
    slot = _Slot(SimCard())
    src = _FakeSource(slot, said)
    stop = threading.Event()
    first = src.next_card(stop)
    assert first is not None
    src.done(first, "3301000000000001")
    assert said == ["r: remove the card 3301000000000001"]
    slot.events += 1                                     # the glitch: one event, the card still there
    src.remind_every = 0.05
    got: list = []
    worker = threading.Thread(target=lambda: got.append(src.next_card(stop)))
    worker.start()
    _until(lambda: len(said) >= 4, "the card asked out again, and again")
    assert got == [] and set(said) == {"r: remove the card 3301000000000001"}
    slot.present, slot.events = False, slot.events + 1  # taken out ...
    _until(lambda: src._seen_empty, "the empty slot seen")
    slot.card, slot.present, slot.events = SimCard(), True, slot.events + 1   # ... another card in
    src.read_serial = lambda session: None               # a factory card: no serial
    worker.join(10)
    assert len(got) == 1 and got[0] is not None
    stop.set()
