"""`citycard keys`: keystores of master keys, encrypted at rest, and hardware security
modules over PKCS#11 (docs/keys.md).

No command here prints a key value or a PIN: only units, names, versions, algorithms and KCVs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InputError
from . import keyopts
from .common import audit
from .dualopts import approval_options, dual_control
from .keyopts import get_passphrase, keystore_label

ALGORITHMS = ("3des", "sm4")


def _pfile_option(f):
    return click.option("--passphrase-file", "passphrase_file", default=None, metavar="FILE",
                        type=click.Path(dir_okay=False),
                        help="Passphrase in the first line of FILE (else $CITYCARD_KEYSTORE_PASSPHRASE, "
                             "else a hidden prompt).")(f)


def _life_options(f):
    f = click.option("--expiry", default=None, metavar="DATE",
                     help="End date (YYYY-MM-DD): not used on or after it (key inventory).")(f)
    return click.option("--activation", default=None, metavar="DATE",
                        help="Activation date (YYYY-MM-DD): not used before it; new cards get the newest "
                             "active version from its activation on.")(f)


def _life(activation: str | None, expiry: str | None):
    from ..keys.inventory import Lifecycle, check_date

    return Lifecycle("active", check_date(activation, "--activation"), check_date(expiry, "--expiry"))


def _key_options(f):
    f = _life_options(f)
    f = click.option("--algorithm", type=click.Choice(ALGORITHMS), default="3des", show_default=True,
                     help="3des (2-key 3DES) or sm4; both 16 bytes.")(f)
    f = click.option("--version", "key_version", type=click.IntRange(1, 255), default=1, show_default=True,
                     help="Key version (new cards get the newest active version; docs/keys.md, key inventory).")(f)
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
    from ..keys.keystore import check_name

    check_name(unit, "--unit")
    check_name(name, "--name")
    store.check_can_add(unit, name, version)


@click.group()
def keys() -> None:
    """Keystores: master keys encrypted at rest (scrypt + AES-256-GCM). Never prints a key."""


@keys.command()
@click.argument("keystore", type=click.Path(dir_okay=False))
@click.option("--unit", default=None, help="Hold the keys of this service unit only (custody).")
@click.option("--production", is_flag=True,
              help="Mark the keystore for production: commands refuse it next to TEST KEYS.")
@_pfile_option
def create(keystore: str, unit: str | None, production: bool, passphrase_file: str | None) -> None:
    """Create an empty KEYSTORE (asks for a new passphrase)."""
    from ..keys.keystore import Keystore, KeystoreError, check_name

    if unit is not None:
        check_name(unit, "--unit")
    if Path(keystore).exists():
        raise KeystoreError(f"{keystore}: already exists (a keystore is never overwritten)")
    roster_fp = None
    roster_path = click.get_current_context().find_root().obj.roster
    if production and roster_path is not None:       # the roster of dual control, pinned in the header
        from ..bureau import Roster

        roster_fp = Roster.load(roster_path).fingerprint
    store = Keystore.create(keystore, _new_passphrase(keystore, passphrase_file), unit=unit,
                            purpose="production" if production else None, roster=roster_fp)
    store.close()
    audit("keys.keystore-created", keystore, unit=unit, purpose="production" if production else None,
          roster=roster_fp)
    click.echo(f"created keystore {keystore}" + (f" for unit {unit}" if unit else " (any unit)")
               + (", marked production" if production else "")
               + (f", roster {roster_fp} pinned" if roster_fp else ""))


def _read_component(ceremony, algorithm: str) -> bytes:
    """Ask for the next component until the ceremony accepts it; its KCV."""
    from ..keys.ceremony import MAX_ATTEMPTS, ComponentRejected, too_many_attempts
    from ..keys.keystore import KEY_LENGTH

    i, n = ceremony.next_index, ceremony.count
    for _attempt in range(MAX_ATTEMPTS):
        text = click.prompt(f"Component {i} of {n} ({2 * KEY_LENGTH} hex digits, hidden)", hide_input=True, err=True)
        try:
            return ceremony.add(str(text))
        except ComponentRejected as exc:
            click.echo(f"{exc}; type it again", err=True)
    raise too_many_attempts(i)


def _ceremony(command: str, where: str, unit: str, name: str, version: int, algorithm: str, components: int) -> bytes:
    """Key ceremony (rules in :mod:`citycard.keys.ceremony`): 2 or 3 clear components typed at
    hidden prompts, their KCVs shown, the combined key's KCV confirmed; returns the combined
    key (never printed)."""
    from ..keys.ceremony import Ceremony, weak
    from ..keys.keystore import key_kcv

    if not keyopts._interactive():
        raise InputError(f"{command}: components are typed at a hidden prompt, and there is no terminal "
                         "to ask on (`citycard keys generate` makes a random key)")
    click.echo(f"importing {unit}/{name} version {version} ({algorithm}) into {where} from {components} components")
    ceremony = Ceremony(components, algorithm)
    try:
        while not ceremony.complete:
            i = ceremony.next_index
            click.echo(f"component {i} KCV {_kcv(_read_component(ceremony, algorithm))}")
        key = ceremony.key()
    finally:
        ceremony.forget()
    kcv = _kcv(key_kcv(key, algorithm))
    click.echo(f"combined key KCV {kcv}")
    if weak(key, algorithm):
        click.echo("warning: the two halves of the key are equal (single-DES strength)", err=True)
    if not click.confirm(f"Store {unit}/{name} version {version} with KCV {kcv}?", default=False, err=True):
        click.echo("nothing stored", err=True)
        raise click.exceptions.Exit(1)
    return key


@keys.command("import")
@click.argument("keystore", type=click.Path(dir_okay=False))
@_key_options
@click.option("--components", type=click.IntRange(2, 3), default=2, show_default=True,
              help="Number of clear components (each custodian types theirs at a hidden prompt).")
@_pfile_option
@approval_options
def import_(keystore: str, unit: str, name: str, key_version: int, algorithm: str, activation: str | None,
            expiry: str | None, components: int, passphrase_file: str | None, approve: tuple[str, ...],
            approve_pfiles: tuple[str, ...]) -> None:
    """Key ceremony: enter a master key as 2 or 3 clear components; store their XOR.

    Each component's KCV and the combined KCV are shown for checking against the
    custodians' forms before the key is stored.
    """
    life = _life(activation, expiry)
    store = _open(keystore, passphrase_file)
    try:
        _precheck(store, unit, name, key_version)
        approval = dual_control("keys.import", f"{unit}/{name} version {key_version}", {"keystore": keystore},
                                production=store.production, approve=approve, pfiles=approve_pfiles,
                                pinned=(store.roster,))
        key = _ceremony("keys import", keystore, unit, name, key_version, algorithm, components)
        info = store.add(unit, name, key, version=key_version, algorithm=algorithm, life=life)
        del key
        store.save()
        audit("keys.imported", info.label, keystore=keystore, algorithm=info.algorithm, kcv=_kcv(info.kcv),
              components=components, **(approval.audit_details() if approval else {}))
        click.echo(f"stored {info.label} ({info.algorithm}, KCV {_kcv(info.kcv)}) in {keystore}")
    finally:
        store.close()


@keys.command()
@click.argument("keystore", type=click.Path(dir_okay=False))
@_key_options
@_pfile_option
def generate(keystore: str, unit: str, name: str, key_version: int, algorithm: str, activation: str | None,
             expiry: str | None, passphrase_file: str | None) -> None:
    """Store a new random master key (prints only its KCV)."""
    life = _life(activation, expiry)
    store = _open(keystore, passphrase_file)
    try:
        _precheck(store, unit, name, key_version)
        info = store.generate(unit, name, version=key_version, algorithm=algorithm, life=life)
        store.save()
        audit("keys.generated", info.label, keystore=keystore, algorithm=info.algorithm, kcv=_kcv(info.kcv))
        click.echo(f"generated {info.label} ({info.algorithm}, KCV {_kcv(info.kcv)}) in {keystore}")
    finally:
        store.close()


@keys.command("list")
@click.argument("keystore", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
@_pfile_option
def list_(keystore: str, as_json: bool, passphrase_file: str | None) -> None:
    """Show the units, names, versions, algorithms and KCVs of KEYSTORE (never a key).

    KEYSTORE may be an HSM token as a pkcs11: URI: its masters' labels, KCVs (computed by
    the token) and protection attributes.
    """
    if keystore.startswith("pkcs11:"):
        _list_hsm(keystore, as_json)
        return
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
    rows = [("UNIT", "NAME", "VERSION", "ALGORITHM", "KCV", "CREATED", "STATE")]
    rows += [(i.unit, i.name, str(i.version), i.algorithm, _kcv(i.kcv), i.created, _state(i.life)) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _state(life) -> str:
    why = life.refusal(issuing=True)
    return life.text() + (f" [{why.split(' (')[0]}]" if why and why != life.state else "")


@keys.command("set")
@click.argument("keystore")
@click.option("--unit", required=True, help="Service unit of the key, e.g. transit.")
@click.option("--name", required=True, help="Key name (role), e.g. dlk.")
@click.option("--version", "key_version", type=click.IntRange(1, 255), required=True, help="The key version.")
@click.option("--state", type=click.Choice(["active", "retired", "compromised"]), default=None,
              help="retired: no new cards (issued ones until its end date); compromised: never used again. "
                   "A retired version put back to active needs dual control (two --approve) under a roster.")
@_life_options
@_pfile_option
@approval_options
def set_(keystore: str, unit: str, name: str, key_version: int, state: str | None, activation: str | None,
         expiry: str | None, passphrase_file: str | None, approve: tuple[str, ...],
         approve_pfiles: tuple[str, ...]) -> None:
    """Key inventory: change a key version's state or dates (KEYSTORE: a keystore or an HSM
    token as a pkcs11: URI)."""
    from ..keys.inventory import check_date

    if state is None and activation is None and expiry is None:
        raise InputError("keys set: give --state, --activation or --expiry")
    activation, expiry = check_date(activation, "--activation"), check_date(expiry, "--expiry")
    label = f"{unit}/{name} version {key_version}"
    if keystore.startswith("pkcs11:"):       # a token's masters: its inventory object (docs/keys.md)
        src = _open_hsm(keystore)
        try:
            if key_version not in src.versions(unit, name):
                from ..keys import KeyError_
                raise KeyError_(f"{src.name} holds no key {label}")
            approval = _reactivation(src.life(unit, name, key_version), state, activation, expiry, label,
                                     {"token": keystore.split("?")[0]}, production=src.production, pinned=(),
                                     approve=approve, pfiles=approve_pfiles)
            info = src.set_lifecycle(unit, name, key_version, state=state, activation=activation, expiry=expiry)
            audit(f"keys.{'state-changed' if state else 'dates-changed'}", label,
                  token=src.name, kcv=_kcv(info.kcv), **info.life.as_dict(),
                  **(approval.audit_details() if approval else {}))
            click.echo(f"{label} in {src.name} (KCV {_kcv(info.kcv)}): {info.life.text()}")
        finally:
            src.close()
        return
    store = _open(keystore, passphrase_file)
    try:
        before = store.info(unit, name, key_version)
        approval = _reactivation(before.life, state, activation, expiry, before.label,
                                 {"keystore": keystore, "kcv": _kcv(before.kcv)}, production=store.production,
                                 pinned=(store.roster,), approve=approve, pfiles=approve_pfiles)
        info = store.set_lifecycle(unit, name, key_version, state=state, activation=activation, expiry=expiry)
        store.save()
        audit(f"keys.{'state-changed' if state else 'dates-changed'}", info.label, keystore=keystore,
              kcv=_kcv(info.kcv), **info.life.as_dict(), **(approval.audit_details() if approval else {}))
        click.echo(f"{info.label} (KCV {_kcv(info.kcv)}): {info.life.text()}")
    finally:
        store.close()


def _reactivation(life, state: str | None, activation: str | None, expiry: str | None, subject: str,
                  details: dict, *, production: bool, pinned: tuple, approve: tuple[str, ...],
                  pfiles: tuple[str, ...]):
    """Dual control of ``keys set``: putting a retired version back to active is reserved to two
    people under a roster (as importing or deleting a key); retiring or marking compromised is
    a protective step anyone takes alone (audited).  A compromised version stays compromised
    (the inventory refuses any other state).  Approvals given for a single-person change are
    refused, so nobody believes they were needed or recorded.  The change is checked first (a
    compromised version, dates out of order), before anyone is asked to approve it."""
    life.change(state=state, activation=activation, expiry=expiry)
    if life.state == "retired" and state == "active":
        return dual_control("keys.reactivate", subject, {**details, "from": "retired", "to": "active"},
                            production=production, approve=approve, pfiles=pfiles, pinned=pinned)
    if approve or pfiles:
        raise InputError("--approve: only putting a retired version back to active needs approvals "
                         "(retiring, marking compromised and dates are single-person)")
    return None


@keys.command()
@click.argument("keystore", type=click.Path(dir_okay=False))
@click.option("--unit", required=True, help="Service unit of the key to delete, e.g. transit.")
@click.option("--name", required=True, help="Key name (role) to delete, e.g. dlk.")
@click.option("--version", "key_version", type=click.IntRange(1, 255), required=True,
              help="Version of the key to delete (1..255).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_pfile_option
@approval_options
def delete(keystore: str, unit: str, name: str, key_version: int, yes: bool, passphrase_file: str | None,
           approve: tuple[str, ...], approve_pfiles: tuple[str, ...]) -> None:
    """Remove one key version from KEYSTORE."""
    store = _open(keystore, passphrase_file)
    try:
        info = store.info(unit, name, key_version)
        approval = dual_control("keys.delete", info.label, {"keystore": keystore, "kcv": _kcv(info.kcv)},
                                production=store.production, approve=approve, pfiles=approve_pfiles,
                                pinned=(store.roster,))
        if not yes and not click.confirm(f"Delete {info.label} (KCV {_kcv(info.kcv)}) from {keystore}?",
                                         default=False, err=True):
            click.echo("nothing deleted", err=True)
            raise click.exceptions.Exit(1)
        store.remove(unit, name, key_version)
        store.save()
        audit("keys.deleted", info.label, keystore=keystore, kcv=_kcv(info.kcv),
              **(approval.audit_details() if approval else {}))
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
    audit("keys.passphrase-changed", keystore)
    click.echo(f"changed the passphrase of {keystore}")


def demo_key_file() -> Path:
    """profiles/demo-keys.toml shipped inside the package (citycard.assets)."""
    from ..keys.demo import default_demo_key_file

    return default_demo_key_file()


@keys.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--unit", default=None, help="Only this unit's keys (a keystore restricted to it).")
@click.option("--from", "source", default=None, metavar="TOML", type=click.Path(dir_okay=False),
              help="The demo key file (default: profiles/demo-keys.toml shipped with citycard).")
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
    audit("keys.demo-written", out, unit=unit, keys=count, purpose="test")
    click.echo(f"warning: {out} holds the demo TEST KEYS published in {src.name}: never use them for real cards",
               err=True)
    click.echo(f"wrote {count} demo master keys" + (f" of unit {unit}" if unit else "") + f" to {out}")


# ---------------------------------------------------------------------------------- HSM
def _open_hsm(uri: str):
    from ..keys.pkcs11 import Pkcs11Source

    return Pkcs11Source.open(uri, keyopts.get_pin)


def _list_hsm(uri: str, as_json: bool) -> None:
    src = _open_hsm(uri)
    try:
        infos = src.keys()
        name, inside = src.name, src.derives_in_token
    finally:
        src.close()
    if as_json:
        click.echo(json.dumps({"source": name, "derivation": "in the token" if inside else "C_Encrypt fallback",
                               "keys": [i.as_dict() for i in infos]}, indent=2))
        return
    click.echo(f"HSM {name}: {len(infos)} master keys (per-card keys derived "
               f"{'in the token' if inside else 'by C_Encrypt: the token lacks CKM_DES3_ECB_ENCRYPT_DATA'})")
    if not infos:
        return
    rows = [("UNIT", "NAME", "VERSION", "KCV", "LABEL", "SENSITIVE", "EXTRACTABLE", "HALVES", "STATE")]
    rows += [(i.unit, i.name, str(i.version), _kcv(i.kcv), i.label, "yes" if i.sensitive else "NO",
              "YES" if i.extractable else "no", "yes" if i.direct else "", _state(i.life)) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _direct_pairs(values: tuple[str, ...]) -> set[tuple[str, str]]:
    out = set()
    for v in values:
        unit, sep, role = v.partition("/")
        if not sep or not unit or not role:
            raise InputError(f"--direct {v}: expected UNIT/ROLE, e.g. factory/transport")
        out.add((unit, role))
    return out


@keys.command("hsm-import")
@click.argument("uri")
@click.option("--from", "source", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Import every master of FILE: the demo key file (a .toml: TEST KEYS) or a keystore.")
@click.option("--unit", default=None, help="With --from: only this unit's keys. Without: the unit of the key "
                                           "typed as components (key ceremony).")
@click.option("--name", default=None, help="Key ceremony: the key name (role), e.g. dlk.")
@click.option("--version", "key_version", type=click.IntRange(1, 255), default=1, show_default=True,
              help="Key ceremony: the key version.")
@click.option("--components", type=click.IntRange(2, 3), default=2, show_default=True,
              help="Key ceremony: number of clear components typed at hidden prompts.")
@click.option("--direct", "direct", multiple=True, metavar="UNIT/ROLE",
              help="A master used on cards as it is (a transport key): store its single-DES halves too, for "
                   "line-protection MACs. Keys of unit 'factory' always are.")
@_pfile_option
@approval_options
def hsm_import(uri: str, source: str | None, unit: str | None, name: str | None, key_version: int, components: int,
               direct: tuple[str, ...], passphrase_file: str | None, approve: tuple[str, ...],
               approve_pfiles: tuple[str, ...]) -> None:
    """Load master keys into the HSM token URI (a pkcs11: URI) as sensitive, non-extractable objects.

    Either every master of a demo key file or keystore (--from; test tokens and first set-up),
    or one key typed as 2 or 3 clear components (--unit --name: key ceremony).  Prints each
    stored key's label and the KCV the token computes; never a key or the PIN.
    """
    from ..keys.keystore import check_name

    if not uri.startswith("pkcs11:"):
        raise InputError("hsm-import: the first argument is the token, as a pkcs11: URI")
    extra = _direct_pairs(direct)
    if source is None and (unit is None or name is None):
        raise InputError("hsm-import: give --from FILE (every master of a key file or keystore), or --unit and "
                         "--name (one key typed as components)")
    if source is not None and name is not None:
        raise InputError("hsm-import: --name is for a key typed as components, not with --from")
    if unit is not None:
        check_name(unit, "--unit")
    masters = None
    if source is not None:
        masters = _masters_of(source, unit, passphrase_file)
    subject = (f"{unit}/{name} version {key_version}" if source is None
               else f"{len(masters or [])} masters of {Path(source).name}")
    approval = dual_control("keys.hsm-import", subject, {"token": uri.split("?")[0]},
                            production=source is not None and _is_production(source),
                            approve=approve, pfiles=approve_pfiles, pinned=(_pinned_roster(source),))
    src = _open_hsm(uri)
    try:
        from ..keys.pkcs11 import DIRECT_UNITS
        from ..keys.pkcs11_import import PURPOSE_LABEL

        if masters is None:
            assert unit is not None and name is not None
            check_name(name, "--name")
            if key_version in src.versions(unit, name):
                raise InputError(f"{src.name}: already holds {unit}/{name} version {key_version} "
                                 "(a key is never replaced)")
            key = _ceremony("keys hsm-import", src.name, unit, name, key_version, "3des", components)
            masters = [((unit, name, key_version), key)]
            del key
        held = [m for m, _k in masters if m[2] in src.versions(m[0], m[1])]
        if held:
            listed = ", ".join(f"{u}/{r} version {v}" for u, r, v in held)
            raise InputError(f"{src.name}: already holds {listed} (a key is never replaced); nothing stored")
        if source is not None and _holds_test_keys(source):
            src.mark_test_keys()           # before the first test key goes in (docs/keys.md)
        for (u, r, v), key in masters:
            info = src.import_key(u, r, key, version=v, direct=u in DIRECT_UNITS or (u, r) in extra)
            audit("keys.hsm-imported", f"{u}/{r}", token=src.name, version=v, kcv=_kcv(info.kcv),
                  source="components" if source is None else Path(source).name,
                  **(approval.audit_details() if approval else {}))
            click.echo(f"stored {u}/{r} version {v} as {info.label!r} (KCV {_kcv(info.kcv)}, sensitive, "
                       f"non-extractable{', with its single-DES halves' if info.direct else ''})")
        count = len(masters)
        del masters
    finally:
        src.close()
    if source is not None and _holds_test_keys(source):
        click.echo(f"warning: {src.name} now holds the demo TEST KEYS of {Path(source).name}, and is marked so "
                   f"(a '{PURPOSE_LABEL}' object): commands warn when they use it, a production profile "
                   "refuses it; never use them for real cards", err=True)
    click.echo(f"imported {count} master key(s) into {src.name}")


def _is_production(source: str) -> bool:
    """A keystore whose header says ``purpose = "production"``."""
    if source.lower().endswith(".toml"):
        return False
    from ..keys.keystore import KeystoreError, read_header

    try:
        return read_header(source)[0].purpose == "production"
    except KeystoreError:
        return False


def _pinned_roster(source: str | None) -> str | None:
    """The roster a keystore's header pins (None for a key file or components)."""
    if source is None or source.lower().endswith(".toml"):
        return None
    from ..keys.keystore import KeystoreError, read_header

    try:
        return read_header(source)[0].roster
    except KeystoreError:
        return None


def _holds_test_keys(source: str) -> bool:
    """The demo key file, or a keystore whose header says ``purpose = "test"`` (``keys demo``)."""
    if source.lower().endswith(".toml"):
        return True
    from ..keys.keystore import KeystoreError, read_header

    try:
        return read_header(source)[0].purpose == "test"
    except KeystoreError:
        return False


def _masters_of(source: str, unit: str | None, passphrase_file: str | None) -> list:
    """((unit, role, version), key) of every master of a demo key file or keystore."""
    from ..keys import clear_masters

    return clear_masters(source, lambda header: get_passphrase(keystore_label(header), passphrase_file), unit=unit)
