"""Real-card trace corpus: parser and replay engine (test-side code, not library code).

The file format is described in tests/data/traces/README.md.  In short::

    @title   one line
    @source  repository, path, page
    @card    chip / card batch
    @start   the state the card starts in
    @replay  fm1208 | no: <why>
    @key NAME HEX          a key the source gives (for vector checks)
    # a comment (also allowed after any line)
    > [label:] APDU-HEX     a command taken from the source
    < RESPONSE-HEX          the card's recorded answer, data + SW; bytes in {..} are card randoms
    < ?                     the source records no answer: sent, not compared
    ! differs A-B: reason   accepted divergence: bytes [A, B) of the answer differ, the rest match
    x reason                known simulator divergence (a bug for the simulator owner)
    ~ reason                the source is ambiguous here: sent, not compared
    setup> APDU-HEX         harness setup (NOT from the source): must answer 9000, never counted
    setup auth KID KEYHEX   harness setup: GET CHALLENGE 8 + EXTERNAL AUTHENTICATE with that key
    reset                   power cycle (the source shows a new session)

``replay(trace, make_card)`` sends every command to a fresh card built by
``make_card(rng)``, feeding the randoms marked ``{..}`` in a recorded answer through
``rng`` while the card executes that command, and reports an :class:`Outcome` per step.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from citycard import crypto

TRACE_DIR = Path(__file__).parent / "data" / "traces"

Rng = Callable[[int], bytes]


class Card(Protocol):
    def power_on(self) -> bytes: ...
    def process(self, apdu: bytes) -> bytes: ...
    def reset(self) -> None: ...


class TraceFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Accept:
    start: int
    end: int
    reason: str


@dataclass
class Step:
    line: int                       # 1-based line of the command in the trace file
    apdu: bytes
    label: str = ""
    setup: bool = False             # harness setup, not from the source
    answer: bytes | None = None     # recorded answer (data + SW); None = not recorded
    randoms: tuple[bytes, ...] = ()  # card randoms inside the recorded answer
    accept: Accept | None = None
    xfail: str = ""
    ambiguous: str = ""
    auth: tuple[int, bytes] | None = None   # "setup auth" pseudo step
    reset: bool = False                     # "reset" pseudo step

    @property
    def compared(self) -> bool:
        """A real answer this step is judged on."""
        return (not self.setup and self.answer is not None and not self.ambiguous
                and self.auth is None and not self.reset)


@dataclass
class Trace:
    path: Path
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    @property
    def replayable(self) -> bool:
        return self.headers.get("replay", "").strip() == "fm1208"

    def step(self, label: str) -> Step:
        for s in self.steps:
            if s.label == label:
                return s
        raise KeyError(f"{self.path.name}: no step labelled {label!r}")


_HEX = re.compile(r"[0-9A-Fa-f]+")
REQUIRED_HEADERS = ("title", "source", "card", "start", "replay")


def _hex(text: str, where: str) -> bytes:
    compact = "".join(text.split())
    if not compact or not _HEX.fullmatch(compact) or len(compact) % 2:
        raise TraceFormatError(f"{where}: not an even-length hex string: {text.strip()!r}")
    return bytes.fromhex(compact)


def _answer(text: str, where: str) -> tuple[bytes, tuple[bytes, ...]]:
    if not re.fullmatch(r"[^{}]*(\{[^{}]*\}[^{}]*)*", text):
        raise TraceFormatError(f"{where}: unbalanced braces")
    randoms: list[bytes] = []
    out = b""
    for m in re.finditer(r"\{([^}]*)\}|([^{}]+)", text):
        if m.group(1) is not None:
            r = _hex(m.group(1), where)
            randoms.append(r)
            out += r
        elif m.group(2).strip():
            out += _hex(m.group(2), where)
    if len(out) < 2:
        raise TraceFormatError(f"{where}: an answer needs at least SW1 SW2")
    return out, tuple(randoms)


def parse(path: Path) -> Trace:
    trace = Trace(path=path, name=path.stem)
    last: Step | None = None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path.name}:{n}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("@"):
            head, _, value = line[1:].partition(" ")
            if head == "key":
                name, _, hexval = value.strip().partition(" ")
                trace.keys[name] = _hex(hexval, where)
            else:
                trace.headers[head] = (trace.headers.get(head, "") + " " + value.strip()).strip()
            continue
        if line.startswith("setup auth"):
            parts = line.split()
            if len(parts) != 4:
                raise TraceFormatError(f"{where}: expected 'setup auth KID KEYHEX'")
            last = Step(n, b"", setup=True, auth=(int(parts[2], 16), _hex(parts[3], where)))
            trace.steps.append(last)
            continue
        if line == "reset":
            last = Step(n, b"", reset=True)
            trace.steps.append(last)
            continue
        if line.startswith("setup>") or line.startswith(">"):
            setup = line.startswith("setup>")
            body = line[6:] if setup else line[1:]
            label = ""
            m = re.match(r"\s*([A-Za-z_][\w-]*):(.*)", body)
            if m:
                label, body = m.group(1), m.group(2)
            last = Step(n, _hex(body, where), label=label, setup=setup)
            trace.steps.append(last)
            continue
        if last is None or last.auth is not None or last.reset:
            raise TraceFormatError(f"{where}: {line[:1]!r} line without a preceding command")
        if line.startswith("<"):
            if last.answer is not None or last.ambiguous == "not recorded":
                raise TraceFormatError(f"{where}: second answer for one command")
            body = line[1:].strip()
            if body == "?":
                last.ambiguous = "not recorded"
            else:
                last.answer, last.randoms = _answer(body, where)
        elif line.startswith("!"):
            m = re.match(r"!\s*differs\s+(\d+)-(\d+)\s*:\s*(.+)", line)
            if not m:
                raise TraceFormatError(f"{where}: expected '! differs A-B: reason'")
            last.accept = Accept(int(m.group(1)), int(m.group(2)), m.group(3).strip())
        elif line.startswith("x "):
            last.xfail = line[2:].strip()
        elif line.startswith("~ "):
            last.ambiguous = line[2:].strip()
        else:
            raise TraceFormatError(f"{where}: unknown line {line[:20]!r}")
    missing = [h for h in REQUIRED_HEADERS if h not in trace.headers]
    if missing:
        raise TraceFormatError(f"{path.name}: missing header(s) {', '.join('@' + h for h in missing)}")
    for s in trace.steps:
        where = f"{path.name}:{s.line}"
        if s.setup and s.auth is None and s.answer is not None:
            raise TraceFormatError(f"{where}: a setup step has no recorded answer (it must answer 9000)")
        if (s.accept or s.xfail) and s.answer is None:
            raise TraceFormatError(f"{where}: a divergence mark needs a recorded answer")
        if s.accept and s.xfail:
            raise TraceFormatError(f"{where}: a step is either an accepted divergence or an xfail")
        if s.accept and not 0 <= s.accept.start < s.accept.end <= len(s.answer or b""):
            raise TraceFormatError(f"{where}: divergence range outside the answer")
    return trace


def load_all() -> list[Trace]:
    return [parse(p) for p in sorted(TRACE_DIR.glob("*.trace"))]


# ---------------------------------------------------------------------------- replay

class RandomFeed:
    """The card's random source: recorded randoms first, then a fixed filler.

    The filler (``A5`` bytes) only serves harness setup steps; a divergence caused by
    the card drawing more or fewer randoms than recorded shows in the compared answer.
    """

    def __init__(self) -> None:
        self.queue: deque[int] = deque()

    def load(self, randoms: tuple[bytes, ...]) -> None:
        self.queue.clear()
        for r in randoms:
            self.queue.extend(r)

    def __call__(self, n: int) -> bytes:
        out = bytearray()
        while self.queue and len(out) < n:
            out.append(self.queue.popleft())
        return bytes(out) + b"\xA5" * (n - len(out))


@dataclass(frozen=True)
class Outcome:
    step: Step
    got: bytes | None            # the simulator's answer (None for pseudo steps)
    status: str                  # match | mismatch | accepted | accept-broken | sent | setup-ok | setup-failed

    @property
    def ok(self) -> bool:
        if self.step.xfail:
            return True          # judged by its own strict-xfail test
        return self.status in ("match", "accepted", "sent", "setup-ok")


def _judge(step: Step, got: bytes) -> str:
    if step.setup:
        return "setup-ok" if got[-2:] == b"\x90\x00" else "setup-failed"
    if not step.compared:
        return "sent"
    want = step.answer or b""
    if step.accept is None:
        return "match" if got == want else "mismatch"
    a = step.accept
    same_outside = len(got) == len(want) and got[:a.start] == want[:a.start] and got[a.end:] == want[a.end:]
    return "accepted" if same_outside and got[a.start:a.end] != want[a.start:a.end] else "accept-broken"


def _external_auth(card: Card, feed: RandomFeed, kid: int, key: bytes) -> bytes:
    feed.load(())
    chal = card.process(bytes.fromhex("0084000008"))
    if chal[-2:] != b"\x90\x00":
        return chal
    cryptogram = crypto.ecb_encrypt(key, chal[:8])
    return card.process(bytes((0x00, 0x82, 0x00, kid, 0x08)) + cryptogram)


def replay(trace: Trace, make_card: Callable[[Rng], Card]) -> list[Outcome]:
    feed = RandomFeed()
    card = make_card(feed)
    card.power_on()
    out: list[Outcome] = []
    for step in trace.steps:
        if step.reset:
            card.reset()
            out.append(Outcome(step, None, "sent"))
            continue
        if step.auth is not None:
            got = _external_auth(card, feed, *step.auth)
            out.append(Outcome(step, got, "setup-ok" if got == b"\x90\x00" else "setup-failed"))
            continue
        feed.load(step.randoms)
        got = card.process(step.apdu)
        out.append(Outcome(step, got, _judge(step, got)))
    return out


def tally(outcomes: list[Outcome]) -> tuple[int, int]:
    """(real answers matched, real answers compared)."""
    compared = [o for o in outcomes if o.step.compared]
    return sum(o.status == "match" for o in compared), len(compared)


def describe(o: Outcome) -> str:
    s = o.step
    want = s.answer.hex().upper() if s.answer is not None else "-"
    got = o.got.hex().upper() if o.got is not None else "-"
    return f"line {s.line}: > {s.apdu.hex().upper()}  real < {want}  sim < {got}  [{o.status}]"
