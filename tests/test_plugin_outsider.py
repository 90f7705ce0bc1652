"""Issue 20, as an outsider: build the wheel, install it into a fresh virtual environment
outside the source tree, and use it there: the CLI with the shipped demo files, and pytest
with the plugin on the README's "For CI pipelines" example (PC/SC part included).

About a minute (one wheel, one venv per session; pip's cache is reused, the dependencies
come from the package registry).  ``-m "not outsider"`` or ``-k "not outsider"`` leaves it out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from citycard.testing.pcscd import pcscd_available

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.outsider


def readme_ci_example() -> str:
    """The python block of the README's "For CI pipelines" section, as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## For CI pipelines\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the README's CI section has one python example"
    return blocks[0]


# Beyond the README: the installed package is the one used, the marker's other options, the
# personalized card through PC/SC, and the fragment the README's library example uses.
EXTRA_TESTS = '''
import subprocess
import sys
from pathlib import Path

import pytest

import citycard
from citycard.transport import CardSession
from citycard.transport.pcsc import PcscTransport


def test_the_installed_wheel_is_used():
    assert Path(citycard.__file__).is_relative_to(sys.prefix), citycard.__file__


@pytest.mark.citycard(personalized=True, profile="pboc-ep", row=4)
def test_pboc_profile(citycard_card):
    assert citycard_card.personalization.profile.name == "pboc-ep.toml"
    assert citycard_card.personalization.row == 4


@pytest.mark.pcsc
@pytest.mark.citycard(personalized=True, row=3)
def test_personalized_card_in_the_reader(citycard_served_card):
    t = PcscTransport("Virtual")          # the README's library example: two slots, one card
    t.connect()
    try:
        assert t.name == citycard_served_card.reader
        card = CardSession(t)
        card.send(bytes.fromhex("00A4040009A00000000386980701"), expect=0x9000)
        ef15 = card.send(bytes.fromhex("00B0950000"), expect=0x9000).data
    finally:
        t.close()
    assert ef15[12:20].hex() == citycard_served_card.personalization.card_serial
'''


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what points at the source tree or our pcscd."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PCSCLITE_CSOCK_NAME", "PYTEST_ADDOPTS", "PYTEST_PLUGINS"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CITYCARD_")}
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def outsider(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel and pytest installed, outside the source tree."""
    base = tmp_path_factory.mktemp("outsider")
    assert not base.is_relative_to(ROOT)
    env = clean_env()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(ROOT)], base, env)
    wheels = list((base / "dist").glob("citycard-*.whl"))
    assert len(wheels) == 1, wheels
    run([sys.executable, "-m", "venv", str(base / "venv")], base, env)
    run([str(base / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheels[0]), "pytest"], base, env)
    (base / "work").mkdir()
    return base


def test_outsider_cli_finds_the_shipped_demo_files(outsider):
    work, citycard = outsider / "work", str(outsider / "venv/bin/citycard")
    env = clean_env(CITYCARD_KEYSTORE_PASSPHRASE="outsider test passphrase")
    keys = run([citycard, "keys", "demo", "demo.ks"], work, env)
    count = sum(len(v) for v in tomllib.loads((ROOT / "profiles/demo-keys.toml").read_text()).values())
    assert count >= 19
    assert keys.stdout.strip() == f"wrote {count} demo master keys to demo.ks"
    assert "TEST KEYS" in keys.stderr
    run([citycard, "demo-assets", "."], work, env)
    assert (work / "profiles/demo-keys.toml").read_bytes() == (ROOT / "profiles/demo-keys.toml").read_bytes()
    run([citycard, "sim", "new", "card.json"], work, env)
    perso = run([citycard, "perso", "--profile", "profiles/citycard.toml", "--keys", "demo.ks", "--data",
                 "profiles/citycard-sample.csv", "--row", "1", "--sim", "card.json"], work, env)
    assert "verified" in perso.stdout, perso.stdout


@pytest.mark.pcsc
def test_outsider_pytest_plugin_with_pcsc(outsider):
    ok, reason = pcscd_available()
    if not ok:
        pytest.skip(f"private pcscd unavailable: {reason}")
    project = outsider / "their-project"
    project.mkdir(exist_ok=True)
    (project / "test_readme_example.py").write_text(readme_ci_example())
    (project / "test_more.py").write_text(textwrap.dedent(EXTRA_TESTS))
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    pcsc: needs PC/SC\n")
    proc = subprocess.run([str(outsider / "venv/bin/python"), "-m", "pytest", "-v", "-p", "no:cacheprovider"],
                          cwd=project, env=clean_env(CITYCARD_REQUIRE_PCSC="1"), capture_output=True, text=True,
                          timeout=300)
    print(proc.stdout)   # shown with -s or on failure: the outsider's own pytest run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("test_readme_example.py::test_fresh_card", "test_readme_example.py::test_transit_serial",
                 "test_readme_example.py::test_through_pcsc", "test_more.py::test_the_installed_wheel_is_used",
                 "test_more.py::test_pboc_profile", "test_more.py::test_personalized_card_in_the_reader"):
        assert f"{name} PASSED" in proc.stdout, proc.stdout
    assert re.search(r"^=+ 6 passed in ", proc.stdout, re.M), proc.stdout
    assert "plugins: citycard-0.1.0" in proc.stdout, proc.stdout
