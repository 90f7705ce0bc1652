"""The demo's terminal scene (`./scripts/demo`, docs/psam.md): a PSAM personalized by the same
engine and key source as the user card, served in the second vpcd slot of the same pcscd, a
purchase through it by a terminal that holds no keys, then the back office's TAC check and
clearing (docs/clearing.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from .pcscd import PrivatePcscd

CLI = [sys.executable, "-m", "citycard"]
Run = Callable[..., str]


def terminal_scene(run: Run, env: dict[str, str], workdir: Path, daemon: PrivatePcscd | None,
                   card: list[str], profile: str, keys: str,
                   wait_card: Callable[[dict[str, str], str], None]) -> None:
    """Run the scene; ``card`` are the user card's options (``--reader R`` or ``--sim IMAGE``)."""
    psam_image = workdir / "psam.json"
    print("\n# a terminal that holds no keys: a PSAM (secure module) in a second reader computes MAC1 and")
    print("# checks MAC2; it is personalized from profiles/psam.toml by the same engine and keys")
    run(["sim", "new", "--model", "psam", str(psam_image)], env)
    server = None
    if daemon is not None:
        psam_reader = daemon.reader_names[1]
        server = subprocess.Popen(CLI + ["sim", "serve", str(psam_image), "--vpcd", f"127.0.0.1:{daemon.port + 1}"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_card(env, psam_reader)
        psam = ["--psam", psam_reader]
        perso_at = ["--reader", psam_reader]
        card_opt = ["--card", card[1]]
    else:
        psam = ["--psam-sim", str(psam_image)]
        perso_at = ["--sim", str(psam_image)]
        card_opt = ["--card-sim", card[1]]
    try:
        run(["perso", "--profile", "profiles/psam.toml", "--keys", keys, "--data", "profiles/psam-sample.csv",
             "--row", "1", *perso_at], env)
        run(["terminal", "info", *psam], env)
        log = str(workdir / "terminal.log")
        run(["terminal", "purchase", "--profile", profile, *card_opt, *psam, "--amount", "2.50", "--log", log], env)
        print("\n# the back office checks every TAC of the terminal log with the card keys (keystore or HSM)")
        run(["terminal", "check-log", "--profile", profile, "--keys", keys, "--log", log], env)
        print("\n# clearing files it in the ledger (docs/clearing.md) and settles what each service unit is owed")
        ledger = str(workdir / "ledger.db")
        run(["clearing", "import", log, "--ledger", ledger, "--profile", profile, "--keys", keys], env)
        run(["clearing", "report", "--ledger", ledger], env)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
