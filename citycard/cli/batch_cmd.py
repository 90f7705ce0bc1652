"""`citycard batch run|report|status`: bureau batch personalization with a journal."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from ..errors import InputError
from .common import ProgressDrawer, audit
from .dualopts import approval_options, dual_control
from .keyopts import keys_option, open_keys, warn_test_keys
from .perso_cmd import _date

# progress is drawn by citycard.cli.common.ProgressDrawer (throttled bar on a TTY, lines without)
ProgressBar = ProgressDrawer


def _batch_inputs(f):
    """The options that name a batch's inputs: profile, keys, data file and journal."""
    for option in reversed((
            click.option("-p", "--profile", "profile_path", required=True, metavar="PROFILE",
                         help="Card profile (TOML): the card's files, keys and data bindings."),
            keys_option(),
            click.option("-d", "--data", "data_path", required=True, metavar="CSV", help="Cardholder data file (CSV)."),
            click.option("--encoding", default="utf-8", show_default=True, help="utf-8, gb18030 or gbk."),
            click.option("-j", "--journal", "journal_url", required=True, metavar="FILE|postgresql://...",
                         help="SQLite file, or a PostgreSQL URL shared by several stations."))):
        f = option(f)
    return f


_reissue_option = click.option(
    "--reissue", default=None, metavar="ROWS|all",
    help="Rows (e.g. 3,7,10-12) or all whose cardholders were issued in an earlier batch of the journal and get a "
         "new card (otherwise refused).")


@click.group()
def batch() -> None:
    """Personalize a batch of cards from a data file, with a journal; report on it."""


@batch.command()
@_batch_inputs
@click.option("-r", "--reader", "readers", multiple=True, metavar="NAME",
              help="PC/SC reader (name, fragment or index); repeat for several readers.")
@click.option("--sims", type=click.IntRange(1, 64), default=None, help="Use N simulated readers in process.")
@click.option("--keep-cards", default=None, metavar="DIR", help="With --sims: file each card's image here.")
@click.option("--sim-model", default="fm1208", show_default=True, metavar="MODEL",
              help="With --sims: the card model of the simulated cards (fmcos-sm4 for a profile with SM4 line "
                   "protection, psam for a batch of PSAMs; docs/sim.md).")
@click.option("--timing", default=None, metavar="PRESET",
              help="With --sims: each card sleeps a real card's modelled time per APDU (e.g. contact-115200; docs/sim.md).")
@click.option("--batch", "batch_id", default=None, help="Batch name (default: data file name and hash).")
@click.option("--station", default=None, help="This station's name in a shared journal (default: the host name).")
@click.option("--issue-date", callback=_date, default=None, metavar="YYYYMMDD",
              help="Issue date written to the cards [default: today].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Stop after this many cards.")
@click.option("--retry-failed", is_flag=True, help="Put failed rows back (new serials) before running.")
@click.option("--no-verify", is_flag=True,
              help="Skip the verification of each card after personalization (not recommended).")
