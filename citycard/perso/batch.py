"""Bureau batch personalization: a data file validated in full, a journal, several readers.

One worker thread per reader.  Each worker claims a row from the journal (durably), waits
for a card, personalizes and verifies it, records the outcome (durably) and asks for the
next row.  A failed card is marked and the batch goes on.

Kill the batch at any moment and run the same command again: verified rows are never
redone; a row left in progress is taken up again by the same reader with the same serial
(its half-done card, if still in the reader, is erased and redone by the profile's
``rerun`` policy); card numbers come from a counter in the journal, so no serial is ever
used twice.  Every card is recorded (an attempt: ATR, UID, reader, run) before its first
write; when the card in the reader at the rerun is not the one the stopped run was writing,
that attempt becomes ``void`` and the row gets a new serial (:meth:`Batch._settle`,
:mod:`citycard.perso.journal_attempts`).
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import multiprocessing
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import CitycardError, InputError, TransportError
from ..fsutil import file_sha256
from ..keys import KeyRing
from ..spec import CardSpec
from ..transport import CardSession
from .card_sources import CardSource, PcscSource, pcsc_readers  # noqa: F401 (their home before)
from .context import CardData
from .data import DataFile, Record
from .journal import RESUMED, VOID, Attempt, Claim, Journal, now
from .plan import Plan, Planner
from .pool import (Budget, JournalClient, JournalHub, default_worker_processes, run_threads, worker_end,
                   worker_groups)
from .run import (AuthenticationRefused, CardAlreadyIssued, CardIdentity, CardState, ForeignCard, PersoError,
                  identify_card, personalize, read_uid, stable_uid)
from .validate import ProblemTally, validate

log = logging.getLogger("citycard.batch")


def default_station() -> str:
    """This station's name in a shared journal when none is given: the host name."""
    return socket.gethostname()


@dataclass(frozen=True)
class BatchProgress:
    """Where a running batch stands, given to the ``on_progress`` callback after every card
    and once more at the end (``final``).  The library never draws: the caller does."""

    total: int
    done: int
    failed: int
    elapsed: float          # seconds since the run started
    final: bool = False

    @property
    def cards_per_minute(self) -> float:
        return self.done / self.elapsed * 60 if self.elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float:
        """Estimated from the rate so far (0 before the first card)."""
        rate = self.cards_per_minute
        return (self.total - self.done) / rate * 60 if rate > 0 else 0.0


ProgressCallback = Callable[[BatchProgress], None]


class _Tally:
    """Cards done and failed in this run; reports each change to the callback (serialized)."""

    def __init__(self, total: int, on_progress: ProgressCallback | None) -> None:
        self.total, self.on_progress = total, on_progress
        self.done = self.failed = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def add(self, ok: bool) -> None:
        with self.lock:
            self.done += 1
            if not ok:
                self.failed += 1
            self._report(False)

    def finish(self) -> None:
        with self.lock:
            self._report(True)

    def _report(self, final: bool) -> None:
        if self.on_progress is not None:
            self.on_progress(BatchProgress(self.total, self.done, self.failed, time.monotonic() - self.started,
                                           final))


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


def batch_name(data_path: str, sha: str) -> str:
    return f"{Path(data_path).stem}-{sha[:8]}"


