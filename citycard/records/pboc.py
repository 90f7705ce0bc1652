"""PBOC 2.0 ED/EP files as FMCOS implements them (SPEC §2.2, §2.3, §2.5)."""

from __future__ import annotations

from .layout import Field, Layout

H = bytes.fromhex

#: EF0015 content of a real T-Union card, from its SELECT answer (tag 9F0C, SPEC §2.5,
#: HCE).  The T-Union application uses the PBOC/UM layout: metrodroid reads the
#: serial from bytes 11-20 and the dates from bytes 21-28 (SPEC source MD).
TUNION_EF0015 = H("01011000FFFFFFFF" "02" "01" "03105170010170907984" "20190806" "20401231" "0000")

PBOC_EF0015 = Layout(
    name="pboc_ef0015",
    title="EF0015 public application data, PBOC/FMCOS layout (30 bytes)",
    size=30,
    source="SPEC §2.5 (UM p.140)",
    fields=(
        Field("issuer_id", "hex", 8, "issuer identifier"),
        Field("app_type", "int", 1, "application type"),
        Field("app_version", "int", 1, "application version"),
        Field("app_serial", "bcd", 10, "application serial number, 20 BCD digits; the diversification factor is its rightmost 8 bytes"),
        Field("start_date", "date", 4, "application start date YYYYMMDD"),
        Field("expiry_date", "date", 4, "application expiry date YYYYMMDD"),
        Field("issuer_fci", "hex", 2, "issuer FCI data"),
    ),
    vectors=(
        (
            {
                "issuer_id": "01011000FFFFFFFF",
                "app_type": 2,
                "app_version": 1,
                "app_serial": "03105170010170907984",
                "start_date": "20190806",
                "expiry_date": "20401231",
                "issuer_fci": "0000",
            },
            TUNION_EF0015,
        ),
        (
            {
                "issuer_id": "33010000FFFFFFFF",
                "app_type": 1,
                "app_version": 1,
                "app_serial": "00000000000000000123",
                "start_date": "20260101",
                "expiry_date": "20351231",
                "issuer_fci": "0000",
            },
            H("33010000FFFFFFFF" "01" "01" "00000000000000000123" "20260101" "20351231" "0000"),
        ),
    ),
)

PBOC_EF0016 = Layout(
    name="pboc_ef0016",
    title="EF0016 cardholder data, PBOC/FMCOS layout (39 bytes)",
    size=39,
    source="SPEC §2.5 (UM p.140)",
    fields=(
        Field("card_type", "int", 1, "card type"),
        Field("staff_flag", "int", 1, "bank-staff flag"),
        Field("name", "gbk", 20, "cardholder name, GBK, padded with 00"),
        Field("id_number", "ascii", 16, "ID document number, ASCII, padded with 00 (an 18-character PRC resident ID does not fit)"),
        Field("id_type", "int", 1, "ID document type (00 resident ID, 01 officer, 02 passport, 03 entry permit, 04 temporary ID, 05 other)"),
    ),
    vectors=(
        (
            {"card_type": 0, "staff_flag": 0, "name": "张伟", "id_number": "E12345678", "id_type": 2},
            H("00" "00" "D5C5CEB0" + "00" * 16 + "453132333435363738" + "00" * 7 + "02"),
        ),
        (
            {"card_type": 1, "staff_flag": 1, "name": "欧阳晓雯", "id_number": "330106800101123", "id_type": 0},
            H("01" "01" "C5B7D1F4CFFEF6A9" + "00" * 12 + "333330313036383030313031313233" + "00" + "00"),
        ),
    ),
)

EF0018 = Layout(
    name="ef0018",
    title="EF0018 transaction detail record (cyclic, 23 bytes)",
    size=23,
    source="SPEC §2.2 (UM p.141)",
    fields=(
        Field("counter", "int", 2, "the counter used in this transaction's MAC/TAC, before +1 (SPEC D4)"),
        Field("overdraw_limit", "int", 3, "overdraw limit, fen"),
        Field("amount", "int", 4, "transaction amount, fen"),
        Field("type", "int", 1, "transaction type (01 ED load, 02 EP load, 03 unload, 04 withdraw, 05 ED purchase, 06 EP purchase, 07 overdraw, 09 CAPP)"),
        Field("terminal", "hex", 6, "terminal number"),
        Field("date", "date", 4, "transaction date YYYYMMDD"),
        Field("time", "time", 3, "transaction time hhmmss"),
    ),
    vectors=(
        # SPEC §4 vector 4 (ROBUR): EP load of 0x10 from online counter 0000.
        (
            {
                "counter": 0,
                "overdraw_limit": 0,
                "amount": 0x10,
                "type": 2,
                "terminal": "666666666666",
                "date": "20240411",
                "time": "212121",
            },
            H("0000" "000000" "00000010" "02" "666666666666" "20240411" "212121"),
        ),
        # SPEC §4 vector 5 (DENG): EP purchase of 1 fen from offline counter 0000.
        (
            {
                "counter": 0,
                "overdraw_limit": 0,
                "amount": 1,
                "type": 6,
                "terminal": "001122334455",
                "date": "20161216",
                "time": "134600",
            },
            H("0000" "000000" "00000001" "06" "001122334455" "20161216" "134600"),
        ),
    ),
)

CAPP_METRO = Layout(
    name="capp_metro",
    title="CAPP metro record, tag 02 in the variable-record file SFI 17 (48 bytes)",
    size=48,
    source="citycard (after SPEC §2.3, CS: 80DC02B830 02 2E ...)",
    fields=(
        Field("tag", "int", 1, "record tag, CAPP type id 02 (UPDATE CAPP DATA CACHE P1)", default=0x02, choices=(0x02,)),
        Field("length", "int", 1, "record value length, 2E", default=0x2E, choices=(0x2E,)),
        Field("state", "int", 1, "trip state: 0 none, 1 entered, 2 exited", choices=(0, 1, 2)),
        Field("line", "hex", 1, "metro line"),
        Field("station", "hex", 2, "station code"),
        Field("terminal", "hex", 6, "terminal number of the gate"),
        Field("entry_time", "datetime", 7, "entry date and time YYYYMMDDhhmmss"),
        Field("amount", "int", 4, "amount of the last debit, fen"),
        Field("rfu", "hex", 25, "reserved"),
    ),
    vectors=(
        (
            {
                "tag": 2,
                "length": 0x2E,
                "state": 1,
                "line": "02",
                "station": "0105",
                "terminal": "666666666666",
                "entry_time": "20240411212121",
                "amount": 0,
                "rfu": "00" * 25,
            },
            H("02" "2E" "01" "02" "0105" "666666666666" "20240411212121" "00000000" + "00" * 25),
        ),
        (
            {
                "tag": 2,
                "length": 0x2E,
                "state": 2,
                "line": "04",
                "station": "0412",
                "terminal": "001122334455",
                "entry_time": "20261231235959",
                "amount": 400,
                "rfu": "FF" * 25,
            },
            H("02" "2E" "02" "04" "0412" "001122334455" "20261231235959" "00000190" + "FF" * 25),
        ),
    ),
)

LAYOUTS = (PBOC_EF0015, PBOC_EF0016, EF0018, CAPP_METRO)
