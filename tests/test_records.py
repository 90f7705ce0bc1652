"""Tests for citycard.records: every vector of every layout both ways (the pySim
pattern), each field kind's text form and errors, a round-trip property per
layout, and the synthetic cardholder list profiles/citycard-sample.csv."""

from __future__ import annotations

import csv
import datetime
import enum
import re
from pathlib import Path

import construct
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citycard.errors import CitycardError, InputError
from citycard.records import KINDS, LAYOUTS, Field, Layout, TlvLayout, get

H = bytes.fromhex
WHERE = "profile.toml apps.transit.files.0015.data"

SIZES = {
    "pboc_ef0015": 30,
    "pboc_ef0016": 39,
    "mohurd_ef0015": 30,
    "ef0018": 23,
    "card_ef0005": 40,
    "capp_metro": 48,
    "library_ef0015": 32,
    "bike_ef0015": 24,
    "psam_ef0015": 14,
    "psam_ef0016": 6,
    "psam_ef0017": 25,
    "psam_ef0019": 4,
}
TLV_LAYOUTS = {"ss_ef05", "ss_ef06", "health_ef0005"}

VECTORS = [
    pytest.param(layout, values, encoded, id=f"{name}-{n}")
    for name, layout in LAYOUTS.items()
    for n, (values, encoded) in enumerate(layout.vectors)
]


# --------------------------------------------------------------------------- every vector


@pytest.mark.parametrize("layout, values, encoded", VECTORS)
def test_vector_round_trip(layout, values, encoded):
    assert layout.encode(values) == encoded
    assert layout.decode(encoded) == values
    assert layout.encode(layout.decode(encoded)) == encoded
    assert layout.decode(layout.encode(values)) == values


@pytest.mark.parametrize("layout, values, encoded", VECTORS)
def test_vector_shape(layout, values, encoded):
    if isinstance(layout, Layout):
        assert len(encoded) == layout.size
        assert set(values) == set(layout.field_names), "a fixed-layout vector names every field"
        # The interpreted construct Struct agrees with the compiled one.
        assert layout.construct.build(values) == encoded
        parsed = layout.construct.parse(encoded)
        assert {name: parsed[name] for name in layout.field_names} == values
    else:
        for record in encoded:
            assert len(record) == 2 + record[1]


def test_layout_set_and_sizes():
    assert set(LAYOUTS) == set(SIZES) | TLV_LAYOUTS
    for name, size in SIZES.items():
        layout = LAYOUTS[name]
        assert isinstance(layout, Layout)
        assert layout.size == size == sum(f.length for f in layout.fields)
        assert len(layout.encode({})) == size
    for name in TLV_LAYOUTS:
        assert isinstance(LAYOUTS[name], TlvLayout)


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=list(LAYOUTS))
def test_layout_declarations(layout):
    assert layout.name and layout.title and layout.source
    assert layout.source == "citycard" or layout.source.startswith("SPEC §") or layout.source.startswith("citycard (")
    assert len(layout.vectors) >= 2
    for f in layout.fields:
        assert f.kind in KINDS and f.doc
    if isinstance(layout, Layout):
        assert isinstance(layout.struct, construct.Compiled)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_defaults(name):
    layout = LAYOUTS[name]
    blank = layout.encode({})
    assert layout.decode(blank) == layout.defaults
    assert layout.encode(layout.defaults) == blank


def test_defaults_per_kind():
    assert LAYOUTS["pboc_ef0015"].encode({}) == bytes(30)
    assert LAYOUTS["pboc_ef0015"].defaults == {
        "issuer_id": "0000000000000000",
        "app_type": 0,
        "app_version": 0,
        "app_serial": "0" * 20,
        "start_date": "00000000",
        "expiry_date": "00000000",
        "issuer_fci": "0000",
    }
    assert LAYOUTS["pboc_ef0016"].defaults["name"] == ""
    assert LAYOUTS["ef0018"].defaults["time"] == "000000"
    assert LAYOUTS["capp_metro"].defaults["entry_time"] == "0" * 14
    # capp_metro's tag and length default to the CAPP record header 02 2E.
    assert LAYOUTS["capp_metro"].encode({"state": 1})[:3] == H("022E01")


