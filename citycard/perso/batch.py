"""Bureau batch personalization: a data file checked in full, a journal, several readers.

One worker thread per reader.  Each worker claims a row from the journal (durably), waits
for a card, personalizes and verifies it, records the outcome (durably) and asks for the
next row.  A failed card is marked and the batch goes on.

Kill the batch at any moment and run the same command again: verified rows are never
redone; a row left in progress is taken up again by the same reader with the same serial
(its half-done card, if still in the reader, is erased and redone by the profile's
``rerun`` policy); card numbers come from a counter in the journal, so no serial is ever
used twice.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import multiprocessing
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import CitycardError, InputError, TransportError
from ..spec import CardSpec
from ..transport import CardSession
from .context import CardData
from .data import DataFile
from .journal import Journal, now
from .plan import Planner
from .run import PersoError, personalize

log = logging.getLogger("citycard.batch")


class CardSource(Protocol):
    """A reader that hands out cards."""

    name: str

    def next_card(self, stop: threading.Event) -> CardSession | None:
        """Wait for a card and return a session to it (None when stopping)."""
        ...

    def done(self, session: CardSession, serial: str | None) -> None:
        """The card is finished (taken out of the reader)."""
        ...


class SimSource:
    """A simulated reader: a fresh factory card for every cardholder."""

    def __init__(self, name: str, keep_dir: Path | None = None) -> None:
        self.name = name
        self.keep_dir = keep_dir

    def next_card(self, stop: threading.Event) -> CardSession | None:
        from ..sim import SimCard
        from ..sim.transport import SimTransport

        t = SimTransport(SimCard(), name=self.name)
        t.connect()
        return CardSession(t)

    def done(self, session: CardSession, serial: str | None) -> None:
        if self.keep_dir is not None and serial:
            from ..sim import image
            image.save(session.transport.card, self.keep_dir / f"{serial}.json")  # type: ignore[attr-defined]
        session.close()


class PcscSource:
    """A PC/SC reader: waits for a card, and after it for the card to be taken out."""

    def __init__(self, reader: str) -> None:
        self.name = reader

    def next_card(self, stop: threading.Event) -> CardSession | None:
        from ..transport.pcsc import PcscTransport

        while not stop.is_set():
            t = PcscTransport(self.name)
            try:
                t.connect()
                return CardSession(t)
            except TransportError:
                t.close()
                stop.wait(0.1)
        return None

    def done(self, session: CardSession, serial: str | None) -> None:
        from ..transport.pcsc import wait_card_change

        session.transport.close(unpower=True)  # type: ignore[call-arg]
        wait_card_change(self.name, present=False, timeout=10.0)


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stream: Any = None

    def add(self, ok: bool) -> None:
        with self.lock:
            self.done += 1
            if not ok:
                self.failed += 1
            self.draw()

    def rate(self) -> float:
        el = time.monotonic() - self.started
        return self.done / el * 60 if el > 0 else 0.0

    def draw(self, final: bool = False) -> None:
        s = self.stream
        if s is None or not getattr(s, "isatty", lambda: False)():
            return
        width = 30
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        rate = self.rate()
        left = (self.total - self.done) / rate * 60 if rate > 0 else 0
        eta = time.strftime("%H:%M:%S", time.gmtime(left))
        s.write(f"\r[{bar}] {self.done}/{self.total} cards, {self.failed} failed, {rate:,.0f}/min, ETA {eta}")
        if final:
            s.write("\n")
        s.flush()


@dataclass
class BatchResult:
    batch: str
    processed: int
    verified: int
    failed: int
    seconds: float
    counts: dict[str, int]

    @property
    def cards_per_minute(self) -> float:
        return self.processed / self.seconds * 60 if self.seconds > 0 else 0.0


def _die_with_parent() -> None:
    """Linux: a forked worker gets SIGKILL when the batch process dies (kill -9 included)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _label(src: CardSource) -> str:
    """The reader's name in the journal: ``station/reader`` when the CLI set a label."""
    return getattr(src, "label", None) or src.name


def batch_name(data_path: str, sha: str) -> str:
    return f"{Path(data_path).stem}-{sha[:8]}"


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def check_rows(spec: CardSpec, planner: Planner, data: DataFile, issue_date: _dt.date) -> list[str]:
    """Plan every row once (pure, no card): every problem with its row number and column."""
    problems: list[str] = []
    for n in range(1, len(data.rows) + 1):
        try:
            planner.plan(CardData(data.row(n), n, issue_date, data.where(n)))
        except CitycardError as exc:
            msg = str(exc)
            problems.append(msg if f"row {n}" in msg else f"{data.where(n)}: {msg}")
    return problems


