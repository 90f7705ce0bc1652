"""The one exception family of citycard (DESIGN.md, house rules).

Every error a user can cause derives from :class:`CitycardError`; the CLI turns
it into one line and exit code 2.  Messages never carry key values or PINs.
"""

from __future__ import annotations


class CitycardError(Exception):
    """Root of all citycard errors."""


class InputError(CitycardError, ValueError):
    """Bad user input (hex, lengths, options). The message names where it is."""


class TransportError(CitycardError):
    """A reader or connection problem; carries the reader name when known."""

    def __init__(self, message: str, reader: str | None = None) -> None:
        super().__init__(message)
        self.reader = reader


class NoReaderError(TransportError):
    """No PC/SC reader matched, or the PC/SC service is unavailable."""