@_reissue_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@approval_options
def run(profile_path, keys, data_path, encoding, journal_url, readers, sims, keep_cards, sim_model, timing, batch_id,
        station, issue_date, limit, retry_failed, no_verify, reissue, as_json, approve, approve_pfiles):
    """Personalize every pending row of the data file, one worker per reader."""
    from ..perso.batch import Batch, default_station, pcsc_readers
    from ..perso.job import prepare
    from ..perso.validate import parse_rows

    again = parse_rows(reissue) if reissue else None
    if not readers and not sims:
        raise InputError("give --reader NAME (one or more) and/or --sims N")
    if sim_model != "fm1208" and not sims:
        raise InputError("--sim-model is an option of the simulated readers: give --sims N")
    if timing is not None:
        if not sims:
            raise InputError("--timing is an option of the simulated readers: give --sims N")
        from ..sim.timing import get_preset

        get_preset(timing)   # an unknown name: one line before anything is read or written
    job = prepare(profile_path, data_path, lambda: open_keys(keys), encoding=encoding)
    warn_test_keys(job.keys, job.spec)
    sources: list = []
    if sims:
        from ..sim.batch_readers import simulated_readers
        from ..sim.models import MODELS

        model = MODELS.get(sim_model)     # an unknown name: simulated_readers says so
        if model is not None and model.kind == "fmcos" and model.line_alg != job.spec.line_alg:   # docs/sm4.md
            raise InputError(f"--sim-model {sim_model}: its line protection is "
                             f"{'SM4' if model.line_alg == 'sm4' else '3DES'}, the profile's is not; "
                             f"use --sim-model {job.spec.card_model}")

        sources += simulated_readers(sims, keep_cards, timing=timing, model=sim_model)
    from ..terminal.identify import free_card_serial   # the readers' identity guard (issue 17 item 3)

    sources += pcsc_readers(readers, on_prompt=lambda message: click.echo(f"citycard: {message}", err=True),
                            read_serial=lambda session: free_card_serial(session, job.spec))
    b = Batch(job.spec, job.keys, job.data, journal_url, batch=batch_id, issue_date=issue_date,
              verify=not no_verify, limit=limit, station=station or default_station(), reissue=again,
              audit=click.get_current_context().find_root().obj.audit_log())
    released = _release_controls(job, b, reissue, approve, approve_pfiles)
    if retry_failed:
        click.echo(f"{b.retry_failed()} failed row(s) back to pending", err=True)
    result = b.run(sources, on_progress=ProgressBar(sys.stderr), on_prepared=released)
    audit("batch.finished" if not (result.counts["pending"] + result.counts["in_progress"]) else "batch.stopped",
          result.batch, processed=result.processed, verified=result.verified, failed=result.failed)
    summary = {"batch": result.batch, "processed": result.processed, "verified": result.verified,
               "failed": result.failed, "seconds": round(result.seconds, 2),
               "cards_per_minute": round(result.cards_per_minute, 1), "status": result.counts}
    c = result.counts
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"batch {result.batch}: {result.processed} card(s) this run in {result.seconds:.1f} s "
                   f"({result.cards_per_minute:,.0f}/min), {result.failed} failed; "
                   f"journal: {c['verified'] + c['personalized']} done, {c['failed']} failed, "
                   f"{c['pending'] + c['in_progress']} to do")
    if not result.processed and not (c["pending"] + c["in_progress"]):
        note = ("; --reissue applies when the batch is registered (the file's first run): a card of this "
                "batch is issued again with `citycard perso --reissue-card` or replaced with `citycard cards "
                "replace`" if reissue else "")
        retry = " (--retry-failed takes the failed ones again)" if c["failed"] else ""
        click.echo(f"batch {result.batch}: nothing to do, every row of {Path(data_path).name} is already in the "
                   f"journal as done or failed{retry}{note}", err=True)


def _release_controls(job, b, reissue: str | None, approve, approve_pfiles):
    """Dual control of a batch's release (a batch new to the journal) and of re-issues (issue
    25 item 2), asked before anything is read or written; returns the callback that enters
    ``batch.released`` (or ``batch.resumed``) in the audit log once the data file is
    validated (a refused file released nothing)."""
    production = job.spec.production or bool(job.keys.production_sources)
    pinned = tuple(getattr(s, "roster", None) for s in job.keys.sources)
    new_batch = _is_new_batch(b.journal_url, b.batch)
    approvals: dict = {}
    if new_batch:        # releasing a production batch: two people
        a = dual_control("batch.release", b.batch, {"profile": job.spec.name, "data_sha256": b.sha},
                         production=production, approve=approve, pfiles=approve_pfiles, pinned=pinned)
        approvals.update(a.audit_details() if a else {})
    if b.reissue:        # re-issuing cards already issued: two people
        a = dual_control("card.reissue", b.batch, {"rows": reissue}, production=production, approve=approve,
                         pfiles=approve_pfiles, pinned=pinned)
        approvals.update(a.audit_details() if a else {})

    def released() -> None:
        audit("batch.released" if new_batch else "batch.resumed", b.batch, profile=job.spec.name,
              data_sha256=b.sha, station=b.station, reissue=reissue, **approvals)
    return released


@batch.command()
@_batch_inputs
@click.option("--batch", "batch_id", default=None, help="Batch name (default: data file name and hash).")
@_reissue_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@approval_options
def release(profile_path, keys, data_path, encoding, journal_url, batch_id, reissue, as_json, approve,
            approve_pfiles):
    """Validate the data file and release the batch in the journal, without a card.

    Every row is checked in one streamed pass and goes into the journal (nothing if one row
    is bad); a production batch needs two people.  The stations' `batch run` with the same
    profile, data file and journal then starts its first card at once, without reading the
    file again, whatever its size."""
    from ..perso.batch import Batch, default_station
    from ..perso.job import prepare
    from ..perso.validate import parse_rows

    again = parse_rows(reissue) if reissue else None
    job = prepare(profile_path, data_path, lambda: open_keys(keys), encoding=encoding)
    warn_test_keys(job.keys, job.spec)
    b = Batch(job.spec, job.keys, job.data, journal_url, batch=batch_id, station=default_station(), reissue=again,
              audit=click.get_current_context().find_root().obj.audit_log())
    if not _is_new_batch(journal_url, b.batch):
        raise InputError(f"batch {b.batch} is already in {journal_url}: nothing to release "
                         "(`citycard batch status` shows it; `batch run` continues it)")
    released = _release_controls(job, b, reissue, approve, approve_pfiles)
    journal = b.prepare()
    try:
        counts = journal.counts(b.batch)
    finally:
        journal.close()
    released()
    rows = sum(counts.values())
    if as_json:
        click.echo(json.dumps({"batch": b.batch, "rows": rows, "data_sha256": b.sha, "status": counts}))
    else:
        named = f" and --batch {b.batch}" if batch_id else ""
        click.echo(f"batch {b.batch}: {rows} row(s) validated and released in {journal_url}; "
                   f"run it with `citycard batch run` (same profile, data file and journal{named})")


