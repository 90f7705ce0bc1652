"""The batch's worker processes and their journal: one writer, group commits (issue 19).

A batch runs the readers of in-process (simulated) cards in forked worker processes, a few
readers each (:meth:`citycard.perso.batch.Batch.run`, below).  Those workers do not open the journal
themselves: each holds a :class:`JournalClient`, whose every call (claim, finish, …) goes
down a pipe to the batch process.  The batch process (:class:`JournalHub`) runs the calls
that arrived together as one journal transaction (:meth:`Journal.group`: one savepoint per
call, one commit, one fsync) and answers each worker only after that commit, so a card
still moves on only once its row's state is durable.

Why: with 64 workers, each card's two transactions (claim, finish) each waited for its own
fsync under the write lock, and a writer that found the lock taken slept in SQLite's busy
handler (1, 2, 5 … 100 ms between tries): claims took 30–250 ms in the median and seconds
at worst (docs/performance.md, "Timed readers").  A group commits every waiting worker's
change with one fsync.

The readers are spread over a few worker processes (:func:`worker_groups`: four per CPU),
one thread per reader inside each (:func:`run_threads`).  A simulated reader spends most of
its time asleep (its card's modelled time), so a handful of processes keeps the CPUs busy,
while 64 processes cost 64 forks (~2.4 ms each here, the last reader starting 0.15 s late)
and 64 first cards whose copy-on-write faults and cold caches all fell in the same second
(docs/performance.md, "Timed readers").
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

from ..errors import CitycardError
from .journal import Journal, JournalError

__all__ = ["Budget", "JournalClient", "JournalHub", "default_worker_processes", "run_threads", "worker_end",
           "worker_groups"]


_METHOD = "citycard.pool.method"


class JournalClient:
    """A worker's journal: calls the batch process's :class:`Journal` (public methods only)
    through ``conn`` and waits for the committed answer; an error raised there is raised
    here.  ``url``, ``pg`` and ``journal_id`` are the journal's.

    Arguments go by value (pickled), but a bound method of ``home`` (the batch, which the
    worker was forked from, so the batch process has the same object) goes by name and is
    called there (the claim's serial rule); any other function is refused (one line)."""

    def __init__(self, conn: Connection, journal: Journal, home: object = None,
                 lock: threading.Lock | None = None) -> None:
        self._conn = conn
        self._home = home
        self._lock = lock or threading.Lock()    # the readers' threads of one process share the pipe
        self.url, self.pg, self.journal_id = journal.url, journal.pg, journal.journal_id

    def _arg(self, value: Any) -> Any:
        if not callable(value):
            return value
        if self._home is not None and getattr(value, "__self__", None) is self._home:
            return (_METHOD, value.__name__)
        raise CitycardError(f"a worker's journal call cannot pass {value!r} to the batch process "
                            "(only a method of the batch)")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            message = ("call", (name, tuple(self._arg(a) for a in args), {k: self._arg(v) for k, v in kwargs.items()}))
            with self._lock:                     # one call at a time on the pipe: the answer is this one's
                self._conn.send(message)
                kind, value = self._conn.recv()
            if kind == "raise":
                raise value
            return value

        return call

    def close(self) -> None:
        """Nothing to close: the connection is the batch process's."""


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else the same message as a journal/citycard error."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        cls = JournalError if isinstance(exc, JournalError) else CitycardError
        return cls(str(exc))


class JournalHub:
    """The batch process's side: serves the workers' journal calls on ``journal`` in groups,
    and hands every other message (``kind``, ``value``) to ``on_message``."""

    def __init__(self, journal: Journal, on_message: Callable[[str, Any], None], home: object = None) -> None:
        self.journal = journal
        self.home = home
        self.on_message = on_message
        self.groups = 0
        self.calls = 0

    def serve(self, conns: dict[Connection, str]) -> None:
        """Until every worker has said ``done`` (or its pipe closed: ``lost`` with its name)."""
        live = dict(conns)
        while live:
            calls: list[tuple[Connection, tuple[str, tuple, dict]]] = []
            for c in wait(list(live)):
                try:
                    while True:
                        kind, value = c.recv()  # type: ignore[union-attr]
                        if kind == "call":      # the worker now waits for the answer
                            calls.append((c, value))  # type: ignore[arg-type]
                            break
                        self.on_message(kind, value)
                        if kind == "done":
                            del live[c]  # type: ignore[arg-type]
                            break
                        if not c.poll():  # type: ignore[union-attr]
                            break
                except (EOFError, OSError):
                    self.on_message("lost", live.pop(c))  # type: ignore[arg-type]
            if calls:
                self._group(calls)

    def _arg(self, value: Any) -> Any:
        if isinstance(value, tuple) and len(value) == 2 and value[0] == _METHOD:
            return getattr(self.home, value[1])
        return value

    def _group(self, calls: list[tuple[Connection, tuple[str, tuple, dict]]]) -> None:
        answers: list[tuple[Connection, tuple[str, Any]]] = []
        try:
            with self.journal.group():
                for conn, (name, args, kwargs) in calls:
                    try:
                        if name.startswith("_") or name in ("close", "connect", "group"):
                            raise JournalError(f"a worker may not call the journal's {name}")
                        args = tuple(self._arg(a) for a in args)
                        kwargs = {k: self._arg(v) for k, v in kwargs.items()}
                        answers.append((conn, ("return", getattr(self.journal, name)(*args, **kwargs))))
                    except Exception as exc:       # that call's savepoint is undone; the others stand
                        answers.append((conn, ("raise", _sendable(exc))))
        except Exception as exc:                   # the commit failed: nothing of the group was recorded
            answers = [(conn, ("raise", _sendable(exc))) for conn, _call in calls]
        self.groups += 1
        self.calls += len(calls)
        for conn, answer in answers:
            try:
                conn.send(answer)
            except (BrokenPipeError, OSError):     # that worker is gone (its row stays in progress)
                pass


def default_worker_processes() -> int:
    """How many worker processes a batch gives its in-process (simulated) readers: four per
    CPU (the card OS is pure Python: one process runs on one CPU at a time, and its readers'
    threads wait for each other's turn), at least 2.  64 timed readers on 2 CPUs, 6 cards
    each, 3 rounds: 8 processes 0.94–0.95 of linear, 4 processes 0.93–0.95, 64 processes
    0.89–0.92 (docs/performance.md, "Timed readers")."""
    return max(2, 4 * (os.cpu_count() or 1))


def worker_groups(readers: int, processes: int) -> list[list[int]]:
    """The readers (by index) of each worker process: round robin over at most ``processes``."""
    n = max(1, min(processes, readers)) if readers else 0
    return [list(range(i, readers, n)) for i in range(n)]


def _die_with_parent() -> None:
    """Linux: a forked worker gets SIGKILL when the batch process dies (kill -9 included)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_end(pipes: Sequence[tuple[Connection, Connection]], index: int) -> Connection:
    """In a forked worker: die with the batch process, close every pipe end but this worker's
    own, and return it."""
    _die_with_parent()
    for i, (mine, theirs) in enumerate(pipes):
        mine.close()
        if i != index:
            theirs.close()
    return pipes[index][1]


def run_threads(target: Callable[..., None], arguments: Sequence[tuple], names: Sequence[str]) -> None:
    """``target(*arguments[i])`` in a thread each (in this thread when there is one), until all end."""
    if len(arguments) == 1:
        target(*arguments[0])
        return
    threads = [threading.Thread(target=target, args=a, name=n, daemon=True) for a, n in zip(arguments, names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Budget:
    """How many cards a run may still start (``--limit``, or the rows to do), shared by the
    readers of every worker process (made before the forks).

    A reader reserves a card before it claims a row and settles the reservation when the claim
    has answered: used if it got a row, given back if not (a reader finds only pending rows and
    its own rows left in progress, so another reader may still have one: a row left on it by a
    run that died).  A reader that finds nothing left waits while reservations are open (one
    may come back) and stops only when none is: no reader stops while a card it could use may
    still be given back."""

    POLL_S = 0.005

    def __init__(self, ctx: Any, cards: int) -> None:
        self._v = ctx.Array("q", [cards, 0])          # cards left, reservations open

    def reserve(self, stop: threading.Event | None = None) -> bool:
        """A card for one claim (then :meth:`settle`), or False: none is left and none can come
        back (or ``stop`` is set)."""
        while stop is None or not stop.is_set():
            with self._v.get_lock():
                left, open_ = self._v[0], self._v[1]
                if left > 0:
                    self._v[0], self._v[1] = left - 1, open_ + 1
                    return True
                if open_ == 0:
                    return False
            time.sleep(self.POLL_S)
        return False

    def settle(self, used: bool) -> None:
        """Close a reservation: the card is used (a row was claimed) or goes back."""
        with self._v.get_lock():
            self._v[1] -= 1
            if not used:
                self._v[0] += 1

    @property
    def left(self) -> int:
        with self._v.get_lock():
            return int(self._v[0])
