"""Replay of published REAL card traces against the simulated FM1208 (issue 16 item 3; SPEC §6).

Every ``tests/data/traces/*.trace`` file is a transcription of a published exchange with a real
card (format and sources: tests/data/traces/README.md).  Traces of an FM1208 that start from a
factory blank card (or from a state the harness builds, where the header says so) are replayed
against a fresh simulated card, the card's recorded randoms fed through its random source, and
every recorded answer is compared byte for byte:

* an answer that differs for a known and accepted reason is marked ``! differs A-B: reason`` in
  the trace and must differ in exactly those bytes;
* every other known divergence is a simulator bug, marked ``x reason`` in the trace: it gets its
  own ``xfail(strict=True)`` test here (so fixing the simulator turns it into a failure that asks
  for the mark to go) and is listed in tests/data/traces/DIVERGENCES.md;
* any new divergence fails :func:`test_replay`.

Traces of other cards (CSLOG: a Huada COS, SPEC §6.5), of unknown keys (CAPT) or of an
unreachable start state (MAC-CHECK) are not replayed: their MACs, TACs and layouts are
recomputed with ``citycard.crypto`` as vectors.  ``python -m tests.test_real_traces`` prints the
per-trace tally (real answers matched / compared).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest

from citycard import crypto
from citycard.crypto import pboc
from citycard.sim import new_card

from .traces import (TRACE_DIR, Card, Outcome, Rng, Trace, TraceFormatError, describe, load_all, parse,
                     replay, tally)


H = bytes.fromhex
TRACES = load_all()
BY_NAME = {t.name: t for t in TRACES}
REPLAYED = [t for t in TRACES if t.replayable]


# ------------------------------------------------------------------------------ the card
def new_fm1208(rng: Rng) -> Card:
    """A factory-blank FM1208 (SPEC §6 R1) whose random numbers come from the trace."""
    return new_card("fm1208", rng=rng)


def _replay(trace: Trace, make_card: Callable[[Rng], Card] = new_fm1208) -> list[Outcome]:
    return replay(trace, make_card)


# ------------------------------------------------------------------------------ corpus
def test_corpus_is_complete() -> None:
    names = set(BY_NAME)
    assert {"blog16_issuance", "robur_load", "deng_purse", "mac_check_load", "capt_nju_sniff",
            "codetd_fmsh_erase"} <= names
    assert {f"cslog_t{n}" for n in range(1, 8)} <= {n[:8] for n in names}
    assert [t.name for t in REPLAYED] == ["blog16_issuance", "deng_purse", "robur_load"]


@pytest.mark.parametrize("trace", TRACES, ids=lambda t: t.name)
def test_trace_is_well_formed(trace: Trace) -> None:
    assert trace.steps, "a trace without commands"
    real = [s for s in trace.steps if s.compared]
    assert real, "a trace without one recorded card answer"
    for s in trace.steps:
        if s.answer is None:
            continue
        sw1 = s.answer[-2]
        assert sw1 in (0x90, 0x61, 0x62, 0x63, 0x67, 0x69, 0x6A, 0x93, 0x94), f"line {s.line}: SW {s.answer[-2:].hex()}"
        if s.apdu[1:2] == b"\x84" and s.apdu[0] & 0xF0 == 0 and s.answer[-2:] == b"\x90\x00":
            # GET CHALLENGE: the whole data part is the card's random, and it is marked as such
            assert s.randoms == (s.answer[:-2],), f"line {s.line}: challenge not marked {{..}}"
    if not trace.replayable:
        assert trace.headers["replay"].startswith("no:"), "say why a trace is not replayed"
        assert not any(s.setup for s in trace.steps)


def test_readme_and_divergence_list_are_current() -> None:
    """README lists every trace with its count of real answers; DIVERGENCES.md every marked step."""
    readme = (TRACE_DIR / "README.md").read_text(encoding="utf-8")
    for t in TRACES:
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{t.path.name}` |")), None)
        assert row is not None, f"README.md does not list {t.path.name}"
        assert row.rstrip(" |").rsplit("|", 1)[1].strip() == str(sum(s.compared for s in t.steps)), row
    listed = (TRACE_DIR / "DIVERGENCES.md").read_text(encoding="utf-8")
    for t in REPLAYED:
        for s in t.steps:
            if s.xfail or s.accept:
                assert f"{t.path.name}:{s.line} " in listed, f"DIVERGENCES.md misses {t.path.name}:{s.line}"


@pytest.mark.parametrize(("body", "line", "message"), [
    ("> 00A4\n< 9000\n> 0084000004\n< 12\n", 4, "an answer needs at least SW1 SW2"),
    ("> 00A4\n< 90 0\n", 2, "not an even-length hex string"),
    ("< 9000\n", 1, "'<' line without a preceding command"),
    ("> 00A4\n< {1234 9000\n", 2, "unbalanced braces"),
    ("> 00A4\n< 9000\n! differs 2-9: x\n", 1, "divergence range outside the answer"),
])
def test_bad_trace_names_file_and_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    """Bad input: one clear message naming file:line; nothing is replayed."""
    header = "".join(f"@{h} x\n" for h in ("title", "source", "card", "start", "replay"))
    bad = tmp_path / "bad.trace"
    bad.write_text(header + body, encoding="utf-8")
    with pytest.raises(TraceFormatError, match=re.escape(f"bad.trace:{5 + line}: {message}")):
        parse(bad)


# ------------------------------------------------------------------------------ replay
@pytest.mark.parametrize("trace", REPLAYED, ids=lambda t: t.name)
def test_replay(trace: Trace) -> None:
    outcomes = _replay(trace)
    matched, total = tally(outcomes)
    print(f"\n{trace.name}: real answers matched {matched}/{total}")
    bad = [describe(o) for o in outcomes if not o.ok]
    assert not bad, "new divergence(s) from the real card:\n" + "\n".join(bad)
    for o in outcomes:
        if o.step.accept is not None:
            assert o.status == "accepted", describe(o)
    expected_misses = sum(1 for s in trace.steps if s.compared and (s.xfail or s.accept))
    assert total - matched <= expected_misses
    listed = (TRACE_DIR / "DIVERGENCES.md").read_text(encoding="utf-8")
    assert f"| {trace.name} | {matched} | {total} |" in listed, "update the tally in DIVERGENCES.md"


def _xfail_params() -> list[object]:
    params = []
    for t in REPLAYED:
        for i, s in enumerate(t.steps):
            if s.xfail:
                params.append(pytest.param(t, i, id=f"{t.name}:line{s.line}",
                                           marks=pytest.mark.xfail(strict=True, reason=s.xfail)))
    return params


if _xfail_params():   # none listed today (DIVERGENCES.md): the parameter set would be empty
    @pytest.mark.parametrize(("trace", "index"), _xfail_params())
    def test_replay_known_divergence(trace: Trace, index: int) -> None:
        """Each known simulator divergence: the real card's answer, expected to fail until fixed."""
        outcome = _replay(trace)[index]
        assert outcome.status == "match", describe(outcome)


