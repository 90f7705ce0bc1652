"""Large synthetic journals for tests and benchmarks (no card, no data file): a batch of
``rows`` cards of which the first ``done`` are verified, generated inside the database."""

from __future__ import annotations

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


def claim_plan(journal: Journal, batch: str) -> str:
    """The database's query plan of the claim of the next pending card (one text)."""
    sql = journal._q(Journal.CLAIM_PENDING)
    with journal._tx() as cur:
        if journal.pg:
            cur.execute("EXPLAIN " + sql, (batch,))
            return "\n".join(r[0] for r in cur.fetchall())
        cur.execute("EXPLAIN QUERY PLAN " + sql, (batch,))
        return "\n".join(str(r[-1]) for r in cur.fetchall())


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
