"""Playing one step of a plan, and the error a stopped personalization raises.

Shared by the runner (:mod:`citycard.perso.run`) and the verifier
(:mod:`citycard.perso.verify`), so that neither imports the other.
"""

from __future__ import annotations

from ..apdu import ResponseApdu
from ..commands import walk
from ..errors import CitycardError
from ..transport import CardSession, LineProtection
from .plan import Step


class PersoError(CitycardError):
    """Personalization stopped at a step; ``step`` is its 1-based number, ``sw`` the card's
    status word when the card refused it."""

    def __init__(self, message: str, *, step: int | None = None, label: str = "", sw: int | None = None) -> None:
        super().__init__(message)
        self.step, self.label, self.sw = step, label, sw


def execute(session: CardSession, step: Step) -> ResponseApdu:
    """Send one step: as is, under line protection (the stack fetches the challenge), or as
    EXTERNAL AUTHENTICATE with the step's key (key id in P2)."""
    if step.kind == "apdu":
        return session.send(step.cmd)
    assert step.key is not None
    if step.kind == "protected":
        return session.send(step.cmd, protect=LineProtection(step.key, encrypt=step.encrypt, alg=step.alg))
    if step.kind == "ext_auth":
        return walk.external_authenticate(session, step.cmd.p2, step.key, step.alg)
    raise ValueError(f"unknown step kind {step.kind!r}")


class CardAlreadyIssued(PersoError):
    """The card is this profile's, of this cardholder, and fully issued: perso refuses to
    redo it unless re-issuance is asked for (``perso --reissue-card``, issue 17 item 1)."""


class ForeignCard(PersoError):
    """The card belongs to another cardholder or another profile: refused before any key is
    tried on it (issue 17 item 1)."""


class AuthenticationRefused(PersoError):
    """EXTERNAL AUTHENTICATE failed once (63Cx, 6983): perso stops, no key is retried."""
