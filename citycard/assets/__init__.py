"""The demo files that ship inside the citycard package.

In the source tree they live in ``profiles/`` and ``examples/`` (the README's paths);
``citycard/assets/profiles`` and ``citycard/assets/examples`` are symbolic links to
them, and the wheel carries copies (``[tool.setuptools.package-data]``), so the same
names work wherever citycard is installed:

* ``profiles/citycard.toml``: the demo citizen card profile; ``profiles/pboc-ep.toml``:
  an MF and one PBOC purse;
* ``profiles/demo-keys.toml``: the demo master keys in clear, **TEST KEYS ONLY**
  (published with the code; never personalize a real card with them);
* ``profiles/citycard-sample.csv``: 240 synthetic cardholders;
* ``examples/*.cardscript``: the example APDU scripts.

``asset_path("demo-keys.toml")`` (a bare name means ``profiles/``) gives the installed
file; ``copy_assets(DIR)`` (the CLI: ``citycard demo-assets DIR``) copies them out as
``DIR/profiles/...`` and ``DIR/examples/...``, so the README's commands run as written
inside DIR.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from ..errors import InputError

__all__ = ["ASSET_DIRS", "DEMO_KEYS", "DEMO_PROFILE", "NAMED_PROFILES", "SAMPLE_DATA", "asset_names",
           "asset_path", "asset_root", "copy_assets", "named_profile"]

ASSET_DIRS = ("profiles", "examples")
DEMO_PROFILE = "profiles/citycard.toml"
DEMO_KEYS = "profiles/demo-keys.toml"   # TEST KEYS ONLY
SAMPLE_DATA = "profiles/citycard-sample.csv"
NAMED_PROFILES = {"demo": DEMO_PROFILE, "citycard": DEMO_PROFILE, "pboc-ep": "profiles/pboc-ep.toml"}
"""Short names of the shipped profiles (``demo`` is the demo citizen card)."""


def asset_root() -> Path:
    """The folder holding ``profiles/`` and ``examples/`` of the installed package."""
    root = importlib.resources.files(__name__)
    if not isinstance(root, Path):  # a zip import: the CLI needs real files
        raise InputError(f"citycard is installed as {root}, not as files: demo assets need a normal install")
    return root


def _relative(name: str) -> str:
    name = name.replace("\\", "/").lstrip("/")
    return name if "/" in name else f"profiles/{name}"


def asset_path(name: str) -> Path:
    """The installed demo file ``name``: ``"demo-keys.toml"`` (a bare name is in
    ``profiles/``), ``"profiles/citycard.toml"`` or ``"examples/transit.cardscript"``."""
    rel = _relative(name)
    parts = rel.split("/")
    if parts[0] not in ASSET_DIRS or ".." in parts:
        raise InputError(f"{name}: not a citycard demo asset (they are in {' and '.join(ASSET_DIRS)})")
    path = asset_root().joinpath(*parts)
    if not path.is_file():
        raise InputError(f"{name}: no such citycard demo asset; there are: {', '.join(asset_names())}")
    return path


def named_profile(name: str) -> Path | None:
    """The shipped profile called ``name`` (``demo``, ``citycard``, ``pboc-ep``), or None."""
    rel = NAMED_PROFILES.get(name)
    return asset_path(rel) if rel is not None else None


def asset_names() -> list[str]:
    """Every demo file, as a path relative to the asset root (``profiles/citycard.toml``)."""
    root = asset_root()
    names: list[str] = []
    for folder in ASSET_DIRS:
        base = root / folder
        if base.is_dir():
            names += [f"{folder}/{p.name}" for p in base.iterdir()
                      if p.is_file() and not p.name.startswith((".", "__"))]
    return sorted(names)


def copy_assets(dest: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy every demo file to ``dest/profiles/...`` and ``dest/examples/...``.

    Refuses (changing nothing) when a target exists with other content, unless
    ``overwrite``; identical files are left as they are.  Returns the files written.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest}: not a directory")
    plan: list[tuple[Path, bytes]] = []
    for rel in asset_names():
        content = asset_path(rel).read_bytes()
        target = dest.joinpath(*rel.split("/"))
        if target.is_dir():
            raise InputError(f"{target}: is a directory")
        if target.exists() and target.read_bytes() != content and not overwrite:
            raise InputError(f"{target}: already exists with other content (--force overwrites it)")
        plan.append((target, content))
    written = []
    for target, content in plan:
        if target.exists() and target.read_bytes() == content:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(target)
    return written