def test_replay_detects_a_wrong_answer() -> None:
    """The comparison can fail: a card that answers one byte differently is caught."""
    trace = BY_NAME["robur_load"]

    class Liar:
        def __init__(self, rng: Rng) -> None:
            self.inner = new_fm1208(rng)

        def power_on(self) -> bytes:
            return self.inner.power_on()

        def process(self, apdu: bytes) -> bytes:
            r = self.inner.process(apdu)
            return (b"\x00\x00\x00\x11" + r[4:]) if apdu[:2] == b"\x80\x5C" and r[:4] == H("00000010") else r

        def reset(self) -> None:
            self.inner.reset()

    honest = [o.status for o in _replay(trace)]
    lying = [o.status for o in _replay(trace, Liar)]
    assert [a for a, b in zip(honest, lying) if a != b] == ["match"]


# ------------------------------------------------------------------------------ vectors
def _load(trace: Trace, dlk: bytes, dtk: bytes, init: str, credit: str,
          init_answer: str | None = None, tac_answer: str | None = None, ttype: int = 0x02) -> None:
    """Recompute a recorded load: MAC1 in the card's INIT answer, the host's MAC2, the card's TAC."""
    cmd = trace.step(init).apdu
    amount, terminal = int.from_bytes(cmd[6:10], "big"), cmd[10:16]
    ans = (trace.step(init_answer) if init_answer else trace.step(init)).answer or b""
    balance, counter = int.from_bytes(ans[0:4], "big"), int.from_bytes(ans[4:6], "big")
    ses = pboc.load_session_key(dlk, ans[8:12], counter)
    assert ans[12:16] == pboc.load_mac1(ses, balance, amount, ttype, terminal), "MAC1"
    cr = trace.step(credit).apdu
    date, time, mac2 = cr[5:9], cr[9:12], cr[12:16]
    assert mac2 == pboc.load_mac2(ses, amount, ttype, terminal, date, time), "MAC2"
    tac = (trace.step(tac_answer) if tac_answer else trace.step(credit)).answer or b""
    assert tac[:4] == pboc.load_tac(dtk, balance + amount, counter, amount, ttype, terminal, date, time), "TAC"


