"""`./scripts/demo`: a tour of citycard on this machine, no hardware needed.

Starts a private pcscd with the vpcd virtual reader (its own mount namespace: nothing
system-wide is touched), puts a fresh simulated card in it with ``citycard sim serve``,
and runs the CLI the way a developer would, printing each command first.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..assets import copy_assets
from .pcscd import PrivatePcscd, pcscd_available
from .lifecycle_demo import lifecycle_scene
from .psam_demo import terminal_scene

CLI = [sys.executable, "-m", "citycard"]


def _run(args: list[str], env: dict[str, str], *, check: bool = True, head: int | None = None) -> str:
    print(f"\n$ citycard {' '.join(shlex.quote(a) for a in args)}" + (f" | head -{head}" if head else ""), flush=True)
    proc = subprocess.run(CLI + args, env=env, text=True, capture_output=True)
    sys.stdout.write(proc.stdout if head is None else "".join(proc.stdout.splitlines(True)[:head]))
    if proc.stderr:
        sys.stdout.write(proc.stderr)
    sys.stdout.flush()
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `citycard {args[0]}` failed with exit code {proc.returncode}")
    return proc.stdout


def _wait_card(env: dict[str, str], reader: str, timeout: float = 10.0) -> None:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(CLI + ["readers", "--json"], env=env, text=True, capture_output=True).stdout
        try:
            listed = json.loads(out)
        except ValueError:
            listed = []
        # this reader's card (another reader's card, present already, must not count)
        if any(r.get("name") == reader and r.get("card_present") for r in listed):
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: the simulated card did not appear in {reader!r}")


def main(argv: list[str] | None = None) -> int:
    """The tour; ``--keep`` keeps its folder (it holds TEST KEYS: a keystore and a card image
    with per-card keys), which is otherwise removed at exit, whatever happens (issue 17)."""
    keep = "--keep" in (sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="citycard-demo-"))
    here = os.getcwd()
    try:
        return _tour(workdir)
    finally:
        os.chdir(here)
        if keep:
            print(f"\ndemo files kept in {workdir}: they hold TEST KEYS (a keystore, a card image with "
                  "per-card keys); remove the folder when done")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"\n(removed the demo folder {workdir}: its keystore and card image held TEST KEYS; "
                  "--keep keeps it)")


def _tour(workdir: Path) -> int:
    image = workdir / "card.json"
    env = dict(os.environ)
    print("citycard demo: a simulated FMCOS city card behind a real pcscd (vpcd virtual reader)")
    _run(["sim", "new", str(image)], env)
    ok, reason = pcscd_available()
    if not ok:
        print(f"\n(no private pcscd here: {reason}; using the card in process with --sim)")
        card = ["--sim", str(image)]
        daemon = None
        server = None
    else:
        daemon = PrivatePcscd().start()
        env.update(daemon.env)
        reader = daemon.reader_names[0]
        print(f"\n# started a private pcscd; `citycard sim serve` puts the card in {reader!r}")
        server = subprocess.Popen(CLI + ["sim", "serve", str(image), "--vpcd", f"127.0.0.1:{daemon.port}"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        card = ["--reader", reader]
    profile, keys, data = "profiles/citycard.toml", "profiles/demo-keys.toml", "profiles/citycard-sample.csv"
    copy_assets(workdir)   # the demo files shipped in the package, as the README names them
    os.chdir(workdir)
    try:
        if daemon is not None:
            _wait_card(env, reader)
            _run(["readers"], env)
        _run(["apdu", *card, "00A40000023F00=9000"], env)
        print("\n# the demo masters (TEST KEYS ONLY) into an encrypted keystore; the passphrase comes from")
        print("# CITYCARD_KEYSTORE_PASSPHRASE here (a hidden prompt when run by hand)")
        env["CITYCARD_KEYSTORE_PASSPHRASE"] = "demo passphrase, not a secret"
        keystore = str(workdir / "demo.keystore")
        _run(["keys", "demo", keystore], env)
        _run(["keys", "list", keystore], env)
        keys = keystore
        print("\n# personalize the card from the demo profile and the first sample cardholder")
        _run(["profile", "check", profile, "--data", data, "--keys", keys], env)
        print("\n# the plan is issuance as real FM1208 cards take it (SPEC §6): the factory transport key")
        print("# (8 x FF) opens the MF, ERASE DF, a new KEY file and the master in plaintext, further keys")
        print("# plain, with a MAC, or enciphered only when their type is flagged; each step names its rule")
        _run(["perso", "--profile", profile, "--keys", keys, "--data", data, "--row", "1", *card, "--dry-run"],
             env, head=9)
        _run(["perso", "--profile", profile, "--keys", keys, "--data", data, "--row", "1", *card], env)
        print("\n# a terminal that derives the purse keys from the masters on its own: load, then spend")
        purse = ["--profile", profile, "--keys", keys, *card]
        _run(["purse", "load", *purse, "--amount", "50.00"], env)
        _run(["purse", "purchase", *purse, "--amount", "3.50"], env)
        _run(["purse", "balance", "--profile", profile, *card], env)     # GET BALANCE needs no keys
        _run(["dump", *card, "--profile", profile, "--keys", keys], env)
        terminal_scene(_run, env, workdir, daemon, card, profile, keys, _wait_card)
        print("\n# a bureau batch: 20 more cardholders on two simulated readers, with a journal")
        journal = str(workdir / "journal.db")
        _run(["batch", "run", "--profile", profile, "--keys", keys, "--data", data, "--journal", journal,
              "--sims", "2", "--limit", "20"], env)
        _run(["batch", "status", journal], env)
        lifecycle_scene(_run, env, workdir, profile, keys, data, workdir / "psam.json", journal)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if daemon is not None:
            daemon.stop()
    _run(["sim", "show", str(image)], env)
    print("\ndemo finished.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
