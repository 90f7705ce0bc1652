"""The runner: plays a Plan over a CardSession, then verifies the card (DESIGN.md).

A personalization stopped half way (card pulled, unexpected SW) raises
:class:`PersoError` naming the step.  Running again on that card follows the profile's
``rerun`` policy: ``erase`` authenticates with the card's own MF master key (its transport key
was replaced by it), erases the MF, rebuilds the MF key file and runs the plan again
(a card pulled between that ERASE and the master written back has no key left: the
one window, two APDUs wide, of a redo);
``refuse`` stops with an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..apdu import CommandApdu, describe_sw
from ..errors import CitycardError, TransportError
from ..keys.handles import Key
from ..spec import CardSpec
from ..transport import CardSession
from .plan import Plan, Step
from .steps import PersoError, execute  # moved to steps.py (verify imports them without run)

log = logging.getLogger("citycard.perso")


@dataclass
class RunReport:
    card_serial: str
    steps: int = 0
    apdus: int = 0
    seconds: float = 0.0
    rerun: bool = False
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(ok for _l, ok, _d in self.checks)


def run_plan(session: CardSession, plan: Plan, *, start: int = 0,
             on_step: Callable[[int, Step], None] | None = None) -> int:
    """Play ``plan.steps[start:]``; return the number of steps played."""
    total = len(plan.steps)
    for i in range(start, total):
        step = plan.steps[i]
        if on_step is not None:
            on_step(i + 1, step)
        try:
            resp = execute(session, step)
        except TransportError as exc:
            raise PersoError(f"step {i + 1}/{total} ({step.label}): {exc}", step=i + 1, label=step.label) from None
        except CitycardError as exc:  # e.g. GET CHALLENGE refused
            raise PersoError(f"step {i + 1}/{total} ({step.label}): {exc}", step=i + 1, label=step.label) from None
        if resp.sw != step.expect:
            raise PersoError(f"step {i + 1}/{total} ({step.label}): card answered {resp.sw:04X} "
                             f"({describe_sw(resp.sw)}), expected {step.expect:04X}",
                             step=i + 1, label=step.label, sw=resp.sw)
    return total - start


def _mf_master(spec: CardSpec, plan: Plan) -> Key | None:
    m = spec.mf.master_key()
    return plan.keys.get(f"mf/{m.name}") if m is not None else None


def personalize(session: CardSession, spec: CardSpec, plan: Plan, *, verify: bool = True,
                on_step: Callable[[int, Step], None] | None = None) -> RunReport:
    """Personalize the card in ``session`` with ``plan`` and verify it."""
    t0 = time.perf_counter()
    report = RunReport(plan.card_serial)
    count0 = _apdu_counter(session)
    start = 0
    if _already_personalized(session, spec):
        if spec.rerun == "refuse":
            raise PersoError("the card is already (partly) personalized and the profile says rerun = \"refuse\"")
        start = _erase_with_mf_master(session, spec, plan)
        report.rerun = True
    try:
        report.steps = run_plan(session, plan, start=start, on_step=on_step)
    except PersoError as exc:
        # the transport key failed: a card stopped after its MF was erased and rebuilt
        if exc.step == 2 and exc.sw is not None and (exc.sw & 0xFFF0) == 0x63C0 and spec.rerun == "erase":
            start = _erase_with_mf_master(session, spec, plan)
            report.rerun = True
            report.steps = run_plan(session, plan, start=start, on_step=on_step)
        else:
            raise
    if verify:
        from .verify import verify_card
        try:
            report.checks = verify_card(session, spec, plan)
        except TransportError as exc:
            raise PersoError(f"verification: {exc}") from None
    report.apdus = _apdu_counter(session) - count0
    report.seconds = time.perf_counter() - t0
    return report


def _already_personalized(session: CardSession, spec: CardSpec) -> bool:
    """Whether any application of the profile exists on the card (no key is tried)."""
    if not spec.apps:
        return False
    resp = session.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, spec.apps[0].aid))
    return resp.sw in (0x9000, 0x6A81, 0x9303)


def _erase_with_mf_master(session: CardSession, spec: CardSpec, plan: Plan) -> int:
    """SELECT MF, EXTERNAL AUTH with this card's MF master, ERASE DF; return the step to go on from."""
    master = _mf_master(spec, plan)
    if master is None:
        raise PersoError("the card is partly personalized but the profile's MF has no master key to erase it")
    if not plan.mf_rebuild:
        raise PersoError("the card is partly personalized: redoing it writes the MF master key again in clear after "
                         "ERASE DF, and the profile does not let it out of the hardware security module (put "
                         "export = true on the MF's master key); the card was left as it is")
    log.info("card already personalized: erasing it with its MF master key")
    session.send(plan.steps[0].cmd, expect=0x9000, what="SELECT MF")
    resp = execute(session, Step("EXTERNAL AUTHENTICATE with the MF master", CommandApdu(0x00, 0x82, 0, 0),
                                 kind="ext_auth", key=master))
    if resp.sw != 0x9000:
        raise PersoError(f"cannot take over the card: EXTERNAL AUTHENTICATE with this card's MF master answered "
                         f"{resp.sw:04X} ({describe_sw(resp.sw)}); is it the card of serial {plan.card_serial}?",
                         sw=resp.sw)
    session.send(CommandApdu(0x80, 0x0E, 0x00, 0x00), expect=0x9000, what="ERASE DF (MF)")
    for step in plan.mf_rebuild:
        resp = execute(session, step)
        if resp.sw != step.expect:
            raise PersoError(f"redo: {step.label}: card answered {resp.sw:04X} ({describe_sw(resp.sw)})", sw=resp.sw)
    # go on after the fresh card's master step (step 3)
    return 3


def _apdu_counter(session: CardSession) -> int:
    counter = getattr(session.transport, "apdu_count", None)
    return counter if isinstance(counter, int) else 0
