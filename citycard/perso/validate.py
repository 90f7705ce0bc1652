"""The one validator of cardholder data (``profile check --data``, ``batch run``, ``perso``).

The rules come from the profile: every column a binding reads is checked against the
record-layout field it fills (kind, length, allowed codes), plus what the layouts alone do
not say:

* a resident identity number (GB 11643-1999): 17 digits and a check digit, ISO 7064
  MOD 11-2 (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2, remainder → ``1 0 X 9 8 7 6 5 4 3
  2``), its birth date (digits 7–14) a real date; in the same record, a birth date and a
  sex code must agree with it (the 17th digit is odd for a man);
* a phone number: a mobile number (11 digits, ``1[3-9]…``) or a fixed line with its
  ``0`` trunk prefix (10–12 digits);
* a PIN: 4 to 12 digits (its value never appears in a message);
* spreadsheet damage: scientific notation (``4.40103E+17``) anywhere, and leading zeros lost
  from a fixed-length numeric code (a BCD field: ``1`` for ethnicity ``01``);
* empty values where the profile gives no default; a file with a header and no row;
* the same cardholder twice in the file, and (with a journal) a cardholder already issued
  in another batch, refused unless named as a re-issue.

:func:`validate` reads the file once, in constant memory (duplicates are looked up in a
temporary on-disk SQLite table), and yields every :class:`Problem` as it finds it.
"""

from __future__ import annotations

import datetime as _dt
import operator
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ..errors import InputError
from ..profile import binding_columns
from ..records import Field
from ..records import get as get_layout
from ..records.kinds import FieldProblem
from ..commands.fmcos import KeyType
from ..spec import CardSpec
from .data import DataFile, Record

#: (layout, field) holding a resident identity number: the social-security number is the
#: resident ID number (records/social.py, ss_ef06.ss_number)
RESIDENT_ID_FIELDS = frozenset({("ss_ef06", "ss_number")})
#: (layout, field) holding a phone number (records/services.py, health_ef0005)
PHONE_FIELDS = frozenset({("health_ef0005", "emergency_phone")})
#: fields cross-checked against the resident ID of the same record
BIRTH_DATE_FIELDS = frozenset({("ss_ef06", "birth_date")})
SEX_FIELDS = frozenset({("ss_ef06", "sex")})

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:\.\d*)?[eE][+-]?\d+$")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_FIXED_LINE = re.compile(r"^0\d{9,11}$")
_CHUNK = 2000


def resident_id_check_digit(first17: str) -> str:
    """The GB 11643 check digit of 17 digits (ISO 7064 MOD 11-2)."""
    return _ID_CHECK[sum(map(operator.mul, map(int, first17), _ID_WEIGHTS)) % 11]


