"""`citycard calc`: the calculator card engineers reach for by hand.

Every value is hex.  ``--json`` prints one JSON object with the keys the issue
names (``result``, ``mac``, ``key``, ``kcv``, ``session_key``/``mac1``/``mac2``/``tac``,
``apdu``).  These commands exist to compute test data; the values given on the
command line are the user's own and are printed only where they are the result.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from .. import crypto     # lazy: each calculation imports only the module it uses (issue 19 item 3)
from ..errors import InputError
from ..hexutil import parse_hex


def _hex_opt(*names: str, length: int | tuple[int, ...] | None = None, required: bool = True,
             help: str = "", default: str | None = None) -> Callable:
    """A click option holding hex, parsed to bytes with a located error."""
    label = names[-1] if names[-1].startswith("--") else names[0]

    def convert(_ctx, _param, value):
        if value is None:
            return None
        return parse_hex(value, label, length=length)

    return click.option(*names, required=required and default is None, default=default,
                        callback=convert, help=help, metavar="HEX")


def _int_opt(name: str, nbytes: int, help: str, default: str | None = None) -> Callable:
    """A hex option read as a big-endian integer of at most ``nbytes`` bytes."""

    def convert(_ctx, _param, value):
        if value is None:
            return None
        raw = parse_hex(value if len(value.replace(" ", "")) % 2 == 0 else "0" + value, name)
        if len(raw) > nbytes:
            raise InputError(f"{name}: {len(raw)} bytes, at most {nbytes}")
        return int.from_bytes(raw, "big")

    return click.option(name, required=default is None, default=default, callback=convert,
                        help=help, metavar="HEX")


def _emit(as_json: bool, values: dict[str, bytes]) -> None:
    out = {k: v.hex().upper() for k, v in values.items()}
    if as_json:
        import json

        click.echo(json.dumps(out))
    else:
        width = max(len(k) for k in out)
        for k, v in out.items():
            click.echo(f"{k:<{width}}  {v}")


json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
alg_opt = click.option("--alg", "cipher", type=click.Choice(["des", "sm4"]), default="des", show_default=True,
                       help="Cipher family (DES/3DES by key length, or SM4).")


class _LazyGroup(click.Group):
    """A group whose subcommands are made (their options built) when one is asked for:
    ``citycard calc des`` builds the five options of ``des``, not the ~60 of every
    calculation (~2 ms of its start-up, issue 19 item 3).  Help and every lookup see all
    of them, as in a plain group."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.builders: dict[str, Callable[[], click.Command]] = {}

    def lazy(self, name: str) -> Callable[[Callable[[], click.Command]], Callable[[], click.Command]]:
        """Register the function that makes the subcommand ``name``."""

        def register(builder: Callable[[], click.Command]) -> Callable[[], click.Command]:
            self.builders[name] = builder
            return builder

        return register

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.builders))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builder = self.builders.pop(cmd_name, None)
        if builder is not None:
            self.add_command(builder(), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup)
def calc() -> None:
    """Cryptographic calculator: ciphers, MACs, diversification, purse MACs, line protection."""


