"""A private PostgreSQL server for tests: its own data folder, a Unix socket only (no TCP
port), trust authentication, stopped and removed at the end.  As root it runs as the
``postgres`` system user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def postgres_available() -> tuple[bool, str]:
    if _bindir() is None:
        return False, "PostgreSQL server binaries not found (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False, "psycopg is not installed"
    if os.geteuid() == 0:
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            return False, "running as root but there is no 'postgres' user to run the server"
    return True, ""


class PrivatePostgres:
    def __init__(self) -> None:
        self.dir: Path | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, text=True, capture_output=True, timeout=120)

    def start(self) -> "PrivatePostgres":
        bindir = _bindir()
        assert bindir is not None
        self.dir = Path(tempfile.mkdtemp(prefix="ccpg", dir="/tmp"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        r = self._run(str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-500:]}")
        opts = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c max_connections=50"
        r = self._run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w",
                      "start")
        if r.returncode != 0:
            log = (self.dir / "log").read_text(errors="replace")[-800:] if (self.dir / "log").exists() else ""
            self.stop()
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()} {log}")
        return self

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.dir}"

    def fresh_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@/{name}?host={self.dir}"

    def stop(self) -> None:
        bindir = _bindir()
        if self.dir is None:
            return
        data = self.dir / "data"
        if (data / "postmaster.pid").exists() and bindir is not None:
            self._run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
            for _ in range(50):
                if not (data / "postmaster.pid").exists():
                    break
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "PrivatePostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
