"""A private pcscd with a vpcd virtual reader, for tests, benchmarks and CI.

Debian's pcscd always uses ``/run/pcscd/pcscd.comm``, so the private one runs in its
own mount namespace with a private directory bound over ``/run`` (PCSC.md).  Clients
reach it through ``PCSCLITE_CSOCK_NAME`` (:attr:`PrivatePcscd.env`).

The PC/SC client library reads ``PCSCLITE_CSOCK_NAME`` **once per process, at its
first PC/SC call**: set ``os.environ`` from :attr:`PrivatePcscd.env` before anything
in the process (pyscard included) touches PC/SC, or pass ``env=`` to subprocesses.

Example::

    with PrivatePcscd() as daemon:
        os.environ.update(daemon.env)
        server = VpcdServer(DemoCard(), port=daemon.port)
        server.start_thread()
        wait_for_card(daemon.reader_names[0])
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

__all__ = ["VPCD_DRIVER", "PrivatePcscd", "free_port_pair", "pcscd_available", "wait_for_card"]

VPCD_DRIVER = pathlib.Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# $0 is the directory to bind over /run; "$@" is the pcscd command line.
_BIND_RUN = 'mount -n --bind "$0" /run && exec "$@"'


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SBIN_PATH)


def _unshare_prefix() -> list[str]:
    unshare = _which("unshare") or "unshare"
    extra = [] if os.geteuid() == 0 else ["--map-root-user"]
    return [unshare, *extra, "--mount", "--propagation", "private"]


@functools.cache
def pcscd_available() -> tuple[bool, str]:
    """Whether this machine can run :class:`PrivatePcscd`, and why not.

    Checks the pcscd binary, the vpcd driver, ``unshare``, and actually tries the
    namespace and bind mount (root or working unprivileged user namespaces).
    The result is cached.
    """
    if _which("pcscd") is None:
        return False, "pcscd not found (Debian: apt-get install pcscd)"
    if not VPCD_DRIVER.exists():
        return False, f"vpcd driver {VPCD_DRIVER} not found (Debian: apt-get install vsmartcard-vpcd)"
    if _which("unshare") is None:
        return False, "unshare not found (Debian: apt-get install util-linux)"
    probe = tempfile.mkdtemp(prefix="ccp", dir="/tmp")
    try:
        cmd = [*_unshare_prefix(), "sh", "-c", _BIND_RUN, probe, "true"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"cannot run unshare: {exc}"
        if res.returncode != 0:
            who = "root" if os.geteuid() == 0 else "user namespaces (--map-root-user)"
            return False, f"a private mount namespace with {who} failed: {res.stderr.strip()}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return True, "ok"


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port_pair(attempts: int = 100) -> int:
    """A port p such that p and p+1 are both bindable on 0.0.0.0 right now."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if port < 65535 and _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError("no free pair of consecutive TCP ports found")


