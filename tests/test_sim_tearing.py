"""Simulated card: tearing.  Power is cut after every write step of a command in turn.

``card.nvm.tear_after = n`` raises PowerLoss after the n-th write step (the commit point
of a transaction counts as one more step); ``card.power_on()`` rolls an interrupted
transaction back.  After every tear the persistent state (the whole card image) must be
exactly the state before the command or exactly the state after it, and the host must be
able to tell which: GET TRANSACTION PROVE answers the MAC/TAC of a completed transaction
(the answer was lost), or 9406 and the transaction can be redone, once.
"""

from __future__ import annotations

import copy

import pytest

from citycard import crypto
from citycard.apdu import CommandApdu
from citycard.crypto import pboc
from citycard.sim import PowerLoss, SimCard
from citycard.sim import image
from tests.simhost import (AID, DAMK, DLK, DTK, DUK, IAK, MK, PIN, TERMINAL, Host, app, h)

H = bytes.fromhex
DATE, TIME = H("20261201"), H("083000")


def sweep(base: SimCard, apdu: bytes, answer: bytes) -> list[tuple[int, bool, SimCard]]:
    """Tear ``apdu`` (whose good answer is ``answer`` ‖ 9000) on copies of ``base`` after
    every step 1..steps+1.

    Returns (n, happened, card after power-on) for each n; checks the all-or-nothing rule.
    """
    answer += b"\x90\x00"
    ref = copy.deepcopy(base)
    s0 = ref.nvm.steps
    assert ref.process(apdu) == answer
    steps = ref.nvm.steps - s0
    before, after = image.to_dict(base), image.to_dict(ref)
    assert before != after and steps >= 1
    out = []
    for n in range(1, steps + 2):
        card = copy.deepcopy(base)
        card.nvm.tear_after = n
        if n <= steps:
            with pytest.raises(PowerLoss):
                card.process(apdu)
            assert card.nvm.pending == (n < steps)           # the last step is the commit point
            card.power_on()
            assert not card.nvm.pending
        else:
            assert card.process(apdu) == answer              # no tear: the normal answer
            card.nvm.tear_after = None
        state = image.to_dict(card)
        happened = state == after
        assert happened or state == before, f"tear after step {n} of {steps}: a partial state"
        assert happened == (n >= steps), f"tear after step {n} of {steps}"
        out.append((n, happened, card))
    assert image.to_dict(base) == before                     # the copies never touched the base
    return out


def observe(host: Host, p2: int = 2) -> tuple:
    """What a host sees of a purse: balance, both counters, detail records."""
    host.select_name(AID)
    if p2 == 1:
        host.verify()
    bal = host.balance(p2)
    online = host.init_load(1, p2=p2)["counter"]
    offline = host.init_purchase(0, p2=p2)["counter"]
    details = []
    for n in range(1, 11):
        data, sw = host.send(bytes((0x00, 0xB2, n, 0xC4, 0x00)))
        if sw != 0x9000:
            break
        details.append(data)
    capp, sw = host.send("00B201BC00")
    return bal, online, offline, tuple(details), capp if sw == 0x9000 else None


# ====================================================================== CREDIT FOR LOAD
def test_tear_credit_for_load():
    host = app()
    prev = host.load(100)
    i = host.init_load(50)
    cg = pboc.load_cryptogram(DLK, DTK, random=i["random"], counter=1, balance=100, amount=50,
                              terminal=TERMINAL, date=DATE, time=TIME)
    apdu = b"\x80\x52\x00\x00\x0B" + DATE + TIME + cg.mac2 + b"\x04"
    base = host.card
    results = sweep(base, apdu, cg.tac)
    assert len(results) == 6                                  # 4 writes + commit, + one untorn run
    seen_before = observe(Host(copy.deepcopy(base)))
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        if happened:
            assert t.prove(0x02, 1) == cg.mac2 + cg.tac        # the lost answer, recovered
            assert observe(t)[:3] == (150, 2, 0)
            assert t.detail(1)[:10] == H("0002 000000 00000032 02".replace(" ", ""))   # counter after +1 (R11)
        else:
            assert observe(t) == seen_before
            t.prove(0x02, 1, 0x9406)
            assert t.prove(0x02, 0) == prev["mac2"] + prev["tac"]   # the previous transaction's
            t.tx(apdu, 0x6901)                                # the session did not survive
            redo = t.load(50)                                 # redone once: counter 1 again
            assert redo["counter"] == 1 and t.balance() == 150
            t.tx(apdu, 0x6901)                                # and never twice
            assert t.prove(0x02, 1) == redo["mac2"] + redo["tac"]
            assert observe(t)[:3] == (150, 2, 0)


