"""`citycard profile check|show`."""

from __future__ import annotations

import json

import click

from ..spec import KeySpec, ac_text
from .keyopts import keys_option, open_keys


@click.group()
def profile() -> None:
    """Card profiles: check and show them."""


@profile.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", default=None, metavar="CSV", help="Also check the bindings against this data file.")
@click.option("--encoding", default="utf-8", show_default=True, help="Data file encoding (utf-8, gb18030, gbk).")
@click.option("-j", "--journal", "journal_url", default=None, metavar="FILE|postgresql://...",
              help="With --data: also refuse cardholders already issued in this journal (as batch run does).")
@click.option("--reissue", default=None, metavar="ROWS|all", help="With --journal: rows named as re-issues.")
@keys_option(required=False)
def check(path: str, data_path: str | None, encoding: str, journal_url: str | None, reissue: str | None,
          keys: tuple[str, ...]) -> None:
    """Validate PROFILE (and, if given, against a data file and key sources).

    With --data every row is checked by the same validator as `batch run`, and every bad
    row is reported (row and column), one line each."""
    from ..errors import InputError
    from ..perso.job import check_profile, data_problems, load_data
    from ..perso.validate import ProblemTally, parse_rows

    spec = check_profile(path)
    if data_path is not None:
        data = load_data(spec, data_path, encoding)
        journal = None
        if journal_url is not None:
            from ..perso.journal import Journal

            journal = Journal(journal_url, create=False)
        try:
            from ..fsutil import file_sha256
            from ..perso.batch import batch_name

            own = batch_name(data.path, file_sha256(data.path))   # the batch run of this very file
            issued = (lambda ids: journal.issued(ids, own)) if journal is not None else None
            again = parse_rows(reissue) if reissue else None
            tally = ProblemTally(keep=0)
            for p in data_problems(spec, data, issued=issued, reissue=again):
                click.echo(str(p), err=True)      # every problem, as it is found
                tally.add(p)
        finally:
            if journal is not None:
                journal.close()
        if tally.count:
            raise InputError(f"{tally.rows} bad row(s) in {data_path} ({tally.count} problem(s))")
    if keys:
        check_profile(path, None, lambda: open_keys(keys))
    n_files = sum(len(df.files) for df in spec.dfs())
    n_keys = sum(len(df.keys) for df in spec.dfs())
    needs = (f"; needs a card whose COS does SM4 line protection (simulated: sim new --model {spec.card_model}; "
             "docs/sm4.md)" if spec.line_alg == "sm4" else "")
    click.echo(f"{path}: ok ({len(spec.apps)} applications, {n_files} files, {n_keys} keys){needs}")


@profile.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
def show(path: str, as_json: bool) -> None:
    """Show PROFILE as a tree: DFs, files with sizes and ACs, key sets."""
    from ..profile import load_profile

    spec = load_profile(path)
    if as_json:
        click.echo(json.dumps(_tree(spec), indent=2, ensure_ascii=False))
        return
    click.echo(f"{spec.name}: {spec.title}")
    click.echo(f"  card serial: {spec.serial_prefix} + card number ({spec.serial_digits} digits); "
               f"valid {spec.validity_years} years; rerun: {spec.rerun}"
               + ("; line protection: SM4 (docs/sm4.md)" if spec.line_alg == "sm4" else ""))
    for df in spec.dfs():
        is_mf = df.fid == 0x3F00
        owner = f", unit {df.unit}" if df.unit else ""
        head = "MF 3F00" if is_mf else f"DF {df.fid:04X} {df.name} AID {df.aid.hex().upper()}"
        click.echo(f"{head}  space {df.space} (files {df.used_space()}), create {ac_text(df.create_ac)}, "
                   f"erase {ac_text(df.erase_ac)}{owner}")
        click.echo(f"  key file {df.keyfile_fid:04X}: {df.keyfile_space} bytes, add {ac_text(df.keyfile_add_ac)}")
        for k in df.keys:
            src = f"from {k.master[0]}/{k.master[1]}" if k.master else "PIN"
            click.echo(f"    key {k.name}: type {k.type_byte:02X} id {k.kid:02X}, usage {ac_text(k.usage_ac)}, "
                       f"change {ac_text(k.change_ac)}, {src}, written {k.write}"
                       + _alg_text(k))
        for f in df.files:
            if f.kind in ("ed", "ep"):
                click.echo(f"  {f.kind.upper()} {f.fid:04X} {f.name}: usage {ac_text(f.usage_ac)}, "
                           f"TAC key {f.tac_key:02X}, details in SFI {f.detail_sfi:02X}")
                continue
            shape = (f"{f.size} bytes" if f.kind == "binary" else f"space {f.size}" if f.kind == "variable"
                     else f"{f.nrec}x{f.reclen}")
            prot = f", write {f.write_protect} (key {f.write_key:02X})" if f.write_protect != "plain" else ""
            lay = f", layout {f.layout}" if f.layout else ""
            click.echo(f"  EF {f.fid:04X} {f.name}: {f.kind} {shape}, read {ac_text(f.read_ac)}, "
                       f"write {ac_text(f.write_ac)}{prot}{lay}")


def _tree(spec) -> dict:
    def df_dict(df):
        return {
            "name": df.name, "fid": f"{df.fid:04X}", "aid": df.aid.hex().upper(), "unit": df.unit,
            "space": df.space, "used": df.used_space(), "create": ac_text(df.create_ac), "erase": ac_text(df.erase_ac),
            "keys": [{"name": k.name, "type": f"{k.type_byte:02X}", "id": k.kid, "usage": ac_text(k.usage_ac),
                      "change": ac_text(k.change_ac), "master": "/".join(k.master) if k.master else None,
                      "write": k.write} for k in df.keys],
            "files": [{"name": f.name, "fid": f"{f.fid:04X}", "kind": f.kind, "size": f.size, "count": f.nrec,
                       "length": f.reclen, "read": ac_text(f.read_ac), "write": ac_text(f.write_ac),
                       "write_protect": f.write_protect, "layout": f.layout} for f in df.files],
        }
    return {"name": spec.name, "title": spec.title, "mf": df_dict(spec.mf), "apps": [df_dict(a) for a in spec.apps]}


def _alg_text(k: KeySpec) -> str:
    """An SM4 key's mark in ``profile show`` (docs/sm4.md): a purse or TAC key carries algorithm
    byte 04; a master, DAMK or PIN key (39, 36, 37, 38) has its error counter in that byte and
    is SM4 by the card's line protection (items 6, 12)."""
    if k.alg != "sm4":
        return ""
    from ..keytypes import LINE_CIPHER_TYPES

    return ", SM4 (the card's line protection)" if k.ktype in LINE_CIPHER_TYPES else ", SM4 (algorithm 04)"