def test_get():
    assert get("ef0018") is LAYOUTS["ef0018"]
    with pytest.raises(InputError, match=r"^unknown record layout 'ef0019' \(known: bike_ef0015, capp_metro, "):
        get("ef0019")
    with pytest.raises(InputError, match=r"^profile.toml apps.x.files.0019: unknown record layout 'x'"):
        get("x", where="profile.toml apps.x.files.0019")
    with pytest.raises(CitycardError):
        get("")


# --------------------------------------------------------------------------- published vectors


def test_tunion_ef0015_both_readings():
    # SPEC §2.5: 9F0C 1E <30 bytes> of a real T-Union card.
    fci = H(
        "6F318408A000000632010105A5259F0801029F0C1E"
        "01011000FFFFFFFF0201031051700101709079842019080620401231" "0000"
    )
    content = fci[-30:]
    assert fci[1] == len(fci) - 2 and fci[fci.index(H("9F0C1E")) + 3 :] == content
    pboc = LAYOUTS["pboc_ef0015"].decode(content)
    assert pboc["app_serial"] == "03105170010170907984"  # metrodroid shows it without the first digit
    assert (pboc["start_date"], pboc["expiry_date"]) == ("20190806", "20401231")
    mohurd = LAYOUTS["mohurd_ef0015"].decode(content)
    assert mohurd["app_serial"] == "5170010170907984"
    assert (mohurd["start_date"], mohurd["expiry_date"]) == ("20190806", "20401231")


def test_ef0018_record_of_spec_load_vector():
    # SPEC §4 vector 4 after the load; counter before the increment (D4).
    record = LAYOUTS["ef0018"].encode(
        {"amount": 0x10, "type": 2, "terminal": "666666666666", "date": "20240411", "time": "212121"}
    )
    assert record == H("0000 000000 00000010 02 666666666666 20240411 212121")
    assert LAYOUTS["ef0018"].offset("date") == 16 and LAYOUTS["ef0018"].offset("time") == 20


def test_ss_ef05_spec_example():
    records = LAYOUTS["ss_ef05"].encode({"spec_version": "3.00", "card_id": "330300D15600000599110145FFFFFFFF"})
    assert records == [H("0110330300D15600000599110145FFFFFFFF"), H("0304332E3030")]


# --------------------------------------------------------------------------- kinds: text forms


def test_gbk_chinese_names():
    ef16 = LAYOUTS["pboc_ef0016"]
    data = ef16.encode({"name": "张伟"})
    assert data[2:22] == H("D5C5CEB0") + bytes(16)
    assert ef16.decode(data)["name"] == "张伟"
    # Exactly 20 bytes fits; minority names keep their middle dot (GBK A1A4).
    full = "欧阳" + "晓" * 8
    assert ef16.decode(ef16.encode({"name": full}))["name"] == full
    dot = "阿依古丽·买买提"
    assert ef16.encode({"name": dot})[2:22].startswith("阿依古丽·".encode("gbk"))
    assert ef16.decode(ef16.encode({"name": dot}))["name"] == dot
    # Padding with spaces (as some issuers write) is stripped too.
    assert ef16.decode(H("0000") + "李娜".encode("gbk") + b"  " + bytes(14) + bytes(17))["name"] == "李娜"


def test_ascii_padding_and_stripping():
    ef16 = LAYOUTS["pboc_ef0016"]
    data = ef16.encode({"id_number": "E1234"})
    assert data[22:38] == b"E1234" + bytes(11)
    spaced = data[:22] + b"E1234 A" + b" " * 5 + bytes(4) + data[38:]
    assert ef16.decode(spaced)["id_number"] == "E1234 A"


def test_bcd_padding_and_ints():
    ef15 = LAYOUTS["pboc_ef0015"]
    for value in ("123", 123, "00000000000000000123"):
        data = ef15.encode({"app_serial": value})
        assert data[10:20] == H("00000000000000000123")
        assert ef15.decode(data)["app_serial"] == "00000000000000000123"


def test_dates_accept_ints_and_unset():
    ef18 = LAYOUTS["ef0018"]
    assert ef18.encode({"date": 20240411, "time": 212121})[16:] == H("20240411212121")
    assert ef18.encode({"time": 5})[20:] == H("000005")
    assert ef18.encode({"date": "00000000"})[16:20] == bytes(4)
    assert ef18.decode(bytes(23))["date"] == "00000000"
    assert ef18.encode({"date": "20240229"})[16:20] == H("20240229")


