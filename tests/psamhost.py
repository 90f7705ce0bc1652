"""Test helpers for the PSAM: personalized card and PSAM copies, and an independent DES.

The expected MACs of the PSAM tests are computed here with ``cryptography`` directly, from
SPEC.md §2.2/§2.4 and PSAM-SM4.md §2.3, never with citycard's own crypto."""

from __future__ import annotations

import copy
import datetime
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]

from citycard.keys import KeyRing
from citycard.keys.demo import DemoKeyFile
from citycard.perso.context import CardData
from citycard.perso.data import read_csv
from citycard.perso.plan import Planner
from citycard.perso.run import personalize
from citycard.profile import load_profile
from citycard.sim import SimCard, new_card
from citycard.sim.transport import SimTransport
from citycard.transport import CardSession

ROOT = Path(__file__).resolve().parent.parent
CARD_PROFILE = ROOT / "profiles/citycard.toml"
PSAM_PROFILE = ROOT / "profiles/psam.toml"
DEMO_KEYS = ROOT / "profiles/demo-keys.toml"
H = bytes.fromhex
# the demo masters the PSAM and the card share (profiles/demo-keys.toml: TEST KEYS)
DPK_MASTER = H("791A8504E959DF230A308891A2B59511")    # transit/dpk
DTK_MASTER = H("7C1814104CE3767265CDCCA28FE56DA2")    # transit/dtk
DAMK_MASTER = H("51FA354E134CA033545350C87EB3D264")   # transit/damk
PSAM_TERMINAL = H("330100000001")                      # profiles/psam-sample.csv row 1
ISSUE = datetime.date(2026, 11, 24)
WHEN = datetime.datetime(2026, 12, 3, 10, 15, 0)


def des3(key: bytes, data: bytes) -> bytes:
    """(3)DES-ECB: an 8-byte key is single DES (K‖K‖K), a 16-byte one K1‖K2‖K1."""
    k = key * 3 if len(key) == 8 else key + key[:8]
    enc = Cipher(TripleDES(k), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def des3_dec(key: bytes, data: bytes) -> bytes:
    k = key * 3 if len(key) == 8 else key + key[:8]
    dec = Cipher(TripleDES(k), modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


def div(master: bytes, factor: bytes) -> bytes:
    """PBOC diversification (SPEC §2.4): E(MK, F) ‖ E(MK, ~F)."""
    return des3(master, factor) + des3(master, bytes(b ^ 0xFF for b in factor))


def pad80(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 8)


def cbc(key8: bytes, data: bytes, iv: bytes = bytes(8)) -> bytes:
    state = iv
    for i in range(0, len(data), 8):
        state = des3(key8, bytes(a ^ b for a, b in zip(state, data[i:i + 8])))
    return state


def purse_mac(key8: bytes, data: bytes) -> bytes:
    """MAC1/MAC2/TAC: single-DES CBC-MAC, IV 0, pad 80 (SPEC §2.2)."""
    return cbc(key8, pad80(data))[:4]


def retail_mac(key16: bytes, data_padded: bytes, iv: bytes) -> bytes:
    """ISO 9797-1 alg. 3 over already padded data."""
    state = cbc(key16[:8], data_padded, iv)
    return des3(key16[:8], des3_dec(key16[8:], state))[:4]


def keys() -> KeyRing:
    return KeyRing([DemoKeyFile(DEMO_KEYS)])


def _perso(card: SimCard, profile: Path, csv: Path, row: int = 1, ring: KeyRing | None = None) -> SimCard:
    spec = load_profile(profile)
    t = SimTransport(card)
    t.connect()
    plan = Planner(spec, ring or keys()).plan(CardData(read_csv(csv).row(row), row, ISSUE, "row"))
    assert personalize(CardSession(t), spec, plan).verified
    card.power_off()
    return card


@lru_cache(maxsize=None)
def _user_card() -> SimCard:
    return _perso(SimCard(rng=lambda n: b"\x5A" * n), CARD_PROFILE, ROOT / "profiles/citycard-sample.csv")


@lru_cache(maxsize=None)
def _psam(key_file: str | None = None) -> SimCard:
    ring = KeyRing([DemoKeyFile(Path(key_file))]) if key_file else None
    return _perso(new_card("psam", rng=lambda n: b"\xA5" * n), PSAM_PROFILE, ROOT / "profiles/psam-sample.csv",
                  ring=ring)


def user_card() -> SimCard:
    """A fresh copy of a personalized demo card (constant randoms: 5A..)."""
    return copy.deepcopy(_user_card())


def psam_card(key_file: str | None = None) -> SimCard:
    """A fresh copy of a personalized PSAM (profiles/psam.toml, row 1; another key file: its masters)."""
    return copy.deepcopy(_psam(key_file))


def session(card: SimCard) -> CardSession:
    t = SimTransport(card)
    t.connect()
    return CardSession(t)


def card_spec():
    return load_profile(CARD_PROFILE)


def loaded(amount: int = 1000) -> SimCard:
    """A personalized demo card with ``amount`` fen loaded by the host-key terminal."""
    from citycard.terminal.purse import PurseTerminal

    card = user_card()
    PurseTerminal(session(card), card_spec(), keys()).load(amount, when=WHEN)
    card.power_off()
    return card


# ----------------------------------------------------------------------------- SM4 (docs/sm4.md)
SM4_CARD_PROFILE = ROOT / "profiles/citycard-sm4.toml"
PSAM_SM4_PROFILE = ROOT / "profiles/psam-sm4.toml"
DEMO_KEYS_SM4 = ROOT / "profiles/demo-keys-sm4.toml"
# profiles/demo-keys-sm4.toml (TEST KEYS): the SM4 masters the SM4 PSAM and the card share
DPK_SM4_MASTER = H("DC92ED3C9E5A54E11CD84080C7C2B16A")   # transit/dpk-sm4
DTK_SM4_MASTER = H("FFC9C066F62E8CB61EBDFDF12D06107B")   # transit/dtk-sm4


def sm4_keys(sm4_file: Path = DEMO_KEYS_SM4) -> KeyRing:
    return KeyRing([DemoKeyFile(DEMO_KEYS), DemoKeyFile(sm4_file)])


@lru_cache(maxsize=None)
def _sm4_card() -> SimCard:
    return _perso(SimCard(rng=lambda n: b"\x5A" * n), SM4_CARD_PROFILE, ROOT / "profiles/citycard-sample.csv",
                  ring=sm4_keys())


@lru_cache(maxsize=None)
def _sm4_psam(sm4_file: str | None = None) -> SimCard:
    return _perso(new_card("psam", rng=lambda n: b"\xA5" * n), PSAM_SM4_PROFILE, ROOT / "profiles/psam-sample.csv",
                  ring=sm4_keys(Path(sm4_file) if sm4_file else DEMO_KEYS_SM4))


def sm4_psam_card(sm4_file: str | None = None) -> SimCard:
    """A fresh copy of a personalized SM4 PSAM (profiles/psam-sm4.toml, row 1; another SM4 key
    file: its masters)."""
    return copy.deepcopy(_sm4_psam(sm4_file))


def sm4_card_spec():
    return load_profile(SM4_CARD_PROFILE)


def sm4_loaded(amount: int = 1000) -> SimCard:
    """The SM4 demo card (profiles/citycard-sm4.toml) with ``amount`` fen loaded by the host-key
    terminal with its SM4 load key (the profile's first)."""
    from citycard.terminal.purse import PurseTerminal

    card = copy.deepcopy(_sm4_card())
    PurseTerminal(session(card), sm4_card_spec(), sm4_keys()).load(amount, when=WHEN)
    card.power_off()
    return card