def _is_new_batch(journal_url: str, batch: str) -> bool:
    """Whether ``batch`` is not yet in the journal (running it is its release)."""
    from ..perso.journal import Journal, JournalError

    try:
        j = Journal(journal_url, create=False)
    except JournalError:
        return True                      # no journal yet
    try:
        return j.find_batch(batch) is None
    finally:
        j.close()


@batch.command()
@click.argument("journal_url", metavar="JOURNAL")
@click.option("--batch", "batch_id", default=None, help="Only this batch (its name in `batch status`).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per card.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header line.")
def report(journal_url, batch_id, as_json, as_csv):
    """Every card of the journal, for the card management system."""
    from ..perso.journal import Journal

    j = Journal(journal_url, create=False)
    out = sys.stdout
    try:   # streamed: one card at a time, whatever the journal's size
        if batch_id is not None:
            j.require_batch(batch_id)
        voids: dict[tuple[str, int], list[dict]] = {}      # few: cards removed mid-personalization
        for v in j.void_attempts(batch_id):
            voids.setdefault((v["batch"], v["row"]), []).append(_void(v))
        rows = j.iter_report(batch_id)
        if as_json:
            out.write("[")
            for i, r in enumerate(rows):
                r["void_cards"] = voids.get((r["batch"], r["row"]), [])
                out.write(("," if i else "") + "\n  " + json.dumps(r, ensure_ascii=False))
            out.write("\n]\n")
        elif as_csv:
            w = csv.DictWriter(out, fieldnames=[*Journal.REPORT_KEYS, "void_cards"], lineterminator="\n")
            w.writeheader()
            for r in rows:
                r["void_cards"] = "; ".join(_void_text(v) for v in voids.get((r["batch"], r["row"]), []))
                w.writerow(r)
        else:
            for r in rows:
                again = f"  re-issue of {r['reissue_of']}" if r.get("reissue_of") else ""
                out.write(f"{r['batch']}  row {r['row']:>5}  {r['cardholder_id']:<12} {r['card_serial'] or '-':<22} "
                          f"{r['status']:<12} {r['reader'] or '-':<24} {r['finished'] or ''}{again}\n")
                for v in voids.get((r["batch"], r["row"]), []):
                    out.write(f"    void: {_void_text(v)}\n")
        out.flush()
    finally:
        j.close()


@batch.command()
@click.argument("journal_url", metavar="JOURNAL")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: batch -> counts by status.")
def status(journal_url, as_json):
    """Where each batch of the journal stands."""
    from ..perso.journal import Journal

    j = Journal(journal_url, create=False)
    try:
        out = {b: j.check_batch(b) for b in j.batches()}
        voids: dict[str, list[dict]] = {b: [] for b in out}
        for v in j.void_attempts():
            voids.setdefault(v["batch"], []).append(_void(v))
    finally:
        j.close()
    if as_json:
        click.echo(json.dumps({b: {**c, "void_cards": voids[b]} for b, c in out.items()}, indent=2))
        return
    if not out:
        click.echo("no batch in this journal")
    for b, c in out.items():
        total = sum(c.values())
        done = c["verified"] + c["personalized"]
        click.echo(f"{b}: {done}/{total} done, {c['failed']} failed, {c['in_progress']} in progress, "
                   f"{c['pending']} pending" + (f", {len(voids[b])} void card(s)" if voids[b] else ""))
        if voids[b]:
            click.echo("  void cards (removed mid-personalization, may hold keys of their serial: find and "
                       "destroy them):")
        for v in voids[b]:
            click.echo(f"    row {v['row']}: {_void_text(v)}")


def _void(v: dict) -> dict:
    """A void attempt as the reports show it (no error text: the reason is always the same)."""
    return {"row": v["row"], "card_serial": v["card_serial"], "reader": v["reader"], "atr": v["atr"],
            "uid": v["uid"], "started": v["started"], "voided": v["finished"]}


def _void_text(v: dict) -> str:
    uid = f", UID {v['uid']}" if v.get("uid") else ""
    return f"card {v['card_serial']} (reader {v['reader'] or '-'}, ATR {v['atr'] or '-'}{uid}, written from {v['started']})"