def test_robur_load_vectors() -> None:
    t = BY_NAME["robur_load"]
    _load(t, t.keys["DLK"], t.keys["DTK"], "init-load", "credit")
    rec = (t.step("record").answer or b"")[:-2]
    # EF0018 record (SPEC §2.2): counter, overdraw, amount, type, terminal, date, time
    assert rec[0:2] == H("0001")          # SPEC §6 R11: the counter after the increment
    assert rec[5:9] == H("00000010") and rec[9] == 0x02 and rec[10:16] == H("666666666666")
    assert rec[16:23] == H("20240411212121")


def test_deng_vectors() -> None:
    t = BY_NAME["deng_purse"]
    dlk, dtk, dpk = t.keys["DLK"], t.keys["DTK"], t.keys["DPK"]
    _load(t, dlk, dtk, "init-load", "credit")
    # the algorithm-00 INIT answered before the card was taken out: MAC1 only
    cmd, ans = t.step("init-02-again").apdu, t.step("init-02-again").answer or b""
    ses = pboc.load_session_key(dlk, ans[8:12], 0)
    assert ans[12:16] == pboc.load_mac1(ses, 0, int.from_bytes(cmd[6:10], "big"), 0x02, cmd[10:16])
    # algorithm 02 / 03: the card's MAC1 is NOT the 3DES one (SPEC §6.6)
    for label in ("init-alg02", "init-alg03"):
        cmd, ans = t.step(label).apdu, t.step(label).answer or b""
        ses = pboc.load_session_key(dlk if label == "init-alg02" else H("3F" * 16), ans[8:12], 0)
        assert ans[12:16] != pboc.load_mac1(ses, 0, 0x2000, 0x02, cmd[10:16])
    # purchase
    init, ans = t.step("init-purchase").apdu, t.step("init-purchase").answer or b""
    debit = t.step("debit").apdu
    c = pboc.purchase_cryptogram(dpk, dtk, random=ans[11:15], counter=int.from_bytes(ans[4:6], "big"),
                                 terminal_serial=debit[5:9], amount=int.from_bytes(init[6:10], "big"),
                                 terminal=init[10:16], date=debit[9:13], time=debit[13:16])
    assert debit[16:20] == c.mac1
    assert (t.step("debit").answer or b"")[:8] == c.tac + c.mac2


def test_mac_check_vectors() -> None:
    t = BY_NAME["mac_check_load"]
    _load(t, t.keys["DLK"], t.keys["DTK"], "init-load", "credit")


def test_blog16_host_cryptograms() -> None:
    """The host side of BLOG16: the transport cryptogram and both line-protection MACs."""
    t = BY_NAME["blog16_issuance"]
    steps = t.steps
    assert steps[1].apdu[5:] == crypto.ecb_encrypt(t.keys["transport"], steps[0].randoms[0])
    for label, key in (("write-0005", t.keys["mf_damk"]), ("write-0015", t.keys["df_damk"])):
        i = next(n for n, s in enumerate(steps) if s.label == label)
        challenge = steps[i - 1].randoms[0]
        apdu = steps[i].apdu
        assert apdu[-4:] == crypto.line_mac(key, challenge, apdu[:-4]), label


def test_codetd_transport_cryptogram() -> None:
    """A 4-byte challenge padded with 00000000 under the FF key (SPEC §1.5, §6 R1)."""
    t = BY_NAME["codetd_fmsh_erase"]
    assert t.step("auth").apdu[5:] == crypto.ecb_encrypt(t.keys["transport"], t.step("chal").randoms[0] + bytes(4))


