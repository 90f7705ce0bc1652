"""CLI start-up (issue 19 item 3): a command imports only what it needs.  Checked on the
modules a command loads (in a fresh interpreter), never on wall time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from citycard.cli.main import COMMANDS, cli

_PROBE = """
import json, sys
from citycard.cli.main import cli
try:
    cli.main(args=sys.argv[1:], prog_name="citycard")
except SystemExit as exc:
    code = exc.code
print("MODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

HEAVY = ("smartcard", "construct", "citycard.sim", "citycard.transport", "citycard.profile", "citycard.perso",
         "citycard.keys", "citycard.shell", "citycard.crypto.pboc", "citycard.crypto.secure", "logging")


def _loaded(*args: str) -> tuple[str, int, list[str]]:
    p = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60)
    out, _, probe = p.stdout.rpartition("MODULES ")
    data = json.loads(probe)
    return out, data["code"], data["modules"]


def _des_reference(key: bytes, block: bytes) -> bytes:
    """Single DES as 3DES with K1 = K2 = K3 (an independent computation)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def test_calc_des_imports_no_card_stack():
    key, data = bytes.fromhex("0123456789ABCDEF"), bytes(8)
    out, code, modules = _loaded("calc", "des", "-k", key.hex(), "-d", data.hex())
    assert code in (0, None)
    assert out.split() == ["result", _des_reference(key, data).hex().upper()]
    heavy = [m for m in modules if m.startswith(HEAVY)]
    assert heavy == []
    assert "citycard.cli.calc" in modules
    others = {f"citycard.cli.{mod}" for mod, _attr in COMMANDS.values()} - {"citycard.cli.calc"}
    assert others.isdisjoint(modules)      # no other subcommand module was imported


def test_apdu_with_a_sim_does_not_import_pyscard(tmp_path):
    img = tmp_path / "c.json"
    _out, code, _mods = _loaded("sim", "new", str(img))
    assert code in (0, None)
    out, code, modules = _loaded("apdu", "--sim", str(img), "00A40000023F00=9000")
    assert code in (0, None) and "9000" in out
    assert [m for m in modules if m.startswith(("smartcard", "construct"))] == []
    assert "citycard.cli.perso_cmd" not in modules and "citycard.cli.batch_cmd" not in modules


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_lazy_command_resolves(name):
    import click

    cmd = cli.get_command(click.Context(cli), name)
    assert cmd is not None and cmd.name in (name, name.replace("-", "_"))


def test_help_lists_every_command(run_cli):
    text = run_cli("--help").stdout
    for name in COMMANDS:
        assert f"\n  {name} " in text


def test_apdu_with_a_reader_imports_no_crypto_keys_or_simulator():
    # no pcscd needed: the modules are loaded before the connection fails (or succeeds)
    _out, code, modules = _loaded("apdu", "--reader", "no such reader", "00A40000023F00")
    assert code in (1, 2)
    assert [m for m in modules if m.startswith(("cryptography", "citycard.crypto", "citycard.keys",
                                                "citycard.sim", "construct", "citycard.profile"))] == []


def test_short_options_do_not_build_suggestions_but_long_ones_still_do(run_cli):
    # click tried each short option as a long one and built a "did you mean" list it threw
    # away (importing difflib); citycard.cli.main skips that list for short options only
    key, data = bytes.fromhex("0123456789ABCDEF"), bytes(8)
    out, code, modules = _loaded("calc", "des", "-k", key.hex(), "-d", data.hex())
    assert code in (0, None) and out.split() == ["result", _des_reference(key, data).hex().upper()]
    assert "difflib" not in modules
    r = run_cli("calc", "des", "-k", key.hex(), "--dat", data.hex())
    assert r.exit_code == 2 and "No such option '--dat'. Did you mean '--data'?" in r.stderr
    r = run_cli("calc", "des", "-x", "1")
    assert r.exit_code == 2 and "No such option '-x'" in r.stderr


def test_apdu_with_a_reader_loads_no_tlv_decoder_before_an_answer():
    _out, code, modules = _loaded("apdu", "--reader", "no such reader", "00A40000023F00")
    assert code in (1, 2)
    assert "citycard.tlv" not in modules
