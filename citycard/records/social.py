"""Social-security card record files EF05 and EF06 (SPEC §3; partial, unofficial)."""

from __future__ import annotations

from .layout import Field, TlvLayout

H = bytes.fromhex

#: Card identification code (卡识别码) of SPEC §3.
SS_CARD_ID = "330300D15600000599110145FFFFFFFF"

SS_EF05 = TlvLayout(
    name="ss_ef05",
    title="Social-security EF05 issuer data (TLV records)",
    source="SPEC §3 (SS)",
    fields=(
        Field("card_id", "hex", 16, "card identification code", tag=0x01),
        Field("card_class", "int", 1, "card class", tag=0x02),
        Field("spec_version", "ascii", 4, "specification version, e.g. 3.00", tag=0x03),
        Field("init_org", "hex", 12, "initialising organisation number", tag=0x04),
        Field("issue_date", "date", 4, "issue date YYYYMMDD", tag=0x05),
        Field("expiry_date", "date", 4, "expiry date YYYYMMDD", tag=0x06),
        Field("card_number", "ascii", 9, "card number", tag=0x07),
    ),
    vectors=(
        (
            {
                "card_id": SS_CARD_ID,
                "card_class": 1,
                "spec_version": "3.00",
                "init_org": "330300000000000000000001",
                "issue_date": "20190806",
                "expiry_date": "20290806",
                "card_number": "A12345678",
            },
            [
                H("0110" + SS_CARD_ID),
                H("020101"),
                H("0304" "332E3030"),
                H("040C" "330300000000000000000001"),
                H("0504" "20190806"),
                H("0604" "20290806"),
                H("0709" "413132333435363738"),
            ],
        ),
        (
            {"card_id": SS_CARD_ID, "spec_version": "3.00"},
            [H("0110" + SS_CARD_ID), H("0304" "332E3030")],
        ),
    ),
)

SS_EF06 = TlvLayout(
    name="ss_ef06",
    title="Social-security EF06 cardholder data (TLV records)",
    source="SPEC §3 (SS)",
    fields=(
        Field("ss_number", "ascii", 18, "social-security number (the resident ID number)", tag=0x08),
        Field("name", "gbk", 30, "name, GBK, padded with 00", tag=0x09),
        Field("sex", "ascii", 1, "sex, GB/T 2261.1: 1 male, 2 female (0 unknown, 9 unstated)", tag=0x0A, choices=("0", "1", "2", "9")),
        Field("ethnicity", "bcd", 1, "ethnicity, GB 3304 two-digit code (01 Han)", tag=0x0B),
        Field("birthplace", "bcd", 3, "birthplace, GB/T 2260 six-digit region code", tag=0x0C),
        Field("birth_date", "date", 4, "birth date YYYYMMDD", tag=0x0D),
    ),
    vectors=(
        (
            {
                "ss_number": "330106198001011235",
                "name": "张伟",
                "sex": "1",
                "ethnicity": "01",
                "birthplace": "330106",
                "birth_date": "19800101",
            },
            [
                H("0812" + "330106198001011235".encode().hex()),
                H("091E" "D5C5CEB0" + "00" * 26),
                H("0A01" "31"),
                H("0B01" "01"),
                H("0C03" "330106"),
                H("0D04" "19800101"),
            ],
        ),
        (
            {"name": "欧阳晓雯", "sex": "2", "birth_date": "20000229"},
            [H("091E" "C5B7D1F4CFFEF6A9" + "00" * 22), H("0A01" "32"), H("0D04" "20000229")],
        ),
    ),
)

LAYOUTS = (SS_EF05, SS_EF06)
