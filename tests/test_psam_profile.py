"""PSAM keys in a profile (docs/psam.md): type psam-*, levels into the usage byte, the master
itself (no factor); bad entries give one line naming the key path and plan nothing."""

from __future__ import annotations

import pytest

from citycard.errors import CitycardError
from citycard.profile import load_profile
from tests.psamhost import PSAM_PROFILE

PURCHASE = ('purchase = { type = "psam-purchase", levels = 1, id = 1, version = 1, algorithm = 0, '
            'master = "transit/dpk", export = true }')


def test_shipped_psam_profile_keys():
    spec = load_profile(PSAM_PROFILE)
    app = next(df for df in spec.apps if df.name == "psam")
    keys = {k.name: k for k in app.keys}
    p, m = keys["purchase"], keys["maintenance"]
    assert (p.type_byte, p.kid, p.b3, p.b4, p.factor, p.master) == (0x22, 1, 1, 0, None, ("transit", "dpk"))
    assert (m.type_byte, m.kid, m.factor, m.master) == (0x25, 1, None, ("transit", "damk"))
    assert keys["master"].factor == "@app_serial"            # the PSAM's own master: diversified as usual


@pytest.mark.parametrize("replacement, where, message", [
    (PURCHASE.replace("levels = 1", "levels = 4"), "apps.psam.keys.purchase.levels", ""),
    (PURCHASE.replace("export = true", 'factor = "@app_serial"'), "apps.psam.keys.purchase.factor",
     "the master itself"),
    (PURCHASE.replace("export = true", 'write = "cipher"'), "apps.psam.keys.purchase.write", "plain or mac"),
    (PURCHASE.replace("psam-purchase", "psam-nonsense"), "apps.psam.keys.purchase.type", "psam-purchase"),
    (PURCHASE.replace('type = "psam-purchase", levels = 1', 'type = "purchase", levels = 1'),
     "apps.psam.keys.purchase.levels", "only a PSAM key"),
])
def test_bad_psam_keys_are_named(tmp_path, replacement, where, message):
    text = PSAM_PROFILE.read_text(encoding="utf-8")
    assert PURCHASE in text
    bad = tmp_path / "psam.toml"
    bad.write_text(text.replace(PURCHASE, replacement), encoding="utf-8")
    with pytest.raises(CitycardError) as exc:
        load_profile(bad)
    line = str(exc.value)
    assert "\n" not in line and where in line and message in line
