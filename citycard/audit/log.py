"""Where audit entries live (issue 25 item 1): an append-only JSON-lines file (the default)
or a PostgreSQL table shared by several stations; the chain itself is :mod:`.chain`.

- **File** (``audit.log``): one entry per line, appended under an exclusive ``flock`` and
  fsynced; the head (last ``seq`` and ``hash``, sealed when a seal key is given) is rewritten
  atomically beside it in ``audit.log.head`` after each entry.  Created ``0600``.
- **PostgreSQL** (``postgresql://…``): table ``audit_entries`` (``seq`` primary key, the
  entry's JSON text) and ``audit_head``; an append takes a transaction-scoped advisory lock,
  so entries of several stations form one chain.

Reading streams (constant memory whatever the log's size).  Entries never hold key values,
PINs or passphrases: :func:`check_details` refuses detail names that could carry one, and
callers put names, KCVs, serials and counts there, nothing else.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from ..errors import CitycardError, InputError
from .chain import GENESIS, Head, Verdict, check_chain, entry_hash, seal_of

#: detail names refused: an entry must never be able to carry a secret
SECRET_NAMES = frozenset({"pin", "new_pin", "old_pin", "passphrase", "password", "key", "key_value",
                          "secret", "seal_key", "component", "value"})

_PG_LOCK = 736864          # advisory lock id of the audit chain (the journal uses 736863)


class AuditError(CitycardError):
    """The audit log cannot be opened, read or appended to."""


class AuditBroken(CitycardError):
    """``audit verify`` found the log edited, cut short, reordered or unsealed (exit code 1,
    like any verification that fails)."""


def default_operator() -> str:
    """The operator named in entries: ``CITYCARD_OPERATOR``, else the login name."""
    env = os.environ.get("CITYCARD_OPERATOR")
    if env:
        return env
    try:
        import getpass

        return getpass.getuser()
    except Exception:       # no login name (a container without passwd entry)
        return f"uid {os.getuid()}"


def check_details(details: Mapping[str, Any], where: str = "details") -> dict[str, Any]:
    """``details`` as stored: flat, JSON values only, no name that could carry a secret."""
    out: dict[str, Any] = {}
    for name, value in details.items():
        if name.lower() in SECRET_NAMES:
            raise InputError(f"{where}.{name}: an audit entry never holds secrets")
        if isinstance(value, (list, tuple)):
            if not all(v is None or isinstance(v, (str, int, float, bool)) for v in value):
                raise InputError(f"{where}.{name}: only flat values go into an audit entry")
            value = list(value)
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            raise InputError(f"{where}.{name}: only flat values go into an audit entry")
        out[name] = value
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    """An audit log (file or PostgreSQL) that entries are appended to and read from."""

    def __init__(self, location: str, *, operator: str | None = None, station: str | None = None,
                 seal_key: bytes | None = None) -> None:
        self.location = location
        self.pg = location.startswith(("postgresql://", "postgres://"))
        self.operator = operator or default_operator()
        self.station = station or socket.gethostname()
        self._seal_key = seal_key

    def __repr__(self) -> str:       # never the seal key
        return f"AuditLog({self.location!r}, operator={self.operator!r}, sealed={self._seal_key is not None})"

    # ------------------------------------------------------------------ writing
    def check_writable(self) -> None:
        """Before an audited action: the log can take an entry (its tail parses, the database
        answers), so an action is never done and then left unrecorded for a damaged log."""
        if self.pg:
            self._connect_pg().close()
            return
        if not os.path.exists(self.location):
            return
        try:
            fd = os.open(self.location, os.O_RDONLY)
        except OSError as exc:
            raise AuditError(f"{self.location}: cannot open the audit log ({exc.strerror})") from None
        try:
            last = _last_line(fd)
        finally:
            os.close(fd)
        if last is not None:
            try:
                tail = json.loads(last)
                int(tail["seq"]), str(tail["hash"])
            except (ValueError, KeyError, TypeError):
                raise AuditError(f"{self.location}: the last entry is damaged; run 'citycard audit verify "
                                 f"{self.location}' (nothing was done)") from None

    def append(self, action: str, subject: str = "", **details: Any) -> dict[str, Any]:
        """Append one entry (``action`` like ``"batch.created"``) and return it."""
        if not action or any(c.isspace() for c in action):
            raise InputError(f"audit action {action!r}: one word, e.g. 'batch.created'")
        body = {"time": _now(), "operator": self.operator, "station": self.station, "action": action,
                "subject": str(subject), "details": check_details(details)}
        if self.pg:
            return self._append_pg(body)
        return self._append_file(body)

    def _finish(self, body: dict[str, Any], seq: int, prev: str) -> dict[str, Any]:
        entry = {"seq": seq, **body, "prev": prev}
        entry["hash"] = entry_hash(entry)
        if self._seal_key is not None:
            entry["seal"] = seal_of(self._seal_key, seq, entry["hash"])
        return entry

    def _append_file(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            fd = os.open(self.location, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise AuditError(f"{self.location}: cannot open the audit log ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_line(fd)
            if last is None:
                seq, prev = 1, GENESIS
            else:
                try:
                    tail = json.loads(last)
                    seq, prev = int(tail["seq"]) + 1, str(tail["hash"])
                except (ValueError, KeyError, TypeError):
                    raise AuditError(f"{self.location}: the last entry is damaged; run "
                                     f"'citycard audit verify {self.location}'") from None
            entry = self._finish(body, seq, prev)
            line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            try:
                os.write(fd, line)
                os.fsync(fd)
                self._write_head(Head(seq, entry["hash"], entry.get("seal")))
            except OSError as exc:
                raise AuditError(f"{self.location}: cannot append to the audit log ({exc.strerror})") from None
            return entry
        finally:
            os.close(fd)

    def _write_head(self, head: Head) -> None:
        from ..fsutil import atomic_write

        data = {"seq": head.seq, "hash": head.hash}
        if head.seal is not None:
            data["seal"] = head.seal
        atomic_write(self.location + ".head", (json.dumps(data) + "\n").encode("ascii"))

    def _connect_pg(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise AuditError("a PostgreSQL audit log needs psycopg (pip install 'citycard[postgres]')") from None
        try:
            conn = psycopg.connect(self.location, autocommit=False)
        except psycopg.Error as exc:
            raise AuditError(f"cannot open the audit database: {str(exc).splitlines()[0]}") from None
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS audit_entries (seq BIGINT PRIMARY KEY, entry TEXT NOT NULL)")
            cur.execute("CREATE TABLE IF NOT EXISTS audit_head (id INT PRIMARY KEY, seq BIGINT NOT NULL, "
                        "hash TEXT NOT NULL, seal TEXT)")
        conn.commit()
        return conn

    def _append_pg(self, body: dict[str, Any]) -> dict[str, Any]:
        import psycopg

        conn = self._connect_pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
                cur.execute("SELECT entry FROM audit_entries ORDER BY seq DESC LIMIT 1")
                row = cur.fetchone()
                if row is None:
                    seq, prev = 1, GENESIS
                else:
                    try:
                        tail = json.loads(row[0])
                        seq, prev = int(tail["seq"]) + 1, str(tail["hash"])
                    except (ValueError, KeyError, TypeError):
                        raise AuditError("the audit database's last entry is damaged; run "
                                         "'citycard audit verify'") from None
                entry = self._finish(body, seq, prev)
                cur.execute("INSERT INTO audit_entries (seq, entry) VALUES (%s, %s)",
                            (seq, json.dumps(entry, ensure_ascii=False, separators=(",", ":"))))
                cur.execute("INSERT INTO audit_head (id, seq, hash, seal) VALUES (1, %s, %s, %s) "
                            "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, "
                            "seal = EXCLUDED.seal", (seq, entry["hash"], entry.get("seal")))
            conn.commit()
            return entry
        except psycopg.Error as exc:
            raise AuditError(f"cannot append to the audit database: {str(exc).splitlines()[0]}") from None
        finally:
            conn.close()

    # ------------------------------------------------------------------ reading
    def lines(self) -> Iterator[tuple[int, dict[str, Any] | str]]:
        """``(line, entry or the reason it cannot be read)`` for every stored entry, in order."""
        if self.pg:
            yield from self._lines_pg()
            return
        try:
            f = open(self.location, "rb")
        except FileNotFoundError:
            raise AuditError(f"{self.location}: no such audit log") from None
        except OSError as exc:
            raise AuditError(f"{self.location}: cannot read the audit log ({exc.strerror})") from None
        with f:
            for n, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    yield n, "incomplete last line (cut while written?)"
                    continue
                try:
                    item = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    yield n, "not a JSON entry"
                    continue
                yield n, item if isinstance(item, dict) else "not a JSON object"

    def _lines_pg(self) -> Iterator[tuple[int, dict[str, Any] | str]]:
        conn = self._connect_pg()
        try:
            with conn.cursor(name="audit_read") as cur:      # server-side: streamed
                cur.execute("SELECT seq, entry FROM audit_entries ORDER BY seq")
                for n, (_, text) in enumerate(cur, 1):
                    try:
                        item = json.loads(text)
                    except ValueError:
                        yield n, "not a JSON entry"
                        continue
                    yield n, item if isinstance(item, dict) else "not a JSON object"
        finally:
            conn.close()

    def entries(self, *, since_seq: int = 0, since_time: str | None = None) -> Iterator[dict[str, Any]]:
        """The readable entries after ``since_seq`` / from ``since_time`` (ISO date or time) on."""
        for _, item in self.lines():
            if isinstance(item, str):
                continue
            seq = item.get("seq")
            if isinstance(seq, int) and seq <= since_seq:
                continue
            if since_time is not None and str(item.get("time", "")) < since_time:
                continue
            yield item

    def stored_head(self) -> Head | None:
        """The head written with the last entry (None if there is none)."""
        if self.pg:
            conn = self._connect_pg()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT seq, hash, seal FROM audit_head WHERE id = 1")
                    row = cur.fetchone()
            finally:
                conn.close()
            return Head(int(row[0]), row[1], row[2]) if row else None
        try:
            with open(self.location + ".head", "r", encoding="ascii") as f:
                data = json.load(f)
            return Head(int(data["seq"]), str(data["hash"]), data.get("seal"))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise AuditError(f"{self.location}.head: not a head file (damaged?)") from None

    def verify(self, *, expect_head: Head | None = None) -> Verdict:
        """Walk the whole chain: every edited, removed, reordered or added entry, and a log cut
        short against ``expect_head`` (else the stored head), by line."""
        head = expect_head if expect_head is not None else self.stored_head()
        return check_chain(self.lines(), seal_key=self._seal_key, expect_head=head)


def _last_line(fd: int) -> bytes | None:
    """The last complete line of the file open on ``fd`` (read backwards: constant memory)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    pos, chunk, buf = size, 4096, b""
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        stripped = buf[:-1] if buf.endswith(b"\n") else buf
        nl = stripped.rfind(b"\n")
        if nl >= 0:
            return stripped[nl + 1:]
    return buf.rstrip(b"\n")