def test_hex_accepts_lower_case_spaces_and_bytes():
    ef18 = LAYOUTS["ef0018"]
    for value in ("aabbccddeeff", "AA BB CC DD EE FF", H("AABBCCDDEEFF"), bytearray(H("AABBCCDDEEFF"))):
        assert ef18.encode({"terminal": value})[10:16] == H("AABBCCDDEEFF")
    assert ef18.decode(ef18.encode({"terminal": "aabbccddeeff"}))["terminal"] == "AABBCCDDEEFF"


def test_int_accepts_int_enum():
    class TxType(enum.IntEnum):
        EP_LOAD = 2

    assert LAYOUTS["ef0018"].encode({"type": TxType.EP_LOAD})[9] == 2


def test_decode_output_is_json_types():
    for layout in LAYOUTS.values():
        for values, encoded in layout.vectors:
            for f in layout.fields:
                if f.name in values:
                    value = layout.decode(encoded)[f.name]
                    assert type(value) is (int if f.kind == "int" else str)


# --------------------------------------------------------------------------- kinds: errors

ENCODE_ERRORS = [
    # int
    ("ef0018", "type", "2", "'2' is not an integer"),
    ("ef0018", "type", True, "True is not an integer"),
    ("ef0018", "type", 2.0, "2.0 is not an integer"),
    ("ef0018", "type", -1, "-1 is out of range 0..255"),
    ("ef0018", "type", 256, "256 is out of range 0..255"),
    ("ef0018", "overdraw_limit", 1 << 24, "16777216 is out of range 0..16777215"),
    ("ef0018", "counter", 65536, "65536 is out of range 0..65535"),
    # bcd
    ("pboc_ef0015", "app_serial", "12A4", "'12A4' is not decimal digits"),
    ("pboc_ef0015", "app_serial", "", "'' is not decimal digits"),
    ("pboc_ef0015", "app_serial", "12 34", "'12 34' is not decimal digits"),
    ("pboc_ef0015", "app_serial", "１２３", "'１２３' is not decimal digits"),
    ("pboc_ef0015", "app_serial", "1" * 21, f"'{'1' * 21}' has 21 digits, more than 20"),
    ("pboc_ef0015", "app_serial", 10**20, "has 21 digits, more than 20"),
    ("pboc_ef0015", "app_serial", -5, "-5 is negative, not BCD digits"),
    ("pboc_ef0015", "app_serial", 1.5, "1.5 is not a string of decimal digits"),
    # date
    ("pboc_ef0015", "start_date", "2026-13-01", "'2026-13-01' is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", "20261301", "'20261301' is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", "20230229", "'20230229' is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", "20240431", "'20240431' is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", "2024041", "'2024041' is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", "00000101", "'00000101' is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", "２０２４０４１１", "is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", None, "None is not a date YYYYMMDD"),
    ("pboc_ef0015", "start_date", -20240411, "-20240411 is not a date YYYYMMDD"),
    # time and datetime
    ("ef0018", "time", "240000", "'240000' is not a time hhmmss"),
    ("ef0018", "time", "126000", "'126000' is not a time hhmmss"),
    ("ef0018", "time", "12:00:00", "'12:00:00' is not a time hhmmss"),
    ("capp_metro", "entry_time", "20240411246060", "'20240411246060' is not a date and time YYYYMMDDhhmmss"),
    ("capp_metro", "entry_time", "00000000123456", "is not a date and time YYYYMMDDhhmmss"),
    ("capp_metro", "entry_time", "20240411", "'20240411' is not a date and time YYYYMMDDhhmmss"),
    # hex
    ("ef0018", "terminal", "GGGGGGGGGGGG", "'GGGGGGGGGGGG' is not hex"),
    ("ef0018", "terminal", "0011", "'0011' has 4 hex digits, expected 12"),
    ("ef0018", "terminal", "00112233445", "has 11 hex digits, expected 12"),
    ("ef0018", "terminal", H("0011"), "2 bytes, expected 6"),
    ("ef0018", "terminal", 0x112233445566, "is not a hex string"),
    # ascii
    ("pboc_ef0016", "id_number", "张三", "'张三' is not printable ASCII"),
    ("pboc_ef0016", "id_number", "E12\x00", "is not printable ASCII"),
    ("pboc_ef0016", "id_number", "E12\n", "is not printable ASCII"),
    ("pboc_ef0016", "id_number", "330106198001011235", "'330106198001011235' is 18 characters, longer than 16"),
    ("pboc_ef0016", "id_number", 123, "123 is not text"),
    # gbk
    ("pboc_ef0016", "name", "张伟" * 6, "is 24 bytes in GBK, longer than 20"),
    ("pboc_ef0016", "name", "A" * 21, "is 21 bytes in GBK, longer than 20"),
    ("pboc_ef0016", "name", "张😀", "'😀' cannot be encoded in GBK"),
    ("pboc_ef0016", "name", "김민준", "'김' cannot be encoded in GBK"),
    ("pboc_ef0016", "name", "张\t伟", "contains non-printable characters"),
    ("pboc_ef0016", "name", b"\xd5\xc5", "is not text"),
    # choices
    ("capp_metro", "state", 3, "3 is not one of 0, 1, 2"),
    ("capp_metro", "tag", 3, "3 is not one of 2"),
]