# ------------------------------------------------------------------------------ CSLOG (Huada)
def test_cslog_transport_auth_and_ciphered_write_key() -> None:
    t = BY_NAME["cslog_t1_init"]
    trans = t.keys["transKey"]
    challenge = t.step("chal-auth").randoms[0]
    assert t.step("ext-auth").apdu[5:] == crypto.ecb_encrypt(trans, challenge + bytes(4))
    wk = t.step("wk-39").apdu
    record = H("14 01003300".replace(" ", "")) + t.keys["cardControl"] + H("800000")  # Huada layout, SPEC §1.4
    assert wk[5:-4] == crypto.ecb_encrypt(trans, record)
    assert wk[-4:] == crypto.line_mac(trans, t.step("chal-wk").randoms[0], wk[:-4])


def test_cslog_load_and_its_record() -> None:
    t = BY_NAME["cslog_t2_load"]
    _load(t, t.keys["load1"], t.keys["tac"], "init-load", "credit", "init-load-resp", "tac-resp")
    rec = (BY_NAME["cslog_t4_records"].step("load-record").answer or b"")[:-2]
    init = t.step("init-load").apdu
    assert rec[0:2] == H("0001")                       # SPEC §6 R11 on the Huada card too
    assert rec[5:9] == init[6:10] and rec[9] == 0x02 and rec[10:16] == init[10:16]
    assert rec[16:23] == t.step("credit").apdu[5:12]


@pytest.mark.parametrize(("name", "op", "key"), [("cslog_t5_block", "block", "applock"),
                                                 ("cslog_t6_unblock", "unblock", "appprelock")])
def test_cslog_block_macs(name: str, op: str, key: str) -> None:
    t = BY_NAME[name]
    apdu = t.step(op).apdu
    assert apdu[-4:] == crypto.line_mac(t.keys[key], t.step("challenge").randoms[0], apdu[:-4])


def test_cslog_capp_purchase_with_auth_code() -> None:
    t = BY_NAME["cslog_t7_purchase"]
    init, ans = t.step("init-capp").apdu, t.step("init-capp-resp").answer or b""
    debit = t.step("debit").apdu
    code = (t.step("auth-code").answer or b"")[:-2]
    c = pboc.purchase_cryptogram(t.keys["purchase1"], t.keys["tac"], random=ans[11:15],
                                 counter=int.from_bytes(ans[4:6], "big"), terminal_serial=debit[5:9],
                                 amount=int.from_bytes(init[6:10], "big"), terminal=init[10:16],
                                 date=debit[9:13], time=debit[13:16], ttype=0x09, auth_code=code)
    assert debit[16:20] == c.mac1
    assert (t.step("debit-resp").answer or b"")[:8] == c.tac + c.mac2


# ------------------------------------------------------------------------------ CAPT
def _tlv(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            tag = tag << 8 | data[i]
            i += 1
        n = data[i]
        i += 1
        assert i + n <= len(data), "TLV overruns its parent"
        out.append((tag, data[i:i + n]))
        i += n
    return out


def test_capt_ats_and_fci() -> None:
    t = BY_NAME["capt_nju_sniff"]
    ats, uid = H(t.headers["ats"]), H(t.headers["uid"])
    assert ats[0] == len(ats)
    assert ats[5:] == H("20900000000000") + uid        # SPEC §6 R19: historical bytes 20 90 00.. + UID
    [(tag, body)] = _tlv((t.step("select-app").answer or b"")[:-2])
    assert tag == 0x6F
    parts = _tlv(body)
    assert [p[0] for p in parts] == [0x84, 0xA5]
    assert parts[0][1] == t.step("select-app").apdu[5:]
    prop = _tlv(parts[1][1])
    assert [p[0] for p in prop] == [0x9F08, 0x9F0C] and prop[0][1] == b"\x02"   # SPEC §6 R10
    assert t.step("select-app").answer == t.step("select-app-again").answer


def main() -> None:
    for t in REPLAYED:
        outcomes = _replay(t)
        matched, total = tally(outcomes)
        print(f"{t.name}: real answers matched {matched}/{total}")
        for o in outcomes:
            if o.step.compared and o.status != "match":
                print("   ", describe(o), "|", o.step.xfail or (o.step.accept.reason if o.step.accept else ""))
    for t in TRACES:
        if not t.replayable:
            print(f"{t.name}: not replayed ({t.headers['replay'][3:].strip()}); "
                  f"{sum(s.compared for s in t.steps)} real answers transcribed")


if __name__ == "__main__":
    main()
