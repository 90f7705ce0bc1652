"""PSAM files (PSAM-SM4.md §1.1): the terminal-side secure module's serial, terminal
number, issuer data and transaction serial number."""

from __future__ import annotations

from .layout import Field, Layout

H = bytes.fromhex

PSAM_EF0015 = Layout(
    name="psam_ef0015",
    title="EF0015 PSAM serial and versions (14 bytes)",
    size=14,
    source="citycard (PSAM-SM4.md §1.1 (FNT-L, FNT-D, KSY))",
    fields=(
        Field("psam_serial", "bcd", 10, "PSAM serial, 20 BCD digits (FNT-L: 0100 ‖ ASN; KSY: BCD left-padded with 0)"),
        Field("psam_version", "int", 1, "PSAM version (01; an SM4 PSAM has 05: ETCP)"),
        Field("key_card_type", "int", 1, "key-card type (01)"),
        Field("reserved", "hex", 2, "FNT: issuer FCI 0000; KSY: instruction-set version ‖ FCI (docs/psam.md, decision 5)"),
    ),
    vectors=(
        # FNT-L form (01 00 ‖ ASN8, version 01, type 01, FCI 0000); the ASN is ours
        ({"psam_serial": "01000000000000000001", "psam_version": 1, "key_card_type": 1, "reserved": "0000"},
         H("0100" "0000000000000001" "01" "01" "0000")),
        # KSY form (BCD serial left-padded with 0, version, type, instruction-set version 01, FCI 00)
        ({"psam_serial": "00000000003640010007", "psam_version": 1, "key_card_type": 1, "reserved": "0100"},
         H("00000000003640010007" "01" "01" "0100")),
    ),
)

PSAM_EF0016 = Layout(
    name="psam_ef0016",
    title="EF0016 PSAM terminal number (6 bytes, BCD)",
    size=6,
    source="citycard (PSAM-SM4.md §1.1 (MZT, FNT, KSY, KSD))",
    fields=(Field("terminal_number", "bcd", 6, "terminal number, 12 BCD digits; MAC1 covers it (PSAM-SM4.md §2.3)"),),
    vectors=(({"terminal_number": "364001000748"}, H("364001000748")),   # MZT
             ({"terminal_number": "000000000001"}, H("000000000001"))),
)

PSAM_EF0017 = Layout(
    name="psam_ef0017",
    title="EF0017 PSAM issuer data (25 bytes)",
    size=25,
    source="citycard (PSAM-SM4.md §1.1 (MZT log, FNT defaults))",
    fields=(
        Field("key_index", "int", 1, "the key index a terminal sends in the card's 80 50 (MZT)"),
        Field("issuer_id", "hex", 8, "issuer identifier (FNT default 10FFFFFFFFFFFFFF)"),
        Field("receiver_id", "hex", 8, "receiver identifier (FNT default 32FFFFFFFFFFFFFF)"),
        Field("start_date", "date", 4, "start date YYYYMMDD"),
        Field("expiry_date", "date", 4, "expiry date YYYYMMDD"),
    ),
    vectors=(
        ({"key_index": 1, "issuer_id": "0000000000000001", "receiver_id": "0000000000000001",
          "start_date": "20111222", "expiry_date": "20161220"},
         H("01" "0000000000000001" "0000000000000001" "20111222" "20161220")),   # MZT log
        ({"key_index": 1, "issuer_id": "10FFFFFFFFFFFFFF", "receiver_id": "32FFFFFFFFFFFFFF",
          "start_date": "20260101", "expiry_date": "20361231"},
         H("01" "10FFFFFFFFFFFFFF" "32FFFFFFFFFFFFFF" "20260101" "20361231")),     # FNT defaults
    ),
)

PSAM_EF0019 = Layout(
    name="psam_ef0019",
    title="EF0019 PSAM terminal transaction serial number (4 bytes)",
    size=4,
    source="citycard (PSAM-SM4.md §1.1 (KSY writes 00000000 at issue))",
    fields=(Field("ttsn", "int", 4, "the next TTSN the PSAM gives out (docs/psam.md, decision 6)"),),
    vectors=(({"ttsn": 1}, H("00000001")), ({"ttsn": 0x0102}, H("00000102"))),
)

LAYOUTS = (PSAM_EF0015, PSAM_EF0016, PSAM_EF0017, PSAM_EF0019)
