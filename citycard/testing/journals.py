"""Large synthetic journals for tests and benchmarks (no card, no data file): a batch of
``rows`` cards of which the first ``done`` are verified, generated inside the database."""

from __future__ import annotations

from ..perso import journal_claim
from ..perso.journal import Journal, now


def synthetic_batch(journal: Journal, batch: str, rows: int, done: int) -> None:
    """Register ``batch`` with ``rows`` cards, rows 1..``done`` verified, the rest pending;
    statistics are refreshed (ANALYZE) as a bureau's database would have them."""
    t = now()
    if journal.pg:
        series = "SELECT g AS n FROM generate_series(1, %s) AS g"
        args: tuple = (rows,)
        concat = "'S' || n"
    else:
        series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) SELECT n FROM s"
        args = (rows,)
        concat = "'S' || n"
    with journal._tx() as cur:
        cur.execute(journal._q("INSERT INTO batches (batch, profile, data_file, data_sha256, rows, created) "
                               "VALUES (?, 'synthetic', 'synthetic.csv', '0', ?, ?)"), (batch, rows, t))
        cur.execute(journal._q(
            f"INSERT INTO cards (batch, row, cardholder_id, card_serial, card_number, status, attempts, data_offset) "
            f"SELECT ?, n, 'CH' || n, CASE WHEN n <= ? THEN {concat} END, CASE WHEN n <= ? THEN n END, "
            f"CASE WHEN n <= ? THEN 'verified' ELSE 'pending' END, CASE WHEN n <= ? THEN 1 ELSE 0 END, n * 100 "
            f"FROM ({series}) AS s"), (batch, done, done, done, done, *args))
    if journal.pg:
        journal._conn.commit()
        old = journal._conn.autocommit
        journal._conn.autocommit = True
        journal._conn.execute("VACUUM ANALYZE cards")
        journal._conn.autocommit = old
    else:
        journal._conn.execute("ANALYZE")


def claim_plan(journal: Journal, batch: str, reader: str = "desk/r1", *, run: int | None = None,
               generic: bool = False) -> str:
    """The database's query plan of the claim of the next card (one text): on SQLite the
    search of the lowest pending row, on PostgreSQL the whole statement the claim sends
    (the reader's own row, the lowest pending row, the number), nothing executed.  With
    ``generic``, PostgreSQL's generic plan: the one a prepared statement (psycopg prepares
    a statement run five times) may use whatever the parameters."""
    if not journal.pg:
        with journal._tx() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + journal_claim.PENDING, (batch,))
            return "\n".join(str(r[-1]) for r in cur.fetchall())
    from psycopg import sql as sql_text

    sql = journal_claim.pg_pick(run is not None, True)
    args = {"batch": batch, "reader": reader, "prefix": "P", "run": run}
    cur = journal._conn.cursor()
    try:
        if not generic:
            cur.execute("EXPLAIN " + sql, args)
            return "\n".join(r[0] for r in cur.fetchall())
        names = ["batch", "reader", "prefix"] + (["run"] if run is not None else [])
        numbered = sql
        for i, name in enumerate(names, 1):
            numbered = numbered.replace(f"%({name})s", f"${i}")
        types = ", ".join(["text"] * 3 + (["bigint"] if run is not None else []))
        cur.execute(f"PREPARE citycard_claim_plan ({types}) AS {numbered}")
        cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cur.execute(sql_text.SQL("EXPLAIN EXECUTE citycard_claim_plan ({})").format(
            sql_text.SQL(", ").join(sql_text.Literal(args[n]) for n in names)))
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("DEALLOCATE citycard_claim_plan")
        return plan
    finally:
        cur.close()
        journal._conn.rollback()


def write_cardholders(path: str, rows: int, sample: str) -> str:
    """A data file of ``rows`` distinct, valid cardholders (the columns and values of the first
    row of ``sample``, a new cardholder number, birth date and resident ID with its GB 11643
    check digit for each), written as a stream."""
    import csv
    import datetime

    from ..perso.validate import resident_id_check_digit

    with open(sample, encoding="utf-8") as f:
        base = next(csv.DictReader(f))
    day0 = datetime.date(1940, 1, 1)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(base))
        w.writeheader()
        for i in range(rows):
            birth = (day0 + datetime.timedelta(days=i // 500)).strftime("%Y%m%d")
            seq = f"{(i % 500) // 5 * 10 + 1 + 2 * (i % 5):03d}"    # odd 17th digit: a man
            first17 = "440103" + birth + seq
            w.writerow({**base, "cardholder_id": f"CH{i + 1:08d}", "birth_date": birth, "sex": "1",
                        "id_number": first17 + resident_id_check_digit(first17)})
    return path
