"""Card models: the factory settings and batch-dependent behaviour of a simulated card, as data.

Where real FM1208 cards differ between batches or sources disagree (SPEC.md §6: R1, R8, R9,
R10, R19), the choice is a field of :class:`CardModel`, not code.  ``MODELS`` holds the named
models; ``fm1208`` is the best-evidenced one and the default of :func:`citycard.sim.new_card`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cos import FM1208_HISTORICAL, SIM_FMCOS_SM4_HISTORICAL
from ..crypto.cipher import Alg
from ..errors import InputError


def _with_tck(body: bytes) -> bytes:
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3B" + body + bytes((tck,))


def atr_from_historical(historical: bytes) -> bytes:
    """A T=1 ATR (``3B 8n 01 <historical> TCK``): the simulator's own form."""
    return _with_tck(bytes((0x80 | len(historical), 0x01)) + historical)


def pcsc_contactless_atr(historical: bytes) -> bytes:
    """The ATR a PC/SC reader builds for an ISO 14443-4 type A card from its ATS historical
    bytes (PC/SC part 3: ``3B 8n 80 01 <historical> TCK``)."""
    return _with_tck(bytes((0x80 | len(historical), 0x80, 0x01)) + historical)


# FM1208 ATS historical bytes (FM1208_HISTORICAL, citycard.cos): 20 90 00 00 00 00 00 ‖ UID
# (SPEC §6 R19; LAB: ATS 10 78 80 90 02 20 90 00 00 00 00 00 66 79 9D 24; CAPT: ... 20 90 00 00
# 00 00 00 7A B4 AB DC).
LAB_UID = bytes.fromhex("66799D24")


@dataclass(frozen=True, slots=True)
class CardModel:
    """What a factory card of one kind looks like and the few behaviours that vary by batch.

    ``transport_tries`` is the maximum (and initial) try count of the factory external-auth
    key (its error-counter byte is ``tries << 4 | tries``).  ``enforce_df_space``: whether a DF's
    declared space limits the files created in it (SPEC §6 R9: a real card does not); the
    card-wide limit is always ``eeprom_bytes``.  ``fci_app_version``: the ``9F08`` value put
    before ``9F0C`` in an ADF's FCI (R10), or None for no ``9F08``.  ``max_balance``: the
    highest ED/EP balance a load may reach (else ``6985``).  ``enciphered_add_any_type``: accept
    an enciphered WRITE KEY add of any key type (the legacy simulator; a real card takes the
    ciphertext as a plain record unless the type has both flags set, R4).  ``max_data``: the
    longest command data field (longer: ``6700``) and the most a READ BINARY with Le ``00``
    returns (UM 7.1 conventions: "Lc … 不可超过 239 字节", Le likewise; SPEC §6 R7), or None for
    the short-APDU limits.  ``line_alg``: the cipher of the card's secure messaging, for the
    whole card (docs/sm4.md "SM4 line protection"): ``des`` (DES/3DES by key length, FMCOS
    UM §11) or ``sm4`` (every MAC'd or enciphered command, WRITE KEY ``84 D4`` and EXTERNAL
    AUTHENTICATE with SM4; keys 36–39 are 16-byte SM4 keys).  ``load_requires_pin``: INITIALIZE FOR LOAD answers ``6982`` until a
    PIN was verified in the current DF, whatever the ACs (ROBUR's card insisted; DENG's card
    loaded without VERIFY: SPEC §6.6, kept configurable, off by default).
    ``add_replaces_existing``: a WRITE KEY add (P1 ``01``) of a type and id already in the KEY
    file replaces that key (DENG p.2: the re-added load key 3F/02 answered INITIALIZE with
    version 00, algorithm 00 on a real FM1208; tests/data/traces/deng_purse.trace); the legacy
    simulator refused it with ``6A86``."""

    name: str
    description: str
    transport_key: bytes = b"\xFF" * 8
    transport_key_id: int = 0x00
    transport_tries: int = 3
    transport_follow_up: int = 0x01
    atr: bytes = field(default=pcsc_contactless_atr(FM1208_HISTORICAL + LAB_UID))
    enforce_df_space: bool = False
    eeprom_bytes: int = 8192
    fci_app_version: int | None = 0x02
    max_balance: int = 0xFFFFFFFF
    enciphered_add_any_type: bool = False
    max_data: int | None = 239
    load_requires_pin: bool = False
    add_replaces_existing: bool = True
    # the factory MF (not given by any source: the simulator's choice, docs/sim.md)
    mf_space: int = 0xFFFF
    mf_create_ac: int = 0xF1      # creating needs SR >= 1: the transport key
    mf_erase_ac: int = 0xF1
    mf_sfi_byte: int = 0x01
    keyfile_space: int = 0x0100
    line_alg: Alg = "des"
    # the command set: "fmcos" (the card) or "psam" (citycard.sim.psam: docs/psam.md)
    kind: str = "fmcos"

    def __post_init__(self) -> None:
        if len(self.transport_key) not in (8, 16):
            raise InputError(f"card model {self.name}: transport key must be 8 or 16 bytes")
        if not 1 <= self.transport_tries <= 15:
            raise InputError(f"card model {self.name}: transport tries must be 1..15")
        if self.line_alg == "sm4" and len(self.transport_key) != 16:
            raise InputError(f"card model {self.name}: an SM4 card's transport key is 16 bytes")
        if not 0 <= self.max_balance <= 0xFFFFFFFF:
            raise InputError(f"card model {self.name}: max_balance must fit 4 bytes")

    @property
    def transport_counter(self) -> int:
        return self.transport_tries << 4 | self.transport_tries


