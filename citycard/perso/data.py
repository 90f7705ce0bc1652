"""Cardholder data files (CSV), read as a stream: one record at a time, in constant memory.

A :class:`DataFile` knows its path, encoding and header; :meth:`DataFile.records` walks the
rows once, giving each one's row number (1-based, the header and blank lines not counted),
file line and byte offset, so that a batch can come back to one row later
(:meth:`DataFile.row_at`) without keeping the file in memory.  The checks of the values
are in :mod:`citycard.perso.validate`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import InputError

ENCODINGS = ("utf-8", "gb18030", "gbk")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Record:
    """One data row: ``values`` by column, or ``problem`` when the row cannot be read."""

    number: int              # data row, 1-based
    line: int                # the file line it starts on
    offset: int              # byte offset of its first line
    values: dict[str, str]
    problem: str | None = None


class DataFile:
    """A cardholder CSV file: the header is read on opening, the rows on demand."""

    def __init__(self, path: str | Path, encoding: str = "utf-8") -> None:
        if encoding.lower() not in ENCODINGS:
            raise InputError(f"encoding {encoding!r} not supported (use {', '.join(ENCODINGS)})")
        self.path = str(path)
        self.encoding = encoding.lower()
        p = Path(path)
        if p.is_dir():
            raise InputError(f"{path}: is a directory, not a data file")
        try:
            with open(p, "rb") as f:
                header = next(self._parse(f, 0, 1), None)
        except FileNotFoundError:
            raise InputError(f"{path}: no such data file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read the data file ({exc.strerror})") from None
        if header is None:
            raise InputError(f"{path}: empty file (a header row is needed)")
        _line, _offset, fields, self._body_offset, self._body_line = header
        names = [h.strip() for h in fields]
        if len(set(names)) != len(names) or not all(names):
            dup = next((h for h in names if names.count(h) > 1 or not h), "")
            raise InputError(f"{path}: line 1: column {dup!r} is empty or repeated")
        self.columns: tuple[str, ...] = tuple(names)

    # ------------------------------------------------------------------ reading
    def _parse(self, f: BinaryIO, offset: int, line: int) -> Iterator[tuple[int, int, list[str], int, int]]:
        """CSV records from byte ``offset`` (file line ``line``): (line, offset, fields,
        offset after, line after).  Lines are decoded one by one (a newline byte never occurs
        inside a UTF-8 or GB 18030 character)."""
        f.seek(offset)
        state = {"offset": offset, "line": line}
        codec = "utf-8" if self.encoding == "utf-8" else self.encoding

        def lines() -> Iterator[str]:
            for raw in f:
                if state["offset"] == 0 and raw.startswith(_BOM) and self.encoding == "utf-8":
                    raw = raw[len(_BOM):]
                    state["offset"] += len(_BOM)
                try:
                    text = raw.decode(codec)
                except UnicodeDecodeError:
                    hint = " (try --encoding gb18030)" if self.encoding == "utf-8" else ""
                    raise InputError(f"{self.path}: line {state['line']}: not valid {self.encoding}{hint}") from None
                state["offset"] += len(raw)
                state["line"] += 1
                yield text

        reader = csv.reader(lines())
        while True:
            start, start_line = state["offset"], state["line"]
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"{self.path}: line {start_line}: {exc}") from None
            yield start_line, start, fields, state["offset"], state["line"]

    def records(self) -> Iterator[Record]:
        """Every data row once, in file order; blank lines are skipped (and not counted)."""
        n = 0
        width = len(self.columns)
        with open(self.path, "rb") as f:
            for line, offset, fields, _end, _next in self._parse(f, self._body_offset, self._body_line):
                if not fields or all(not c.strip() for c in fields):
                    continue
                n += 1
                if len(fields) != width:
                    yield Record(n, line, offset, {}, f"{len(fields)} fields, the header has {width}")
                    continue
                yield Record(n, line, offset, {h: v.strip() for h, v in zip(self.columns, fields)})

    def row_at(self, offset: int, n: int) -> dict[str, str]:
        """Row ``n``, read at byte ``offset`` (from :attr:`Record.offset`)."""
        with open(self.path, "rb") as f:
            got = next(self._parse(f, offset, 0), None)
        if got is None or len(got[2]) != len(self.columns):
            raise InputError(f"{self.where(n)}: not found at byte {offset} (the data file changed?)")
        return {h: v.strip() for h, v in zip(self.columns, got[2])}

    def row(self, n: int) -> dict[str, str]:
        """Data row ``n`` (1-based, the header not counted)."""
        if "rows" in self.__dict__:
            rows = self.rows
            if not 1 <= n <= len(rows):
                raise InputError(f"{self.path}: row {n} does not exist (rows 1..{len(rows)})")
            return rows[n - 1]
        count = 0
        if n >= 1:
            for rec in self.records():
                count = rec.number
                if rec.number == n:
                    if rec.problem:
                        raise InputError(f"{self.where(n)} (line {rec.line}): {rec.problem}")
                    return rec.values
        raise InputError(f"{self.path}: row {n} does not exist (rows 1..{count})")

    @cached_property
    def rows(self) -> tuple[dict[str, str], ...]:
        """Every row in memory (for small files: tests, a developer's script); a malformed row
        is an error naming every bad row."""
        rows: list[dict[str, str]] = []
        problems: list[str] = []
        for rec in self.records():
            if rec.problem:
                problems.append(f"row {rec.number} (line {rec.line}): {rec.problem}")
            else:
                rows.append(rec.values)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InputError(f"{self.path}: {problems[0]}{more}")
        return tuple(rows)

    def where(self, n: int) -> str:
        return f"{self.path} row {n}"


def read_csv(path: str | Path, encoding: str = "utf-8") -> DataFile:
    """Open a cardholder CSV (its header is read and checked now, its rows on demand)."""
    return DataFile(path, encoding)
