"""The runner: plays a Plan over a CardSession, then verifies the card (DESIGN.md).

A personalization stopped half way (card pulled, unexpected SW) raises
:class:`PersoError` naming the step.  Running again on that card follows the profile's
``rerun`` policy: ``erase`` authenticates with the card's own MF master key (or, when the
first run stopped before it was written, the transport key: the plan as it is), and replays
the plan from its ERASE DF: the same real-card issuance as a factory card's (SPEC §6 R2, R4).
A card cut inside the issuance window (ERASE DF, CREATE KEY FILE, WRITE KEY of the MF master)
is recognised by what its MF answers and said plainly (docs/profile.md, "Issuance window").
``refuse`` stops with an error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..apdu import describe_sw
from ..commands import fmcos, iso, walk
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
        _refuse_rerun(spec, "the card is already (partly) personalized")
        start = _take_over(session, spec, plan)
        report.rerun = True
    try:
        report.steps = run_plan(session, plan, start=start, on_step=on_step)
    except PersoError as exc:
        if exc.step != Plan.AUTHENTICATE + 1 or exc.sw is None:
            raise
        # the transport key did not open the MF: a card stopped after its MF was erased
        start = _resume_after_transport_refused(session, spec, plan, exc.sw)
        report.rerun = True
        report.steps = run_plan(session, plan, start=start, on_step=on_step)
    if verify:
        from .verify import verify_card
        try:
            report.checks = verify_card(session, spec, plan)
        except TransportError as exc:
            raise PersoError(f"verification: {exc}") from None
    report.apdus = _apdu_counter(session) - count0
    report.seconds = time.perf_counter() - t0
    return report


def _refuse_rerun(spec: CardSpec, what: str) -> None:
    if spec.rerun == "refuse":
        raise PersoError(f"{what} and the profile says rerun = \"refuse\"")


def _already_personalized(session: CardSession, spec: CardSpec) -> bool:
    """Whether any application of the profile exists on the card (no key is tried)."""
    if not spec.apps:
        return False
    resp = session.send(iso.select_name(spec.apps[0].aid))
    return resp.sw in (0x9000, 0x6A81, 0x9303)


def _resume_after_transport_refused(session: CardSession, spec: CardSpec, plan: Plan, sw: int) -> int:
    """The transport key was refused (``sw``); what the MF holds tells where the last run stopped
    (SPEC §6 R2, R5; docs/profile.md "Issuance window"), and the plan index to go on from:

    - ``63Cx``: an MF key 00 that is not the transport key: the MF master of a run stopped
      after it was written.  Take the card over with it, ERASE, redo (rerun = "erase").
    - ``6A88``/``6A82``: no key 00 in the MF: the run stopped inside the issuance window.  An MF
      without KEY file is free (R5): ERASE is accepted and the plan goes on from CREATE KEY
      FILE.  An MF with a KEY file but no key refuses ERASE (its erase AC cannot be met):
      one try to add the master (the KEY file's add AC may allow it), else the card is lost.
    """
    if (sw & 0xFFF0) == 0x63C0:
        _refuse_rerun(spec, "the card's MF no longer takes the transport key (a personalization stopped after "
                      "the MF master was written)")
        return _take_over(session, spec, plan)
    if sw not in (0x6A88, 0x6A82):
        raise PersoError(f"step {Plan.AUTHENTICATE + 1}/{len(plan.steps)} "
                         f"({plan.steps[Plan.AUTHENTICATE].label}): card answered {sw:04X} ({describe_sw(sw)})",
                         step=Plan.AUTHENTICATE + 1, sw=sw)
    _refuse_rerun(spec, "the card's MF holds no transport key: a personalization was cut between ERASE DF and "
                  "WRITE KEY of the MF master")
    erase = session.send(fmcos.erase_df())
    if erase.sw == 0x9000:
        log.info("card cut after ERASE DF (MF without KEY file, free): erased again, going on")
        return Plan.CREATE_KEYFILE
    master = plan.steps[Plan.WRITE_MASTER]
    retry = execute(session, master) if _is_master_step(spec, master) else None
    if retry is not None and retry.sw == 0x9000:
        log.info("card cut after CREATE KEY FILE: the KEY file's add condition let the master in, going on")
        return Plan.WRITE_MASTER + 1
    raise PersoError("the card was cut inside the issuance window, between CREATE KEY FILE and WRITE KEY of the "
                     "MF master (SPEC §6 R2, R5): its MF holds a KEY file without keys, so no key can authenticate, "
                     f"ERASE DF answers {erase.sw:04X} and WRITE KEY "
                     f"{retry.sw if retry is not None else 0:04X}; the card cannot be personalized again "
                     "(docs/profile.md, \"Issuance window\")", sw=erase.sw)


def _is_master_step(spec: CardSpec, step: Step) -> bool:
    m = spec.mf.master_key()
    return m is not None and step.cmd.ins == 0xD4 and step.cmd.p2 == m.kid and step.df == "mf"


def _take_over(session: CardSession, spec: CardSpec, plan: Plan) -> int:
    """SELECT MF, EXTERNAL AUTHENTICATE with this card's MF master; return the plan index of
    ERASE DF, where the redo goes on (the same issuance as a factory card's: SPEC §6 R2)."""
    master = _mf_master(spec, plan)
    m = spec.mf.master_key()
    if master is None or m is None:
        raise PersoError("the card is partly personalized but the profile's MF has no master key to erase it")
    log.info("card already personalized: taking it over with its MF master key to erase it")
    session.send(iso.select_mf(), expect=0x9000, what="SELECT MF")
    resp = walk.external_authenticate(session, m.kid, master)
    if resp.sw != 0x9000:
        raise PersoError(f"cannot take over the card: EXTERNAL AUTHENTICATE with this card's MF master answered "
                         f"{resp.sw:04X} ({describe_sw(resp.sw)}); is it the card of serial {plan.card_serial}?",
                         sw=resp.sw)
    return Plan.ERASE


def _apdu_counter(session: CardSession) -> int:
    counter = getattr(session.transport, "apdu_count", None)
    return counter if isinstance(counter, int) else 0
