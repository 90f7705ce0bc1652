"""Files of the city services this project defines: library, public bike, health."""

from __future__ import annotations

from .layout import Field, Layout, TlvLayout

H = bytes.fromhex

LIBRARY_EF0015 = Layout(
    name="library_ef0015",
    title="Library application EF0015 patron data (32 bytes)",
    size=32,
    source="citycard",
    fields=(
        Field("patron_id", "ascii", 12, "library patron number"),
        Field("category", "int", 1, "patron category (1-4)"),
        Field("max_loans", "int", 1, "most items on loan at once"),
        Field("valid_from", "date", 4, "membership start YYYYMMDD"),
        Field("valid_until", "date", 4, "membership end YYYYMMDD"),
        Field("branch", "hex", 2, "home branch"),
        Field("rfu", "hex", 8, "reserved"),
    ),
    vectors=(
        (
            {
                "patron_id": "LIB000000123",
                "category": 1,
                "max_loans": 10,
                "valid_from": "20260101",
                "valid_until": "20301231",
                "branch": "0001",
                "rfu": "0000000000000000",
            },
            H("4C4942303030303030313233" "01" "0A" "20260101" "20301231" "0001" "0000000000000000"),
        ),
        (
            {
                "patron_id": "P42",
                "category": 4,
                "max_loans": 0,
                "valid_from": "00000000",
                "valid_until": "00000000",
                "branch": "A00B",
                "rfu": "FFFFFFFFFFFFFFFF",
            },
            H("503432" + "00" * 9 + "04" "00" "00000000" "00000000" "A00B" "FFFFFFFFFFFFFFFF"),
        ),
    ),
)

BIKE_EF0015 = Layout(
    name="bike_ef0015",
    title="Public-bike application EF0015 member data (24 bytes)",
    size=24,
    source="citycard",
    fields=(
        Field("member_id", "bcd", 8, "member number, 16 BCD digits"),
        Field("deposit_paid", "int", 1, "1 when the deposit is paid"),
        Field("deposit_fen", "int", 4, "deposit held, fen"),
        Field("registered", "date", 4, "registration date YYYYMMDD"),
        Field("status", "int", 1, "member status (0 inactive, 1 active, 2 suspended)"),
        Field("rfu", "hex", 6, "reserved"),
    ),
    vectors=(
        (
            {
                "member_id": "3301000000000123",
                "deposit_paid": 1,
                "deposit_fen": 20000,
                "registered": "20240411",
                "status": 1,
                "rfu": "000000000000",
            },
            H("3301000000000123" "01" "00004E20" "20240411" "01" "000000000000"),
        ),
        (
            {
                "member_id": "0000000000000007",
                "deposit_paid": 0,
                "deposit_fen": 0,
                "registered": "00000000",
                "status": 0,
                "rfu": "000000000000",
            },
            H("0000000000000007" + "00" * 16),
        ),
    ),
)

HEALTH_EF0005 = TlvLayout(
    name="health_ef0005",
    title="Health application EF0005 emergency data (TLV records)",
    source="citycard",
    fields=(
        Field("insurance_number", "ascii", 18, "medical-insurance number", tag=0x01),
        Field("blood_type", "ascii", 3, "blood type: A, B, AB or O", tag=0x02),
        Field("allergy_flag", "int", 1, "1 when allergies are recorded", tag=0x03),
        Field("emergency_phone", "bcd", 6, "emergency phone, 11 digits left-padded with 0 to 12", tag=0x04),
        Field("donor_flag", "int", 1, "1 for an organ donor", tag=0x05),
    ),
    vectors=(
        (
            {
                "insurance_number": "330106198001011235",
                "blood_type": "AB",
                "allergy_flag": 0,
                "emergency_phone": "013812345678",
                "donor_flag": 1,
            },
            [
                H("0112" + "330106198001011235".encode().hex()),
                H("0203" "414200"),
                H("030100"),
                H("0406" "013812345678"),
                H("050101"),
            ],
        ),
        (
            {"blood_type": "O", "emergency_phone": "015900001111"},
            [H("0203" "4F0000"), H("0406" "015900001111")],
        ),
    ),
)

LAYOUTS = (LIBRARY_EF0015, BIKE_EF0015, HEALTH_EF0005)
