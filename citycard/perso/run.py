"""The runner: plays a Plan over a CardSession, then verifies the card (DESIGN.md).

A personalization stopped half way (card pulled, unexpected SW) raises
:class:`PersoError` naming the step.  Running again on that card follows the profile's
``rerun`` policy: ``erase`` authenticates with the card's own MF master key (or, when the
first run stopped before it was written, the transport key: the plan as it is), and replays
the plan from its ERASE DF: the same real-card issuance as a factory card's (SPEC §6 R2, R4).
A card cut inside the issuance window (ERASE DF, CREATE KEY FILE, WRITE KEY of the MF master)
is recognised by what its MF answers and said plainly (docs/profile.md, "Issuance window").
``refuse`` stops with an error.

Before any key is tried, the card is identified without spending a try (issue 17 item 1):
its ATR, SELECT MF, the profile's free-read card serial (MF, ``@card_serial``), which
applications of the profile answer SELECT by AID and which of their files exist.  A factory
card is personalized; a fully issued card of this cardholder is refused unless re-issuance is
asked for (``reissue=True``); a half-personalized one is redone under ``rerun``; a card of
another cardholder or profile is refused before any authentication.  One failed EXTERNAL
AUTHENTICATE (63Cx, 6983) stops the run: no key is retried on a card.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ..apdu import CommandApdu, ResponseApdu, describe_sw
from ..commands import fmcos, iso, walk
from ..errors import CardError, CitycardError, TransportError
from ..keys.handles import Key
from ..spec import CardSpec, DFSpec
from ..transport import CardSession
from .plan import Plan, Step
from .steps import (AuthenticationRefused, CardAlreadyIssued, ForeignCard,  # noqa: F401 (re-exported)
                    PersoError, execute)  # moved to steps.py (verify imports them without run)

log = logging.getLogger("citycard.perso")


@dataclass
class RunReport:
    card_serial: str
    steps: int = 0
    apdus: int = 0
    seconds: float = 0.0
    rerun: bool = False
    reissued: bool = False     # a fully issued card of this cardholder was erased and issued again
    identity: CardIdentity | None = None
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
            resp = _play(session, step)
        except TransportError as exc:
            raise PersoError(f"step {i + 1}/{total} ({step.label}): {exc}", step=i + 1, label=step.label) from None
        except CitycardError as exc:  # e.g. GET CHALLENGE refused
            raise PersoError(f"step {i + 1}/{total} ({step.label}): {exc}", step=i + 1, label=step.label) from None
        if resp.sw != step.expect:
            raise PersoError(f"step {i + 1}/{total} ({step.label}): card answered {resp.sw:04X} "
                             f"({describe_sw(resp.sw)}), expected {step.expect:04X}",
                             step=i + 1, label=step.label, sw=resp.sw)
    return total - start


def _play(session: CardSession, step: Step) -> ResponseApdu:
    """Send one step of the plan; a SELECT without Le goes without GET RESPONSE (the plan does
    not use the FCI: :func:`~citycard.commands.walk.select_unfetched`)."""
    if step.kind == "apdu" and step.cmd.ins == 0xA4 and step.cmd.ne is None:
        return ResponseApdu(b"", walk.select_unfetched(session, step.cmd))
    return execute(session, step)


def _mf_master(spec: CardSpec, plan: Plan) -> Key | None:
    m = spec.mf.master_key()
    return plan.keys.get(f"mf/{m.name}") if m is not None else None


class CardState(enum.Enum):
    """What the identification found on the card (issue 17 item 1)."""

    FACTORY = "factory card"
    ISSUED = "fully issued"
    PARTIAL = "half-personalized"
    OTHER_HOLDER = "card of another cardholder"
    OTHER_PROFILE = "card of another profile"


@dataclass(frozen=True)
class CardIdentity:
    """The card as read without spending a try: ATR, serial (None when not readable or not
    written), the profile's applications found, and for a half-personalized card the first
    missing piece (``reached``)."""

    atr: bytes
    state: CardState
    serial: str | None
    apps_found: tuple[str, ...]
    reached: str = ""

    @property
    def named(self) -> str:
        return f"card {self.serial}" if self.serial else f"card with ATR {self.atr.hex().upper()} (no serial)"


def read_uid(session: CardSession) -> bytes | None:
    """The card's UID where the reader gives one, else None; reads only.  GET DATA
    ``FF CA 00 00 00`` (PC/SC part 3, "Get Data": answered by the reader, not the card) is sent
    only when the ATR has the form a PC/SC reader builds for a contactless card,
    ``3B 8n 80 01 ...`` (PC/SC part 3, ATR of ISO 14443-4 cards; SPEC §6 R19); a contact
    FM1208 has no UID and gets nothing.  A reader that refuses it: None."""
    atr = session.atr
    if len(atr) < 4 or atr[0] != 0x3B or atr[1] & 0xF0 != 0x80 or atr[2:4] != b"\x80\x01":
        return None

    try:
        resp = session.send(CommandApdu(0xFF, 0xCA, 0x00, 0x00, ne=256))
    except TransportError:
        return None
    return resp.data if resp.sw == 0x9000 and len(resp.data) in (4, 7, 10) else None


def stable_uid(uid: bytes | None) -> bytes | None:
    """``uid`` when it names the chip, None for none or a random one (a 4-byte UID whose
    first byte is ``08``: a random ID drawn at each activation, ISO/IEC 14443-3)."""
    if uid is None or (len(uid) == 4 and uid[0] == 0x08):
        return None
    return uid


_PRESENT = (0x9000, 0x6A81, 0x9303)       # SELECT answered: the DF is there (blocked ones too)
_MISSING = (0x6A82,)                      # file or application not found


def identify_card(session: CardSession, spec: CardSpec, plan: Plan) -> CardIdentity:
    """Identify the card in ``session`` against ``spec``/``plan`` with SELECT and free reads
    only (no key tried, no try spent): the MF's ``@card_serial`` field (walk.serial_field),
    SELECT by AID of every application, and whether each profile file exists (READ answers
    anything but 6A82) and, where the profile lets it be read freely and the plan writes
    content, holds data (not all zero / no record).  A card whose ATR shows the other
    line-protection cipher is refused first (:mod:`citycard.cos`), before the identification
    could call it this cardholder's card and ask for --reissue-card."""
    from ..cos import check_line_protection

    atr = session.atr
    check_line_protection(atr, spec.line_alg)
    if walk.select_unfetched(session, iso.select_mf()) != 0x9000:
        raise PersoError("SELECT MF refused: not an FMCOS card of this profile (nothing was tried)")
    serial, serial_file, readable = _read_card_serial(session, spec)
    # the serial file was just read: the MF's probe takes what that read found (not read twice)
    found_serial = walk.serial_field(spec.mf, "@card_serial")
    known = {found_serial[0].fid: (serial_file, serial is not None)} if found_serial is not None else {}
    missing: list[str] = []
    mf_present = serial_file or _probe_df(session, spec.mf, plan, missing, select=False, known=known)
    if serial_file and not serial:
        missing.insert(0, "mf: the card serial is not written yet")
    apps_found: list[str] = []
    for app in spec.apps:
        if walk.select_unfetched(session, iso.select_name(app.aid)) in _PRESENT:
            apps_found.append(app.name)
        else:
            missing.append(f"{app.name}: application {app.aid.hex().upper()} not created")
    found = tuple(apps_found)
    if serial is not None and serial != plan.card_serial:
        state = CardState.OTHER_HOLDER if readable else CardState.OTHER_PROFILE
        return CardIdentity(atr, state, serial, found)
    if not found and not mf_present:
        other = _other_application(session, spec)
        if other:
            return CardIdentity(atr, CardState.OTHER_PROFILE, None, found, other)
        return CardIdentity(atr, CardState.FACTORY, None, found)
    for app in spec.apps:
        if app.name in apps_found:
            _probe_df(session, app, plan, missing, select=True)
    if serial_file:
        walk.select_unfetched(session, iso.select_mf())
        _probe_df(session, spec.mf, plan, missing, select=False, known=known)
    if missing:
        return CardIdentity(atr, CardState.PARTIAL, serial, found, missing[0])
    return CardIdentity(atr, CardState.ISSUED, serial, found)