@pytest.mark.parametrize("name, field, value, message", ENCODE_ERRORS)
def test_encode_errors_name_where_and_field(name, field, value, message):
    layout = LAYOUTS[name]
    with pytest.raises(InputError) as info:
        layout.encode({field: value}, where=WHERE)
    text = str(info.value)
    assert text.startswith(f"{WHERE}.{field}: "), text
    assert message in text
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_error_without_where_names_the_layout():
    with pytest.raises(InputError, match=r"^pboc_ef0015\.start_date: '2026-13-01' is not a date YYYYMMDD$"):
        LAYOUTS["pboc_ef0015"].encode({"start_date": "2026-13-01"})
    with pytest.raises(InputError, match=r"^ss_ef06\.sex: 'M' is not one of '0', '1', '2', '9'$"):
        LAYOUTS["ss_ef06"].encode({"sex": "M"})


def test_the_documented_example_message():
    with pytest.raises(InputError) as info:
        get("pboc_ef0015").encode({"start_date": "2026-13-01"}, where=WHERE)
    assert str(info.value) == f"{WHERE}.start_date: '2026-13-01' is not a date YYYYMMDD"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_unknown_field(name):
    layout = LAYOUTS[name]
    with pytest.raises(InputError) as info:
        layout.encode({"start_dat": "20260101"}, where=WHERE)
    assert str(info.value).startswith(f"{WHERE}.start_dat: unknown field of record layout {name} (known: ")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_values_must_be_a_table(name):
    with pytest.raises(InputError, match=rf"^{re.escape(WHERE)}: expected a table of field values, got list$"):
        LAYOUTS[name].encode([("a", 1)], where=WHERE)  # type: ignore[arg-type]


DECODE_ERRORS = [
    ("pboc_ef0015", "app_serial", H("0000000000000000012A"), "app_serial: 0000000000000000012A is not packed BCD"),
    ("pboc_ef0015", "start_date", H("20231301"), "start_date: 20231301 is not a date YYYYMMDD"),
    ("pboc_ef0015", "expiry_date", H("2024FFFF"), "expiry_date: 2024FFFF is not packed BCD"),
    ("ef0018", "time", H("250000"), "time: 250000 is not a time hhmmss"),
    ("capp_metro", "entry_time", H("20240411999999"), "entry_time: 20240411999999 is not a date and time"),
    ("pboc_ef0016", "id_number", H("E4"), "id_number: E4000000000000000000000000000000 is not ASCII text"),
    ("pboc_ef0016", "id_number", H("0741"), "id_number: 07410000000000000000000000000000 is not printable ASCII text"),
    ("pboc_ef0016", "name", H("D5FF"), "name: D5FF" + "00" * 18 + " is not GBK text"),
    ("bike_ef0015", "member_id", H("A0"), "member_id: A000000000000000 is not packed BCD"),
]


