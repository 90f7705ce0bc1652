"""`citycard keys`: keystores of master keys, encrypted at rest (docs/keys.md).

No command here prints a key value: only units, names, versions, algorithms and KCVs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InputError
from . import keyopts
from .keyopts import get_passphrase, keystore_label

ALGORITHMS = ("3des", "sm4")


def _pfile_option(f):
    return click.option("--passphrase-file", "passphrase_file", default=None, metavar="FILE",
                        type=click.Path(dir_okay=False),
                        help="Passphrase in the first line of FILE (else $CITYCARD_KEYSTORE_PASSPHRASE, "
                             "else a hidden prompt).")(f)


def _key_options(f):
    f = click.option("--algorithm", type=click.Choice(ALGORITHMS), default="3des", show_default=True,
                     help="3des (2-key 3DES) or sm4; both 16 bytes.")(f)
    f = click.option("--version", "key_version", type=click.IntRange(1, 255), default=1, show_default=True,
                     help="Key version (the newest version is used for derivation).")(f)
    f = click.option("--name", required=True, help="Key name (role), e.g. dlk, master, damk.")(f)
    f = click.option("--unit", required=True, help="Service unit owning the key, e.g. transit.")(f)
    return f


def _open(path: str, passphrase_file: str | None):
    from ..keys.keystore import Keystore

    return Keystore.open(Path(path), lambda header: get_passphrase(keystore_label(header), passphrase_file))


def _new_passphrase(what: str, passphrase_file: str | None) -> str:
    from ..keys.keystore import check_passphrase

    pw = get_passphrase(what, passphrase_file, new=True)
    check_passphrase(pw, new=True)
    return pw


def _kcv(b: bytes) -> str:
    return b.hex().upper()


def _precheck(store, unit: str, name: str, version: int) -> None:
    """Refuse before any key material is typed or drawn."""
    from ..keys.keystore import KeystoreError, check_name

    check_name(unit, "--unit")
    check_name(name, "--name")
    if store.unit is not None and unit != store.unit:
        raise KeystoreError(f"{store.name}: this keystore holds the keys of unit {store.unit!r} only, not {unit!r}")
    if version in store.versions(unit, name):
        raise KeystoreError(f"{store.name}: already holds {unit}/{name} version {version} "
                            "(give another --version, or delete it first)")


@click.group()
def keys() -> None:
    """Keystores: master keys encrypted at rest (scrypt + AES-256-GCM). Never prints a key."""


@keys.command()
@click.argument("keystore", type=click.Path(dir_okay=False))
@click.option("--unit", default=None, help="Hold the keys of this service unit only (custody).")
@_pfile_option
def create(keystore: str, unit: str | None, passphrase_file: str | None) -> None:
    """Create an empty KEYSTORE (asks for a new passphrase)."""
    from ..keys.keystore import Keystore, KeystoreError, check_name

    if unit is not None:
        check_name(unit, "--unit")
    if Path(keystore).exists():
        raise KeystoreError(f"{keystore}: already exists (a keystore is never overwritten)")
    store = Keystore.create(keystore, _new_passphrase(keystore, passphrase_file), unit=unit)
    store.close()
    click.echo(f"created keystore {keystore}" + (f" for unit {unit}" if unit else " (any unit)"))


def _read_component(i: int, n: int, algorithm: str) -> bytes:
    from ..keys.keystore import KEY_LENGTH

    digits = 2 * KEY_LENGTH
    for _attempt in range(3):
        text = click.prompt(f"Component {i} of {n} ({digits} hex digits, hidden)", hide_input=True, err=True)
        clean = "".join(str(text).split())
        try:
            comp = bytes.fromhex(clean)
        except ValueError:
            click.echo(f"component {i}: not hex digits; type it again", err=True)
            continue
        if len(comp) != KEY_LENGTH:
            click.echo(f"component {i}: {len(clean)} hex digits, expected {digits}; type it again", err=True)
            continue
        if not any(comp):
            click.echo(f"component {i}: all zeros; type it again", err=True)
            continue
        return comp
    raise InputError(f"component {i}: no valid component after 3 attempts; nothing stored")


@keys.command("import")
@click.argument("keystore", type=click.Path(dir_okay=False))
@_key_options
@click.option("--components", type=click.IntRange(2, 3), default=2, show_default=True,
              help="Number of clear components (each custodian types theirs at a hidden prompt).")
@_pfile_option
def import_(keystore: str, unit: str, name: str, key_version: int, algorithm: str, components: int,
            passphrase_file: str | None) -> None:
    """Key ceremony: enter a master key as 2 or 3 clear components; store their XOR.

    Each component's KCV and the combined KCV are shown for checking against the
    custodians' forms before the key is stored.
    """
    from .. import crypto
    from ..keys.keystore import key_kcv

    store = _open(keystore, passphrase_file)
    try:
        _precheck(store, unit, name, key_version)
        if not keyopts._interactive():
            raise InputError("keys import: components are typed at a hidden prompt, and there is no terminal "
                             "to ask on (`citycard keys generate` makes a random key)")
        click.echo(f"importing {unit}/{name} version {key_version} ({algorithm}) into {keystore} "
                   f"from {components} components")
        parts: list[bytes] = []
        for i in range(1, components + 1):
            comp = _read_component(i, components, algorithm)
            for j, earlier in enumerate(parts, 1):
                if comp == earlier:
                    raise InputError(f"component {i} equals component {j}; nothing stored")
            parts.append(comp)
            click.echo(f"component {i} KCV {_kcv(key_kcv(comp, algorithm))}")
        key = parts[0]
        for comp in parts[1:]:
            key = crypto.xor(key, comp)
        if not any(key):
            raise InputError("the components combine to an all-zero key; nothing stored")
        kcv = _kcv(key_kcv(key, algorithm))
        click.echo(f"combined key KCV {kcv}")
        if algorithm == "3des" and key[:8] == key[8:]:
            click.echo("warning: the two halves of the key are equal (single-DES strength)", err=True)
        if not click.confirm(f"Store {unit}/{name} version {key_version} with KCV {kcv}?", default=False,
                             err=True):
            click.echo("nothing stored", err=True)
            raise click.exceptions.Exit(1)
        info = store.add(unit, name, key, version=key_version, algorithm=algorithm)
        del key, parts
        store.save()
        click.echo(f"stored {info.label} ({info.algorithm}, KCV {_kcv(info.kcv)}) in {keystore}")
    finally:
        store.close()


@keys.command()
@click.argument("keystore", type=click.Path(dir_okay=False))
@_key_options
@_pfile_option
def generate(keystore: str, unit: str, name: str, key_version: int, algorithm: str,
             passphrase_file: str | None) -> None:
    """Store a new random master key (prints only its KCV)."""
    store = _open(keystore, passphrase_file)
    try:
        _precheck(store, unit, name, key_version)
        info = store.generate(unit, name, version=key_version, algorithm=algorithm)
        store.save()
        click.echo(f"generated {info.label} ({info.algorithm}, KCV {_kcv(info.kcv)}) in {keystore}")
    finally:
        store.close()


@keys.command("list")
@click.argument("keystore", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@_pfile_option
def list_(keystore: str, as_json: bool, passphrase_file: str | None) -> None:
    """Show the units, names, versions, algorithms and KCVs of KEYSTORE (never a key)."""
    store = _open(keystore, passphrase_file)
    try:
        infos = store.keys()
        unit = store.unit
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"keystore": keystore, "unit": unit, "keys": [i.as_dict() for i in infos]},
                              indent=2))
        return
    click.echo(f"keystore {keystore}" + (f" (unit {unit} only)" if unit else "") + f": {len(infos)} keys")
    if not infos:
        return
    rows = [("UNIT", "NAME", "VERSION", "ALGORITHM", "KCV", "CREATED")]
    rows += [(i.unit, i.name, str(i.version), i.algorithm, _kcv(i.kcv), i.created) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


@keys.command()
@click.argument("keystore", type=click.Path(dir_okay=False))
@click.option("--unit", required=True)
@click.option("--name", required=True)
@click.option("--version", "key_version", type=click.IntRange(1, 255), required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_pfile_option
def delete(keystore: str, unit: str, name: str, key_version: int, yes: bool, passphrase_file: str | None) -> None:
    """Remove one key version from KEYSTORE."""
    store = _open(keystore, passphrase_file)
    try:
        info = store.info(unit, name, key_version)
        if not yes and not click.confirm(f"Delete {info.label} (KCV {_kcv(info.kcv)}) from {keystore}?",
                                         default=False, err=True):
            click.echo("nothing deleted", err=True)
            raise click.exceptions.Exit(1)
        store.remove(unit, name, key_version)
        store.save()
        click.echo(f"deleted {info.label} (KCV {_kcv(info.kcv)}) from {keystore}")
    finally:
        store.close()


@keys.command()
@click.argument("keystore", type=click.Path(dir_okay=False))
@_pfile_option
@click.option("--new-passphrase-file", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="The new passphrase in the first line of FILE (else a hidden prompt, asked twice).")
def passphrase(keystore: str, passphrase_file: str | None, new_passphrase_file: str | None) -> None:
    """Change the passphrase of KEYSTORE (re-encrypted under a fresh salt)."""
    from ..keys.keystore import check_passphrase

    store = _open(keystore, passphrase_file)
    try:
        new = get_passphrase(f"{keystore}", new_passphrase_file, new=True, use_env=False)
        check_passphrase(new, new=True)
        store.change_passphrase(new)
        store.save()
    finally:
        store.close()
    click.echo(f"changed the passphrase of {keystore}")


def demo_key_file() -> Path:
    """profiles/demo-keys.toml of the source tree this package runs from."""
    import citycard

    return Path(citycard.__file__).resolve().parent.parent / "profiles" / "demo-keys.toml"


@keys.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--unit", default=None, help="Only this unit's keys (a keystore restricted to it).")
@click.option("--from", "source", default=None, metavar="TOML", type=click.Path(dir_okay=False),
              help="The demo key file (default: profiles/demo-keys.toml of the source tree).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@_pfile_option
def demo(out: str, unit: str | None, source: str | None, force: bool, passphrase_file: str | None) -> None:
    """Write a keystore OUT holding the demo profile's TEST master keys."""
    from ..keys.keystore import KeystoreError, check_name, write_demo

    src = Path(source) if source else demo_key_file()
    if not src.is_file():
        raise InputError(f"{src}: no demo key file here (give --from profiles/demo-keys.toml)")
    if unit is not None:
        check_name(unit, "--unit")
    if Path(out).exists() and not force:
        raise KeystoreError(f"{out}: already exists (--force overwrites it)")
    store = write_demo(out, _new_passphrase(out, passphrase_file), src, unit=unit, overwrite=force)
    count = len(store.keys())
    store.close()
    click.echo(f"warning: {out} holds the demo TEST KEYS published in {src.name}: never use them for real cards",
               err=True)
    click.echo(f"wrote {count} demo master keys" + (f" of unit {unit}" if unit else "") + f" to {out}")
