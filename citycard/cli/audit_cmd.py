"""`citycard audit verify|show|head`: read and check the bureau's audit log (docs/audit.md)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import InputError


def _log(ctx: click.Context, location: str | None, seal: str | None):
    from ..audit import AuditLog
    from .common import audit_seal_key

    app = ctx.obj
    where = location or app.audit_location
    if where is None:
        raise InputError("no audit log: give LOG (or --audit-log / CITYCARD_AUDIT_LOG)")
    seal = seal or app.audit_seal
    key = audit_seal_key(seal) if seal is not None else None
    return AuditLog(where, operator=app.operator, seal_key=key)


@click.group()
def audit() -> None:
    """The audit log: who did what with keys, batches and cards (hash-chained, tamper-evident)."""


@audit.command()
@click.argument("log", required=False)
@click.option("--head", "head_text", default=None, metavar="SEQ:HASH",
              help="The head recorded elsewhere (printed by 'audit head'); else the head file/table.")
@click.option("--seal", default=None, metavar="KEYSTORE",
              help="Check every entry's seal under this keystore's audit/seal key (default: --audit-seal).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def verify(ctx: click.Context, log: str | None, head_text: str | None, seal: str | None, as_json: bool) -> None:
    """Check LOG entry by entry: edited, removed, reordered, added or cut-off entries are named
    by line. Exit code 1 when anything is wrong."""
    from ..audit import AuditBroken, Head

    audit_log = _log(ctx, log, seal)
    expect = None
    if head_text is not None:
        try:
            expect = Head.parse(head_text, "--head")
        except ValueError as exc:
            raise InputError(str(exc)) from None
    verdict = audit_log.verify(expect_head=expect)
    if as_json:
        click.echo(json.dumps({"ok": verdict.ok, "entries": verdict.entries,
                               "head": verdict.head.text() if verdict.head else None,
                               "sealed": verdict.sealed,
                               "findings": [{"line": f.line, "seq": f.seq, "problem": f.problem}
                                            for f in verdict.findings],
                               "notes": list(verdict.notes)}, ensure_ascii=False))
    else:
        for f in verdict.findings:
            click.echo(f"{audit_log.location}: {f.text()}")
        for note in verdict.notes:
            click.echo(f"note: {note}", err=True)
        if verdict.ok:
            click.echo(f"{audit_log.location}: ok, {verdict.entries} entries"
                       + (f", head {verdict.head.text()}" if verdict.head else "")
                       + (", every entry sealed" if verdict.sealed else ""))
    if not verdict.ok:
        n = len(verdict.findings)
        if as_json:
            raise click.exceptions.Exit(1)
        raise AuditBroken(f"{audit_log.location}: {n} problem{'s' if n > 1 else ''} found")


def _since(value: str | None) -> tuple[int, str | None]:
    if value is None:
        return 0, None
    if value.isdigit():
        return int(value), None
    import datetime as dt

    try:
        dt.date.fromisoformat(value[:10])
    except ValueError:
        raise InputError(f"--since {value}: an entry number or a date (YYYY-MM-DD[THH:MM])") from None
    return 0, value


@audit.command()
@click.argument("log", required=False)
@click.option("--since", default=None, metavar="SEQ|DATE", help="Entries after this number, or from this date on.")
@click.option("--action", "action_prefix", default=None, metavar="PREFIX",
              help="Only actions starting with PREFIX (e.g. 'keys.' or 'card.').")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def show(ctx: click.Context, log: str | None, since: str | None, action_prefix: str | None, as_json: bool) -> None:
    """List entries (streamed). Run 'audit verify' to check them."""
    since_seq, since_time = _since(since)
    for e in _log(ctx, log, None).entries(since_seq=since_seq, since_time=since_time):
        if action_prefix is not None and not str(e.get("action", "")).startswith(action_prefix):
            continue
        if as_json:
            click.echo(json.dumps(e, ensure_ascii=False))
        else:
            click.echo(_line(e))


def _line(e: dict[str, Any]) -> str:
    details = e.get("details") or {}
    extra = " ".join(f"{k}={v}" for k, v in details.items()) if isinstance(details, dict) else ""
    subject = f" {e.get('subject')}" if e.get("subject") else ""
    return (f"{e.get('seq'):>6} {e.get('time')} {e.get('station')} {e.get('operator')}: "
            f"{e.get('action')}{subject}" + (f"  {extra}" if extra else ""))


@audit.command()
@click.argument("log", required=False)
@click.pass_context
def head(ctx: click.Context, log: str | None) -> None:
    """Print the log's head (SEQ:HASH): note it elsewhere; 'audit verify --head' then detects
    a log cut short or rewritten after it."""
    stored = _log(ctx, log, None).stored_head()
    if stored is None:
        raise InputError("the audit log has no head yet (no entry written)")
    click.echo(stored.text())