@pytest.mark.parametrize("name, field, patch, message", DECODE_ERRORS)
def test_decode_errors(name, field, patch, message):
    layout = LAYOUTS[name]
    data = bytearray(layout.encode({}))
    offset = layout.offset(field)
    data[offset : offset + len(patch)] = patch
    with pytest.raises(InputError) as info:
        layout.decode(bytes(data), where="card 3F00/ADF1/0015")
    assert str(info.value).startswith(f"card 3F00/ADF1/0015.{field}: ") and message in str(info.value)
    with pytest.raises(InputError, match=rf"^{name}\.{field}: "):
        layout.decode(bytes(data))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_decode_wrong_size_or_type(name):
    layout = LAYOUTS[name]
    with pytest.raises(InputError, match=rf"^{name}: {layout.size - 1} bytes, expected {layout.size}$"):
        layout.decode(bytes(layout.size - 1))
    with pytest.raises(InputError, match=rf"^{name}: {layout.size + 1} bytes, expected {layout.size}$"):
        layout.decode(bytes(layout.size + 1))
    with pytest.raises(InputError, match=r"expected bytes, got str"):
        layout.decode("00" * layout.size)  # type: ignore[arg-type]
    assert layout.decode(bytearray(layout.size)) == layout.decode(memoryview(bytes(layout.size)))


def test_decode_reports_values_outside_choices():
    record = bytearray(LAYOUTS["capp_metro"].encode({}))
    record[2] = 7
    assert LAYOUTS["capp_metro"].decode(bytes(record))["state"] == 7


# --------------------------------------------------------------------------- TLV layouts


def test_tlv_encode_in_tag_order_and_only_present_fields():
    ef06 = LAYOUTS["ss_ef06"]
    records = ef06.encode({"birth_date": "19800101", "sex": "1", "ss_number": "330106198001011235"})
    assert [r[0] for r in records] == [0x08, 0x0A, 0x0D]
    assert records[1] == H("0A0131")
    assert ef06.encode({}) == []
    assert list(ef06.decode(list(reversed(records)))) == ["ss_number", "sex", "birth_date"]


def test_tlv_decode_lenient_text_and_padding():
    ef06 = LAYOUTS["ss_ef06"]
    # A shorter name value, and a fixed-size record read with 00/FF after the value.
    assert ef06.decode([H("0904D5C5CEB0")]) == {"name": "张伟"}
    assert ef06.decode([H("0D0419800101FFFF"), H("0A01320000")]) == {"sex": "2", "birth_date": "19800101"}


TLV_DECODE_ERRORS = [
    ([H("01")], "ss_ef06 record 1: 1 bytes, too short for a tag and a length"),
    ([H("0E0100")], "ss_ef06 record 1: unknown tag 0E (known: 08, 09, 0A, 0B, 0C, 0D)"),
    ([H("0A0131"), H("0A0132")], "ss_ef06 record 2: tag 0A (sex) appears twice"),
    ([H("0D0519800101")], "ss_ef06 record 1: length byte 05 does not match the 4 value bytes"),
    ([H("0D031980010100")], "ss_ef06 record 1: length byte 03 does not match the 5 value bytes"),
    ([H("0D03198001")], "ss_ef06.birth_date: 3 bytes, expected 4"),
    ([H("0D0419801301")], "ss_ef06.birth_date: 19801301 is not a date YYYYMMDD"),
    ([H("0C03AABBCC")], "ss_ef06.birthplace: AABBCC is not packed BCD (a nibble above 9)"),
    ([H("0A01FF")], "ss_ef06.sex: FF is not ASCII text"),
    (["0A0131"], "ss_ef06 record 1: expected bytes, got str"),
]


@pytest.mark.parametrize("records, message", TLV_DECODE_ERRORS)
def test_tlv_decode_errors(records, message):
    with pytest.raises(InputError) as info:
        LAYOUTS["ss_ef06"].decode(records)
    assert str(info.value) == message


def test_tlv_decode_wants_a_list():
    with pytest.raises(InputError, match=r"^card: expected a list of records, got bytes$"):
        LAYOUTS["ss_ef06"].decode(H("0A0131"), where="card")  # type: ignore[arg-type]


def test_tlv_encode_errors():
    with pytest.raises(InputError, match=rf"^{re.escape(WHERE)}\.name: '{'张' * 16}' is 32 bytes in GBK, longer than 30$"):
        LAYOUTS["ss_ef06"].encode({"name": "张" * 16}, where=WHERE)
    with pytest.raises(InputError, match=r"^health_ef0005\.emergency_phone: '1381234567x' is not decimal digits$"):
        LAYOUTS["health_ef0005"].encode({"emergency_phone": "1381234567x"})
    # An 11-digit phone is left-padded to the 12 BCD digits of the field.
    assert LAYOUTS["health_ef0005"].encode({"emergency_phone": "13812345678"}) == [H("0406013812345678")]


