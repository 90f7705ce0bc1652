"""MOHURD / city-card files (SPEC §2.5: CS script, MD CityUnion)."""

from __future__ import annotations

from .layout import Field, Layout
from .pboc import TUNION_EF0015

H = bytes.fromhex

MOHURD_EF0015 = Layout(
    name="mohurd_ef0015",
    title="EF0015 public application data, MOHURD city-card layout (30 bytes)",
    size=30,
    source="SPEC §2.5 (CS script; MD CityUnion)",
    fields=(
        Field("issuer_code", "hex", 2, "issuer code"),
        Field("city_code", "hex", 2, "city code (metrodroid: 2000 = Shanghai)"),
        Field("industry_code", "hex", 2, "industry code"),
        Field("rfu1", "hex", 2, "reserved"),
        Field("app_type", "int", 1, "application type / enabled flag"),
        Field("app_version", "int", 1, "application version"),
        Field("rfu2", "hex", 2, "reserved"),
        Field("app_serial", "bcd", 8, "application serial number, 16 BCD digits (the diversification factor)"),
        Field("start_date", "date", 4, "application start date YYYYMMDD"),
        Field("expiry_date", "date", 4, "application expiry date YYYYMMDD"),
        Field("rfu3", "hex", 2, "reserved"),
    ),
    vectors=(
        # The real T-Union EF0015 of SPEC §2.5 read with this layout: all of it is
        # valid (the serial bytes are BCD), but it is a T-Union card, whose own
        # layout is pboc_ef0015; read this way its serial loses its first 2 bytes.
        (
            {
                "issuer_code": "0101",
                "city_code": "1000",
                "industry_code": "FFFF",
                "rfu1": "FFFF",
                "app_type": 2,
                "app_version": 1,
                "rfu2": "0310",
                "app_serial": "5170010170907984",
                "start_date": "20190806",
                "expiry_date": "20401231",
                "rfu3": "0000",
            },
            TUNION_EF0015,
        ),
        (
            {
                "issuer_code": "3301",
                "city_code": "3301",
                "industry_code": "0001",
                "rfu1": "0000",
                "app_type": 1,
                "app_version": 1,
                "rfu2": "0000",
                "app_serial": "3301000000000123",
                "start_date": "20260101",
                "expiry_date": "20351231",
                "rfu3": "0000",
            },
            H("3301" "3301" "0001" "0000" "01" "01" "0000" "3301000000000123" "20260101" "20351231" "0000"),
        ),
    ),
)

CARD_EF0005 = Layout(
    name="card_ef0005",
    title="MF EF0005 card issue information (40 bytes)",
    size=40,
    source="citycard (after the 0x28-byte MF EF0005 of SPEC §2.5, CS)",
    fields=(
        Field("issuer_code", "hex", 2, "issuer code"),
        Field("city_code", "hex", 2, "city code"),
        Field("card_serial", "bcd", 8, "card serial number, 16 BCD digits"),
        Field("card_type", "int", 1, "card type"),
        Field("card_version", "int", 1, "card version"),
        Field("issue_date", "date", 4, "issue date YYYYMMDD"),
        Field("expiry_date", "date", 4, "card expiry date YYYYMMDD"),
        Field("holder_id", "ascii", 18, "cardholder's resident ID number, ASCII"),
    ),
    vectors=(
        (
            {
                "issuer_code": "3301",
                "city_code": "3301",
                "card_serial": "3301000000000123",
                "card_type": 1,
                "card_version": 1,
                "issue_date": "20260101",
                "expiry_date": "20351231",
                "holder_id": "330106198001011235",
            },
            H("3301" "3301" "3301000000000123" "01" "01" "20260101" "20351231" + "330106198001011235".encode().hex()),
        ),
        (
            {
                "issuer_code": "1100",
                "city_code": "1000",
                "card_serial": "0000000000000001",
                "card_type": 2,
                "card_version": 3,
                "issue_date": "20240229",
                "expiry_date": "00000000",
                "holder_id": "",
            },
            H("1100" "1000" "0000000000000001" "02" "03" "20240229" "00000000" + "00" * 18),
        ),
    ),
)

LAYOUTS = (MOHURD_EF0015, CARD_EF0005)