# ====================================================================== DEBIT FOR PURCHASE
def test_tear_debit_for_purchase():
    host = app()
    host.load(100)
    prev = host.purchase(10)
    i = host.init_purchase(25)
    cg = host.purchase_cg(i, 25, date=DATE, time=TIME)
    apdu = b"\x80\x54\x01\x00\x0F" + H("00000007") + DATE + TIME + cg.mac1 + b"\x08"
    base = host.card
    results = sweep(base, apdu, cg.tac + cg.mac2)
    assert len(results) == 6
    seen_before = observe(Host(copy.deepcopy(base)))
    assert seen_before[:3] == (90, 1, 1)
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        if happened:
            assert t.prove(0x06, 1) == cg.mac2 + cg.tac
            assert observe(t)[:3] == (65, 1, 2)
            assert t.detail(1) == H("0002 000000 00000019 06".replace(" ", "")) + TERMINAL + DATE + TIME  # R11
        else:
            assert observe(t) == seen_before
            t.prove(0x06, 1, 0x9406)
            assert t.prove(0x06, 0) == prev["mac2"] + prev["tac"]
            t.tx(apdu, 0x6901)
            redo = t.purchase(25)
            assert redo["counter"] == 1
            assert observe(t)[:3] == (65, 1, 2)
            t.init_purchase(66, sw=0x9401)


# ====================================================================== CAPP DEBIT
def test_tear_capp_debit():
    host = app()
    host.load(100)
    old = H("0203") + b"old"
    i = host.init_purchase(1, p1=3)
    host.tx(b"\x80\xDC\x02\xB8\x05" + old)
    host.debit(host.purchase_cg(i, 1, ttype=0x09))
    new = H("0203") + b"new"
    i = host.init_purchase(30, p1=3)
    host.tx(b"\x80\xDC\x02\xB8\x05" + new)
    cg = host.purchase_cg(i, 30, ttype=0x09, date=DATE, time=TIME)
    apdu = b"\x80\x54\x01\x00\x0F" + H("00000007") + DATE + TIME + cg.mac1 + b"\x08"
    base = host.card
    results = sweep(base, apdu, cg.tac + cg.mac2)
    assert len(results) == 7                                  # balance, counter, CAPP, detail, last, commit
    seen_before = observe(Host(copy.deepcopy(base)))
    assert seen_before[0] == 99 and seen_before[4] == old
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        if happened:
            assert t.prove(0x09, 1) == cg.mac2 + cg.tac
            assert observe(t)[0] == 69 and observe(t)[4] == new
        else:
            assert observe(t) == seen_before
            t.prove(0x09, 1, 0x9406)
            j = t.init_purchase(30, p1=3)
            assert j["counter"] == 1
            t.tx(b"\x80\xDC\x02\xB8\x05" + new)
            redo = t.purchase_cg(j, 30, ttype=0x09)
            assert t.debit(redo) == redo.tac + redo.mac2
            assert observe(t)[0] == 69 and observe(t)[4] == new and observe(t)[2] == 2


# ====================================================================== DEBIT FOR UNLOAD
def test_tear_debit_for_unload():
    host = app()
    host.verify()
    host.load(500, p2=1)
    r = host.tx(b"\x80\x50\x05\x01\x0B\x00" + (200).to_bytes(4, "big") + TERMINAL + b"\x10")
    ses = pboc.load_session_key(DUK, r[8:12], 1)
    mac2 = pboc.load_mac2(ses, 200, 0x03, TERMINAL, DATE, TIME)
    mac3 = pboc.unload_mac3(ses, 300, 1, 200, 0x03, TERMINAL, DATE, TIME)
    apdu = b"\x80\x54\x03\x00\x0B" + DATE + TIME + mac2 + b"\x04"
    base = host.card
    results = sweep(base, apdu, mac3)
    assert len(results) == 6
    seen_before = observe(Host(copy.deepcopy(base)), p2=1)
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        if happened:
            assert t.prove(0x03, 1) == mac3 + bytes(4)
            assert observe(t, p2=1)[:3] == (300, 2, 0)
        else:
            assert observe(t, p2=1) == seen_before
            t.prove(0x03, 1, 0x9406)
            r = t.tx(b"\x80\x50\x05\x01\x0B\x00" + (200).to_bytes(4, "big") + TERMINAL + b"\x10")
            ses = pboc.load_session_key(DUK, r[8:12], 1)
            t.tx(b"\x80\x54\x03\x00\x0B" + DATE + TIME + pboc.load_mac2(ses, 200, 0x03, TERMINAL, DATE, TIME)
                 + b"\x04")
            assert observe(t, p2=1)[:3] == (300, 2, 0)