def test_field_declarations_are_checked():
    with pytest.raises(ValueError, match="unknown kind"):
        Field("x", "float", 4, "x")
    with pytest.raises(ValueError, match="bad length"):
        Field("x", "date", 3, "x")
    with pytest.raises(ValueError, match="add up to 3 bytes, not 4"):
        Layout("l", "t", 4, (Field("a", "int", 1, "a"), Field("b", "hex", 2, "b")), "citycard")
    with pytest.raises(ValueError, match="duplicate field names"):
        Layout("l", "t", 2, (Field("a", "int", 1, "a"), Field("a", "hex", 1, "b")), "citycard")
    with pytest.raises(ValueError, match="own tag"):
        TlvLayout("l", "t", (Field("a", "int", 1, "a", tag=1), Field("b", "int", 1, "b", tag=1)), "citycard")
    with pytest.raises(ValueError, match="own tag"):
        TlvLayout("l", "t", (Field("a", "int", 1, "a"),), "citycard")


# --------------------------------------------------------------------------- properties


def _date_text(d: datetime.date) -> str:
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _time_text(t: datetime.time) -> str:
    return f"{t.hour:02d}{t.minute:02d}{t.second:02d}"


_CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)  # all in GBK
_PRINTABLE_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def _no_trailing_pad(text: str) -> bool:
    return text == text.rstrip(" ")


