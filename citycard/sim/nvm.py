"""Non-volatile memory with all-or-nothing transactions and simulated tearing.

Every persistent change the card OS makes goes through :class:`Nvm`: ``set``
(an attribute), ``put`` (a list or dict item) or ``append``.  Each is one *write
step*.  Inside ``with nvm.transaction():`` the old value is logged before each
step; if power is lost before the block ends, the next power-on rolls the steps
back in reverse order, like the backup buffer of a real card's EEPROM.

Tearing: ``nvm.tear_after = n`` makes the n-th following write step (or the
commit point, counted as one more step) raise :class:`PowerLoss` *after* it has
been applied, as if the reader lost power right then.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

_MISSING = object()


class PowerLoss(Exception):
    """Raised by a torn write step; the card must be powered on again."""


class Nvm:
    __slots__ = ("_log", "_depth", "tear_after", "steps")

    def __init__(self) -> None:
        self._log: list[tuple[str, Any, Any, Any]] | None = None
        self._depth = 0
        self.tear_after: int | None = None
        self.steps = 0  # write steps since creation (for tests and tear planning)

    # ------------------------------------------------------------------ steps
    def _step(self) -> None:
        self.steps += 1
        if self.tear_after is not None:
            self.tear_after -= 1
            if self.tear_after <= 0:
                self.tear_after = None
                raise PowerLoss()

    def set(self, obj: Any, attr: str, value: Any) -> None:
        if self._log is not None:
            self._log.append(("attr", obj, attr, getattr(obj, attr, _MISSING)))
        setattr(obj, attr, value)
        self._step()

    def put(self, container: Any, key: Any, value: Any) -> None:
        if self._log is not None:
            if isinstance(container, dict):
                old = container.get(key, _MISSING)
            else:
                old = container[key]
            self._log.append(("item", container, key, old))
        container[key] = value
        self._step()

    def delete(self, container: dict, key: Any) -> None:
        if self._log is not None:
            self._log.append(("item", container, key, container[key]))
        del container[key]
        self._step()

    def append(self, lst: list, value: Any) -> None:
        if self._log is not None:
            self._log.append(("append", lst, None, None))
        lst.append(value)
        self._step()

    # ------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All steps inside happen, or (after a power loss) none do."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._log = []
        self._depth = 1
        try:
            yield
        except PowerLoss:
            self._depth = 0
            raise  # the log stays pending: recover() at power-on rolls it back
        except BaseException:
            self._depth = 0
            self.rollback()
            raise
        self._depth = 0
        self._log = None
        self._step()  # the commit point: a tear here leaves the transaction done, answer lost

    @property
    def pending(self) -> bool:
        return self._log is not None and self._depth == 0

    def recover(self) -> bool:
        """At power-on: undo an interrupted transaction.  Returns whether one was undone."""
        if self._log is None:
            return False
        self.rollback()
        return True

    def rollback(self) -> None:
        log, self._log = self._log or [], None
        for kind, obj, key, old in reversed(log):
            if kind == "attr":
                if old is _MISSING:
                    delattr(obj, key)
                else:
                    setattr(obj, key, old)
            elif kind == "item":
                if old is _MISSING:
                    del obj[key]
                else:
                    obj[key] = old
            else:  # append
                obj.pop()
