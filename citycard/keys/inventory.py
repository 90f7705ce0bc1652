"""The key inventory (issue 25 item 3): each master version's life cycle.

Every master version has a state, ``active``, ``retired`` or ``compromised``, and may have an
activation date (``activation``: not used before it) and an end date (``expiry``: not used on or
after it).  What may be used for what:

- **Issuing** (writing keys onto a new card; ``derive`` without a version): the newest version
  that is ``active``, activated and not expired.  A rotation adds version n+1 with an
  activation date and retires version n: from that date new cards get version n+1.
- **Cards already issued** (terminals, card services, clearing: a version named by the card):
  ``active`` or ``retired`` versions until their end date, so the cards of the old version keep
  working through a rotation; never a ``compromised`` or expired one.

A compromised key stays compromised (the state cannot be changed back).  Dates are ISO
``YYYY-MM-DD`` and compared with today's date (UTC).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from ..errors import InputError

STATES = ("active", "retired", "compromised")


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def check_date(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return _dt.date.fromisoformat(value).isoformat()
    except (ValueError, TypeError):
        raise InputError(f"{what} {value!r}: a date YYYY-MM-DD") from None


def check_state(value: str, what: str = "state") -> str:
    if value not in STATES:
        raise InputError(f"{what} {value!r}: one of {', '.join(STATES)}")
    return value


@dataclass(frozen=True)
class Lifecycle:
    """A master version's state and dates."""

    state: str = "active"
    activation: str | None = None
    expiry: str | None = None

    def __post_init__(self) -> None:
        check_state(self.state)
        if self.activation and self.expiry and self.expiry <= self.activation:
            raise InputError(f"expiry {self.expiry} is not after activation {self.activation}")

    def refusal(self, *, issuing: bool, on: str | None = None) -> str | None:
        """Why this version may not be used (None: it may), on date ``on`` (default today)."""
        day = on or today()
        if self.state == "compromised":
            return "compromised"
        if self.expiry is not None and day >= self.expiry:
            return f"expired on {self.expiry}"
        if self.activation is not None and day < self.activation:
            return f"not active before {self.activation}"
        if issuing and self.state == "retired":
            return "retired (cards already issued with it may still use it until its end date)"
        return None

    def change(self, *, state: str | None = None, activation: str | None = None,
               expiry: str | None = None) -> "Lifecycle":
        """A new lifecycle; a compromised key stays compromised."""
        if self.state == "compromised" and state not in (None, "compromised"):
            raise InputError("a compromised key stays compromised")
        return Lifecycle(state or self.state, activation if activation is not None else self.activation,
                         expiry if expiry is not None else self.expiry)

    def as_dict(self) -> dict[str, str | None]:
        return {"state": self.state, "activation": self.activation, "expiry": self.expiry}

    def text(self) -> str:
        dates = []
        if self.activation:
            dates.append(f"from {self.activation}")
        if self.expiry:
            dates.append(f"until {self.expiry}")
        return self.state + (f" ({' '.join(dates)})" if dates else "")
