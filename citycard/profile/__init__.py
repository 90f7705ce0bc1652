"""Profiles: TOML → :class:`~citycard.spec.CardSpec`, with errors that name file, line and key path.

The format is described in docs/profile.md.  Read with the standard library's
``tomllib``; since it keeps no positions, :func:`locate` finds the line of a key path
in the text (table headers, dotted keys and inline tables).

Where each part lives:

- :mod:`.fields`: :class:`ProfileError`, :func:`locate`, typed readers of values (integers,
  FIDs, access conditions, hex);
- :mod:`.loading`: the TOML, ``include`` files, merging templates;
- :mod:`.card`: ``[profile]``, ``[card]``, ``[units]`` and the checks across applications;
- :mod:`.dfs`: the MF and each application, and the checks inside one DF;
- :mod:`.keys` and :mod:`.files`: one key or PIN, one file;
- :mod:`.bindings`: ``$column`` and ``@computed`` values;
- :mod:`.checks`: a loaded profile against a data file's columns and the key sources.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..spec import CardSpec
from .bindings import COMPUTED, binding_columns
from .card import build_card
from .checks import check_columns, check_keys
from .dfs import MF_NAME
from .fields import ProfileError, locate
from .keys import pin_to_bytes
from .loading import read_document

__all__ = [
    "COMPUTED",
    "MF_NAME",
    "ProfileError",
    "binding_columns",
    "check_columns",
    "check_keys",
    "load_profile",
    "locate",
    "parse_profile",
    "pin_to_bytes",
    "with_source",
]


def load_profile(path: str | Path) -> CardSpec:
    """Read and validate a profile file; a name of ``citycard.assets.NAMED_PROFILES`` (``demo``,
    ``pboc-ep``) that is not a file here means the profile shipped in the package."""
    path = Path(path)
    if not path.exists():
        from ..assets import named_profile

        path = named_profile(str(path)) or path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError("no such profile", file=str(path)) from None
    except OSError as exc:
        raise ProfileError(exc.strerror or str(exc), file=str(path)) from None
    return parse_profile(text, str(path), base=path.parent)


def parse_profile(text: str, file: str = "<profile>", *, base: Path | None = None) -> CardSpec:
    """Validate a profile's text (``file`` names it in errors; ``base``: where includes are)."""
    ctx, data = read_document(text, file, base)
    return build_card(ctx, data)


def with_source(spec: CardSpec, source: str) -> CardSpec:
    return replace(spec, source=source)
