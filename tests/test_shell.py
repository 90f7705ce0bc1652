"""`citycard shell`: driven in process, with piped input, and as a user would in a
pseudo-terminal (readline: tab completion, history), on a personalized demo card."""

from __future__ import annotations

import io
import os
import pty
import select
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from citycard.shell.card import CardContext
from citycard.shell.interactive import CardShell
from citycard.sim.transport import ImageTransport
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "profiles/citycard.toml")
KEYS = str(ROOT / "profiles/demo-keys.toml")
PK = ["--profile", PROFILE, "--keys", KEYS]


def personalize(image: Path) -> None:
    """`citycard perso` of row 1 onto a fresh simulated card image."""
    args = ["perso", *PK, "--data", str(ROOT / "profiles/citycard-sample.csv"), "--row", "1",
            "--sim", str(image), "--issue-date", "20261124"]
    from click.testing import CliRunner

    from citycard.cli.main import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["sim", "new", str(image)]).exit_code == 0
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def perso_image(tmp_path_factory):
    image = tmp_path_factory.mktemp("shell") / "perso.json"
    personalize(image)
    return image


@pytest.fixture
def card(perso_image, tmp_path):
    path = tmp_path / "card.json"
    shutil.copy(perso_image, path)
    return path


def shell_session(image: Path, lines: list[str], *, profile: bool = True, keys: bool = True) -> str:
    """Run the shell in process over ``lines``; its output."""
    from citycard.keys import KeyRing
    from citycard.keys.demo import DemoKeyFile
    from citycard.profile import load_profile

    transport = ImageTransport(image)
    transport.connect()
    session = CardSession(transport)
    out = io.StringIO()
    ctx = CardContext(session, load_profile(PROFILE) if profile else None,
                      KeyRing([DemoKeyFile(KEYS)]) if keys else None)
    sh = CardShell(ctx, stdin=io.StringIO("".join(line + "\n" for line in lines)), stdout=out, use_readline=False)
    sh.use_rawinput = False
    try:
        sh.cmdloop()
    finally:
        session.close()
    return out.getvalue()


# ---------------------------------------------------------------------------- in process
def test_shell_in_process_names_decodes_and_authenticates(card, monkeypatch):
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    out = shell_session(card, ["ls", "select transit", "ls", "select ef0015", "read", "records ef0018",
                               "read ep", "auth", "protect transit/damk 00D6951C02 ABCD", "read",
                               "select social", "read ef06", "verify", "verify-pin social", "read ef06",
                               "select mf", "records dir", "00B2010C00", "apdu 00B2200C00 =6A83",
                               "apdu 00B2200C00 =9000", "set X = 1234", "echo x is ${X}", "vars", "help", "bogus",
                               "select nowhere", "quit"])
    assert "citycard:MF> " in out                                   # prompts show where we are
    assert "  transit    3F01  A00000000386980701  TRANSIT  unit transit" in out
    assert "  ef0015     0015  binary 30 bytes, read free, write free (+mac)  [mohurd_ef0015]" in out
    assert "citycard:transit/ef0015> " in out
    assert "app_serial     3301000000000001" in out                 # decoded with the layout
    assert "ef0018 (0018): no records" in out and "balance  0.00" in out
    assert "authenticated" in out and "> 04D6951C06 ABCD" in out
    assert "rfu3           ABCD" in out                               # the protected write read back
    assert "ef06 (0006): 6982 security status not satisfied" in out
    assert "> 0020000003 <3 bytes masked>" in out and "PIN verified" in out and "123456" not in out
    assert "name        曾峰一" in out
    assert '50 (application label) 04 53535345 "SSSE"' in out           # TLV dumps
    assert "< 6A83  (record not found)" in out
    assert "mismatch: expected SW 9000, card answered 6A83" in out  # the shell carries on
    assert "x is 1234" in out and "  X = 1234" in out
    assert "Commands (help COMMAND for details" in out
    assert "unknown command 'bogus'" in out and "error: select 'nowhere'" in out
    assert out.rstrip().endswith("bye")


def test_shell_without_profile_or_keys(card):
    out = shell_session(card, ["ls", "select A00000000386980701", "select 0015", "read", "auth transit",
                               "select transit", "00A40000023F00"], profile=False, keys=False)
    assert "no profile (--profile): select by FID or AID" in out
    assert "citycard:MF/0015> " in out or "citycard:A00000000386980701/0015> " in out
    assert "< 330133010001000001010000330100000000000120261124203611240000 9000  (success)" in out
    assert "error: naming an application needs a profile (--profile)" in out
    assert "select 'transit': without a profile give mf, a FID" in out