class Batch:
    def __init__(self, spec: CardSpec, keys: Any, data: DataFile, journal_url: str, *, batch: str | None = None,
                 issue_date: _dt.date | None = None, verify: bool = True, id_column: str = "cardholder_id",
                 limit: int | None = None, on_card: Callable[[str, int, str], None] | None = None) -> None:
        self.spec, self.keys, self.data = spec, keys, data
        self.journal_url = journal_url
        self.sha = file_sha256(data.path)
        self.batch = batch or batch_name(data.path, self.sha)
        self.issue_date = issue_date or _dt.date.today()
        self.verify = verify
        self.id_column = id_column if id_column in data.columns else None
        self.limit = limit
        self.on_card = on_card
        self.planner = Planner(spec, keys)
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def prepare(self) -> Journal:
        problems = check_rows(self.spec, self.planner, self.data, self.issue_date)
        if problems:
            more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise InputError(f"{len(problems)} bad row(s) in {self.data.path}, nothing personalized:\n"
                             + "\n".join(problems[:20]) + more)
        journal = Journal(self.journal_url)
        rows = [(n, (self.data.row(n).get(self.id_column) if self.id_column else None) or str(n))
                for n in range(1, len(self.data.rows) + 1)]
        journal.create_batch(self.batch, self.spec.source, self.data.path, self.sha, rows)
        return journal

    def run(self, sources: list[CardSource], *, progress_stream: Any = sys.stderr,
            processes: bool = True) -> BatchResult:
        """Run the batch.  Simulated readers run in worker processes when ``processes`` (the card
        OS is pure Python: threads would share one core); PC/SC readers run as threads."""
        journal = self.prepare()
        names = {_label(s) for s in sources}
        stations = {n.split("/", 1)[0] + "/" for n in names if "/" in n}
        for row, reader in journal.orphans(self.batch):
            mine = not stations or any((reader or "").startswith(st) for st in stations)
            if mine and reader not in names:   # another station's rows in progress are its own business
                log.warning("row %d was left in progress by %s, which is not in this run: back to pending", row,
                            reader)
                journal.release(self.batch, row)
        counts = journal.counts(self.batch)
        todo = counts["pending"] + counts["in_progress"]
        if self.limit is not None:
            todo = min(todo, self.limit)
        progress = Progress(todo, stream=progress_stream)
        mp = multiprocessing.get_context("fork")
        budget = mp.Value("q", todo)
        t0 = time.monotonic()
        results = {"processed": 0, "verified": 0, "failed": 0}
        errors: list[BaseException | str] = []
        forked = [s for s in sources if isinstance(s, SimSource)] if processes and len(sources) > 1 \
            and not getattr(self.keys, "in_hsm", False) else []
        threaded = [s for s in sources if s not in forked]

        def take() -> bool:
            with budget.get_lock():
                if budget.value <= 0:
                    return False
                budget.value -= 1
                return True

        def worker(src: CardSource) -> None:
            j = journal.connect()
            try:
                while not self.stop.is_set():
                    if not take():
                        return
                    ok = self._one(j, src, results)
                    if ok is None:
                        return
                    progress.add(ok)
            except BaseException as exc:  # a worker must not die silently
                errors.append(exc)
                self.stop.set()
            finally:
                j.close()

        queue = mp.Queue() if forked else None
        children = [mp.Process(target=self._child, args=(s, take, queue), name=f"batch-{s.name}", daemon=True)
                    for s in forked]
        for c in children:            # fork before any thread starts
            c.start()
        threads = [threading.Thread(target=worker, args=(s,), name=f"batch-{s.name}", daemon=True)
                   for s in threaded]
        for t in threads:
            t.start()
        try:
            running = len(children)
            while running:
                kind, value = queue.get()  # type: ignore[union-attr]
                if kind == "card":
                    progress.add(value)
                elif kind == "error":
                    errors.append(value)
                else:
                    running -= 1
                    with self._lock:
                        for k in results:
                            results[k] += value[k]
            for c in children:
                c.join(30)
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            self.stop.set()
            for c in children:
                c.terminate()
            for t in threads:
                t.join(30)
            raise
        progress.draw(final=True)
        if errors:
            first = errors[0]
            raise first if isinstance(first, BaseException) else CitycardError(f"a batch worker failed: {first}")
        counts = journal.counts(self.batch)
        journal.close()
        return BatchResult(self.batch, results["processed"], results["verified"], results["failed"],
                           time.monotonic() - t0, counts)

    def _child(self, src: CardSource, take: Callable[[], bool], queue: Any) -> None:
        """A worker process (forked): its own journal connection; dies with its parent."""
        _die_with_parent()
        results = {"processed": 0, "verified": 0, "failed": 0}
        j = None
        try:
            j = Journal(self.journal_url)
            while take():
                ok = self._one(j, src, results)
                if ok is None:
                    break
                queue.put(("card", ok))
        except BaseException as exc:
            queue.put(("error", f"{src.name}: {exc}"))
        finally:
            if j is not None:
                j.close()
            queue.put(("done", results))

    def _one(self, j: Journal, src: CardSource, results: dict[str, int]) -> bool | None:
        spec = self.spec
        claim = j.claim(self.batch, _label(src), spec.serial_prefix,
                        lambda n: CardData({}, n, self.issue_date).serial(spec))
        if claim is None:
            return None
        started = now()
        row = claim.row
        card = CardData(self.data.row(row), claim.card_number, self.issue_date, self.data.where(row))
        session = src.next_card(self.stop)
        if session is None:
            return None
        status, error = "verified" if self.verify else "personalized", None
        try:
            plan = self.planner.plan(card)
            personalize(session, spec, plan, verify=self.verify)
        except (PersoError, TransportError) as exc:
            status, error = "spoiled", str(exc)
        except CitycardError as exc:
            status, error = "failed", str(exc)
        j.finish(self.batch, row, claim.card_serial, _label(src), status, error, started)
        with self._lock:
            results["processed"] += 1
            results["verified" if status in ("verified", "personalized") else "failed"] += 1
        if self.on_card is not None:
            self.on_card(src.name, row, status)
        try:
            src.done(session, claim.card_serial)
        except CitycardError as exc:
            log.warning("%s: %s", src.name, exc)
        if error:
            log.warning("row %d (%s) on %s: %s", row, claim.card_serial, src.name, error)
        return status in ("verified", "personalized")
