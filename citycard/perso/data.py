"""Cardholder data files (CSV): read and check them in full before the first card."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

ENCODINGS = ("utf-8", "gb18030", "gbk")


@dataclass(frozen=True)
class DataFile:
    path: str
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    def row(self, n: int) -> dict[str, str]:
        """Data row ``n`` (1-based, the header not counted)."""
        if not 1 <= n <= len(self.rows):
            raise InputError(f"{self.path}: row {n} does not exist (rows 1..{len(self.rows)})")
        return self.rows[n - 1]

    def where(self, n: int) -> str:
        return f"{self.path} row {n}"


def read_csv(path: str | Path, encoding: str = "utf-8") -> DataFile:
    """Read a cardholder CSV; every malformed row is reported with its number."""
    if encoding.lower() not in ENCODINGS:
        raise InputError(f"encoding {encoding!r} not supported (use {', '.join(ENCODINGS)})")
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such data file") from None
    try:
        text = raw.decode("utf-8-sig" if encoding.lower() == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not valid {encoding} (try --encoding gb18030)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file (a header row is needed)") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or not all(header):
        dup = next((h for h in header if header.count(h) > 1 or not h), "")
        raise InputError(f"{path}: line 1: column {dup!r} is empty or repeated")
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    for n, rec in enumerate(reader, 1):
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(header):
            problems.append(f"row {n} (line {reader.line_num}): {len(rec)} fields, the header has {len(header)}")
            continue
        rows.append({h: v.strip() for h, v in zip(header, rec)})
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{path}: {problems[0]}{more}")
    return DataFile(str(path), tuple(header), tuple(rows))