class PrivatePcscd:
    """A pcscd in its own mount namespace, with one vpcd reader (two slots).

    Slot 0 (``reader_names[0]``) listens on ``port``, slot 1 on ``port + 1``.
    A workdir created here is removed on :meth:`stop`; a given one is kept (it
    then holds ``pcscd.log``).  Use as a context manager or call :meth:`start`.
    """

    def __init__(
        self,
        workdir: pathlib.Path | None = None,
        port: int | None = None,
        friendly_name: str = "Citycard Virtual",
        *,
        with_reader: bool = True,
    ) -> None:
        self.with_reader = with_reader  # False: a pcscd with no reader configured at all
        self._given_workdir = workdir
        self._port = port
        self.friendly_name = friendly_name
        self.workdir: pathlib.Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- properties -----------------------------------------------------------------
    @property
    def port(self) -> int:
        """TCP port of slot 0 (slot 1 is ``port + 1``)."""
        if self._port is None:
            raise RuntimeError("PrivatePcscd not started")
        return self._port

    @property
    def socket_path(self) -> str:
        """Path of the daemon's client socket (for ``PCSCLITE_CSOCK_NAME``)."""
        if self.workdir is None:
            raise RuntimeError("PrivatePcscd not started")
        return str(self.workdir / "run" / "pcscd" / "pcscd.comm")

    @property
    def env(self) -> dict[str, str]:
        """Environment entries that point PC/SC clients at this daemon."""
        return {"PCSCLITE_CSOCK_NAME": self.socket_path}

    @property
    def reader_names(self) -> tuple[str, str]:
        """PC/SC names of slot 0 (on ``port``) and slot 1 (on ``port + 1``)."""
        return (f"{self.friendly_name} 00 00", f"{self.friendly_name} 00 01")

    @property
    def log_path(self) -> pathlib.Path | None:
        return None if self.workdir is None else self.workdir / "pcscd.log"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of pcscd's output."""
        path = self.log_path
        try:
            text = path.read_text(errors="replace") if path else ""
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- life cycle -----------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> PrivatePcscd:
        """Start pcscd and wait until its socket accepts connections."""
        if self.proc is not None:
            raise RuntimeError("PrivatePcscd already started")
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        if self._given_workdir is not None:
            self.workdir = pathlib.Path(self._given_workdir).absolute()
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="cc", dir="/tmp"))
        if len(self.socket_path.encode()) >= 107:
            raise RuntimeError(f"pcscd socket path too long (must be < 107 bytes): {self.socket_path}")
        if self._port is None:
            self._port = free_port_pair()
        confdir = self.workdir / "reader.conf.d"
        confdir.mkdir(exist_ok=True)
        (self.workdir / "run").mkdir(exist_ok=True)
        shutil.rmtree(self.workdir / "run" / "pcscd", ignore_errors=True)  # stale pid/socket
        if self.with_reader:
            (confdir / "citycard").write_text(
                f'FRIENDLYNAME "{self.friendly_name}"\n'
                f"DEVICENAME   /dev/null:{self._port}\n"
                f"LIBPATH      {VPCD_DRIVER}\n"
                f"CHANNELID    {self._port}\n"
            )
        pcscd = _which("pcscd") or "pcscd"
        cmd = [*_unshare_prefix(), "sh", "-c", _BIND_RUN, str(self.workdir / "run"),
               pcscd, "--foreground", "-i", "-c", str(confdir)]  # fmt: skip
        env = {k: v for k, v in os.environ.items()
               if k not in ("LISTEN_FDS", "LISTEN_PID", "PCSCLITE_CSOCK_NAME")}  # fmt: skip
        with open(self.workdir / "pcscd.log", "wb") as logf:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        path = self.socket_path
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pcscd exited with status {self.proc.returncode} during start-up;"
                    f" log tail:\n{self.log_tail()}"
                )
            if os.path.exists(path):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    try:
                        s.connect(path)
                        return
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pcscd socket {path} not ready after {timeout} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM pcscd, SIGKILL after 5 s, reap it, remove a workdir created here.

        Release PC/SC client handles and stop the cards first (PCSC.md).
        """
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        if self.workdir is not None and self._given_workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> PrivatePcscd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_card(reader_name: str, present: bool = True, timeout: float = 5.0) -> bytes:
    """Wait until ``reader_name`` shows a card present (or absent); return its ATR.

    Returns ``b""`` when waiting for absence. Raises ``TimeoutError`` naming the last
    state (and the readers seen when the reader is unknown).  Uses pyscard's
    ``smartcard.scard``; ``PCSCLITE_CSOCK_NAME`` must already be in ``os.environ``
    when this process makes its first PC/SC call (the client library reads it once).
    """
    from smartcard import scard

    deadline = time.monotonic() + timeout
    hres, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hres != scard.SCARD_S_SUCCESS:
        raise TimeoutError(f"PC/SC unavailable: {scard.SCardGetErrorMessage(hres)}")
    try:
        known = scard.SCARD_STATE_UNAWARE
        last = "no state yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _, readers = scard.SCardListReaders(ctx, [])
                raise TimeoutError(
                    f"reader {reader_name!r}: card not {'present' if present else 'absent'}"
                    f" after {timeout} s ({last}); readers: {readers}"
                )
            hres, states = scard.SCardGetStatusChange(
                ctx, max(1, int(remaining * 1000)), [(reader_name, known)]
            )
            if hres == scard.SCARD_E_TIMEOUT:
                continue
            if hres != scard.SCARD_S_SUCCESS:
                last = scard.SCardGetErrorMessage(hres)
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            _, event, atr = states[0]
            is_present = bool(event & scard.SCARD_STATE_PRESENT)
            last = f"state 0x{event & 0xFFFF:04X}"
            if is_present == present and not (present and (event & scard.SCARD_STATE_MUTE or not atr)):
                return bytes(atr) if present else b""
            known = event & ~scard.SCARD_STATE_CHANGED
    finally:
        scard.SCardReleaseContext(ctx)