def resident_id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid resident identity number (None when it is)."""
    if len(value) != 18:
        return f"{value!r} is not a resident ID number ({len(value)} characters, 18 expected)"
    if not value[:17].isdigit() or not (value[17].isdigit() or value[17] in "Xx"):
        return f"{value!r} is not a resident ID number (17 digits and a digit or X expected)"
    try:
        _dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return f"{value!r}: the birth date in the ID ({value[6:14]}) is not a date"
    want = resident_id_check_digit(value[:17])
    if value[17].upper() != want:
        return f"{value!r}: wrong check digit {value[17]!r} (GB 11643 gives {want!r})"
    return None


def phone_problem(value: str) -> str | None:
    if not value.isdigit():
        return f"{value!r} is not a phone number (digits only)"
    if _MOBILE.match(value) or _FIXED_LINE.match(value):
        return None
    return f"{value!r} is not a phone number (a mobile number has 11 digits 1[3-9]..., a fixed line 0 and 9-11 digits)"


@dataclass(frozen=True)
class Problem:
    """One bad value (``column``) or row (``column`` None), with the line to print."""

    row: int                 # data row (0: the file as a whole)
    column: str | None
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Target:
    """A record-layout field (or a PIN) that a column fills."""

    where: str               # profile path, e.g. "apps.social.files.0006.data.name"
    layout: str
    field: Field | None      # None for a PIN


@dataclass
class ColumnRule:
    column: str
    targets: list[Target] = field(default_factory=list)
    required: bool = False
    resident_id: bool = False
    phone: bool = False
    pin: bool = False
    code_digits: int = 0      # a fixed-length numeric code (BCD field): leading zeros matter
    birth_date: bool = False
    sex: bool = False


class Rules:
    """The checks of each column the profile binds (built once per profile and header)."""

    def __init__(self, spec: CardSpec, columns: Sequence[str], id_column: str = "cardholder_id") -> None:
        self.columns = tuple(columns)
        by_col: dict[str, ColumnRule] = {}

        def rule(col: str) -> ColumnRule:
            return by_col.setdefault(col, ColumnRule(col))

        for df in spec.dfs():
            for f in df.files:
                if f.layout is None:
                    continue
                layout = get_layout(f.layout, where=f"{spec.source} {f.path}")
                fields = {x.name: x for x in layout.fields}
                groups = [("data", f.data)] + [(f"records.{i}", r) for i, r in enumerate(f.records)
                                                 if isinstance(r, dict)]
                for key, bindings in groups:
                    for name, binding in bindings.items():
                        col, has_default = _column_of(binding)
                        if col is None or name not in fields:
                            continue
                        r = rule(col)
                        r.targets.append(Target(f"{f.path}.{key}.{name}", layout.name, fields[name]))
                        r.required |= not has_default
                        fid = (layout.name, name)
                        r.resident_id |= fid in RESIDENT_ID_FIELDS
                        r.phone |= fid in PHONE_FIELDS
                        r.birth_date |= fid in BIRTH_DATE_FIELDS
                        r.sex |= fid in SEX_FIELDS
                        if fields[name].kind == "bcd" and fid not in PHONE_FIELDS:
                            r.code_digits = max(r.code_digits, 2 * fields[name].length)
            for k in df.keys:
                if k.ktype == KeyType.PIN:
                    col, has_default = _column_of(k.pin)
                    if col is not None:
                        r = rule(col)
                        r.pin = True
                        r.required |= not has_default
                        r.targets.append(Target(f"{k.path}.value", "", None))
                else:
                    for col in binding_columns(k.factor):
                        rule(col).required = True
        self.rules = tuple(r for r in by_col.values() if r.column in self.columns)
        self._caches: tuple[dict[str, str], ...] = tuple({} for _ in self.rules)
        self._cross = any(r.birth_date or r.sex for r in self.rules)
        self.secret = frozenset(r.column for r in self.rules if r.pin)
        ids = [r.column for r in self.rules if r.resident_id]
        self.id_column = id_column if id_column in self.columns else (ids[0] if ids else None)
        #: columns where the same value twice means the same cardholder twice
        self.identity_columns = tuple(dict.fromkeys([*([self.id_column] if self.id_column else []), *ids]))

    def check(self, values: Mapping[str, str], where: str, row: int) -> list[Problem]:
        """Every problem of one row (``where``: "file row N")."""
        out: list[Problem] = []
        rid = None
        for r, cache in zip(self.rules, self._caches):
            v = values.get(r.column, "")
            msg = cache.get(v)
            if msg is None:
                msg = _value_problem(r, v)
                if len(cache) < 1024:         # codes repeat (sex, ethnicity, region...): checked once
                    cache[v] = msg
            if msg:
                if msg[0] == ":":             # "column 'x' is empty ..." reads after the row
                    out.append(Problem(row, r.column, f"{where}: column {r.column!r}{msg[1:]}"))
                else:
                    out.append(Problem(row, r.column, f"{where}, column {r.column!r}: {msg}"))
            elif r.resident_id and v and rid is None:
                rid = v
        if rid is not None and self._cross:
            out += self._agree(values, rid, where, row)
        return out

    def _agree(self, values: Mapping[str, str], rid: str, where: str, row: int) -> list[Problem]:
        out = []
        for r in self.rules:
            v = values.get(r.column, "")
            if r.birth_date and v.isdigit() and len(v) == 8 and v != rid[6:14]:
                out.append(Problem(row, r.column, f"{where}, column {r.column!r}: {v} is not the birth date in "
                                                  f"the resident ID ({rid[6:14]})"))
            if r.sex and v in ("1", "2") and v != ("1" if int(rid[16]) % 2 else "2"):
                out.append(Problem(row, r.column, f"{where}, column {r.column!r}: sex {v} does not agree with the "
                                                  f"resident ID (its 17th digit {rid[16]} is "
                                                  f"{'odd: male' if int(rid[16]) % 2 else 'even: female'})"))
        return out


def _value_problem(r: ColumnRule, v: str) -> str:
    """What is wrong with value ``v`` of column rule ``r`` ("" when nothing); a message
    starting with ":" follows the row ("row 3: column 'x' is empty")."""
    if v == "":
        if r.required:
            needed = r.targets[0].where if r.targets else "the profile"
            return f": is empty (needed by {needed})"
        return ""
    shown = "(hidden)" if r.pin else repr(v)
    if ("e" in v or "E" in v) and _SCIENTIFIC.match(v):     # the regex only for a value that can match
        return (f"{shown} is a number in scientific notation, mangled by a spreadsheet "
                "(format the column as text and export again)")
    if r.pin:
        if not v.isdigit() or not 4 <= len(v) <= 12:
            return f"a PIN is 4..12 digits (got {len(v)} characters" + ("" if v.isdigit() else ", not all digits") + ")"
        return ""
    if r.resident_id:
        msg = resident_id_problem(v)
        if msg:
            return msg + (" (leading zeros or the last digit lost in a spreadsheet?)"
                          if v.isdigit() and len(v) < 18 else "")
    if r.phone:
        msg = phone_problem(v)
        if msg:
            return msg
    if r.code_digits and v.isdigit() and len(v) < r.code_digits:
        return f"{v!r} has {len(v)} digit(s), the code has {r.code_digits} (leading zeros lost in a spreadsheet?)"
    for t in r.targets:
        if t.field is not None:
            try:
                t.field.encode_value(_coerce(t.field, v))
            except FieldProblem as p:
                return f"{p.message} ({t.where})"
    return ""


def _column_of(binding: Any) -> tuple[str | None, bool]:
    """The column a binding reads directly, and whether it has a default."""
    if isinstance(binding, str) and binding.startswith("$"):
        return binding[1:], False
    if isinstance(binding, dict) and "column" in binding:
        return str(binding["column"]), binding.get("default") is not None
    return None, False


def _coerce(f: Field, v: str) -> Any:
    """CSV text as the planner gives it to the layout (digits → int for an int field)."""
    if f.kind == "int":
        if not v.isdigit():
            raise FieldProblem(f"{v!r} is not a whole number")
        return int(v)
    return v


class _Seen:
    """Values already met in this file, on disk (a temporary SQLite table), so that a file of
    millions of rows is checked for duplicates in constant memory.

    A chunk is inserted first (``INSERT OR IGNORE``: the first row of a value stays); only
    when fewer rows went in than the chunk holds (a value met before, in this chunk or an
    earlier one: rare) are the chunk's values looked up.  The lookups were half of the cost at
    a million rows (issue 19)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("")          # "": a private temporary file, removed on close
        self.db.execute("PRAGMA cache_size = -16384")   # KiB: fewer page reads from the temporary file
        self.db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID")

    def first_rows(self, items: list[tuple[str, str, int]]) -> dict[tuple[str, str], int]:
        """For each (column, value, row): the first row that had the value (this chunk
        included); the chunk is then remembered."""
        keyed = [(f"{c}\x00{v}", r) for c, v, r in items]
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", keyed)
        if self.db.total_changes - before == len(keyed):      # every value new: each row is its own first
            return {(c, v): r for c, v, r in items}
        found: dict[tuple[str, str], int] = {}
        keys = list({k for k, _ in keyed})
        for i in range(0, len(keys), 900):
            part = keys[i:i + 900]
            sql = f"SELECT key, row FROM seen WHERE key IN ({', '.join('?' * len(part))})"
            for k, r in self.db.execute(sql, part):
                c, _, v = k.partition("\x00")
                found[(c, v)] = r
        return found

    def close(self) -> None:
        self.db.close()


