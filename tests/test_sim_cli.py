"""`citycard sim new|show` and the image through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from citycard.sim import image as sim_image

ROOT = Path(__file__).resolve().parent.parent


def test_new_refuses_to_overwrite(run_cli, tmp_path):
    img = tmp_path / "c.json"
    assert run_cli("sim", "new", str(img)).exit_code == 0
    data = json.loads(img.read_text())
    assert data["format"] == "citycard-sim-image" and data["version"] == 1
    again = run_cli("sim", "new", str(img))
    assert again.exit_code == 2 and "exists; use --force" in again.stderr
    assert run_cli("sim", "new", str(img), "--force").exit_code == 0


def test_show_personalized_card_never_shows_keys(run_cli, tmp_path):
    img = tmp_path / "c.json"
    run_cli("sim", "new", str(img))
    r = run_cli("perso", "--profile", str(ROOT / "profiles/citycard.toml"), "--keys",
                str(ROOT / "profiles/demo-keys.toml"), "--data", str(ROOT / "profiles/citycard-sample.csv"),
                "--row", "2", "--sim", str(img))
    assert r.exit_code == 0, r.stderr
    card = sim_image.load(img)
    secrets = [k.value.hex().upper() for df in _dfs(card.mf) if df.keyfile for k in df.keyfile.keys.values()]
    assert len(secrets) >= 19
    for args in (["sim", "show", str(img)], ["sim", "show", str(img), "--json"]):
        out = run_cli(*args).stdout.upper()
        for s in secrets:
            assert s not in out and s[:8] not in out
    text = run_cli("sim", "show", str(img)).stdout
    assert "key 3F load id 00" in text and "key 3A PIN id 00" in text
    assert "EP 0002  balance 0 fen" in text
    assert "EF 0015 binary 30 bytes, read F0, write F0, write MAC (key 36/00)" in text
    tree = run_cli("sim", "show", str(img), "--json").json()
    transit = next(c for c in tree["mf"]["children"] if c["fid"] == "3F01")
    # the demo profile flags the keys it adds enciphered (36→F6, 3E→FE, 34→F4: SPEC §6 R4, CIPHK)
    assert {k["type"] for k in transit["keyfile"]["keys"]} >= {"39", "F6", "3F", "FE", "F4"}
    assert all("value" not in k for k in transit["keyfile"]["keys"])


def test_image_errors_are_located(run_cli, tmp_path):
    img = tmp_path / "c.json"
    img.write_text('{"format": "citycard-sim-image", "version": 1, "atr": "3B00", "card_blocked": false, '
                   '"mf": {"type": "DF", "fid": "3F0", "name": ""}}')
    r = run_cli("sim", "show", str(img))
    assert r.exit_code == 2 and f"{img}: mf.fid: '3F0' is not hex" in r.stderr
    img.write_text("{not json")
    r = run_cli("apdu", "--sim", str(img), "00A40000023F00")
    assert r.exit_code == 2 and "line 1: not valid JSON" in r.stderr
    img.write_text('{"format": "citycard-sim-image", "version": 9}')
    assert "version 9 not supported" in run_cli("sim", "show", str(img)).stderr
    assert "no such card image" in run_cli("sim", "show", str(tmp_path / "none.json")).stderr


def _dfs(df):
    yield df
    for c in df.children.values():
        if hasattr(c, "children"):
            yield from _dfs(c)


def test_new_help_names_every_card_model(run_cli):
    """`sim new --help` lists every model `--model` accepts (the README's `--model fmcos-sm4` too)."""
    from citycard.sim import MODELS

    r = run_cli("sim", "new", "--help")
    assert r.exit_code == 0
    flat = "".join(r.stdout.split())           # help lines wrap anywhere, even at a hyphen
    missing = [name for name in sorted(MODELS) if name not in flat]
    assert not missing, f"sim new --help does not name {missing}"
