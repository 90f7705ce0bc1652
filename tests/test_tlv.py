"""Tests for citycard.tlv: BER-TLV parse, build and dump."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citycard.errors import CitycardError, InputError
from citycard.tlv import (
    MAX_DEPTH,
    TAG_NAMES,
    Tlv,
    TlvError,
    build,
    dump,
    encode_length,
    encode_tag,
    find,
    parse,
    parse_one,
    tag_name,
    try_parse,
)

H = bytes.fromhex

# FCI of the PBOC directory DDF from the FMCOS manual.
FMCOS_FCI = H("6F15" "840E315041592E5359532E4444463031" "A503" "880101")
# A record of the DIR file: application template with AID and label.
DIR_RECORD = H("6111" "4F09A00000000386980701" "500450424F43")
# FCI of a real T-Union (transport interconnection) application.
TUNION_FCI = H(
    "6F31"
    "8408A000000632010105"
    "A525"
    "9F080102"
    "9F0C1E01011000FFFFFFFF02010310517001017090798420190806204012310000"
)


def shape(t: Tlv):
    """A nested plain-data picture of a Tlv, to compare structures."""
    if t.constructed:
        return (t.tag, [shape(c) for c in t.children])
    return (t.tag, t.value)


# --------------------------------------------------------------------------
# Real card data


def test_fmcos_fci_declared_length_is_consistent():
    # 84 0E + 14 bytes = 16, A5 03 88 01 01 = 5, together 21 = 0x15.
    assert FMCOS_FCI[1] == 0x15 == len(FMCOS_FCI) - 2


def test_fmcos_fci_parses():
    (fci,) = parse(FMCOS_FCI)
    assert fci.tag == 0x6F and fci.constructed
    assert len(fci.value) == 0x15
    assert shape(fci) == (
        0x6F,
        [(0x84, b"1PAY.SYS.DDF01"), (0xA5, [(0x88, b"\x01")])],
    )
    assert fci.find(0x84).value == b"1PAY.SYS.DDF01"
    assert fci.find(0x88).value == b"\x01"
    assert fci.encode() == FMCOS_FCI
    assert parse_one(FMCOS_FCI) == fci
    assert try_parse(FMCOS_FCI) == [fci]


def test_dir_record_parses():
    rec = parse_one(DIR_RECORD)
    assert rec.tag == 0x61
    assert shape(rec) == (0x61, [(0x4F, H("A00000000386980701")), (0x50, b"PBOC")])
    assert rec.find(0x4F).value.hex().upper() == "A00000000386980701"
    assert rec.encode() == DIR_RECORD


def test_tunion_fci_parses():
    fci = parse_one(TUNION_FCI)
    assert fci.find(0x84).value == H("A000000632010105")
    a5 = fci.find(0xA5)
    assert a5 is not None and a5.constructed
    assert [c.tag for c in a5.children] == [0x9F08, 0x9F0C]
    assert fci.find(0x9F08).value == b"\x02"
    issuer = fci.find(0x9F0C)
    assert len(issuer.value) == 30
    assert issuer.value == H("01011000FFFFFFFF02010310517001017090798420190806204012310000")
    assert fci.encode() == TUNION_FCI


# --------------------------------------------------------------------------
# Tags


@pytest.mark.parametrize(
    "tag, raw",
    [
        (0x01, "01"),
        (0x4F, "4F"),
        (0x6F, "6F"),
        (0x9F0C, "9F0C"),
        (0x9F02, "9F02"),
        (0xBF0C, "BF0C"),
        (0x5F2D, "5F2D"),
        (0x7F49, "7F49"),
        (0xDF8101, "DF8101"),
        (0x1F818101, "1F818101"),
    ],
)
def test_encode_tag(tag, raw):
    assert encode_tag(tag) == H(raw)


@pytest.mark.parametrize(
    "tag, message",
    [
        (0x00, "00 is padding"),
        (-5, r"-0x5 is not a BER-TLV tag \(negative\)"),
        (0xFF, "FF is padding"),
        (0xFF01, "FF is padding"),
        (0x1234, "first byte 12 makes a one-byte tag"),
        (0x6F00, "first byte 6F makes a one-byte tag"),
        (0x1F, "first byte 1F announces more tag bytes"),
        (0x9F81, "last byte 81 announces another byte"),
        (0x9F0181, "byte 01 ends the tag early"),
        (0x1F80808001, "longer than 4 bytes"),
    ],
)
def test_encode_tag_rejects(tag, message):
    with pytest.raises(TlvError, match=message):
        encode_tag(tag)


def test_encode_tag_rejects_non_int():
    with pytest.raises(TlvError, match="must be an int"):
        encode_tag("6F")  # type: ignore[arg-type]


def test_constructed_bit():
    assert Tlv(0x6F, b"").constructed
    assert Tlv(0xA5, b"").constructed
    assert Tlv(0xBF0C, b"").constructed
    assert Tlv(0x7F49, b"").constructed
    assert Tlv(0x61, b"").constructed
    assert not Tlv(0x84, b"").constructed
    assert not Tlv(0x9F0C, b"").constructed
    assert not Tlv(0x5F2D, b"").constructed
    assert not Tlv(0xDF8101, b"").constructed


def test_parse_multi_byte_tags():
    data = H("BF0C0B" "DF810102ABCD" "5F2D027A68" "9F4D020B0A")
    tlvs = parse(data)
    assert [shape(t) for t in tlvs] == [
        (0xBF0C, [(0xDF8101, H("ABCD")), (0x5F2D, b"zh")]),
        (0x9F4D, H("0B0A")),
    ]
    assert b"".join(t.encode() for t in tlvs) == data


# --------------------------------------------------------------------------
# Lengths


@pytest.mark.parametrize(
    "n, raw",
    [
        (0, "00"),
        (1, "01"),
        (0x7F, "7F"),
        (0x80, "8180"),
        (0xFF, "81FF"),
        (0x100, "820100"),
        (300, "82012C"),
        (0xFFFF, "82FFFF"),
        (0x10000, "83010000"),
        (0xFFFFFF, "83FFFFFF"),
        (0x1000000, "8401000000"),
        (0xFFFFFFFF, "84FFFFFFFF"),
    ],
)
def test_encode_length(n, raw):
    assert encode_length(n) == H(raw)


@pytest.mark.parametrize(
    "n, message",
    [(-1, "negative"), (0x100000000, "does not fit the 84 form"), (True, "must be an int")],
)
def test_encode_length_rejects(n, message):
    with pytest.raises(TlvError, match=message):
        encode_length(n)


def test_parse_long_length_81():
    value = bytes(range(128))
    data = H("538180") + value
    t = parse_one(data)
    assert t.tag == 0x53 and t.value == value
    assert t.encode() == data


def test_parse_long_length_82():
    value = bytes(i & 0xFF for i in range(256))
    data = H("04820100") + value
    t = parse_one(data)
    assert t.value == value
    assert t.encode() == data


def test_parse_long_lengths_83_84():
    assert parse_one(H("0483000002ABCD")).value == H("ABCD")
    assert parse_one(H("048400000002ABCD")).value == H("ABCD")


def test_non_minimal_length_is_accepted_and_reencoded_minimally():
    t = parse_one(H("84810231 32".replace(" ", "")))
    assert t.value == b"12"
    assert t.encode() == H("84023132")


def test_build_300_byte_value_uses_82_form():
    t = build(0x5F2D, bytes(300))
    enc = t.encode()
    assert enc[:5] == H("5F2D82012C")
    assert len(enc) == 5 + 300
    assert parse_one(enc) == t


# --------------------------------------------------------------------------
# Build


def test_build_primitive():
    t = build(0x84, b"1PAY.SYS.DDF01")
    assert t == Tlv(0x84, b"1PAY.SYS.DDF01")
    assert t.encode() == H("840E315041592E5359532E4444463031")
    assert t.children == ()


def test_build_fmcos_fci_from_children():
    fci = build(
        0x6F,
        [build(0x84, b"1PAY.SYS.DDF01"), build(0xA5, [build(0x88, b"\x01")])],
    )
    assert fci.encode() == FMCOS_FCI
    assert parse(fci.encode()) == [fci]


def test_build_accepts_generators_and_bytes_like():
    kids = (build(0x9F08, bytearray(b"\x02")) for _ in range(2))
    t = build(0xA5, kids)
    assert t.value == H("9F0801029F080102")
    assert type(t.children[0].value) is bytes
    assert build(0x84, memoryview(b"ab")).value == b"ab"


def test_build_empty_constructed():
    t = build(0x6F, [])
    assert t.encode() == H("6F00")
    assert t.children == ()


def test_build_constructed_from_bytes_validates():
    t = build(0xA5, H("880101"))
    assert [c.tag for c in t.children] == [0x88]
    with pytest.raises(TlvError, match=r"^TLV at byte 0 of the A5 value: length 0x05 runs past"):
        build(0xA5, H("8805"))


def test_build_rejects_malformed_constructed_children():
    with pytest.raises(TlvError, match=r"^TLV at byte 0 of the A5 value: tag continues past"):
        build(0x6F, [Tlv(0x84, b"1"), Tlv(0xA5, b"\x9f")])


def test_build_rejects_children_for_primitive_tag():
    with pytest.raises(TlvError, match="84 is primitive"):
        build(0x84, [build(0x88, b"\x01")])


def test_build_rejects_bad_children_and_values():
    with pytest.raises(TlvError, match="must be Tlv objects, not bytes"):
        build(0x6F, [b"\x84\x00"])  # type: ignore[list-item]
    with pytest.raises(TlvError, match="not str"):
        build(0x84, "1PAY")  # type: ignore[arg-type]
    with pytest.raises(TlvError, match="not a BER-TLV tag"):
        build(0x1234, b"")


def test_round_trip_build_encode_parse():
    tree = build(
        0x70,
        [
            build(0x5A, H("6228480018000000")),
            build(0x5F24, H("301231")),
            build(0xBF0C, [build(0xDF8101, b"\x00" * 200), build(0x9F4D, H("0B0A"))]),
            build(0x73, []),
        ],
    )
    enc = tree.encode()
    assert enc[:3] == H("7081E8")  # 232 bytes of value: long form
    back = parse_one(enc)
    assert back == tree
    assert shape(back) == shape(tree)
    assert back.find(0xDF8101).value == b"\x00" * 200


# --------------------------------------------------------------------------
# Tlv object


def test_tlv_equality_and_hash_ignore_children_cache():
    a = Tlv(0x6F, H("880101"))
    b = parse_one(H("6F03880101"))
    assert a == b and hash(a) == hash(b)
    a.children  # fills the cache on a only
    assert a == b and hash(a) == hash(b)
    assert Tlv(0x6F, b"") != Tlv(0x62, b"")


def test_tlv_is_frozen():
    t = Tlv(0x84, b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.value = b"y"  # type: ignore[misc]


def test_tlv_converts_bytes_like_and_rejects_others():
    assert type(Tlv(0x84, bytearray(b"ab")).value) is bytes
    with pytest.raises(TlvError, match="must be bytes, not str"):
        Tlv(0x84, "ab")  # type: ignore[arg-type]
    with pytest.raises(TlvError, match="FF is padding"):
        Tlv(0xFF, b"")


def test_tlv_repr_round_trips():
    t = parse_one(TUNION_FCI)
    assert repr(t).startswith("Tlv(tag=0x6F, value=bytes.fromhex('8408A0")
    assert eval(repr(t)) == t  # noqa: S307
    assert repr(Tlv(0x9F08, b"\x02")) == "Tlv(tag=0x9F08, value=bytes.fromhex('02'))"


def test_direct_tlv_children_are_parsed_lazily():
    t = Tlv(0x6F, H("840E315041592E5359532E4444463031A503880101"))
    assert shape(t) == shape(parse_one(FMCOS_FCI))
    assert t.children is t.children  # cached


def test_direct_tlv_with_bad_constructed_value_raises_on_access():
    t = Tlv(0xA5, H("880101" "9F0C05AA"))  # constructing is fine
    with pytest.raises(
        TlvError,
        match=r"^TLV at byte 3 of the A5 value: length 0x05 runs past the end "
        r"of the A5 value \(1 bytes left\)$",
    ) as info:
        t.children
    assert info.value.offset == 3
    with pytest.raises(TlvError):
        t.find(0x88)


def test_primitive_children_are_empty():
    assert Tlv(0x84, H("6F03880101")).children == ()
    assert Tlv(0x84, H("6F03880101")).find(0x88) is None


def test_find_is_depth_first_in_document_order():
    data = H("6F0C" "A507" "88010A" "DF010101" "88010B")
    fci = parse_one(data)
    # The 88 nested in A5 comes before the later sibling 88.
    assert fci.find(0x88).value == b"\x0a"
    assert fci.find(0xDF01).value == b"\x01"
    assert fci.find(0x6F) is None  # the object itself is not a descendant
    assert fci.find(0x9F0C) is None
    tlvs = parse(H("84013188010C") + data)
    assert find(tlvs, 0x88).value == b"\x0c"
    assert find(tlvs, 0x6F) is tlvs[2]
    assert find(tlvs, 0xA5).find(0x88).value == b"\x0a"
    assert find([], 0x88) is None
    # Among nested siblings, the first one wins too.
    assert parse_one(H("A506" "88010A" "88010B")).find(0x88).value == b"\x0a"
    assert parse_one(H("6F08" "A506" "88010A" "88010B")).find(0x88).value == b"\x0a"


# --------------------------------------------------------------------------
# Padding


def test_padding_between_and_around_tlvs_is_skipped():
    data = H("00FF" "840131" "0000" "88010A" "FFFF")
    assert parse(data) == [Tlv(0x84, b"1"), Tlv(0x88, b"\x0a")]
    assert try_parse(data) == [Tlv(0x84, b"1"), Tlv(0x88, b"\x0a")]


def test_padding_inside_constructed_value_is_skipped():
    t = parse_one(H("A506" "00" "88010A" "FFFF"))
    assert [c.tag for c in t.children] == [0x88]
    assert t.encode() == H("A5060088010AFFFF")  # value kept verbatim


def test_padding_rejected_when_not_allowed():
    with pytest.raises(
        TlvError, match=r"^TLV at byte 3: FF is padding, not a tag \(padding not allowed here\)$"
    ) as info:
        parse(H("840131FF"), allow_padding=False)
    assert info.value.offset == 3
    # inside a constructed value, offsets stay absolute
    with pytest.raises(TlvError, match=r"^TLV at byte 2: 00 is padding"):
        parse(H("A50400880100"), allow_padding=False)


def test_padding_only_and_empty():
    assert parse(b"") == []
    assert parse(H("0000FF")) == []
    assert try_parse(b"") is None
    assert try_parse(H("00")) is None
    assert try_parse(H("FFFFFFFF")) is None


# --------------------------------------------------------------------------
# Errors name the absolute byte offset


@pytest.mark.parametrize(
    "data, offset, message",
    [
        (
            "6F20" + "00" * 12,
            0,
            "TLV at byte 0: length 0x20 runs past the end of the data (12 bytes left)",
        ),
        (
            "840131" "8801AA" "9F0C20" + "11" * 12,
            6,
            "TLV at byte 6: length 0x20 runs past the end of the data (12 bytes left)",
        ),
        ("9F", 0, "TLV at byte 0: tag continues past the end of the data"),
        ("8801AA" "DF81", 3, "TLV at byte 3: tag continues past the end of the data"),
        ("8801AA" "1F81818101", 3, "TLV at byte 3: tag 1F818181... is longer than 4 bytes"),
        ("AA85010203", 0, "TLV at byte 0: length form 85 not supported"),
        ("8801AA" "AAFF", 3, "TLV at byte 3: length form FF not supported"),
        ("6F80" "840100" "0000", 0, "TLV at byte 0: indefinite length (80) not supported"),
        ("9F0C", 0, "TLV at byte 0: tag 9F0C has no length before the end of the data"),
        ("88010184", 3, "TLV at byte 3: tag 84 has no length before the end of the data"),
        ("538201", 0, "TLV at byte 0: length field 82 needs 2 more bytes, 1 left in the data"),
        ("5384", 0, "TLV at byte 0: length field 84 needs 4 more bytes, 0 left in the data"),
        # nested: the offset counts from the start of the whole data
        (
            "8401AA" "6F07" "A505" "8804010203",
            7,
            "TLV at byte 7: length 0x04 runs past the end of the A5 value (3 bytes left)",
        ),
        ("8401AA" "6F02" "9F81", 5, "TLV at byte 5: tag continues past the end of the 6F value"),
        (
            "A503" "9F0C" "01" "AA",
            2,
            "TLV at byte 2: length 0x01 runs past the end of the A5 value (0 bytes left)",
        ),
        ("A5028485", 2, "TLV at byte 2: length form 85 not supported"),
        (
            "6F03" "A501" "84",
            4,
            "TLV at byte 4: tag 84 has no length before the end of the A5 value",
        ),
        (
            "7003" "5F2D" "82" "0000",
            2,
            "TLV at byte 2: length field 82 needs 2 more bytes, 0 left in the 70 value",
        ),
    ],
)
def test_parse_errors(data, offset, message):
    raw = H(data)
    with pytest.raises(TlvError) as info:
        parse(raw)
    assert str(info.value) == message
    assert info.value.offset == offset
    assert try_parse(raw) is None


def test_tlv_error_is_an_input_error():
    with pytest.raises(InputError):
        parse(H("6F05"))
    with pytest.raises(ValueError):
        parse(H("6F05"))
    assert issubclass(TlvError, CitycardError)


def test_nesting_depth_is_limited():
    ok = b"\x88\x00"
    for _ in range(MAX_DEPTH - 1):
        ok = Tlv(0xA5, ok).encode()
    assert parse(ok)[0].find(0x88) is not None  # 88 at level MAX_DEPTH is fine
    deep = b"\x88\x00"
    for _ in range(MAX_DEPTH):
        deep = Tlv(0xA5, deep).encode()
    with pytest.raises(TlvError, match=f"nested deeper than {MAX_DEPTH} levels") as info:
        parse(b"\x84\x00" + deep)
    assert info.value.offset == 2 + 2 * MAX_DEPTH
    assert try_parse(deep) is None


def test_parse_rejects_non_bytes():
    with pytest.raises(TypeError):
        parse("6F00")  # type: ignore[arg-type]
    assert parse(bytearray(H("8401AA"))) == [Tlv(0x84, b"\xaa")]
    assert parse(memoryview(H("8401AA"))) == [Tlv(0x84, b"\xaa")]


# --------------------------------------------------------------------------
# parse_one


def test_parse_one_errors():
    with pytest.raises(TlvError, match=r"^TLV at byte 0: no data$"):
        parse_one(b"")
    with pytest.raises(TlvError, match=r"^TLV at byte 0: 00 is padding, not a tag$"):
        parse_one(H("00840131"))
    with pytest.raises(
        TlvError, match=r"^TLV at byte 3: 3 unexpected bytes after the 84 data object$"
    ) as info:
        parse_one(H("840131880101"))
    assert info.value.offset == 3
    with pytest.raises(TlvError, match=r"^TLV at byte 23: 1 unexpected byte after the 6F"):
        parse_one(FMCOS_FCI + b"\x00")
    with pytest.raises(TlvError, match=r"^TLV at byte 0: length 0x16 runs past the end"):
        parse_one(H("6F16") + FMCOS_FCI[2:])


# --------------------------------------------------------------------------
# try_parse is conservative


@pytest.mark.parametrize(
    "data",
    [
        "",
        "1234",  # tag 12, length 0x34 with no value
        "A1B2C3D4",  # A1 then length form B2 (50 length bytes)
        "00",
        "6F05840131",  # outer length too long
        "6F03840531",  # constructed value malformed inside
        "84013132",  # one trailing byte that is not padding
        "1F",  # incomplete tag
        "0102030405060708",  # 01 02 0304, 05 06 then 2 bytes short
    ],
)
def test_try_parse_rejects(data):
    assert try_parse(H(data)) is None


def test_try_parse_sees_a_bare_status_word_as_tlv():
    # 90 00 is a well-formed empty data object; callers strip SW1-SW2 first.
    assert try_parse(H("9000")) == [Tlv(0x90, b"")]


def test_try_parse_accepts_real_responses():
    assert try_parse(FMCOS_FCI) == parse(FMCOS_FCI)
    assert try_parse(DIR_RECORD)[0].tag == 0x61
    assert try_parse(TUNION_FCI)[0].find(0x9F08).value == b"\x02"
    # A fixed-length record with trailing FF padding.
    assert try_parse(DIR_RECORD + b"\xff" * 6) == parse(DIR_RECORD)


@pytest.mark.parametrize("size", [4, 8, 16])
def test_try_parse_rejects_random_challenges_most_of_the_time(size):
    rng = random.Random(20240601 + size)
    hits = sum(try_parse(rng.randbytes(size)) is not None for _ in range(20000))
    assert hits / 20000 < 0.01


# --------------------------------------------------------------------------
# Dump


def test_dump_fmcos_fci_exact():
    assert dump(FMCOS_FCI) == (
        "6F (FCI template) 15\n"
        '  84 (DF name) 0E 315041592E5359532E4444463031 "1PAY.SYS.DDF01"\n'
        "  A5 (FCI proprietary template) 03\n"
        "    88 (SFI of the directory elementary file) 01 01"
    )


def test_dump_accepts_parsed_tlvs_and_indent():
    assert dump(parse(DIR_RECORD), indent="\t") == (
        "61 (application template) 11\n"
        "\t4F (AID) 09 A00000000386980701\n"
        '\t50 (application label) 04 50424F43 "PBOC"'
    )


def test_dump_tunion_fci():
    assert dump(TUNION_FCI) == (
        "6F (FCI template) 31\n"
        "  84 (DF name) 08 A000000632010105\n"
        "  A5 (FCI proprietary template) 25\n"
        "    9F08 (application version number) 01 02\n"
        "    9F0C (issuer-defined FCI data) 1E "
        "01011000FFFFFFFF02010310517001017090798420190806204012310000"
    )


def test_dump_details():
    data = (
        build(0xDF8101, b"").encode()  # unknown, empty
        + build(0x5F2D, b"zhen").encode()
        + build(0x50, b"A").encode()  # one printable byte: no text
        + build(0x53, b'say "hi" \\o/').encode()
        + build(0x53, b"ab\x7f").encode()  # DEL is not printable
        + build(0x04, b"x" * 300).encode()
    )
    lines = dump(data).split("\n")
    assert lines[0] == "DF8101 00"
    assert lines[1] == '5F2D (language preference) 04 7A68656E "zhen"'
    assert lines[2] == "50 (application label) 01 41"
    assert lines[3] == r'53 (discretionary data) 0C 7361792022686922205C6F2F "say \"hi\" \\o/"'
    assert lines[4] == "53 (discretionary data) 03 61627F"
    assert lines[5].startswith("04 012C 7878") and lines[5].endswith('xxx"')
    assert dump(b"") == "" and dump([]) == ""


def test_dump_raises_on_malformed_bytes():
    with pytest.raises(TlvError, match="TLV at byte 0"):
        dump(H("6F05"))


def test_context_dependent_names():
    fcp = H("620F" "8002002A" "82020101" "8302EF05" "8A0105")
    assert dump(fcp) == (
        "62 (FCP template) 0F\n"
        "  80 (file size) 02 002A\n"
        "  82 (file descriptor) 02 0101\n"
        "  83 (file identifier) 02 EF05\n"
        "  8A (life cycle status) 01 05"
    )
    rec = H("7007" "8C02" "9F02" "8E01" "00")
    assert dump(rec).split("\n")[1:] == ["  8C (CDOL1) 02 9F02", "  8E (CVM list) 01 00"]
    assert tag_name(0x80) == "response message template format 1"
    assert tag_name(0x80, 0x62) == "file size"
    assert tag_name(0x84, 0x62) == "DF name"  # falls back to TAG_NAMES
    assert tag_name(0x4F, 0x61) == "AID"
    assert tag_name(0xDF8101) is None


def test_tag_names_cover_the_common_tags():
    for tag in (
        0x4F, 0x50, 0x57, 0x5A, 0x5F20, 0x5F24, 0x5F25, 0x5F28, 0x5F2D, 0x5F34,
        0x61, 0x62, 0x64, 0x6F, 0x70, 0x73, 0x77, 0x7F49, 0x80, 0x82, 0x83, 0x84,
        0x85, 0x87, 0x88, 0x8A, 0x8C, 0x8D, 0x8E, 0x9F08, 0x9F0C, 0x9F4D, 0xA5, 0xBF0C,
    ):  # fmt: skip
        assert TAG_NAMES[tag], hex(tag)
        encode_tag(tag)  # every named tag is a valid tag
    for tag in TAG_NAMES:
        encode_tag(tag)


# --------------------------------------------------------------------------
# Properties


def _first_byte_ok(tag: int) -> bool:
    return tag != 0 and (tag >> ((tag.bit_length() - 1) & ~7)) != 0xFF


@st.composite
def tags(draw, constructed: bool) -> int:
    first = (draw(st.integers(0, 3)) << 6) | (0x20 if constructed else 0)
    if draw(st.booleans()):
        tag = first | draw(st.integers(0, 30))
    else:
        tag = first | 0x1F
        for _ in range(draw(st.integers(0, 2))):
            tag = (tag << 8) | draw(st.integers(0x80, 0xFF))
        tag = (tag << 8) | draw(st.integers(0x00, 0x7F))
    return tag


primitive_tags = tags(False).filter(_first_byte_ok)
constructed_tags = tags(True).filter(_first_byte_ok)
values = st.one_of(st.binary(max_size=12), st.binary(min_size=120, max_size=300))

trees = st.recursive(
    st.builds(build, primitive_tags, values),
    lambda kids: st.builds(build, constructed_tags, st.lists(kids, max_size=4)),
    max_leaves=25,
)


def count_nodes(t: Tlv) -> int:
    return 1 + sum(count_nodes(c) for c in t.children)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_random_trees_round_trip(tree):
    enc = tree.encode()
    back = parse_one(enc)
    assert back == tree
    assert shape(back) == shape(tree)
    assert parse(enc + enc, allow_padding=False) == [tree, tree]
    assert try_parse(enc) == [tree]
    assert shape(Tlv(tree.tag, tree.value)) == shape(tree)
    assert len(dump(enc).split("\n")) == count_nodes(tree)


@settings(max_examples=200, deadline=None)
@given(st.lists(trees, min_size=1, max_size=4), st.sampled_from([b"", b"\x00", b"\xff\x00\xff"]))
def test_random_sequences_with_padding_round_trip(items, pad):
    data = pad + pad.join(t.encode() for t in items) + pad
    assert parse(data) == items
    assert try_parse(data) == items


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_tlv_error(data):
    try:
        tlvs = parse(data)
    except TlvError as e:
        assert e.offset is not None and 0 <= e.offset <= len(data)
        assert str(e).startswith(f"TLV at byte {e.offset}")
        assert try_parse(data) is None
    else:
        # Everything nested parsed too, and the result re-encodes to valid TLV.
        again = parse(b"".join(t.encode() for t in tlvs))
        assert [shape(t) for t in again] == [shape(t) for t in tlvs]
        assert (try_parse(data) is None) == (tlvs == [])
        dump(tlvs)


@given(primitive_tags)
def test_tag_encoding_round_trips(tag):
    raw = encode_tag(tag)
    assert int.from_bytes(raw, "big") == tag
    (t,) = parse(raw + b"\x00")
    assert t.tag == tag and not t.constructed


@given(st.integers(0, 0xFFFFFFFF))
def test_length_encoding_is_minimal(n):
    raw = encode_length(n)
    if n < 0x80:
        assert raw == bytes([n])
    else:
        assert raw[0] - 0x80 == len(raw) - 1 == (n.bit_length() + 7) // 8
        assert int.from_bytes(raw[1:], "big") == n
