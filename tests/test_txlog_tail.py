"""A host terminal's next TTSN is found from the end of its log (leftovers item 1): the same
answers as a full scan on logs with interleaved terminals, grey records, loads, blocks, blank
lines and a torn last line, and a bounded number of bytes read however large the log is.

The log lines are written here as JSON text (not through TxRecord) and the expected serials
are written by hand."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from citycard.errors import InputError
from citycard.terminal import txlog
from citycard.terminal.txlog import next_ttsn

A, B, C = "0000000000A1", "0000000000B2", "0000000000C3"


def _line(terminal: str, ttsn: int | None, *, kind: str = "purchase", status: str = "ok") -> str:
    doc: dict[str, Any] = {"format": "citycard-tx", "version": 1, "kind": kind, "app": "transit",
                           "card": "3301000000000001", "counter": 3, "balance_before": 5000, "amount": 100,
                           "ttype": 6 if kind != "load" else 2, "terminal": terminal,
                           "ttsn": None if ttsn is None else f"{ttsn:08X}", "date": "20261203", "time": "081500",
                           "tac": None if status == "grey" or kind == "block" else "1A2B3C4D", "status": status,
                           "source": "host"}
    return json.dumps(doc) + "\n"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_interleaved_terminals_grey_loads_blocks_and_blank_lines(tmp_path: Path) -> None:
    log = _write(tmp_path / "t.log", [
        _line(A, 1), _line(B, 1), _line(A, 2), "\n", _line(B, 2, status="grey"), _line(A, 3, status="grey"),
        _line(C, None, kind="load"), _line(B, 3), _line(A, None, kind="load"), _line(A, None, kind="block"),
        "   \n", _line(B, None, kind="load"),
    ])
    assert next_ttsn(log, A) == 4          # A's last serial is 3 (grey), after it only a load and a block
    assert next_ttsn(log, B) == 4
    assert next_ttsn(log, C.lower()) == 1  # only a load: no serial used yet; the number's case does not matter
    assert next_ttsn(log, "0000000000D4") == 1
    assert next_ttsn(tmp_path / "absent.log", A) == 1
    assert next_ttsn(_write(tmp_path / "empty.log", []), A) == 1


def test_records_across_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(txlog, "_BLOCK", 97, raising=False)   # lines straddle blocks everywhere
    lines = []
    for n in range(1, 41):
        lines += [_line(A, n), _line(B, 100 + n)]
    lines += [_line(B, 141, status="grey")] + [_line(C, None, kind="load")] * 5
    log = _write(tmp_path / "t.log", lines)
    assert (next_ttsn(log, A), next_ttsn(log, B), next_ttsn(log, C)) == (41, 142, 1)


def test_torn_last_line_is_refused_naming_it_as_the_full_scan_did(tmp_path: Path) -> None:
    lines = [_line(A, 1), _line(B, 1), "\n", _line(A, 2)]
    torn = _write(tmp_path / "torn.log", lines + [_line(B, 2)[:40]])
    with pytest.raises(InputError, match=r"torn\.log:5: incomplete last line"):
        next_ttsn(torn, A)
    with pytest.raises(InputError, match=r"torn\.log:5: incomplete last line"):
        next_ttsn(torn, B)
    # a blank piece after the last newline is not a record: ignored as before
    assert next_ttsn(_write(tmp_path / "blank.log", lines + ["  "]), A) == 3
    # a log of one torn line
    with pytest.raises(InputError, match=r"one\.log:1: incomplete last line"):
        next_ttsn(_write(tmp_path / "one.log", [_line(A, 1)[:-1]]), A)


def test_a_bad_line_read_on_the_way_is_named_by_its_line(tmp_path: Path) -> None:
    log = _write(tmp_path / "t.log", [_line(A, 1), _line(B, 1), "not json\n", _line(B, 2)])
    assert next_ttsn(log, B) == 3          # found before the bad line
    with pytest.raises(InputError, match=r"t\.log:3: not a JSON record"):
        next_ttsn(log, A)


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read through it."""

    def __init__(self, path: str, counter: list[int]) -> None:
        self._f = open(path, "rb")   # noqa: SIM115 (closed by close())
        self._counter = counter

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._counter[0] += len(data)
        return data

    def close(self) -> None:
        self._f.close()
        super().close()


@pytest.mark.parametrize("records", [2_000, 40_000])
def test_bytes_read_do_not_grow_with_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: int) -> None:
    head = [_line(A if n % 2 else B, n // 2 + 1) for n in range(records)]
    tail = [_line(A, 999_999), _line(B, 1_000_000, status="grey")] + [_line(C, None, kind="load")] * 50
    log = _write(tmp_path / "big.log", head + tail)
    assert log.stat().st_size > 512 * 1024            # many blocks even for the small one
    counter = [0]

    def counting_open(path: Any, mode: str = "r", *args: Any, encoding: str | None = None, **kwargs: Any) -> Any:
        raw = _Counting(str(path), counter)
        return raw if "b" in mode else io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding)

    monkeypatch.setattr(txlog, "open", counting_open, raising=False)
    assert next_ttsn(log, A) == 1_000_000
    assert next_ttsn(log, B) == 1_000_001
    # the last A record is 52 lines (~17 KB) from the end: each answer reads a block or two, the
    # same for a log 20 times larger (the full scan read the whole log, 0.6 or 13 MB, each time)
    assert counter[0] <= 256 * 1024
