"""A batch of PSAMs (issue 21 item 1): `batch run` with the PSAM profile and a data file of
terminal numbers, on simulated readers making PSAM cards (`--sim-model psam`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_batch_issues_psams_with_their_terminal_numbers(run_cli, tmp_path):
    keep = tmp_path / "psams"
    r = run_cli("batch", "run", "--profile", str(ROOT / "profiles/psam.toml"), "--keys",
                str(ROOT / "profiles/demo-keys.toml"), "--data", str(ROOT / "profiles/psam-sample.csv"),
                "--journal", str(tmp_path / "j.db"), "--sims", "1", "--sim-model", "psam", "--keep-cards", str(keep),
                "--json")
    assert r.exit_code == 0, r.stderr
    rows = sum(1 for _ in open(ROOT / "profiles/psam-sample.csv")) - 1
    assert r.json()["verified"] == rows >= 2
    terminals = set()
    for img in sorted(keep.glob("*.json")):
        info = run_cli("terminal", "info", "--psam-sim", str(img), "--json")
        assert info.exit_code == 0, info.stderr
        terminals.add(info.json()["terminal_number"])
        assert info.json()["next_ttsn"] == 1
    assert terminals == {line.strip() for line in list(open(ROOT / "profiles/psam-sample.csv"))[1:]}
    r = run_cli("batch", "run", "--profile", str(ROOT / "profiles/psam.toml"), "--keys",
                str(ROOT / "profiles/demo-keys.toml"), "--data", str(ROOT / "profiles/psam-sample.csv"),
                "--journal", str(tmp_path / "k.db"), "--sims", "1", "--sim-model", "nosuch")
    assert r.exit_code == 2 and "--sim-model nosuch: unknown card model" in r.stderr
