"""Status words: :class:`StatusWord` and the one table of their meanings.

ISO/IEC 7816-4 §5.6 table 6, with the FMCOS / PBOC meanings of SPEC.md §1.5 where they
are more specific (those win where both exist).  :func:`describe_sw` also explains the
parameterised families (``61xx``, ``6Cxx``, ``63Cx``, ...).  This module imports nothing
of citycard, so :mod:`citycard.errors` and :mod:`citycard.apdu` can both use it.
"""

from __future__ import annotations

from enum import IntEnum


class StatusWord(IntEnum):
    """The status words citycard names (ISO 7816-4 §5.6; FMCOS UM p.49–50, SPEC §1.5)."""

    SUCCESS = 0x9000
    NVM_UNCHANGED_WARNING = 0x6200
    DATA_MAY_BE_CORRUPTED = 0x6281          # FMCOS: checksum warning, never-written file (SPEC §6 R13)
    END_OF_FILE = 0x6282
    FILE_DEACTIVATED = 0x6283               # FMCOS: file or key checksum error
    FCI_NOT_FORMATTED = 0x6284
    FILE_TERMINATED = 0x6285
    VERIFICATION_FAILED = 0x6300
    FILE_FILLED = 0x6381
    STATE_UNCHANGED = 0x6400
    NVM_CHANGED = 0x6500
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    CLA_FUNCTION_NOT_SUPPORTED = 0x6800
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_EXPECTED = 0x6883
    CHAINING_NOT_SUPPORTED = 0x6884
    LINE_PROTECTION_REQUIRED = 0x6900       # FMCOS: CLA does not match the file's line protection
    INVALID_STATE = 0x6901
    INCOMPATIBLE_FILE_STRUCTURE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTHENTICATION_BLOCKED = 0x6983
    REFERENCE_DATA_NOT_USABLE = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    NO_CURRENT_EF = 0x6986
    SM_OBJECTS_MISSING = 0x6987
    SM_OBJECTS_INCORRECT = 0x6988
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81         # also: card or application blocked
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_SPACE = 0x6A84
    NC_INCONSISTENT_WITH_TLV = 0x6A85
    WRONG_P1P2 = 0x6A86
    NC_INCONSISTENT_WITH_P1P2 = 0x6A87
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    FILE_EXISTS = 0x6A89
    DF_NAME_EXISTS = 0x6A8A
    OFFSET_OUT_OF_RANGE = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00
    MAC_ERROR = 0x9302
    APPLICATION_PERMANENTLY_LOCKED = 0x9303
    INSUFFICIENT_BALANCE = 0x9401
    KEY_INDEX_NOT_SUPPORTED = 0x9403
    MAC_TAC_NOT_AVAILABLE = 0x9406