def _read_card_serial(session: CardSession, spec: CardSpec) -> tuple[str | None, bool, bool]:
    """(serial or None, whether the serial file exists, whether it decodes in the profile's
    layout) from the MF's free-read file carrying ``@card_serial`` (SPEC §2.4; the MF is selected)."""
    from ..terminal.identify import read_serial_field   # the one free read of a serial field

    found = walk.serial_field(spec.mf, "@card_serial")
    if found is None:
        return None, False, False
    f, name = found
    read = read_serial_field(session, f, name)
    if not read.exists:
        return None, False, False
    if not read.readable:
        # the profile's serial file reads freely on its cards: one that refuses the read (6982,
        # 6985, ...) is not a card of this profile, whatever it is; never a key for it
        raise ForeignCard(f"cannot take over the card: its MF file {f.fid:04X} refuses a free read "
                          f"(SW {read.sw:04X}), which a card of profile {spec.name!r} allows; refused before "
                          "any key was tried (check --profile and the card in the reader)")
    return read.value, True, read.decodes


def _other_application(session: CardSession, spec: CardSpec) -> str:
    """On a card where no application of the profile answers its AID: a DF at the FID of one
    of them (SELECT by FID from the MF) is another profile's application; said with its AID."""
    from ..tlv import try_parse

    walk.select_unfetched(session, iso.select_mf())
    for app in spec.apps:
        r = session.send(iso.select_fid(app.fid))
        if r.sw != 0x9000:
            continue
        fci = try_parse(r.data)
        name = fci[0].find(0x84) if fci and fci[0].tag == 0x6F else None
        aid = name.value.hex().upper() if name is not None else "(no name in its FCI)"
        return (f"DF {app.fid:04X} holds application {aid}, not {app.name} "
                f"({app.aid.hex().upper()})")
    return ""


