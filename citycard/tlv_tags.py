"""Names of BER-TLV tags, for dumps (:func:`citycard.tlv.dump`).

Sources: ISO/IEC 7816-4 and 7816-6 interindustry tags, EMV Book 3 Annex A, PBOC
(JR/T 0025) and the city-card FCI.  Some context-specific tags mean something else
inside an FCP or an EMV record: :data:`CONTEXT_TAG_NAMES` and :func:`tag_name`.
Tags are ints holding the raw tag bytes, as in :mod:`citycard.tlv`.
"""

from __future__ import annotations

__all__ = ["CONTEXT_TAG_NAMES", "TAG_NAMES", "tag_name"]

#: Names of common tags (ISO/IEC 7816-4 interindustry, EMV, PBOC / JR/T 0025,
#: city-card FCI).  Some context-specific tags mean something else inside an
#: FCP or an EMV record; see :data:`CONTEXT_TAG_NAMES` and :func:`tag_name`.
TAG_NAMES: dict[int, str] = {
    # ISO/IEC 7816-4 / 7816-6 interindustry
    0x42: "issuer identification number",
    0x4F: "AID",
    0x50: "application label",
    0x51: "path",
    0x52: "command to perform",
    0x53: "discretionary data",
    0x57: "track 2 equivalent data",
    0x5A: "PAN",
    0x5F20: "cardholder name",
    0x5F24: "expiry date",
    0x5F25: "effective date",
    0x5F28: "issuer country code",
    0x5F29: "interchange profile",
    0x5F2A: "transaction currency code",
    0x5F2D: "language preference",
    0x5F30: "service code",
    0x5F34: "PAN sequence number",
    0x5F36: "transaction currency exponent",
    0x5F37: "signature",
    0x5F50: "issuer URL",
    0x61: "application template",
    0x62: "FCP template",
    0x64: "FMD template",
    0x6F: "FCI template",
    0x70: "record template",
    0x71: "issuer script template 1",
    0x72: "issuer script template 2",
    0x73: "directory discretionary template",
    0x77: "response message template format 2",
    0x7F21: "card verifiable certificate",
    0x7F49: "public key template",
    0x7F4E: "certificate body",
    0x80: "response message template format 1",
    0x82: "file descriptor",
    0x83: "file identifier",
    0x84: "DF name",
    0x85: "proprietary information",
    0x87: "application priority indicator",
    0x88: "SFI of the directory elementary file",
    0x8A: "life cycle status",
    0x8C: "security attributes (compact format)",
    0x8D: "security environment EF identifier",
    0x8E: "channel security attribute",
    0x8F: "certification authority public key index",
    0x90: "issuer public key certificate",
    0x92: "issuer public key remainder",
    0x93: "signed static application data",
    0x94: "application file locator",
    0x95: "terminal verification results",
    0x9A: "transaction date",
    0x9C: "transaction type",
    0xA5: "FCI proprietary template",
    0xBF0C: "FCI issuer discretionary data",
    # EMV / PBOC two-byte tags
    0x9F02: "amount, authorised",
    0x9F03: "amount, other",
    0x9F07: "application usage control",
    0x9F08: "application version number",
    0x9F0C: "issuer-defined FCI data",
    0x9F0D: "issuer action code - default",
    0x9F0E: "issuer action code - denial",
    0x9F0F: "issuer action code - online",
    0x9F10: "issuer application data",
    0x9F11: "issuer code table index",
    0x9F12: "application preferred name",
    0x9F13: "last online ATC register",
    0x9F17: "PIN try counter",
    0x9F1A: "terminal country code",
    0x9F1F: "track 1 discretionary data",
    0x9F21: "transaction time",
    0x9F26: "application cryptogram",
    0x9F27: "cryptogram information data",
    0x9F32: "issuer public key exponent",
    0x9F36: "application transaction counter",
    0x9F37: "unpredictable number",
    0x9F38: "PDOL",
    0x9F42: "application currency code",
    0x9F44: "application currency exponent",
    0x9F46: "ICC public key certificate",
    0x9F47: "ICC public key exponent",
    0x9F48: "ICC public key remainder",
    0x9F49: "DDOL",
    0x9F4A: "static data authentication tag list",
    0x9F4B: "signed dynamic application data",
    0x9F4D: "log entry",
    0x9F4F: "log format",
    0x9F5D: "available offline spending amount",
    0x9F63: "product identification information",
    0x9F66: "terminal transaction qualifiers",
    0x9F6C: "card transaction qualifiers",
    0x9F6D: "EC reset threshold",
    0x9F74: "EC issuer authorisation code",
    0x9F77: "EC balance limit",
    0x9F78: "EC single transaction limit",
    0x9F79: "EC balance",
}

_FCP_NAMES: dict[int, str] = {
    0x80: "file size",
    0x81: "file size including structural information",
    0x82: "file descriptor",
    0x83: "file identifier",
    0x84: "DF name",
    0x85: "proprietary information",
    0x86: "security attributes (proprietary format)",
    0x87: "FCI extension EF identifier",
    0x88: "short EF identifier",
    0x8A: "life cycle status",
    0x8B: "security attributes (expanded format, referenced)",
    0x8C: "security attributes (compact format)",
    0x8D: "security environment EF identifier",
    0x8E: "channel security attribute",
    0xA5: "proprietary information",
    0xAB: "security attributes (expanded format)",
}

_EMV_RECORD_NAMES: dict[int, str] = {
    0x82: "application interchange profile",
    0x8A: "authorisation response code",
    0x8C: "CDOL1",
    0x8D: "CDOL2",
    0x8E: "CVM list",
}

#: Names that depend on the enclosing template, keyed by the parent's tag:
#: inside an FCP (``62``) the context-specific tags ``80``-``8E`` describe a
#: file; inside EMV record and response templates (``70``, ``77``) they are
#: EMV data elements.  Lookups fall back to :data:`TAG_NAMES`.
CONTEXT_TAG_NAMES: dict[int, dict[int, str]] = {
    0x62: _FCP_NAMES,
    0x70: _EMV_RECORD_NAMES,
    0x77: _EMV_RECORD_NAMES,
}


def tag_name(tag: int, parent: int | None = None) -> str | None:
    """The readable name of ``tag`` inside a template tagged ``parent``, if known."""
    if parent is not None:
        names = CONTEXT_TAG_NAMES.get(parent)
        if names is not None:
            name = names.get(tag)
            if name is not None:
                return name
    return TAG_NAMES.get(tag)
