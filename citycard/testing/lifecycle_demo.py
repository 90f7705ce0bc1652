"""The demo's lifecycle scene (`./scripts/demo`, docs/lifecycle.md): cards issued by a batch go
into the card register; one is loaded, reported lost, put on a signed hotlist that a terminal
loads; presented for a purchase it is refused and blocked on the spot by the PSAM's MAC; clearing
files the terminal logs and the register learns of the block; the cardholder gets a replacement
carrying the cleared balance."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

Run = Callable[..., str]


def lifecycle_scene(run: Run, env: dict[str, str], workdir: Path, profile: str, keys: str, data: str,
                    psam_image: Path, journal: str) -> None:
    """Run the scene in ``workdir``: the bureau's ``journal`` (the batch goes on there, so its
    serials follow the batch's), the PSAM image of the terminal scene."""
    register, ledger = str(workdir / "register.db"), str(workdir / "bureau-ledger.db")
    counter_log, terminal_log = str(workdir / "counter.log"), str(workdir / "bus-terminal.log")
    cards = workdir / "cards"
    print("\n# the card after issuance: two more cards of the batch, then every card of the journal, into "
          "the card register")
    run(["batch", "run", "--profile", profile, "--keys", keys, "--data", data, "--journal", journal, "--sims", "1",
         "--limit", "2", "--keep-cards", str(cards)], env)
    run(["cards", "import", "--register", register, "--journal", journal, "--profile", profile], env)
    serial = sorted(p.stem for p in cards.glob("*.json"))[0]
    card = str(cards / f"{serial}.json")
    print(f"\n# card {serial} is loaded at a counter (the load goes to the counter's terminal log)")
    run(["purse", "load", "--profile", profile, "--keys", keys, "--sim", card, "--amount", "30.00",
         "--log", counter_log], env)
    print("\n# the cardholder reports it lost: the register hotlists it; the issuer signs a hotlist")
    run(["cards", "lost", "--register", register, serial, "--reason", "lost on the bus"], env)
    pw = workdir / "hotlist.pass"
    pw.write_text("hotlist signer passphrase (demo)\n")
    pw.chmod(0o600)
    cred, pub, hot = str(workdir / "issuer.cred"), str(workdir / "issuer.pub"), str(workdir / "hotlist.bin")
    run(["operator", "new", "issuer", "--out", cred, "--passphrase-file", str(pw)], env)
    run(["hotlist", "key", cred, "--out", pub], env)
    run(["hotlist", "export", "--register", register, "--full", "--out", hot, "--sign", cred,
         "--sign-passphrase-file", str(pw)], env)
    state = str(workdir / "terminal-hotlist.json")
    run(["terminal", "hotlist", hot, "--state", state, "--trust", pub], env)
    print("\n# presented at a terminal, the lost card is refused and blocked with the PSAM's MAC (exit 1)")
    run(["terminal", "purchase", "-p", profile, "--card-sim", card, "--psam-sim", str(psam_image), "--amount",
         "1.00", "--log", terminal_log, "--hotlist-state", state], env, check=False)
    print("\n# clearing files both logs; the register learns that a terminal blocked the card")
    run(["clearing", "import", counter_log, terminal_log, "--ledger", ledger, "--profile", profile, "--keys", keys],
        env)
    run(["cards", "import", "--register", register, "--ledger", ledger], env)
    print("\n# a replacement for the cardholder: a new card, the cleared balance loaded onto it")
    new = str(workdir / "replacement.json")
    run(["sim", "new", new], env)
    run(["cards", "replace", "--register", register, serial, "--journal", journal, "--profile", profile,
         "--data", data, "--keys", keys, "--ledger", ledger, "--reason", "lost on the bus", "--sim", new,
         "--log", counter_log], env)
    run(["cards", "show", "--register", register, serial], env)
    run(["purse", "balance", "--profile", profile, "--sim", new], env)