#: given identities, the earlier issue of each one already in the journal ("batch B row N, card S")
IssuedLookup = Callable[[Sequence[str]], Mapping[str, str]]


def validate(spec: CardSpec, data: DataFile, *, id_column: str = "cardholder_id",
             issued: IssuedLookup | None = None, reissue: Iterable[int] | str | None = None,
             on_row: Callable[[Record, str], None] | None = None) -> Iterator[Problem]:
    """Check every row of ``data`` against ``spec``, reading the file once: yield every
    problem (in row order within chunks of rows).  ``issued`` looks up identities in a
    journal; rows in ``reissue`` (row numbers, or ``"all"``) may be issued again.
    ``on_row(record, identity)`` is called for every row read (to register it)."""
    rules = Rules(spec, data.columns, id_column)
    again = reissue if reissue == "all" else frozenset(reissue or ())
    seen = _Seen()
    rows = 0
    try:
        chunk: list[tuple[Record, list[Problem]]] = []
        for rec in data.records():
            rows = rec.number
            where = data.where(rec.number)
            if rec.problem:
                chunk.append((rec, [Problem(rec.number, None, f"{where} (line {rec.line}): {rec.problem}")]))
            else:
                chunk.append((rec, rules.check(rec.values, where, rec.number)))
            if on_row is not None:
                on_row(rec, identity(rules, rec))
            if len(chunk) >= _CHUNK:
                yield from _duplicates(rules, data, chunk, seen, issued, again)
                chunk = []
        if chunk:
            yield from _duplicates(rules, data, chunk, seen, issued, again)
    finally:
        seen.close()
    if rows == 0:
        yield Problem(0, None, f"{data.path}: no cardholder rows (only a header)")


