"""`citycard apdu`: send APDUs given as hex, check expected SWs, decode the answers."""

from __future__ import annotations

import sys
from typing import Iterable

import click

from ..apdu import CommandApdu, ResponseApdu, SwPattern, describe_sw
from ..errors import InputError
from ..hexutil import parse_hex
from ..transport.transcript import command_hex, format_command, format_response
from .common import card_options



def parse_apdu_arg(arg: str, index: int | str) -> tuple[CommandApdu, SwPattern | None]:
    """``HEX[=SW]`` → command and optional expected SW; ``HEX=`` (``=`` alone, ykman's
    shorthand) expects 9000.  Errors name the argument (``index``: its number, or a text
    such as "standard input line 3")."""
    what = f"APDU {index}" if isinstance(index, int) else index
    hex_part, sep, sw_part = arg.partition("=")
    expected = None
    if sep:
        expected = SwPattern.parse(sw_part if sw_part.strip() else "9000", what)
    return CommandApdu.parse(parse_hex(hex_part, what), what=what), expected


def read_apdu_lines(lines: Iterable[str]) -> list[tuple[CommandApdu, SwPattern | None]]:
    """APDUs from a script read on standard input (``-``, as scriptor reads one): one
    ``HEX[=SW]`` per line; blank lines and lines starting with ``#`` are skipped."""
    out = []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        out.append(parse_apdu_arg(text, f"standard input line {n}"))
    return out


def _commands(apdus: tuple[str, ...]) -> list[tuple[CommandApdu, SwPattern | None]]:
    """Every APDU of the arguments (``-`` reads standard input there), all checked before sending."""
    out = []
    for i, a in enumerate(apdus, 1):
        if a == "-":
            out += read_apdu_lines(sys.stdin)
        else:
            out.append(parse_apdu_arg(a, i))
    if not out:
        raise InputError("no APDU given (standard input held none)")
    return out


def _decode(resp: ResponseApdu) -> list[str]:
    if not resp.data:
        return []
    from .. import tlv      # only for answers with data (start-up, issue 19 item 3)

    items = tlv.try_parse(resp.data)
    return tlv.dump(items).splitlines() if items else []


@click.command()
@card_options
@click.option("--raw", is_flag=True, help="Do not fetch 61xx/6Cxx answers (show the card's raw SWs).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md).")
@click.argument("apdus", nargs=-1, required=True, metavar="APDU[=SW]...|-")
@click.pass_obj
def apdu(app, reader: str | None, sim: str | None, raw: bool, as_json: bool, apdus: tuple[str, ...]) -> None:
    """Send APDUs given as hex (spaces allowed within one argument).

    An =SW suffix (e.g. 00A40000023F00=9000, or =61XX) makes a different status
    word stop here and exit with code 1; = alone means =9000.  An argument - reads
    APDUs from standard input, one HEX[=SW] per line (# starts a comment).
    Keys and PINs (VERIFY, CHANGE PIN, WRITE KEY...) are masked in every output.
    """
    commands = _commands(apdus)  # all checked before sending
    session = app.open_session(reader, sim=sim, fetch=not raw, custody=False)  # raw APDUs: shared, card left as it is (like scriptor)
    exchanges = []
    failure = None
    try:
        for i, (cmd, expected) in enumerate(commands, 1):
            resp = session.send(cmd)
            ok = expected is None or expected.matches(resp.sw)
            entry = {
                "command": command_hex(cmd),
                "data": resp.data.hex().upper(),
                "sw": f"{resp.sw:04X}",
                "meaning": describe_sw(resp.sw),
            }
            if expected is not None:
                entry["expected_sw"] = expected.text
                entry["ok"] = ok
            exchanges.append(entry)
            if not as_json:
                click.echo(f"> {format_command(cmd)}")
                click.echo(f"< {format_response(resp)}  ({describe_sw(resp.sw)})")
                for line in _decode(resp):
                    click.echo("    " + line)
            if not ok:
                failure = (f"APDU {i}: expected SW {expected.text}, card answered "
                           f"{resp.sw:04X} ({describe_sw(resp.sw)})", resp.sw)
                break
    finally:
        session.close()
    if as_json:
        out = {"reader": session.transport.name, "atr": session.atr.hex().upper(),
               "exchanges": exchanges, "ok": failure is None}
        if failure:     # the error object of every --json command (docs/json.md)
            out["error"] = {"kind": "card", "message": failure[0], "exit_code": 1, "sw": f"{failure[1]:04X}"}
        import json

        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    if failure:
        click.echo(f"citycard: error: {failure[0]}", err=True)
        raise click.exceptions.Exit(1)