# The one name table (keyed by the enum; plain ints look up alike).
STATUS_WORDS: dict[int, str] = {
    StatusWord.SUCCESS: "success",
    StatusWord.NVM_UNCHANGED_WARNING: "warning: state of non-volatile memory unchanged",
    StatusWord.DATA_MAY_BE_CORRUPTED:
        "returned data may be corrupted (FMCOS: checksum warning, also for a never-written file)",
    StatusWord.END_OF_FILE: "end of file or record reached before reading Ne bytes",
    StatusWord.FILE_DEACTIVATED: "selected file deactivated (FMCOS: file or key checksum error)",
    StatusWord.FCI_NOT_FORMATTED: "file control information not formatted",
    StatusWord.FILE_TERMINATED: "selected file in termination state",
    StatusWord.VERIFICATION_FAILED: "verification failed",
    StatusWord.FILE_FILLED: "file filled up by the last write",
    StatusWord.STATE_UNCHANGED:
        "execution error: state of non-volatile memory unchanged (FMCOS: state flag unchanged)",
    StatusWord.NVM_CHANGED: "execution error: state of non-volatile memory changed",
    StatusWord.MEMORY_FAILURE: "memory failure (FMCOS: EEPROM write failed)",
    StatusWord.WRONG_LENGTH: "wrong length",
    StatusWord.CLA_FUNCTION_NOT_SUPPORTED: "functions in CLA not supported",
    StatusWord.LOGICAL_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    StatusWord.SECURE_MESSAGING_NOT_SUPPORTED: "secure messaging not supported",
    StatusWord.LAST_COMMAND_EXPECTED: "last command of the chain expected",
    StatusWord.CHAINING_NOT_SUPPORTED: "command chaining not supported",
    StatusWord.LINE_PROTECTION_REQUIRED:
        "command not allowed (FMCOS: CLA does not match the file's line-protection requirement)",
    StatusWord.INVALID_STATE: "invalid state",
    StatusWord.INCOMPATIBLE_FILE_STRUCTURE: "command incompatible with file structure",
    StatusWord.SECURITY_STATUS_NOT_SATISFIED: "security status not satisfied",
    StatusWord.AUTHENTICATION_BLOCKED: "authentication method blocked (key or PIN locked)",
    StatusWord.REFERENCE_DATA_NOT_USABLE: "reference data not usable",
    StatusWord.CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    StatusWord.NO_CURRENT_EF: "command not allowed (no current EF)",
    StatusWord.SM_OBJECTS_MISSING: "expected secure messaging data objects missing",
    StatusWord.SM_OBJECTS_INCORRECT: "incorrect secure messaging data objects",
    StatusWord.WRONG_DATA: "incorrect parameters in the command data field",
    StatusWord.FUNCTION_NOT_SUPPORTED: "function not supported, or card/application locked",
    StatusWord.FILE_NOT_FOUND: "file or application not found",
    StatusWord.RECORD_NOT_FOUND: "record not found",
    StatusWord.NOT_ENOUGH_SPACE: "not enough memory space in the file",
    StatusWord.NC_INCONSISTENT_WITH_TLV: "Nc inconsistent with TLV structure",
    StatusWord.WRONG_P1P2: "incorrect parameters P1-P2",
    StatusWord.NC_INCONSISTENT_WITH_P1P2: "Nc inconsistent with parameters P1-P2",
    StatusWord.REFERENCED_DATA_NOT_FOUND: "referenced data or key not found",
    StatusWord.FILE_EXISTS: "file already exists",
    StatusWord.DF_NAME_EXISTS: "DF name already exists",
    StatusWord.OFFSET_OUT_OF_RANGE: "wrong parameters P1-P2 (offset out of range)",
    StatusWord.INS_NOT_SUPPORTED: "instruction code not supported or invalid",
    StatusWord.CLA_NOT_SUPPORTED: "class not supported",
    StatusWord.NO_PRECISE_DIAGNOSIS: "no precise diagnosis",
    StatusWord.MAC_ERROR: "MAC error",
    StatusWord.APPLICATION_PERMANENTLY_LOCKED: "application permanently locked",
    StatusWord.INSUFFICIENT_BALANCE: "insufficient balance",
    StatusWord.KEY_INDEX_NOT_SUPPORTED: "key index not supported",
    StatusWord.MAC_TAC_NOT_AVAILABLE: "requested MAC/TAC not available",
}


def describe_sw(sw: int) -> str:
    """Meaning of a status word, including the parameterised families."""
    meaning = STATUS_WORDS.get(sw)
    if meaning is not None:
        return meaning
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"{sw2 or 256} more response bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"wrong Le: {sw2 or 256} bytes available (resend with that Le)"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} tries left"
    if sw1 == 0x62 and 0x02 <= sw2 <= 0x80:
        return "warning: triggering by the card"
    if sw1 == 0x64 and 0x02 <= sw2 <= 0x80:
        return "error: triggering by the card"
    if sw1 == 0x67:
        return "wrong length"
    if sw1 == 0x6B:
        return "wrong parameters P1-P2"
    if sw1 == 0x6D:
        return "instruction code not supported or invalid"
    if sw1 == 0x6E:
        return "class not supported"
    if sw1 == 0x6F:
        return "no precise diagnosis"
    if sw1 in (0x90, 0x91):
        return "success (with proprietary information)" if sw1 == 0x90 else "proprietary status"
    return "unknown status word"