def _probe_df(session: CardSession, df: DFSpec, plan: Plan, missing: list[str], *, select: bool,
              known: dict[int, tuple[bool, bool]] | None = None) -> bool:
    """Whether any file of ``df`` exists; the files missing or not yet written go to ``missing``.
    ``known``: FID → (exists, written) of files already read (not read again)."""
    if select and walk.select_unfetched(session, walk.select_df_command(df)) != 0x9000:
        return True          # a blocked application (6A81, 9303) of an issued card: there, files unseen
    any_found = False
    for f in df.files:
        if f.kind in ("ed", "ep") or f.sfi is None:
            continue
        if known and f.fid in known:
            exists, written = known[f.fid]
            if not exists:
                missing.append(f"{df.name}: file {f.name} not created")
                continue
            any_found = True
            if not written:
                missing.append(f"{df.name}: file {f.name} not written")
            continue
        content = plan.contents.get((df.name, f.fid))
        if f.kind == "binary":
            n = min(len(content), 0xF0) if isinstance(content, bytes) and content else 1
            r = session.send(iso.read_binary(0, n, sfi=f.sfi))
            empty = r.sw == 0x9000 and isinstance(content, bytes) and any(content[:n]) and not any(r.data)
        else:
            r = session.send(iso.read_record(1, sfi=f.sfi))
            empty = r.sw == 0x6A83 and bool(content)
        if r.sw in _MISSING:
            missing.append(f"{df.name}: file {f.name} not created")
            continue
        any_found = True
        if empty:
            missing.append(f"{df.name}: file {f.name} not written")
    return any_found