def _cipher_cmd(name: str, key_lengths: tuple[int, ...], alg: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @_hex_opt("-k", "--key", length=key_lengths, help=f"Key ({' or '.join(map(str, key_lengths))} bytes, hex).")
    @_hex_opt("-d", "--data", help="Data (hex), a multiple of the block size (8 bytes; 16 for SM4).")
    @_hex_opt("--iv", required=False, help="CBC with this IV (default ECB).")
    @click.option("--decrypt", is_flag=True, help="Decrypt instead of encrypt.")
    @json_opt
    def command(key: bytes, data: bytes, iv: bytes | None, decrypt: bool, as_json: bool) -> None:
        if iv is None:
            fn = crypto.ecb_decrypt if decrypt else crypto.ecb_encrypt
            result = fn(key, data, alg)
        else:
            fn = crypto.cbc_decrypt if decrypt else crypto.cbc_encrypt
            result = fn(key, data, iv, alg)
        _emit(as_json, {"result": result})

    return command


def _cipher(name: str, key_lengths: tuple[int, ...], alg: str, doc: str) -> None:
    calc.lazy(name)(lambda: _cipher_cmd(name, key_lengths, alg, doc))


_cipher("des", (8,), "des", "Single DES (8-byte key), ECB or CBC.")
_cipher("3des", (16, 24), "des", "2-key or 3-key triple DES (16 or 24-byte key), ECB or CBC.")
_cipher("sm4", (16,), "sm4", "SM4 (16-byte key), ECB or CBC.")


@calc.lazy("mac")
def _mac() -> click.Command:
    @click.command("mac")
    @_hex_opt("-k", "--key", length=(8, 16, 24), help="MAC key (8, 16 or 24 bytes, hex).")
    @_hex_opt("-d", "--data", help="Message (hex, any length; padded by --pad).")
    @_hex_opt("--iv", required=False, help="Initial vector (default zeros).")
    @click.option("--alg", "mac_alg", type=click.Choice(["1", "3"]), default=None,
                  help="ISO 9797-1 MAC algorithm [default: 1 for 8-byte keys, 3 for 16-byte keys].")
    @click.option("--pad", "pad_method", type=click.Choice(["1", "2"]), default="2", show_default=True,
                  help="ISO 9797-1 padding method.")
    @click.option("--length", type=click.IntRange(1, 16), default=4, show_default=True, help="MAC length in bytes.")
    @click.option("--sm4", is_flag=True, help="Use SM4 (16-byte key and block) for algorithm 1.")
    @json_opt
    def mac(key: bytes, data: bytes, iv: bytes | None, mac_alg: str | None, pad_method: str, length: int,
            sm4: bool, as_json: bool) -> None:
        """ISO 9797-1 MAC (algorithm 1 = CBC-MAC, 3 = retail MAC)."""
        alg = int(mac_alg) if mac_alg else (3 if len(key) == 16 and not sm4 else 1)
        _emit(as_json, {"mac": crypto.iso9797_mac(key, data, alg=alg, pad_method=int(pad_method), iv=iv,
                                                  length=length, cipher="sm4" if sm4 else "des")})

    return mac


@calc.lazy("diversify")
def _diversify() -> click.Command:
    @click.command("diversify")
    @_hex_opt("-k", "--key", length=(16, 24), help="Master key.")
    @_hex_opt("-d", "--data", help="Diversification factor: rightmost 8 bytes used; 8 bytes per level.")
    @click.option("--levels", type=click.IntRange(1, 7), default=1, show_default=True,
                  help="Diversification levels (one 8-byte factor each).")
    @alg_opt
    @json_opt
    def diversify(key: bytes, data: bytes, levels: int, cipher: str, as_json: bool) -> None:
        """PBOC key diversification (SPEC.md §2.4): E(MK, F) ‖ E(MK, ~F)."""
        _emit(as_json, {"key": crypto.diversify(key, data, levels, cipher)})

    return diversify


@calc.lazy("kcv")
def _kcv() -> click.Command:
    @click.command("kcv")
    @_hex_opt("-k", "--key", length=(8, 16, 24), help="Key (8, 16 or 24 bytes, hex).")
    @alg_opt
    @json_opt
    def kcv(key: bytes, cipher: str, as_json: bool) -> None:
        """Key check value: the first 3 bytes of the key encrypting a zero block."""
        _emit(as_json, {"kcv": crypto.kcv(key, cipher)})

    return kcv


purse_alg_opt = click.option("--alg", "cipher", type=click.Choice(["des", "sm4"]), default="des", show_default=True,
                             help="des: DES session keys (3DES keys); sm4: SM4 keys, session keys, MACs and TAC "
                                  "(citycard's construction, docs/sm4.md).")


def _common_purse(f: Callable) -> Callable:
    for deco in reversed([
        _hex_opt("--dtk", length=(8, 16), help="TAC key (type 34)."),
        _hex_opt("--random", length=4, help="Card random from INITIALIZE."),
        _int_opt("--counter", 2, "Transaction counter from INITIALIZE (hex)."),
        _int_opt("--amount", 4, "Amount in fen, as hex (4 bytes: e.g. 000003E8 = 1000 fen = 10.00 yuan)."),
        _hex_opt("--terminal", length=6, help="Terminal number (6 bytes)."),
        _hex_opt("--date", length=4, help="YYYYMMDD."),
        _hex_opt("--time", length=3, help="hhmmss."),
        purse_alg_opt,
        json_opt,
    ]):
        f = deco(f)
    return f


@calc.lazy("load")
def _load() -> click.Command:
    @click.command("load")
    @_hex_opt("--dlk", length=(8, 16), help="Load key (type 3F).")
    @_int_opt("--balance", 4,
              "Balance before the load, in fen, as hex (4 bytes: e.g. 000003E8 = 1000 fen = 10.00 yuan).")
    @_common_purse
    @_int_opt("--type", 1, "Transaction type (hex).", default="02")
    def load(dlk: bytes, balance: int, dtk: bytes, random: bytes, counter: int, amount: int, terminal: bytes,
             date: bytes, time: bytes, cipher: str, as_json: bool, type: int) -> None:
        """Load (圈存) session key, MAC1, MAC2 and TAC (SPEC.md §2.2; SM4: docs/sm4.md)."""
        from ..crypto import pboc

        c = pboc.load_cryptogram(dlk, dtk, random=random, counter=counter, balance=balance, amount=amount,
                                 terminal=terminal, date=date, time=time, ttype=type,
                                 alg=cipher)  # type: ignore[arg-type]
        _emit(as_json, {"session_key": c.session_key, "mac1": c.mac1, "mac2": c.mac2, "tac": c.tac})

    return load


@calc.lazy("purchase")
def _purchase() -> click.Command:
    @click.command("purchase")
    @_hex_opt("--dpk", length=(8, 16), help="Purchase key (type 3E).")
    @_hex_opt("--terminal-serial", "terminal_serial", length=4, help="Terminal transaction serial (4 bytes).")
    @_common_purse
    @_int_opt("--type", 1, "Transaction type (hex): 06 EP purchase, 05 ED, 09 CAPP.", default="06")
    @_hex_opt("--auth-code", "auth_code", length=9, required=False,
              help="MOHURD 9-byte authentication code (80 CA 00 00 09), appended to the MAC1 input.")
    def purchase(dpk: bytes, terminal_serial: bytes, dtk: bytes, random: bytes, counter: int, amount: int,
                 terminal: bytes, date: bytes, time: bytes, cipher: str, as_json: bool, type: int,
                 auth_code: bytes | None) -> None:
        """Purchase (消费) session key, MAC1, MAC2 and TAC (SPEC.md §2.2, D7; SM4: docs/sm4.md)."""
        from ..crypto import pboc

        c = pboc.purchase_cryptogram(dpk, dtk, random=random, counter=counter, terminal_serial=terminal_serial,
                                     amount=amount, terminal=terminal, date=date, time=time, ttype=type,
                                     auth_code=auth_code, alg=cipher)  # type: ignore[arg-type]
        _emit(as_json, {"session_key": c.session_key, "mac1": c.mac1, "mac2": c.mac2, "tac": c.tac})

    return purchase


@calc.lazy("secure-apdu")
def _secure_apdu() -> click.Command:
    @click.command("secure-apdu")
    @_hex_opt("-k", "--key", length=(8, 16), help="Line-protection key (8 bytes: DES, 16: 3DES + retail MAC, or SM4).")
    @_hex_opt("--challenge", length=(4, 8), help="GET CHALLENGE result (4 or 8 bytes).")
    @_hex_opt("--apdu", "apdu_bytes", help="The plain command APDU.")
    @click.option("--encrypt", is_flag=True, help="Encipher the data field as well.")
    @alg_opt
    @json_opt
    def secure_apdu(key: bytes, challenge: bytes, apdu_bytes: bytes, encrypt: bool, cipher: str, as_json: bool) -> None:
        """The line-protected form of an APDU (SPEC.md §1.4, §1.6; SM4: IV challenge ‖ zeros, docs/sm4.md)."""
        from ..apdu import CommandApdu

        cmd = CommandApdu.parse(apdu_bytes, what="--apdu")
        _emit(as_json, {"apdu": crypto.protect(cmd, key, challenge, encrypt=encrypt,
                                               alg=cipher).encode()})  # type: ignore[arg-type]

    return secure_apdu
