"""The personalization pipeline up to the card: a profile, its cardholder data and checked
keys, ready to plan cards (DESIGN.md, "Personalization").

Everything that personalizes (``citycard perso``, ``citycard batch run``, a developer's
script) starts here::

    from citycard.keys import open_ring
    from citycard.perso.job import prepare
    from citycard.perso.run import personalize
    from citycard.transport.open import open_session

    job = prepare("profiles/demo.toml", "cardholders.csv", lambda: open_ring(["keys.cks"], ["passphrase"]))
    plan = job.plan(3, issue_date=datetime.date.today())
    with open_session(reader="0") as session:
        report = personalize(session, job.spec, plan)

The checks come in the order that costs the operator least: the profile, the data file and
its columns (nothing secret needed), then the keys (a passphrase or an HSM PIN), then the
profile against the keys.  Each failure is one :class:`~citycard.errors.CitycardError`
naming the file, line or key.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

from ..keys import KeyRing
from ..profile import check_columns, check_keys, load_profile
from ..spec import CardSpec
from .context import CardData
from ..errors import InputError
from .data import DataFile, read_csv
from .plan import Plan, Planner
from .validate import IssuedLookup, Problem, ProblemTally, check_row, validate

#: a key ring, or a function opening it (called only once the profile and data are checked)
Keys = Union[KeyRing, Callable[[], KeyRing]]


def load_data(spec: CardSpec, data_path: str | Path, encoding: str = "utf-8") -> DataFile:
    """Open a cardholder data file and check that it has every column the profile binds (the
    rows are read later, as a stream)."""
    data = read_csv(data_path, encoding)
    check_columns(spec, data.columns, str(data_path))
    return data


def data_problems(spec: CardSpec, data: DataFile, *, issued: IssuedLookup | None = None,
                  reissue: Iterable[int] | str | None = None) -> Iterator[Problem]:
    """Every problem of the data file's rows (:func:`citycard.perso.validate.validate`)."""
    return validate(spec, data, issued=issued, reissue=reissue)


def check_data(spec: CardSpec, data: DataFile) -> None:
    """Refuse a data file with any bad row: one error listing the first problems."""
    tally = ProblemTally()
    for p in data_problems(spec, data):
        tally.add(p)
    if tally.count:
        raise InputError(tally.message(data.path))


def check_profile(profile_path: str | Path, data_path: str | Path | None = None, keys: Keys | None = None, *,
                  encoding: str = "utf-8") -> CardSpec:
    """Validate a profile, and when given against a data file (its columns) and key sources
    (every master it derives from); return the profile."""
    spec = load_profile(profile_path)
    if data_path is not None:
        check_data(spec, load_data(spec, data_path, encoding))
    if keys is not None:
        check_keys(spec, keys() if callable(keys) else keys)
    return spec


@dataclass(frozen=True)
class PersoJob:
    """A profile, its cardholder data and the key sources holding every master it needs."""

    spec: CardSpec
    data: DataFile
    keys: KeyRing
    planner: Planner

    def card(self, row: int, *, issue_date: _dt.date, card_number: int | None = None) -> CardData:
        """The data of one card: data row ``row`` (1-based), checked by the data validator; its
        card number is the row number unless given."""
        values = self.data.row(row)
        problems = check_row(self.spec, self.data, row, values)
        if problems:
            raise InputError("\n".join(str(p) for p in problems))
        return CardData(values, card_number if card_number is not None else row, issue_date,
                        self.data.where(row))

    def plan(self, row: int, *, issue_date: _dt.date, card_number: int | None = None) -> Plan:
        """The APDU plan of one card (pure: no card touched)."""
        return self.planner.plan(self.card(row, issue_date=issue_date, card_number=card_number))


def prepare(profile_path: str | Path, data_path: str | Path, keys: Keys, *, encoding: str = "utf-8") -> PersoJob:
    """Load and check the profile, the data file and the keys (in that order, see the module
    docstring); ``keys`` is a :class:`KeyRing` or a function that opens one."""
    spec = load_profile(profile_path)
    data = load_data(spec, data_path, encoding)
    ring = keys() if callable(keys) else keys
    check_keys(spec, ring)
    return PersoJob(spec, data, ring, Planner(spec, ring))
