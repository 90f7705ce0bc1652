"""A private SoftHSM2 token for tests, benchmarks and the demo.

SoftHSM2 (Debian package ``softhsm2``) reads its configuration from ``$SOFTHSM2_CONF`` when
the PKCS#11 module is initialised, so a token directory of our own means: a config file
naming a temporary folder, that variable set before any key source opens, and
``softhsm2-util --init-token``.  Nothing touches the system's token directory.

    hsm = SoftHsm.create(tmp_path)            # sets SOFTHSM2_CONF in os.environ
    source = open_source(hsm.uri())           # PIN from the variable hsm.pin_env
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..keys.pkcs11 import DEFAULT_MODULES, MODULE_ENV

UTIL = "softhsm2-util"
PIN_ENV = "CITYCARD_TEST_HSM_PIN"


def module_path() -> str | None:
    env = os.environ.get(MODULE_ENV)
    if env and Path(env).exists():
        return env
    return next((m for m in DEFAULT_MODULES if Path(m).exists()), None)


def unavailable() -> str | None:
    """Why a SoftHSM2 token cannot be made here (None when it can)."""
    if shutil.which(UTIL) is None:
        return f"{UTIL} not found (Debian package softhsm2)"
    if module_path() is None:
        return "the SoftHSM2 PKCS#11 module is not installed (Debian package softhsm2)"
    try:
        import PyKCS11  # noqa: F401
    except ImportError:
        return "the PyKCS11 package is not installed (pip install 'citycard[hsm]')"
    return None


@dataclass
class SoftHsm:
    root: Path
    label: str
    pin: str = field(repr=False)
    so_pin: str = field(repr=False)
    module: str
    pin_env: str = PIN_ENV

    @property
    def conf(self) -> Path:
        return self.root / "softhsm2.conf"

    @classmethod
    def create(cls, root: str | os.PathLike[str], label: str = "citycard-test", *, set_env: bool = True,
               pin_env: str = PIN_ENV) -> "SoftHsm":
        """A fresh token ``label`` in ``root``/tokens with random PINs.  With ``set_env``,
        ``SOFTHSM2_CONF`` and ``pin_env`` (the user PIN) are set in ``os.environ``."""
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        root = Path(root)
        tokens = root / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        conf = root / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                        "slots.removable = false\n", encoding="utf-8")
        hsm = cls(root, label, secrets.token_hex(6), secrets.token_hex(6), module_path() or "", pin_env)
        hsm.init_token(label)
        if set_env:
            os.environ["SOFTHSM2_CONF"] = str(conf)
            os.environ[pin_env] = hsm.pin
        return hsm

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), self.pin_env: self.pin}

    def init_token(self, label: str) -> None:
        """Initialise one more token (in the first free slot) with this object's PINs."""
        r = subprocess.run([UTIL, "--init-token", "--free", "--label", label, "--pin", self.pin,
                            "--so-pin", self.so_pin], env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{UTIL} --init-token failed: {r.stderr.strip() or r.stdout.strip()}")

    def uri(self, label: str | None = None, *, pin_source: str | None = None) -> str:
        """The ``--keys`` URI of a token here (PIN from the environment variable by default)."""
        return (f"pkcs11:token={label or self.label}?module-path={self.module}"
                f"&pin-source={pin_source or 'env:' + self.pin_env}")