# ====================================================================== records and keys
@pytest.mark.parametrize("apdu", [
    "00DC01BC05 0203 787878",          # UPDATE RECORD, variable file by number
    "00E200B804 0402 7979",            # APPEND RECORD, variable file
    "00D6960003 414243",               # UPDATE BINARY
])
def test_tear_record_and_binary_writes(apdu):
    host = app()
    host.tx("00E200B8050203616263")
    apdu = h(apdu)
    results = sweep(host.card, apdu, b"")
    # one write + commit, + untorn; the first UPDATE BINARY also marks the file written (R13)
    assert len(results) == (4 if apdu[1] == 0xD6 else 3)
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        if not happened:
            assert t.tx("00B201BC00") == H("0203616263")
            t.tx(apdu)                                        # and it can be redone
        assert t.tx("00B201BC00") == (H("0203787878") if apdu[1] == 0xDC else H("0203616263"))


def test_tear_cyclic_append_drops_oldest_atomically():
    host = app()
    host.ext_auth(MK)
    host.create(0x001E, H("2E0304F0F0FFFF"))
    for b in b"ABC":
        host.tx(b"\x00\xE2\x00\xF0\x04" + bytes((b,)) * 4)
    results = sweep(host.card, b"\x00\xE2\x00\xF0\x04DDDD", b"")
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        got = [t.tx(bytes((0, 0xB2, k, 0xF4, 4))) for k in (1, 2, 3)]
        assert got == ([b"DDDD", b"CCCC", b"BBBB"] if happened else [b"CCCC", b"BBBB", b"AAAA"])


def test_tear_write_key_plain():
    host = app()
    host.ext_auth(MK)
    k = H("0807060504030201")
    apdu = h("80D430000D 30F0F00000") + k
    results = sweep(host.card, apdu, b"")
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        got = t.tx("00880000080102030405060708")
        assert got == crypto.ecb_encrypt(k if happened else IAK, H("0102030405060708"))


def test_tear_write_key_macd_resets_master_counter_with_the_key():
    """A verified MAC resets the master key's error counter in the same transaction as the write."""
    host = app()
    host.ext_auth(MK)
    host.challenge()
    host.tx(H("84D4300011") + h("30F0F00000") + IAK + bytes(4), 0x9302)   # master counter 33 -> 32
    chal = host.challenge()
    k = H("0807060504030201")
    cmd = crypto.protect(CommandApdu(0x80, 0xD4, 0x30, 0x00, h("30F0F00000") + k), MK, chal)
    results = sweep(host.card, cmd.encode(), b"")
    assert len(results) == 4                                  # counter reset, key, commit, untorn
    for n, happened, card in results:
        master = card.mf.children[0x3F01].keyfile.get(0x39, 0)
        assert master.b4 == (0x33 if happened else 0x32)


def test_tear_pin_change_and_erase_df():
    host = app()
    apdu = h("805E010006 123456 FF 4321")
    for n, happened, card in sweep(host.card, apdu, b""):
        t = Host(card)
        t.select_name(AID)
        t.verify(H("4321") if happened else PIN)
    host = app()
    host.ext_auth(MK)
    results = sweep(host.card, h("800E000000"), b"")
    assert len(results) == 5                                  # children, key file, code, commit
    for n, happened, card in results:
        t = Host(card)
        t.select_name(AID)
        if happened:
            t.select_fid(0x0015, 0x6A82)
        else:
            assert t.tx("00B0950000")[:1] == b"\x10"
            t.protected(0x00, 0xD6, 0x95, 0x00, b"\x01", DAMK)