class Batch:
    """One batch of a data file in a journal (see the module docstring).

    ``station`` names this station in a shared journal: each reader is recorded as
    ``station/reader`` (a row left in progress belongs to one reader of one station); None
    records the bare reader names."""

    def __init__(self, spec: CardSpec, keys: KeyRing, data: DataFile, journal_url: str, *, batch: str | None = None,
                 issue_date: _dt.date | None = None, verify: bool = True, id_column: str = "cardholder_id",
                 limit: int | None = None, station: str | None = None,
                 on_card: Callable[[str, int, str], None] | None = None,
                 reissue: Iterable[int] | str | None = None, audit: Any = None) -> None:
        self.spec, self.keys, self.data = spec, keys, data
        self.station = station
        self.journal_url = journal_url
        self.sha = file_sha256(data.path)
        self.batch = batch or batch_name(data.path, self.sha)
        self.issue_date = issue_date or _dt.date.today()
        self.verify = verify
        self.id_column = id_column if id_column in data.columns else None
        self.limit = limit
        self.on_card = on_card
        self.reissue = reissue
        self.audit = audit                   # an AuditLog (citycard.audit): every card's outcome is entered
        self.run_id: int | None = None       # this run in the journal (set by run())
        self.planner = Planner(spec, keys)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.worker_processes = default_worker_processes()   # for the readers of in-process cards

    def serial_of(self, number: int) -> str:
        """The serial of card number ``number`` (the profile's rule; the journal's claim asks
        for it, in the batch process when the claim comes from a worker process)."""
        return CardData({}, number, self.issue_date).serial(self.spec)

    def label(self, src: CardSource) -> str:
        """The reader's name in the journal: ``station/reader``, or the reader's name."""
        return f"{self.station}/{src.name}" if self.station else src.name

    def retry_failed(self) -> int:
        """Put this batch's failed rows back to pending (they get new serials); how many."""
        journal = Journal(self.journal_url)
        try:
            return journal.retry_failed(self.batch) if self.batch in journal.batches() else 0
        finally:
            journal.close()

    def prepare(self) -> Journal:
        """Open the journal and register the batch: a data file seen for the first time is
        validated (every row, in one streamed pass, :mod:`citycard.perso.validate`) while its
        rows go into the journal in the same transaction, undone if any row is bad; a batch
        already in the journal with the same data hash was validated then, and is not read
        again (a resume or a second station starts at once).  No row is planned here: each
        card is planned just before it is written."""
        journal = Journal(self.journal_url)
        try:
            writer = journal.register_batch(self.batch, self.spec.source, self.data.path, self.sha)
            writer.mark_reissues(self.reissue)
            with writer:
                if not writer.exists:
                    self._validate_into(journal, writer)
            if writer.exists:
                journal.check_batch(self.batch)
        except BaseException:
            journal.close()
            raise
        return journal

    def _validate_into(self, journal: Journal, writer: Any) -> None:
        tally = ProblemTally()

        def add(rec: Record, who: str) -> None:
            if not tally.count:         # after the first problem nothing will be kept: stop writing
                writer.add(rec.number, who, rec.offset)

        for p in validate(self.spec, self.data, id_column=self.id_column or "cardholder_id",
                          issued=lambda ids: journal.issued(ids, self.batch), reissue=self.reissue, on_row=add):
            tally.add(p)
        if tally.count:
            raise InputError(tally.message(self.data.path))

    def run(self, sources: list[CardSource], *, on_progress: ProgressCallback | None = None,
            processes: bool = True, on_prepared: Callable[[], None] | None = None) -> BatchResult:
        """Run the batch.  Readers of in-process cards (simulated) run in worker processes when
        ``processes`` (the card OS is pure Python: threads would share one core); PC/SC readers
        run as threads.  ``on_progress`` is called after every card and at the end;
        ``on_prepared`` once the data file is validated and the batch is in the journal, before
        the first card (the CLI enters the batch's release in the audit log there)."""
        journal = self.prepare()
        if on_prepared is not None:
            on_prepared()
        names = {self.label(s) for s in sources}
        self.run_id = journal.start_run(self.batch, self.station)
        try:
            return self._run(journal, sources, names, on_progress, processes)
        finally:
            try:
                journal.end_run(self.run_id)
            finally:
                journal.close()

    def _run(self, journal: Journal, sources: list[CardSource], names: set[str],
             on_progress: ProgressCallback | None, processes: bool) -> BatchResult:
        for row, reader, what in journal.reclaim(self.batch, self.run_id, names):
            if what == "released":
                log.warning("row %d was left in progress by %s (a run that is gone): back to pending", row, reader)
            elif what == "live":
                log.info("row %d is in progress on %s, a live run: left to it", row, reader)
        counts = journal.counts(self.batch)
        todo = counts["pending"] + counts["in_progress"]
        if self.limit is not None:
            todo = min(todo, self.limit)
        progress = _Tally(todo, on_progress)
        mp = multiprocessing.get_context("fork")
        budget = Budget(mp, todo)
        t0 = time.monotonic()
        results = {"processed": 0, "verified": 0, "failed": 0}
        errors: list[BaseException | str] = []
        forked = [s for s in sources if getattr(s, "in_process_card", False)] \
            if processes and len(sources) > 1 and not self.keys.in_hsm else []
        threaded = [s for s in sources if s not in forked]

        def worker(src: CardSource) -> None:
            j = journal.connect()
            try:
                self._reader(j, src, budget, results, None, progress.add)
            except BaseException as exc:  # a worker must not die silently
                errors.append(exc)
                self.stop.set()
            finally:
                j.close()

        groups = worker_groups(len(forked), self.worker_processes)
        pipes = [mp.Pipe() for _g in groups]      # (batch end, worker end) per worker process
        firsts: list[Claim | None] = []
        if forked:
            self._warm_up(forked[0])
            firsts = self._first_claims(journal, forked, budget)
        children = [mp.Process(target=self._child, name=f"batch-{forked[g[0]].name}", daemon=True,
                               args=([forked[k] for k in g], [firsts[k] for k in g], budget, journal, pipes, i))
                    for i, g in enumerate(groups)]
        for c in children:            # fork before any thread starts
            c.start()
        for _mine, theirs in pipes:
            theirs.close()
        if forked:
            import gc

            gc.unfreeze()             # this process collects as before (the workers keep theirs frozen)
        threads = [threading.Thread(target=worker, args=(s,), name=f"batch-{s.name}", daemon=True)
                   for s in threaded]
        for t in threads:
            t.start()

        def on_message(kind: str, value: Any) -> None:
            if kind == "card":
                progress.add(value)
            elif kind == "error":
                errors.append(value)
            elif kind == "lost":
                errors.append(f"{value}: the worker process ended without its report")
            else:
                with self._lock:
                    for k in results:
                        results[k] += value[k]

        try:
            # the workers' journal calls, in groups on this process's connection (pool.py)
            JournalHub(journal, on_message, home=self).serve(
                {mine: ", ".join(forked[k].name for k in g) for (mine, _theirs), g in zip(pipes, groups)})
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
        progress.finish()
        if errors:
            first = errors[0]
            raise first if isinstance(first, BaseException) else CitycardError(f"a batch worker failed: {first}")
        counts = journal.counts(self.batch)
        return BatchResult(self.batch, results["processed"], results["verified"], results["failed"],
                           time.monotonic() - t0, counts)

    def _warm_up(self, source: CardSource) -> None:
        """Before the workers are forked: do once here what each worker's first card would
        otherwise do again in every process (lazy imports, compiled record layouts, key
        derivation and cipher caches, the card OS's and the card-time model's first run),
        then move every object made so far out of the garbage collector's reach
        (``gc.freeze``) so that a collection in a worker does not copy the shared pages
        (copy-on-write).  When the source offers a rehearsal card (a simulated reader: a
        throwaway card of its model that never sleeps), the first row is personalized and
        verified on it in memory: nothing of it reaches the journal or a reader.  With 64
        workers whose first cards all start together this took ~5 ms of CPU off each first
        card (docs/performance.md, "Timed readers").  A row that fails here fails again, with
        its own error, on its card: the warm-up says nothing."""
        import gc

        from . import verify  # noqa: F401  (imported by personalize on the first card)

        try:
            plan = self.planner.plan(CardData(self.data.row(1), 0, self.issue_date, self.data.where(1)))
            rehearsal = getattr(source, "rehearsal_card", None)
            if rehearsal is not None:
                session = rehearsal()
                try:
                    personalize(session, self.spec, plan, verify=self.verify)
                finally:
                    session.close()
        except CitycardError:
            pass
        gc.freeze()

    def _claim(self, j: Journal, src: CardSource, budget: Budget) -> Claim | None:
        """The reader's next row under ``budget`` (:class:`~citycard.perso.pool.Budget`), or None:
        nothing left for it, or the run is stopping."""
        if not budget.reserve(self.stop):
            return None
        claim = None
        try:
            claim = j.claim(self.batch, self.label(src), self.spec.serial_prefix, self.serial_of, run=self.run_id)
        finally:
            budget.settle(claim is not None)
        return claim

    def _first_claims(self, journal: Journal, forked: list[CardSource], budget: Budget) -> list[Claim | None]:
        """Each forked reader's first row, claimed here before the forks in one transaction (the
        claim its worker would make): a reader starts its first card as soon as its process is
        forked, instead of every reader waiting for the last fork (the hub serves calls only
        then) and all first cards starting at the same instant (docs/performance.md, "Timed
        readers").  A reader that finds no row gives its card of the budget back, and the next
        reader still asks: it may have a row of its own to resume (left by a run that died)."""
        with journal.group():
            return [self._claim(journal, s, budget) for s in forked]

    def _reader(self, j: Journal, src: CardSource, budget: Budget, results: dict[str, int], first: Claim | None,
                report: Callable[[bool], None]) -> None:
        """One reader's cards: its rows (``first``, then its claims under ``budget``), one card
        each, until none is left for it or it has no card; ``report(ok)`` after each card."""
        claim = first or self._claim(j, src, budget)
        while claim is not None:
            ok = self._one(j, src, results, claim)
            if ok is None:
                return
            report(ok)
            claim = self._claim(j, src, budget)

    def _child(self, sources: list[CardSource], firsts: list[Claim | None], budget: Budget,
               journal: Journal, pipes: list[tuple[Any, Any]], index: int) -> None:
        """A worker process (forked) driving ``sources``, one thread each: its journal calls go
        to the batch process (:class:`~citycard.perso.pool.JournalClient`); dies with its
        parent.  ``firsts``: each reader's first row, claimed by the batch process before the
        fork (None: it claims its own)."""
        conn = worker_end(pipes, index)
        lock = threading.Lock()
        j = JournalClient(conn, journal, home=self, lock=lock)
        results = {"processed": 0, "verified": 0, "failed": 0}

        def send(message: tuple[str, Any]) -> None:
            with lock:
                conn.send(message)

        def drive(src: CardSource, first: Claim | None) -> None:
            try:
                self._reader(j, src, budget, results, first, lambda ok: send(("card", ok)))  # type: ignore[arg-type]
            except BaseException as exc:
                send(("error", f"{src.name}: {exc}"))

        try:
            run_threads(drive, list(zip(sources, firsts)), [f"batch-{s.name}" for s in sources])
        except BaseException as exc:     # an interrupt of this process while its readers' threads ran
            send(("error", f"{', '.join(s.name for s in sources)}: stopped: {exc!r}"))
        finally:
            send(("done", results))
            conn.close()

    def _one(self, j: Journal, src: CardSource, results: dict[str, int], claim: Claim) -> bool | None:
        spec = self.spec
        started = now()
        row = claim.row
        values = self.data.row_at(claim.data_offset, row) if claim.data_offset is not None else self.data.row(row)
        session = src.next_card(self.stop)
        if session is None:
            return None
        atr, uid = session.atr, read_uid(session)            # reads only (journal_attempts)
        serial, number = claim.card_serial, claim.card_number
        # a row taken up again may have an open attempt: a card written by a run that stopped
        previous = j.open_attempts(self.batch, row) if claim.attempts > 1 else []
        settle = _Settle.NONE
        card = CardData(values, number, self.issue_date, self.data.where(row))
        status, error = "verified" if self.verify else "personalized", None
        attempt: list[int] = []

        def on_attempt(_ident: CardIdentity) -> None:       # before the first authenticating/writing APDU
            attempt.append(j.begin_attempt(self.batch, row, serial, reader=self.label(src), station=self.station,
                                           run=self.run_id, atr=atr, uid=uid))

        try:
            plan = self.planner.plan(card)
            if previous:
                settle = self._settle(session, plan, previous, uid)
                if settle is _Settle.OTHER:
                    serial, number = j.void_and_renumber(
                        self.batch, row, spec.serial_prefix, self.serial_of,
                        f"card removed mid-personalization: the card in {self.label(src)} when the row was redone "
                        f"(ATR {atr.hex().upper()}) was not this one; it may hold keys of this serial")
                    log.warning("row %d: the card written as %s is not in %s (void: find and destroy it); the "
                                "row goes on as %s", row, previous[0].card_serial, src.name, serial)
                    card = CardData(values, number, self.issue_date, self.data.where(row))
                    plan = self.planner.plan(card)
            try:
                personalize(session, spec, plan, verify=self.verify, on_attempt=on_attempt)
            except CardAlreadyIssued:
                if settle is not _Settle.SAME:
                    raise
                # the run stopped after this very card was issued and before its row was recorded
                from .verify import verify_card
                verify_card(session, spec, plan)
        except (ForeignCard, CardAlreadyIssued) as exc:
            # refused before anything was written: the row is not spoiled, it waits for a right card
            status, error = "failed", str(exc)
        except AuthenticationRefused as exc:
            status, error = ("failed" if settle is _Settle.UNPROVEN else "spoiled"), str(exc)
        except (PersoError, TransportError) as exc:
            status, error = "spoiled", str(exc)
        except CitycardError as exc:
            status, error = "failed", str(exc)
        keep = getattr(src, "keep", None)
        if keep is not None and status in ("verified", "personalized"):
            try:       # the card is filed before its row says done (issue 18 point 8)
                keep(session, serial)
            except (CitycardError, OSError) as exc:
                status, error = "spoiled", f"the card could not be filed: {exc}"
        # the row's earlier open attempts: this card was theirs (proved by its serial, UID, or
        # the MF master of the serial accepted), or it was not and theirs is void
        prev = None
        if previous and settle is not _Settle.OTHER:
            proved = settle is _Settle.SAME or (settle is _Settle.UNPROVEN and attempt and status != "failed")
            prev = RESUMED if proved else VOID
        j.finish(self.batch, row, serial, self.label(src), status, error, started,
                 attempt=attempt[0] if attempt else None, previous=prev, card=(atr, uid))
        with self._lock:
            results["processed"] += 1
            results["verified" if status in ("verified", "personalized") else "failed"] += 1
        if self.audit is not None:       # an append under flock: safe from the worker processes too
            self.audit.append(f"card.{status}", serial, batch=self.batch, row=row, reader=self.label(src),
                              error=error[:200] if error else None)
        if self.on_card is not None:
            self.on_card(src.name, row, status)
        try:
            src.done(session, serial)
        except CitycardError as exc:
            log.warning("%s: %s", src.name, exc)
        if error:
            log.warning("row %d (%s) on %s: %s", row, serial, src.name, error)
        return status in ("verified", "personalized")

    def _settle(self, session: CardSession, plan: Plan, previous: list[Attempt], uid: bytes | None) -> _Settle:
        """Whether the card in the reader is the one the row's open attempts were writing
        (docs/architecture.md, "No unrecorded cards"): reads only, no key tried.

        - same stable UID, or it carries the row's serial (read freely): SAME;
        - another stable UID, another serial, another profile's card: OTHER;
        - no serial but the profile's structure (cut after the MF master, before the serial
          was written): UNPROVEN, the rerun's take-over with this serial's MF master (the one
          try perso allows) proves it or refuses it;
        - it looks factory-fresh: OTHER.  It may be the same card cut early, or a new one; only
          a new serial guarantees that no two cards carry one serial's keys (if it is the same
          card and it already holds the old serial's MF master, the transport key is refused
          once and the card is recorded spoiled besides its void attempt)."""
        here = stable_uid(uid)
        known = {a.uid for a in previous if stable_uid(a.uid) is not None}
        if here is not None and known:
            return _Settle.SAME if here in known else _Settle.OTHER
        ident = identify_card(session, self.spec, plan)
        if ident.serial is not None:
            return _Settle.SAME if ident.serial == plan.card_serial else _Settle.OTHER
        if ident.state is CardState.PARTIAL:
            return _Settle.UNPROVEN
        return _Settle.OTHER


class _Settle(enum.Enum):
    """The card in the reader against a row's open attempts (:meth:`Batch._settle`)."""

    NONE = "no open attempt"
    SAME = "the same card"
    UNPROVEN = "not proven: its MF master will tell"
    OTHER = "another card"
