"""Talking to a card by hand and by script: the interactive shell (``citycard shell``) and
the script language (``citycard script run``), on one engine.

* :mod:`.card` — :class:`CardContext`: a session with the profile's names, key derivation,
  and every exchange observed;
* :mod:`.pattern` — expected SWs and response patterns;
* :mod:`.script` — parsing and static checks of scripts (and of citycard transcripts);
* :mod:`.runner` — :class:`Runner`: executing statements, variables, stopping at the first
  mismatch;
* :mod:`.record` — transcripts that replay as scripts;
* :mod:`.interactive` — the ``cmd``/``readline`` shell.

The format is described in docs/script.md.
"""

from .card import CardContext, Exchange, exchange_lines
from .pattern import ResponsePattern, SwPattern
from .record import Recorder
from .runner import Runner
from .script import Script, ScriptError, ScriptFailure, check, parse

__all__ = ["CardContext", "Exchange", "Recorder", "ResponsePattern", "Runner", "Script", "ScriptError",
           "ScriptFailure", "SwPattern", "check", "exchange_lines", "parse"]
