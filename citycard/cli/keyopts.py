"""``--keys`` options: key sources for the commands that need master keys, and keystore
passphrases.

A ``--keys SOURCE`` is an encrypted keystore file (``citycard keys``), the clear demo key
file (a ``.toml`` name: TEST KEYS ONLY), or a hardware security module as an RFC 7512
``pkcs11:`` URI (docs/keys.md, "HSM"): its PIN from the URI's ``pin-source``, else
``CITYCARD_HSM_PIN``, else a hidden prompt naming the token.

Passphrase of each keystore, first found:

1. ``--passphrase-file FILE`` (its first line): given once it serves every keystore;
   given once per keystore it pairs with the keystores in ``--keys`` order (custody:
   each unit's custodian keeps their own file);
2. the environment variable ``CITYCARD_KEYSTORE_PASSPHRASE`` (automation; one value for
   every keystore);
3. a hidden prompt on the terminal naming the keystore (and its unit), one per keystore;
   with no terminal, a clear error instead of waiting on standard input.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable

import click

from ..errors import InputError

if TYPE_CHECKING:
    from ..keys import KeyRing
    from ..keys.keystore import KeystoreHeader

PASSPHRASE_ENV = "CITYCARD_KEYSTORE_PASSPHRASE"
_META = "citycard.keys.passphrase_files"


def _interactive() -> bool:
    """Whether a hidden prompt can be answered (tests replace this)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def read_passphrase_file(path: str) -> str:
    """The first line of ``path`` without its line ending."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            line = f.readline()
    except FileNotFoundError:
        raise InputError(f"--passphrase-file {path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"--passphrase-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"--passphrase-file {path}: cannot read it ({exc.strerror})") from None
    line = line.rstrip("\r\n")
    if not line:
        raise InputError(f"--passphrase-file {path}: the first line is empty")
    from ..fsutil import readable_by_others

    if readable_by_others(path):
        click.echo(f"citycard: warning: --passphrase-file {path} can be read by other users "
                   f"(chmod 600 {path})", err=True)
    return line


def get_passphrase(what: str, passphrase_file: str | None = None, *, new: bool = False,
                   use_env: bool = True) -> str:
    """A keystore passphrase from the file, the environment or a hidden prompt (in that
    order).  ``new`` asks twice when prompting (creating a keystore)."""
    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file)
    if use_env:
        env = os.environ.get(PASSPHRASE_ENV)
        if env:
            return env
    if not _interactive():
        how = f"--passphrase-file FILE or set {PASSPHRASE_ENV}" if use_env else "the passphrase file option"
        raise InputError(f"{what}: no passphrase: give {how} (no terminal to ask on)")
    label = "New passphrase" if new else "Passphrase"
    return click.prompt(f"{label} for keystore {what}", hide_input=True, confirmation_prompt=new, err=True)


def get_pin(token: str) -> str:
    """The PIN of an HSM token (when neither its URI nor ``CITYCARD_HSM_PIN`` gives one): a
    hidden prompt naming the token, or a clear error with no terminal."""
    from ..keys.pkcs11 import PIN_ENV

    if not _interactive():
        raise InputError(f"{token}: no PIN: give pin-source=env:NAME or pin-source=file:PATH in the URI, or set "
                         f"{PIN_ENV} (no terminal to ask on)")
    return click.prompt(f"PIN for {token}", hide_input=True, err=True)


def keystore_label(header: KeystoreHeader) -> str:
    return f"{header.path}" + (f" (unit {header.unit})" if header.unit else "")


def _stash_files(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    ctx.meta[_META] = tuple(value or ())
    return value


def passphrase_files_option(f: Callable) -> Callable:
    """``--passphrase-file FILE`` (repeatable), kept in the click context for :func:`open_keys`
    so the commands using ``--keys`` need no parameter for it."""
    return click.option("--passphrase-file", "passphrase_files", multiple=True, metavar="FILE",
                        expose_value=False, callback=_stash_files,
                        help="Keystore passphrase in the first line of FILE: once for every keystore, or "
                             f"once per keystore in --keys order. Else ${PASSPHRASE_ENV}, else a prompt.")(f)


def keys_option(required: bool = True) -> Callable:
    keys = click.option("-k", "--keys", "keys", multiple=True, required=required, metavar="SOURCE",
                        help="Key source (repeatable, e.g. one keystore per service unit): a keystore made "
                             "by `citycard keys`, an HSM as pkcs11:token=LABEL?module-path=LIB&pin-source=env:VAR "
                             "(docs/keys.md), or the demo key file profiles/demo-keys.toml (TEST KEYS).")

    def decorate(f: Callable) -> Callable:
        return keys(passphrase_files_option(f))

    return decorate


def _pair_files(keystores: list[str], files: tuple[str, ...]) -> list[str | None]:
    if not files:
        return [None] * len(keystores)
    if not keystores:
        raise InputError("--passphrase-file given, but no --keys source is a keystore")
    if len(files) == 1:
        return [files[0]] * len(keystores)
    if len(files) != len(keystores):
        raise InputError(f"--passphrase-file given {len(files)} times for {len(keystores)} keystores: give it "
                         "once (for all of them) or once per keystore, in --keys order")
    return list(files)


def open_keys(sources: tuple[str, ...], passphrase_files: tuple[str, ...] | None = None) -> KeyRing:
    """A :class:`~citycard.keys.KeyRing` over the ``--keys`` sources, each keystore opened with
    its passphrase (see the module docstring)."""
    from ..keys import is_keystore_source, open_ring

    if not sources:
        raise InputError("no key source given (--keys)")
    if passphrase_files is None:
        ctx = click.get_current_context(silent=True)
        passphrase_files = ctx.meta.get(_META, ()) if ctx is not None else ()
    keystores = [s for s in sources if is_keystore_source(s)]
    asks = [lambda header, f=pfile: get_passphrase(keystore_label(header), f)
            for pfile in _pair_files(keystores, passphrase_files)]
    return open_ring(sources, asks, pin=get_pin)


def warn_test_keys(ring: KeyRing, spec: object | None = None, *, what: str = "cards") -> None:
    """Print the library's TEST KEYS warning on stderr (it is also logged), or stop with its
    refusal when the profile (``[profile] production = true``) or a keystore is marked
    production (:func:`citycard.keys.check_test_keys` decides)."""
    from ..keys import check_test_keys

    message = check_test_keys(ring, production=bool(getattr(spec, "production", False)), what=what)
    if message:
        click.echo(f"citycard: warning: {message}", err=True)
