"""Crash-safe file writes shared by the card images, keystores and anything else that must
never be left half written."""

from __future__ import annotations

import contextlib
import os
import tempfile
import typing
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a temporary file (``mode``) in the same folder, fsync it, rename it
    over ``path`` and fsync the folder.  On any failure the old file is left as it was and
    the temporary file removed; the OSError propagates."""
    with atomic_file(path, mode) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int = 0o600) -> typing.Iterator[typing.BinaryIO]:
    """A binary file to write (and read back) that replaces ``path`` only when the block ends
    without an exception: written to a temporary file in the same folder, fsynced, renamed
    over ``path``, the folder fsynced.  For content written in pieces (constant memory)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def open_private_text(path: str | os.PathLike[str], *, append: bool = False) -> "typing.TextIO":
    """A UTF-8 text file opened for writing (``append``: at its end, else emptied), created
    readable by its owner only (``0600``): for transcripts, which hold cardholder data (issue 18
    point 8).  An existing file keeps its mode."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, "a" if append else "w", encoding="utf-8")


def readable_by_others(path: str | os.PathLike[str]) -> bool:
    """Whether a file's mode lets its group or other users read it."""
    return bool(os.stat(path).st_mode & 0o044)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file, read in blocks (constant memory): data files, terminal logs."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()
