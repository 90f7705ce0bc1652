"""Command/response APDU encoding, parsing and status words."""

import pytest
from hypothesis import given, strategies as st

from citycard.apdu import CommandApdu, ResponseApdu, describe_sw, is_sensitive
from citycard.errors import CardError as ApduError
from citycard.errors import InputError
from citycard.hexutil import parse_hex

H = bytes.fromhex


@pytest.mark.parametrize("hexstr, case, ne, extended", [
    ("0084000004", 2, 4, False),
    ("00B0000000", 2, 256, False),
    ("00A40000023F00", 3, None, False),
    ("00A40000023F0000", 4, 256, False),
    ("00B2010C00", 2, 256, False),
    ("80E00000073F018F95F0FFFF", 3, None, False),       # SPEC §1.2 KEY file
    ("0084000000", 2, 256, False),
    ("00B0000000FFFF", 2, 65535, True),
    ("00B0000000000000"[:14], 2, 65536, True),
])
def test_parse_cases(hexstr, case, ne, extended):
    cmd = CommandApdu.parse(H(hexstr))
    assert cmd.case == case
    assert cmd.ne == ne
    assert cmd.is_extended == extended
    assert cmd.encode() == H(hexstr)


def test_published_create_commands_round_trip():
    # SPEC §1.2 real scripts
    for s in ("80E03F011138036FF0F095FFFFA00000000386980701", "80E0001507A8001EF0F0FFFF",
              "80E00018072E0A17F0EFFFFF", "80E00002072F0208F000FF18"):
        cmd = CommandApdu.parse(H(s))
        assert (cmd.cla, cmd.ins) == (0x80, 0xE0)
        assert cmd.data == H(s)[5:]
        assert cmd.encode() == H(s)


def test_build_write_key_example():
    # SPEC §1.4: 80D40101153EF0020001<16B>
    key = bytes(range(16))
    cmd = CommandApdu(0x80, 0xD4, 0x01, 0x01, H("3EF0020001") + key)
    assert cmd.encode() == H("80D4010115") + H("3EF0020001") + key
    assert is_sensitive(cmd)


def test_extended_encodings():
    data = bytes(300)
    cmd = CommandApdu(0x00, 0xD6, 0, 0, data)
    raw = cmd.encode()
    assert raw[:7] == H("00D60000" "00012C")
    assert len(raw) == 7 + 300
    assert CommandApdu.parse(raw) == cmd
    cmd4 = CommandApdu(0x00, 0xD6, 0, 0, data, ne=65536)
    raw4 = cmd4.encode()
    assert raw4[-2:] == b"\x00\x00"
    assert CommandApdu.parse(raw4) == cmd4
    forced = CommandApdu(0x00, 0xB0, 0, 0, ne=16, extended=True)
    assert forced.encode() == H("00B00000000010")
    case3e = CommandApdu(0x00, 0xD6, 0, 0, b"\x01", extended=True)
    assert case3e.encode() == H("00D6000000000101")
    assert CommandApdu.parse(case3e.encode()) == case3e


@given(cla=st.integers(0, 255), ins=st.integers(0, 255), p1=st.integers(0, 255), p2=st.integers(0, 255),
       data=st.binary(max_size=400), ne=st.one_of(st.none(), st.integers(1, 65536)),
       extended=st.booleans())
def test_round_trip_property(cla, ins, p1, p2, data, ne, extended):
    cmd = CommandApdu(cla, ins, p1, p2, data, ne, extended=extended)
    back = CommandApdu.parse(cmd.encode())
    assert back.encode() == cmd.encode()
    assert (back.data, back.ne) == (data, ne)