def strategy_for(f: Field) -> st.SearchStrategy:
    """Valid values of field ``f`` in their text form (what decode gives back)."""
    if f.choices:
        return st.sampled_from(f.choices)
    n = f.length
    if f.kind == "int":
        return st.integers(0, (1 << (8 * n)) - 1)
    if f.kind == "bcd":
        return st.text("0123456789", min_size=2 * n, max_size=2 * n)
    if f.kind == "date":
        return st.one_of(st.just("00000000"), st.dates().map(_date_text))
    if f.kind == "time":
        return st.times().map(_time_text)
    if f.kind == "datetime":
        return st.one_of(st.just("0" * 14), st.datetimes().map(lambda d: _date_text(d.date()) + _time_text(d.time())))
    if f.kind == "hex":
        return st.binary(min_size=n, max_size=n).map(lambda b: b.hex().upper())
    if f.kind == "ascii":
        return st.text(_PRINTABLE_ASCII, max_size=n).filter(_no_trailing_pad)
    if f.kind == "gbk":  # at most 2 bytes a character
        return st.text(st.one_of(_CJK, _PRINTABLE_ASCII, st.just("·")), max_size=n // 2).filter(_no_trailing_pad)
    raise AssertionError(f.kind)


def values_for(layout: Layout | TlvLayout) -> st.SearchStrategy:
    fields = {f.name: strategy_for(f) for f in layout.fields}
    if isinstance(layout, Layout):
        return st.fixed_dictionaries(fields)
    return st.fixed_dictionaries({}, optional=fields)


def test_every_kind_has_a_strategy():
    assert {f.kind for layout in LAYOUTS.values() for f in layout.fields} <= set(KINDS)
    assert "time" in {f.kind for layout in LAYOUTS.values() for f in layout.fields}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_property(name, data):
    layout = LAYOUTS[name]
    values = data.draw(values_for(layout))
    encoded = layout.encode(values)
    assert layout.decode(encoded) == values
    assert layout.encode(layout.decode(encoded)) == encoded
    if isinstance(layout, Layout):
        assert len(encoded) == layout.size
    else:
        assert [r[0] for r in encoded] == sorted(layout.field(k).tag for k in values)


@pytest.mark.parametrize("name", sorted(SIZES))
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_decode_of_any_bytes_is_a_result_or_an_input_error(name, data):
    layout = LAYOUTS[name]
    raw = data.draw(st.binary(min_size=layout.size, max_size=layout.size))
    try:
        values = layout.decode(raw)
    except InputError:
        return
    assert set(values) == set(layout.field_names)


@pytest.mark.parametrize("name", sorted(TLV_LAYOUTS))
@settings(max_examples=80, deadline=None)
@given(records=st.lists(st.binary(max_size=40), max_size=4))
def test_tlv_decode_of_any_records_is_a_result_or_an_input_error(name, records):
    try:
        LAYOUTS[name].decode(records)
    except InputError:
        pass


# --------------------------------------------------------------------------- the sample cardholders

SAMPLE = Path(__file__).resolve().parent.parent / "profiles" / "citycard-sample.csv"
COLUMNS = "cardholder_id,name,name_pinyin,sex,ethnicity,birth_date,birthplace,id_number,phone,blood_type,library_category,pin"
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of a PRC resident ID number (GB 11643)."""
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS)) % 11]


def test_id_check_digit_known_values():
    assert id_check_digit("11010519491231002") == "X"  # the GB 11643 example
    assert id_check_digit("33010619800101123") == "5"


@pytest.fixture(scope="module")
def sample_rows() -> list[dict[str, str]]:
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        assert handle.readline().rstrip("\n") == COLUMNS
        handle.seek(0)
        return list(csv.DictReader(handle))


def test_sample_shape(sample_rows):
    assert len(sample_rows) >= 200
    assert len({r["cardholder_id"] for r in sample_rows}) == len(sample_rows)
    assert len({r["id_number"] for r in sample_rows}) == len(sample_rows)
    assert [r["cardholder_id"] for r in sample_rows[:2]] == ["CH000001", "CH000002"]
    pins = sum(1 for r in sample_rows if r["pin"])
    assert 0.15 < pins / len(sample_rows) < 0.35
    assert sum(r["ethnicity"] == "01" for r in sample_rows) > len(sample_rows) // 2
    assert {r["sex"] for r in sample_rows} == {"1", "2"}


def test_sample_rows(sample_rows):
    for row in sample_rows:
        at = row["cardholder_id"]
        assert re.fullmatch(r"CH\d{6}", at)
        assert None not in row and len(row) == 12, at
        assert row["name_pinyin"].isascii() and re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z']+", row["name_pinyin"]), at
        assert row["sex"] in ("1", "2"), at
        assert re.fullmatch(r"\d\d", row["ethnicity"]) and 1 <= int(row["ethnicity"]) <= 56, at
        birth = datetime.datetime.strptime(row["birth_date"], "%Y%m%d").date()
        assert datetime.date(1940, 1, 1) <= birth <= datetime.date(2015, 12, 31), at
        assert re.fullmatch(r"[1-8]\d{5}", row["birthplace"]), at
        assert re.fullmatch(r"1[358]\d{9}", row["phone"]), at
        assert row["blood_type"] in ("A", "B", "AB", "O"), at
        assert row["library_category"] in ("1", "2", "3", "4"), at
        assert re.fullmatch(r"(\d{6})?", row["pin"]), at


def test_sample_id_numbers(sample_rows):
    for row in sample_rows:
        number, at = row["id_number"], row["cardholder_id"]
        assert re.fullmatch(r"\d{17}[\dX]", number), at
        assert number[17] == id_check_digit(number[:17]), at
        assert number[:6] == row["birthplace"], at
        assert number[6:14] == row["birth_date"], at
        assert int(number[16]) % 2 == (1 if row["sex"] == "1" else 0), at


def test_sample_rows_fit_the_record_layouts(sample_rows):
    for row in sample_rows:
        at = f"citycard-sample.csv {row['cardholder_id']}"
        assert 2 <= len(row["name"]) <= 4 and len(row["name"].encode("gbk")) <= 20, at
        data = LAYOUTS["pboc_ef0016"].encode({"name": row["name"]}, where=at)
        assert LAYOUTS["pboc_ef0016"].decode(data)["name"] == row["name"]
        holder = {
            "ss_number": row["id_number"],
            "name": row["name"],
            "sex": row["sex"],
            "ethnicity": row["ethnicity"],
            "birthplace": row["birthplace"],
            "birth_date": row["birth_date"],
        }
        records = LAYOUTS["ss_ef06"].encode(holder, where=at)
        assert LAYOUTS["ss_ef06"].decode(records) == holder
        LAYOUTS["card_ef0005"].encode({"holder_id": row["id_number"]}, where=at)
        health = {"insurance_number": row["id_number"], "blood_type": row["blood_type"], "emergency_phone": row["phone"]}
        assert LAYOUTS["health_ef0005"].decode(LAYOUTS["health_ef0005"].encode(health, where=at))["emergency_phone"] == "0" + row["phone"]
        LAYOUTS["library_ef0015"].encode({"category": int(row["library_category"])}, where=at)