def personalize(session: CardSession, spec: CardSpec, plan: Plan, *, verify: bool = True,
                on_step: Callable[[int, Step], None] | None = None, reissue: bool = False,
                on_attempt: Callable[[CardIdentity], None] | None = None, probe: bool = False) -> RunReport:
    """Identify the card (no try spent), personalize it with ``plan`` as the identification
    allows, and verify it.  ``reissue``: erase and issue again a card of this cardholder that
    is fully issued (its purse balance and records are lost).  ``on_attempt(identity)`` is
    called once the card is identified (reads only) and before the first command that
    authenticates or writes: the batch records the attempt there (journal_attempts); an
    exception from it stops before anything is sent.  ``probe``: after the verification, look
    for files the profile does not name (:func:`citycard.perso.verify.probe_files`, reads only)."""
    t0 = time.perf_counter()
    report = RunReport(plan.card_serial)
    count0 = _apdu_counter(session)
    try:
        ident = identify_card(session, spec, plan)
    except TransportError as exc:
        raise PersoError(f"identifying the card (nothing written): {exc}") from None
    report.identity = ident
    if on_attempt is not None:
        on_attempt(ident)
    start = _decide(session, spec, plan, ident, reissue)
    report.reissued = reissue and ident.state is CardState.ISSUED
    report.rerun = start > 0
    try:
        report.steps = run_plan(session, plan, start=start, on_step=on_step)
    except PersoError as exc:
        if start != 0 or exc.step != Plan.AUTHENTICATE + 1 or exc.sw is None:
            raise
        # the transport key did not open the MF of a card that shows nothing of the profile
        start = _resume_after_transport_refused(session, spec, plan, exc.sw)
        report.rerun = True
        report.steps = run_plan(session, plan, start=start, on_step=on_step)
    if verify:
        from .verify import verify_card
        try:
            report.checks = verify_card(session, spec, plan)
            if probe:
                from .verify import probe_files
                found = probe_files(session, spec)
                report.checks += found
                bad = [f"{label}: {detail}" for label, ok, detail in found if not ok]
                if bad:
                    raise PersoError("the probe found files the profile does not name: " + "; ".join(bad))
        except TransportError as exc:
            raise PersoError(f"verification: {exc}") from None
    report.apdus = _apdu_counter(session) - count0
    report.seconds = time.perf_counter() - t0
    return report


def _decide(session: CardSession, spec: CardSpec, plan: Plan, ident: CardIdentity, reissue: bool) -> int:
    """The plan index to start from, or an error before any key is tried (issue 17 item 1)."""
    if ident.state is CardState.OTHER_HOLDER:
        raise ForeignCard(f"cannot take over the card: it is card {ident.serial} of another cardholder, not "
                          f"{plan.card_serial}; refused before any key was tried (check the data row and "
                          "the card in the reader)")
    if ident.state is CardState.OTHER_PROFILE:
        what = (f"its MF serial file holds {ident.serial}, not a serial of profile {spec.name!r}" if ident.serial
                else ident.reached)
        raise ForeignCard(f"cannot take over the card: {what}; a card of another profile, refused before any "
                          "key was tried (check --profile and the card in the reader)")
    if ident.state is CardState.FACTORY:
        if reissue:
            return _take_over_unidentified(session, spec, plan)
        return 0
    if ident.state is CardState.ISSUED:
        if not reissue:
            policy = ("the card is already (partly) personalized and the profile says rerun = \"refuse\": "
                      if spec.rerun == "refuse" else "")
            raise CardAlreadyIssued(f"{policy}card {ident.serial} is already issued to this cardholder "
                                    f"(every application and file of profile {spec.name!r} is in place); nothing "
                                    "was changed.  To erase it and issue it again (its purse balance and records "
                                    "are lost), run perso again with --reissue-card")
        log.warning("card %s is fully issued: --reissue-card asked, erasing it and issuing it again", ident.serial)
        return _take_over(session, spec, plan, ident)
    log.warning("card %s is half-personalized (a previous run stopped; first missing: %s): rerun = %s",
                ident.serial or "(no serial yet)", ident.reached, spec.rerun)
    _refuse_rerun(spec, f"the card is already (partly) personalized (reached: {ident.reached})")
    return _take_over(session, spec, plan, ident)