FM1208 = CardModel(
    name="fm1208",
    description="blank FM1208 as the published issuances see it: transport key 00 = 8×FF (R1), "
                "3 tries (R8), DF space not enforced (R9), FCI 9F08 01 02 (R10), contactless ATR (R19)",
)

FM1208_16FF = CardModel(
    name="fm1208-16ff",
    description="legacy simulator card: transport key 00 = 16×FF with 15 tries (CSDN), DF space "
                "enforced, the simulator's own ATR; kept for personalization plans that still "
                "replace the transport key in place",
    transport_key=b"\xFF" * 16,
    transport_tries=15,
    atr=atr_from_historical(b"CITYCARD FMCOS"),
    enforce_df_space=True,
    enciphered_add_any_type=True,
    max_data=None,
    add_replaces_existing=False,
)

FMCOS_SM4 = CardModel(
    name="fmcos-sm4",
    description="an FMCOS card whose COS does its line protection with SM4 (docs/sm4.md: no source "
                "shows one; the construction is TY's SM4 secure messaging, PSAM-SM4 §4.1): keys 36-39 "
                "SM4, every 84/04 command MAC'd (and enciphered) with SM4, WRITE KEY 84 D4 in TY's SM4 "
                "form, EXTERNAL AUTHENTICATE with 16 bytes; factory transport key 00 = 16xFF SM4; "
                "otherwise fm1208; the simulator's own ATR (citycard.cos tells it from an FM1208's)",
    transport_key=b"\xFF" * 16,
    atr=atr_from_historical(SIM_FMCOS_SM4_HISTORICAL),
    line_alg="sm4",
)

PSAM = CardModel(
    name="psam",
    description="PSAM (terminal secure module) on the FM1208 core: the factory MF of fm1208 with the "
                "PSAM commands 80 70 / 80 72 / 80 1A / 80 FA / 80 CA (PSAM-SM4.md §2; docs/psam.md)",
    atr=atr_from_historical(b"CITYCARD PSAM"),
    kind="psam",
)

MODELS: dict[str, CardModel] = {m.name: m for m in (FM1208, FM1208_16FF, FMCOS_SM4, PSAM)}
DEFAULT_MODEL = FM1208.name
# The model old images (without a "model" key) were made with; ``SimCard()`` builds
# DEFAULT_MODEL when no model is given.
LEGACY_MODEL = FM1208_16FF.name


def get_model(model: str | CardModel) -> CardModel:
    """A model by name (one of :data:`MODELS`) or the model itself."""
    if isinstance(model, CardModel):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise InputError(f"unknown card model {model!r} (known: {', '.join(sorted(MODELS))})") from None
