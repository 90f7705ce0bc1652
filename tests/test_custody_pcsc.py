"""Card custody through a real pcscd (issue 18 point 2 and 3): a session that works with keys
holds the card exclusively and resets it when released, so no other PC/SC client can send
commands inside its security state, nor inherit it afterwards."""

from __future__ import annotations

import json

import pytest

from citycard.commands import fmcos, iso, walk
from citycard.errors import TransportError
from citycard.sim.models import get_model
from citycard.transport.open import open_session
from citycard.transport.pcsc import PcscTransport

pytestmark = pytest.mark.pcsc


def _transport_key(image) -> bytes:
    return get_model(json.loads(open(image).read())["model"]).transport_key


def _authenticate(session, key: bytes) -> None:
    session.send(iso.select_mf(), expect=0x9000)
    assert walk.external_authenticate(session, 0x00, key).sw == 0x9000


def _create_in_mf(reader: str, fid: int) -> int:
    """A client holding no key: SELECT MF, CREATE a binary EF (the MF's create AC needs SR >= 1)."""
    with open_session(reader, custody=False) as other:
        other.send(iso.select_mf(), expect=0x9000)
        return other.send(fmcos.create_binary(fid, 8, read_ac=0xF0, write_ac=0xF0)).sw


def test_a_custody_session_is_exclusive_and_resets_the_card(served_sim):
    key = _transport_key(served_sim.image)
    with open_session(served_sim.reader) as session:              # custody: the default
        _authenticate(session, key)
        intruder = PcscTransport(served_sim.reader)                # shared, like any other program
        with pytest.raises(TransportError):
            intruder.connect()
        intruder.close()
    # released: the card was reset, the next client is back at security state 0
    assert _create_in_mf(served_sim.reader, 0x0EF1) == 0x6982


def test_without_custody_the_next_client_inherits_the_state(served_sim):
    """The contrast that shows the first test can fail: a shared session left as it is."""
    key = _transport_key(served_sim.image)
    with open_session(served_sim.reader, custody=False) as session:
        _authenticate(session, key)
    assert _create_in_mf(served_sim.reader, 0x0EF2) == 0x9000


def test_a_batch_reader_tells_the_operator_what_to_do(served_sim):
    """Issue 17 item 3: a PC/SC batch reader never waits in silence: "insert a card" at an empty
    reader, "remove the card" when a finished card stays in it."""
    import threading

    from citycard.perso.batch import PcscSource

    empty = next(n for n in served_sim.daemon.reader_names if n != served_sim.reader)
    said: list[str] = []
    stop = threading.Event()
    waiting = PcscSource(empty, on_prompt=said.append)
    worker = threading.Thread(target=lambda: waiting.next_card(stop))
    worker.start()
    for _ in range(100):                       # waits for the prompt, not for a time
        if said:
            break
        stop.wait(0.05)
    stop.set()
    worker.join(10)
    assert said == [f"{empty}: insert a card"]

    source = PcscSource(served_sim.reader, on_prompt=said.append)
    source.remove_grace = 0.5
    session = source.next_card(threading.Event())
    assert session is not None and said == [f"{empty}: insert a card"]       # a card was there: no prompt
    source.done(session, "3301000000000001")
    assert said[-1] == f"{served_sim.reader}: remove the card 3301000000000001"