def test_shell_captures_without_an_expected_sw(card):
    """Issue 17: `HEX => NAME` captures whatever the card answers; `=SW` stays optional."""
    out = shell_session(card, ["00A40000023F00 => fci", "00B0950004 => bad", "vars"], profile=False, keys=False)
    assert "error" not in out
    assert "  fci = 6F15840E315041592E5359532E4444463031A503880101" in out
    assert "  bad = " in out                       # the answer's data (none: an SW only), still captured


def test_shell_with_piped_input_and_transcript(card, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    rec = tmp_path / "session.cardscript"
    r = run_cli("shell", "--sim", str(card), *PK, "--transcript", str(rec), "--history", str(tmp_path / "h"),
                input="select transit\nread ef0015\nauth\nselect social\nverify\nbalance transit\nquit\n")
    assert r.exit_code == 0, r.stderr
    assert "app_serial     3301000000000001" in r.stdout and "balance: 0.00 (0 fen)" in r.stdout
    text = rec.read_text()
    assert "auth transit" in text and "verify-pin social" in text and "123456" not in text
    # the session replays as a script
    shutil.copy(tmp_path.parent / tmp_path.name / "card.json", tmp_path / "again.json")
    replay = run_cli("script", "run", str(rec), "--sim", str(tmp_path / "again.json"), *PK)
    assert replay.exit_code == 0, replay.stderr


# ---------------------------------------------------------------------------- a terminal
class PtyShell:
    """A child process on a pseudo-terminal; every read is bounded by a timeout."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.buf = b""
        self.seen = b""
        self.bells = 0

    def expect(self, token: str | bytes, timeout: float = 15.0) -> str:
        """Read until ``token``; the text up to it.  Fails (never hangs) after ``timeout``."""
        want = token.encode() if isinstance(token, str) else token
        deadline = time.monotonic() + timeout
        while want not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {want!r}; last output: {self.buf[-800:]!r}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:       # EIO: the child has gone
                chunk = b""
            if not chunk:
                raise AssertionError(f"the shell ended while waiting for {want!r}; output: {self.buf[-800:]!r}")
            self.bells += chunk.count(b"\x07")            # readline rings when completion is ambiguous
            self.buf += chunk.replace(b"\x07", b"")
            self.seen += chunk
        i = self.buf.index(want) + len(want)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out.decode("utf-8", "replace")

    def prompt(self, prompt: str, timeout: float = 15.0) -> str:
        """Wait for ``prompt``, then until readline takes input: it may discard what was typed
        before it set the terminal up, so type a mark until it is echoed, then erase it."""
        out = self.expect(prompt, timeout)
        for _ in range(40):
            self.send("#")
            try:
                self.expect("#", timeout=0.5)
                break
            except AssertionError as exc:
                if "ended" in str(exc):
                    raise
        else:
            raise AssertionError("readline never echoed the input")
        self.send("\x15")                                     # Ctrl-U: erase the line
        time.sleep(0.05)
        return out

    def send(self, data: str | bytes) -> None:
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = 0
                return os.waitstatus_to_exitcode(status)
            try:  # keep draining so the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.seen += os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the shell did not exit")

    def close(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0
        try:
            os.close(self.fd)
        except OSError:
            pass


def shell_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYCARD_", "COLUMNS", "LINES"))}
    env.update(HOME=str(home), TERM="dumb", INPUTRC="/dev/null", PYTHONIOENCODING="utf-8", LANG="C.UTF-8")
    env.pop("CITYCARD_HISTORY", None)
    env.update(extra or {})
    return env


def drive_shell(argv: list[str], env: dict[str, str], home: Path) -> str:
    """Tab completion, select + read decoded, history: what a user does at the prompt."""
    sh = PtyShell(argv, env)
    try:
        sh.prompt("citycard:MF> ", timeout=30)
        sh.send("sel\t")                                        # a command
        assert "select " in sh.expect("select ")
        sh.send("tra\t")                                        # an application of the profile
        sh.expect("transit ")
        sh.send("\r")
        out = sh.prompt("citycard:transit> ")
        assert "< 6F328409A00000000386980701" in out and "(success)" in out  # FCI with 9F08 01 02 (SPEC §6 R10)
        assert "84 (DF name) 09 A00000000386980701" in out
        sh.send("select ef0\t")                                 # ef0015 / ef0018: the common part
        sh.expect("ef001")
        assert sh.bells >= 1                                    # ambiguous: readline rang
        sh.send("5\r")
        sh.prompt("citycard:transit/ef0015> ")
        sh.send("read\r")
        out = sh.prompt("citycard:transit/ef0015> ")
        assert "ef0015 (0015), layout mohurd_ef0015:" in out
        assert "app_serial     3301000000000001" in out and "start_date     20261124" in out
        sh.send("auth\r")
        assert "authenticated" in sh.prompt("citycard:transit/ef0015> ")
        # history: Up twice brings back `read`; Ctrl-P (previous line) works as well
        sh.send("\x1b[A\x1b[A\r")
        out = sh.prompt("citycard:transit/ef0015> ")
        assert "app_serial     3301000000000001" in out
        sh.send("echo hello\r")
        sh.prompt("citycard:transit/ef0015> ")
        sh.send("\x10\r")
        assert "hello" in sh.prompt("citycard:transit/ef0015> ")
        sh.send("history 3\r")
        assert "echo hello" in sh.prompt("citycard:transit/ef0015> ")
        sh.send("quit\r")
        sh.expect("bye")
        assert sh.wait() == 0
        return sh.seen.decode("utf-8", "replace")
    finally:
        sh.close()


def test_shell_in_a_terminal(card, tmp_path):
    argv = [sys.executable, "-m", "citycard", "shell", "--sim", str(card), *PK]
    env = shell_env(tmp_path)
    drive_shell(argv, env, tmp_path / "home")
    history = (tmp_path / "home" / ".citycard_history").read_text()
    assert "read" in history.splitlines() and "echo hello" in history.splitlines()
    # the next session starts with that history: Up recalls the last line of the previous one
    sh = PtyShell(argv, env)
    try:
        sh.prompt("citycard:MF> ", timeout=30)
        sh.send("\x1b[A")
        sh.expect("quit")
        sh.send("\r")
        sh.expect("bye")
        assert sh.wait() == 0
    finally:
        sh.close()


def test_shell_in_a_terminal_ctrl_c_and_eof(card, tmp_path):
    argv = [sys.executable, "-m", "citycard", "shell", "--sim", str(card)]
    sh = PtyShell(argv, shell_env(tmp_path))
    try:
        sh.prompt("citycard:MF> ", timeout=30)
        sh.send("00A4040009A0000000038698070")
        sh.expect("38698070")                                   # echoed: readline waits for more
        time.sleep(0.2)
        sh.send("\x03")                                         # Ctrl-C drops the line
        sh.expect("^C")
        sh.prompt("citycard:MF> ")
        sh.send("00A4040009A00000000386980701\r")              # a raw APDU, no profile
        assert "9F0C (issuer-defined FCI data)" in sh.prompt("citycard:A00000000386980701> ")
        sh.send("\x04")                                         # Ctrl-D leaves
        sh.expect("bye")
        assert sh.wait() == 0
    finally:
        sh.close()


# ---------------------------------------------------------------------------- through pcscd
@pytest.mark.pcsc
def test_shell_and_script_through_pcscd(served_sim, run_cli, tmp_path, monkeypatch):
    reader = served_sim.reader
    r = run_cli("perso", *PK, "--data", str(ROOT / "profiles/citycard-sample.csv"), "--row", "1",
                "--reader", reader, "--issue-date", "20261124")
    assert r.exit_code == 0, r.stderr
    # the shell in a terminal, talking to the card through pcscd
    argv = [sys.executable, "-m", "citycard", "shell", "--reader", reader, *PK]
    drive_shell(argv, shell_env(tmp_path, dict(served_sim.daemon.env)), tmp_path / "home")
    # scripts: the examples, a mismatch with its line, a recording replayed
    monkeypatch.setenv("CITYCARD_PIN", "123456")
    for example in sorted((ROOT / "examples").glob("*.cardscript")):
        r = run_cli("script", "run", str(example), "--reader", reader, *PK, "-q")
        assert r.exit_code == 0, (example, r.stderr)
    bad = tmp_path / "bad.cardscript"
    bad.write_text("select transit\n\n00B0950002 -> 9999 9000\n")
    r = run_cli("script", "run", str(bad), "--reader", reader, *PK)
    assert r.exit_code == 1 and f"{bad}:3: response 3301 9000 (success) does not match" in r.stderr
    # a recording replays on a card in the state it was recorded in: line-protection.cardscript
    # leaves the card as it found it once it has run
    lp = str(ROOT / "examples/line-protection.cardscript")
    assert run_cli("script", "run", lp, "--reader", reader, *PK, "-q").exit_code == 0
    rec = tmp_path / "rec.cardscript"
    r = run_cli("script", "run", lp, "--reader", reader, *PK, "--transcript", str(rec), "-q")
    assert r.exit_code == 0, r.stderr
    replay = run_cli("script", "run", str(rec), "--reader", reader, *PK)
    assert replay.exit_code == 0, replay.stderr
    wire = tmp_path / "wire.txt"
    assert run_cli("--transcript", str(wire), "apdu", "--reader", reader, "00A4040009A00000000386980701",
                   "00B0950000", "0084000004").exit_code == 0
    r = run_cli("script", "run", str(wire), "--reader", reader)
    assert r.exit_code == 0, r.stderr
    assert served_sim.stop() == 0
