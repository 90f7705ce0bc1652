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


class CardError(CitycardError):
    """The card answered a command with an unexpected status word.

    ``sw`` stays inspectable (``exc.sw == StatusWord.RECORD_NOT_FOUND``), so callers test
    the SW instead of parsing the message.  ``command`` names the command ("SELECT transit"),
    ``expected`` the SW that was wanted when it is not ``9000``.  ``message`` replaces the
    default text where a caller words it its own way.
    """

    def __init__(self, sw: int, command: str = "", *, expected: int | None = None,
                 message: str | None = None) -> None:
        # imported here: a command that never meets a card does not build the status-word
        # table at start-up (issue 19 item 3)
        from .sw import describe_sw

        self.sw = sw
        self.meaning = describe_sw(sw)
        self.command = command
        self.expected = expected
        if message is None:
            where = f"{command}: " if command else ""
            exp = f" (expected {expected:04X})" if expected is not None else ""
            message = f"{where}card answered {sw:04X}: {self.meaning}{exp}"
        super().__init__(message)