@pytest.mark.parametrize("hexstr, message", [
    ("00A4", "2 bytes, a command APDU needs at least 4"),
    ("00A40000053F00", "byte 5 (Lc) is 0x05 but 2 bytes follow"),
    ("00A40000003F", "only 6 bytes"),
    ("00A400000000003F", "extended Lc) are 0000"),
    ("00A4000000000201", "extended Lc is 2 but 1 bytes follow"),
])
def test_parse_errors_are_located(hexstr, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CommandApdu.parse(H(hexstr))


def test_hex_parsing_errors():
    assert parse_hex("00 a4 00:00_02 3f00") == H("00A40000023F00")
    assert parse_hex("0x3F00") == H("3F00")
    with pytest.raises(InputError, match=r"APDU: 'G' at position 3 is not a hex digit"):
        parse_hex("00G4", "APDU")
    with pytest.raises(InputError, match=r"--key: odd number of hex digits \(3\)"):
        parse_hex("ABC", "--key")
    with pytest.raises(InputError, match=r"--key: 2 bytes, expected 8 or 16"):
        parse_hex("ABCD", "--key", length=(8, 16))
    with pytest.raises(InputError):
        CommandApdu(0x100, 0, 0, 0)
    with pytest.raises(InputError):
        CommandApdu(0, 0, 0, 0, ne=0)


def test_response_and_status_words():
    r = ResponseApdu.from_bytes(H("0102039000"))
    assert (r.data, r.sw, r.sw1, r.sw2, r.ok) == (H("010203"), 0x9000, 0x90, 0x00, True)
    assert r.encode() == H("0102039000")
    with pytest.raises(Exception, match="no status word"):
        ResponseApdu.from_bytes(b"\x90")
    assert describe_sw(0x6A82) == "file or application not found"
    assert describe_sw(0x9302) == "MAC error"
    assert describe_sw(0x9401) == "insufficient balance"
    assert describe_sw(0x9303) == "application permanently locked"
    assert describe_sw(0x63C2) == "verification failed, 2 tries left"
    assert describe_sw(0x6117) == "23 more response bytes available (GET RESPONSE)"
    assert describe_sw(0x6C10) == "wrong Le: 16 bytes available (resend with that Le)"
    assert describe_sw(0x1234) == "unknown status word"
    err = ApduError(0x6982, command="UPDATE BINARY EF0015")
    assert err.sw == 0x6982 and err.meaning == "security status not satisfied"
    assert str(err) == "UPDATE BINARY EF0015: card answered 6982: security status not satisfied"
    with pytest.raises(ApduError) as info:
        ResponseApdu(b"", 0x6A82).check()
    assert info.value.sw == 0x6A82


def test_sensitive_commands():
    for ins in (0xD4, 0x20, 0x5E, 0x24):
        assert is_sensitive(CommandApdu(0x80, ins, 0, 0, b"\x12\x34"))
        assert is_sensitive(bytes((0x80, ins, 0, 0, 2, 0x12, 0x34)))
    assert not is_sensitive(CommandApdu(0x00, 0xA4, 0, 0, H("3F00")))
    assert is_sensitive(CommandApdu(0x00, 0xD6, 0, 0, b"x", sensitive=True))


def test_a_sensitive_command_never_shows_its_data_in_repr_or_str():
    """A WRITE KEY or VERIFY command put in a log line, an exception or a repr of a plan step
    shows its header and length only."""
    from citycard.apdu import CommandApdu

    key = bytes.fromhex("39F0F00133" + "A1B2C3D4E5F60718" * 2)
    for cmd in (CommandApdu(0x80, 0xD4, 0x01, 0x00, key), CommandApdu(0x00, 0x20, 0x00, 0x00, b"\x12\x34\x56"),
                CommandApdu(0x00, 0xD6, 0x00, 0x00, key, sensitive=True)):
        for text in (repr(cmd), str(cmd), f"{cmd}", repr([cmd])):
            assert cmd.data.hex().upper() not in text and "masked" in text, text
    plain = CommandApdu(0x00, 0xA4, 0x00, 0x00, b"\x3F\x00")
    assert str(plain) == "00A40000023F00" and "3F00" in repr(plain)
