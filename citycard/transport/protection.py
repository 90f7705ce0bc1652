"""Line protection as the top layer of the transport stack (SPEC.md §1.6, D6).

A caller asks for a protected command and the stack does the rest::

    session.send(fmcos.card_block(), protect=LineProtection(damk))          # MAC
    session.send(iso.update_binary(data, sfi=0x15), protect=LineProtection(key, encrypt=True))

:class:`LineProtector` sits above every processor of a :class:`CardSession` (like the
secure-channel processor of yubikit, but per command, because each FMCOS MAC needs a fresh
challenge): it sends GET CHALLENGE, then the protected form of the command (CLA ``|04``,
data enciphered when asked, the MAC appended).  The processors below (an observer, T=0
fetching, the transcript) see both APDUs as they go on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING, Callable

from ..apdu import CommandApdu, ResponseApdu
from ..commands import iso
from ..errors import CardError
from .processors import Send

if TYPE_CHECKING:   # the crypto is imported when a command is protected (CLI start-up, issue 19)
    from ..crypto.cipher import Alg
    from ..keys.handles import Key


@dataclass(frozen=True, slots=True)
class LineProtection:
    """How to protect one command: the key (bytes or a key handle; never shown), whether the
    data is enciphered as well as MAC'd, and the cipher (``des``: DES/3DES by key length;
    ``sm4`` on a card whose COS does SM4 line protection, docs/sm4.md)."""

    key: Key = field(repr=False)
    encrypt: bool = False
    alg: Alg = "des"
    challenge_length: int = 4


class LineProtector:
    """The top layer of a session: protected commands get their challenge and MAC here.
    ``atr`` gives the card's ATR, by which a card of the other line-protection cipher is
    refused before its challenge is asked for (:mod:`citycard.cos`).  ``challenge``: the
    challenge of the last protected command (a protected read's answer is MAC'd with it,
    SPEC §6 R14: the caller checks that MAC)."""

    challenge: bytes | None = None

    def __init__(self, atr: Callable[[], bytes] | None = None) -> None:
        self._atr = atr
        self._checked: tuple[bytes, str] | None = None   # the (ATR, cipher) last found to agree

    def process(self, cmd: CommandApdu, send: Send, protection: LineProtection | None = None) -> ResponseApdu:
        if protection is None:
            return send(cmd)
        from ..cos import check_line_protection

        # a card whose ATR shows the other cipher: refused before the challenge, so no MAC of
        # the wrong cipher spends a try of the card's key (docs/sm4.md)
        if self._atr is not None:
            atr = self._atr()
            if self._checked != (atr, protection.alg):      # once per card, not per command
                check_line_protection(atr, protection.alg)
                self._checked = (atr, protection.alg)
        challenge = send(iso.get_challenge(protection.challenge_length))
        if challenge.sw != 0x9000:
            raise CardError(challenge.sw, "GET CHALLENGE")
        self.challenge = challenge.data
        from ..crypto.secure import protect

        return send(protect(cmd, protection.key, challenge.data, encrypt=protection.encrypt,
                            alg=protection.alg))
