"""The card after issuance (issue 23): the card register (states, who/when/why), hotlists
for terminals.  docs/lifecycle.md."""

from .hotlist import HotlistError, TerminalHotlist, read_hotlist, write_hotlist
from .register import HOTLISTED, STATES, CardRecord, Register, RegisterError
from .replace import ReplacementRefused, ReplaceResult, check_replaceable, replace_card

__all__ = ["ReplaceResult", "ReplacementRefused", "check_replaceable", "replace_card", "CardRecord", "HOTLISTED", "HotlistError", "Register", "RegisterError", "STATES", "TerminalHotlist",
           "read_hotlist", "write_hotlist"]
