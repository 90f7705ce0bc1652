"""Shared fixtures: CLI runner; the private pcscd fixtures live in tests/pcsc_fixtures.py."""

from __future__ import annotations

import json as _json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from citycard.cli.main import cli

pytest_plugins = ["tests.pcsc_fixtures", "pytester"]


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def json(self):
        return _json.loads(self.stdout)


@pytest.fixture
def run_cli():
    """Run the citycard CLI in process: ``run_cli("calc", "kcv", "--key", K)``."""

    def run(*args: str, input: str | None = None) -> CliResult:
        runner = CliRunner()
        result = runner.invoke(cli, list(args), input=input, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return CliResult(result)

    return run


@pytest.fixture
def capture(caplog):
    """Every log record of citycard, whatever the CLI does to the root logger."""
    caplog.set_level(logging.DEBUG, logger="citycard")
    logger = logging.getLogger("citycard")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def image_keys(path: Path) -> dict:
    """Every key record of a card image file, by where it is: (DF path, type, id) → value."""
    out = {}

    def walk(node, where):
        kf = node.get("keyfile")
        if kf:
            for k in kf["keys"]:
                out[(where, k["type"], k["id"])] = k["value"]
        for c in node.get("children", []):
            if c.get("type") == "DF":
                walk(c, where + "/" + c["fid"])

    walk(_json.loads(Path(path).read_text())["mf"], "3F00")
    return out


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server for the whole test session (each test takes a fresh database
    with ``fresh_database``); skipped where it cannot run, a failure under CITYCARD_REQUIRE_POSTGRES=1."""
    import os

    from citycard.testing.postgres import PrivatePostgres, postgres_available

    ok, why = postgres_available()
    if not ok:
        if os.environ.get("CITYCARD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"CITYCARD_REQUIRE_POSTGRES=1 but PostgreSQL cannot run here: {why}")
        pytest.skip(why)
    with PrivatePostgres() as pg:
        yield pg