def identity(rules: Rules, rec: Record) -> str:
    """A row's cardholder in the journal: its ID column, else its row number."""
    v = rec.values.get(rules.id_column, "") if rules.id_column else ""
    return v or str(rec.number)


def _duplicates(rules: Rules, data: DataFile, chunk: list[tuple[Record, list[Problem]]], seen: _Seen,
                issued: IssuedLookup | None, again: Any) -> Iterator[Problem]:
    items = [(c, rec.values[c], rec.number) for rec, _ in chunk for c in rules.identity_columns
             if rec.values.get(c)]
    first = seen.first_rows(items) if items else {}
    earlier: Mapping[str, str] = {}
    if issued is not None and rules.id_column:
        ids = [rec.values[rules.id_column] for rec, _ in chunk if rec.values.get(rules.id_column)]
        earlier = issued(ids) if ids else {}
    for rec, problems in chunk:
        where = data.where(rec.number)
        for c in rules.identity_columns:
            v = rec.values.get(c)
            if v and first.get((c, v), rec.number) != rec.number:
                shown = "(hidden)" if c in rules.secret else repr(v)
                problems.append(Problem(rec.number, c, f"{where}, column {c!r}: {shown} again: the same "
                                                       f"cardholder as row {first[(c, v)]}"))
        v = rec.values.get(rules.id_column) if rules.id_column else None
        if v and v in earlier and not (again == "all" or rec.number in again):
            problems.append(Problem(rec.number, rules.id_column,
                                    f"{where}, column {rules.id_column!r}: cardholder {v!r} was already issued "
                                    f"({earlier[v]}); name the row as a re-issue (--reissue) to issue again"))
        yield from problems


def check_row(spec: CardSpec, data: DataFile, n: int, values: Mapping[str, str]) -> list[Problem]:
    """The problems of one row (``perso --row``): the same rules, without the file-wide ones."""
    return Rules(spec, data.columns).check(values, data.where(n), n)


class ProblemTally:
    """Counts problems and bad rows in constant memory (problems come row by row) and keeps
    the first ``keep`` for the message."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self.first: list[Problem] = []
        self.count = 0
        self.rows = 0
        self._last_row: int | None = None

    def add(self, p: Problem) -> None:
        self.count += 1
        if p.row != self._last_row:
            self.rows += 1
            self._last_row = p.row
        if len(self.first) < self.keep:
            self.first.append(p)

    def message(self, path: str) -> str:
        return summary(self.first, self.count, self.rows, path, self.keep)


def summary(problems: Sequence[Problem], count: int, rows: int, path: str, limit: int = 20) -> str:
    """The message refusing a data file: how many bad rows, then the first problems."""
    more = f"\n... and {count - limit} more" if count > limit else ""
    return (f"{rows} bad row(s) in {path}, nothing personalized:\n" + "\n".join(str(p) for p in problems[:limit])
            + more)


def parse_rows(text: str) -> frozenset[int] | str:
    """``"all"``, or row numbers and ranges: ``"3,7,10-12"`` (for ``--reissue``)."""
    if text.strip().lower() == "all":
        return "all"
    rows: set[int] = set()
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        if not a.isdigit() or (b and not b.isdigit()) or int(a) < 1 or (b and int(b) < int(a)):
            raise InputError(f"--reissue: {part.strip()!r} is not a row number or range (e.g. 3,7,10-12 or all)")
        rows.update(range(int(a), int(b or a) + 1))
    return frozenset(rows)