def _refuse_rerun(spec: CardSpec, what: str) -> None:
    if spec.rerun == "refuse":
        raise PersoError(f"{what} and the profile says rerun = \"refuse\"")


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
    if (sw & 0xFFF0) == 0x63C0 or sw == 0x6983:
        _refuse_rerun(spec, "the card's MF no longer takes the transport key (a personalization stopped after "
                      "the MF master was written)")
        raise AuthenticationRefused(
            f"the card's MF refused the transport key: {sw:04X} ({describe_sw(sw)}); the card shows nothing of "
            f"profile {spec.name!r} (no card serial, no application): another issuer's card, or one whose "
            "personalization was cut right after WRITE KEY of the MF master.  Stopped after this one try: no key "
            "is retried on a card.  If it is this cardholder's card cut there, run again with --reissue-card "
            "(its MF master is then tried, once, instead of the transport key)", step=Plan.AUTHENTICATE + 1, sw=sw)
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


def _take_over(session: CardSession, spec: CardSpec, plan: Plan, ident: CardIdentity) -> int:
    """SELECT MF, EXTERNAL AUTHENTICATE with this card's MF master (once: the identification
    said the card is this profile's and this cardholder's); return the plan index of ERASE DF,
    where the redo goes on (the same issuance as a factory card's: SPEC §6 R2)."""
    resp = _authenticate_master(session, spec, plan)
    if resp.sw != 0x9000:
        raise AuthenticationRefused(
            f"cannot take over the card: EXTERNAL AUTHENTICATE with the MF master of {ident.named} answered "
            f"{resp.sw:04X} ({describe_sw(resp.sw)}); stopped after this one try (no key is retried on a card).  "
            "The card is of this cardholder, so the keys given (--keys) or the profile's key derivation are not "
            "the ones it was issued with", sw=resp.sw)
    return Plan.ERASE


def _take_over_unidentified(session: CardSession, spec: CardSpec, plan: Plan) -> int:
    """Re-issuance asked for a card that shows nothing of the profile (a run cut between WRITE
    KEY of the MF master and its first file): the MF master is tried, once, instead of the
    transport key; a card cut inside the issuance window (no key 00) goes on as in
    :func:`_resume_after_transport_refused`."""
    resp = _authenticate_master(session, spec, plan)
    if resp.sw == 0x9000:
        return Plan.ERASE
    if resp.sw in (0x6A88, 0x6A82):
        return _resume_after_transport_refused(session, spec, plan, resp.sw)
    raise AuthenticationRefused(
        f"--reissue-card: the card shows nothing of profile {spec.name!r} and its MF refused this cardholder's "
        f"MF master: {resp.sw:04X} ({describe_sw(resp.sw)}); stopped after this one try.  A factory card is "
        "personalized without --reissue-card", sw=resp.sw)


def _authenticate_master(session: CardSession, spec: CardSpec, plan: Plan) -> ResponseApdu:
    master = _mf_master(spec, plan)
    m = spec.mf.master_key()
    if master is None or m is None:
        raise PersoError("the card is personalized but the profile's MF has no master key to erase it")
    log.info("taking the card over with its MF master key to erase it")
    sw = walk.select_unfetched(session, iso.select_mf())
    if sw != 0x9000:
        raise CardError(sw, "SELECT MF", expected=0x9000)
    return walk.external_authenticate(session, m.kid, master, spec.line_alg)


def _apdu_counter(session: CardSession) -> int:
    counter = getattr(session.transport, "apdu_count", None)
    return counter if isinstance(counter, int) else 0
