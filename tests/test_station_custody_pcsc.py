"""What keeps objects the profile does not name off a card (issue 18 point 3): FMCOS lists
neither files nor keys, so verification cannot prove their absence (docs/profile.md, "What
verification proves"); perso holds the card exclusively for the whole personalization, so no
other PC/SC client on the station can send a WRITE KEY inside its security state.  Through a
real pcscd onto `citycard sim serve`."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from citycard.commands import fmcos
from citycard.errors import TransportError
from citycard.keys import open_ring
from citycard.perso.job import prepare
from citycard.perso.run import personalize
from citycard.sim import image as sim_image
from citycard.transport.open import open_session
from citycard.transport.pcsc import PcscTransport

pytestmark = pytest.mark.pcsc
ROOT = Path(__file__).resolve().parent.parent
DAY = datetime.date(2026, 11, 24)
# an attacker's master-type key (type 39, id 05) added in plaintext, as in the issue's reproduction,
# and an extra file in the MF
PLANT = (fmcos.write_key(0x05, fmcos.key_record(0x39, 0xF0, 0xF0, 0xAA, 0x33, bytes(range(8)))),
         fmcos.create_binary(0x0EF9, 8, read_ac=0xF0, write_ac=0xF0))


def _mf(image: Path) -> tuple[set[int], set[int]]:
    """The MF's key ids and child FIDs in the served card's image."""
    card = sim_image.load(image)
    keys = {kid for _t, kid in card.mf.keyfile.keys} if card.mf.keyfile is not None else set()
    return keys, set(card.mf.children)


def _perso(reader: str, custody: bool) -> tuple[list[object], object]:
    job = prepare(ROOT / "profiles/citycard.toml", ROOT / "profiles/citycard-sample.csv",
                  open_ring([str(ROOT / "profiles/demo-keys.toml")], []))
    plan = job.plan(3, issue_date=DAY)
    tried: list[object] = []

    def intrude(i: int, _step: object) -> None:
        if i != 7:                  # the MF master and DAMK written, the security state of the MF open
            return
        other = PcscTransport(reader)            # shared, like any other program on the station
        try:
            other.connect()
            tried.extend(other.transmit(cmd.encode())[-2:].hex().upper() for cmd in PLANT)
        except TransportError:
            tried.append("no access")
        finally:
            other.close()

    with open_session(reader, custody=custody, log_apdus=False) as session:
        report = personalize(session, job.spec, plan, on_step=intrude)
    return tried, report


def test_no_other_client_can_write_a_key_during_perso(served_sim):
    tried, report = _perso(served_sim.reader, custody=True)
    assert tried == ["no access"] and report.verified
    keys, files = _mf(served_sim.image)
    assert 0x05 not in keys and 0x0EF9 not in files and 0x0005 in files


def test_without_custody_the_planted_key_lands_and_verification_cannot_see_it(served_sim):
    """The contrast that shows the test above can fail, and why custody is the guard: a shared
    card takes the intruder's key inside perso's security state, and reading cannot tell."""
    tried, report = _perso(served_sim.reader, custody=False)
    # the WRITE KEY passed the key file's add condition (perso's security state) and found the
    # key file full (6A84: the profile sizes it to its keys); the extra file was created
    assert tried == ["6A84", "9000"] and report.verified
    keys, files = _mf(served_sim.image)
    assert 0x0EF9 in files and 0x05 not in keys
