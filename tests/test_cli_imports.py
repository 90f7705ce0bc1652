"""The import diet of CLI start-up (issue 19 item 3), pinned on the modules a fresh
interpreter holds after an import, never on wall time: the packages' lazy ``__init__``s
(PEP 562), the status-word table built only when a card answered, and the console script's
:func:`gc.freeze` after the imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


_LOADED = "[m for m in sys.modules if m.startswith(('citycard', 'smartcard', 'logging', 'cryptography'))]"


def test_apdu_command_module_loads_no_fmcos_purse_session_or_pyscard():
    out = _run(f"""
        import json, sys
        import citycard.cli.apdu_cmd
        print(json.dumps({_LOADED}))
    """)
    for module in ("citycard.commands", "citycard.commands.purse", "citycard.commands.fmcos", "citycard.keytypes",
                   "citycard.transport.session", "citycard.transport.protection", "smartcard", "cryptography"):
        assert module not in out, module
    assert "citycard.transport.transcript" in out and "citycard.apdu" in out     # what it does use


def test_commands_package_imports_its_submodules_when_used():
    out = _run("""
        import json, sys
        import citycard.commands as commands
        bare = sorted(m for m in sys.modules if m.startswith(("citycard.commands.", "citycard.keytypes")))
        from citycard.commands import FileType, KeyType, Protection, PurseKind, fmcos, iso, purse, walk
        from citycard.commands import fmcos as f2, psam
        same = [KeyType is fmcos.KeyType, FileType is fmcos.FileType, Protection is fmcos.Protection,
                PurseKind is purse.PurseKind, f2 is sys.modules["citycard.commands.fmcos"],
                walk is sys.modules["citycard.commands.walk"], psam is commands.psam, iso is commands.iso]
        try:
            commands.no_such_name
            missing = "no error"
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({"bare": bare, "same": same, "missing": missing, "all": sorted(commands.__all__),
                          "dir": [n for n in ("KeyType", "PurseKind", "walk") if n in dir(commands)]}))
    """)
    assert out["bare"] == []
    assert out["same"] == [True] * 8
    assert out["missing"] == "module 'citycard.commands' has no attribute 'no_such_name'"
    assert out["all"] == sorted(["iso", "fmcos", "purse", "KeyType", "FileType", "Protection", "PurseKind"])
    assert out["dir"] == ["KeyType", "PurseKind", "walk"]


def test_transport_package_imports_the_session_stack_when_used():
    out = _run("""
        import json, sys
        import citycard.transport as transport
        bare = sorted(m for m in sys.modules if m.startswith(("citycard.transport.", "citycard.commands")))
        from citycard.transport import CardSession, LineProtection, Transport
        from citycard.transport.session import CardSession as S
        from citycard.transport.protection import LineProtection as L
        try:
            transport.no_such_name
            missing = "no error"
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({"bare": bare, "same": [CardSession is S, LineProtection is L],
                          "protocol": Transport.__name__, "missing": missing}))
    """)
    assert out == {"bare": [], "same": [True, True], "protocol": "Transport",
                   "missing": "module 'citycard.transport' has no attribute 'no_such_name'"}


def test_errors_build_the_status_word_table_only_for_a_card_error():
    out = _run("""
        import json, sys
        import citycard.errors as errors
        before = "citycard.sw" in sys.modules
        exc = errors.CardError(0x6A82, "SELECT transit")
        print(json.dumps({"before": before, "after": "citycard.sw" in sys.modules, "meaning": exc.meaning,
                          "message": str(exc)}))
    """)
    assert out == {"before": False, "after": True, "meaning": "file or application not found",
                   "message": "SELECT transit: card answered 6A82: file or application not found"}


def test_calc_loads_neither_the_apdu_nor_the_status_word_modules():
    out = _run(f"""
        import json, sys
        from citycard.cli.main import cli
        try:
            cli.main(args=["calc", "des", "-k", "0123456789ABCDEF", "-d", "0000000000000000"], prog_name="citycard")
        except SystemExit:
            pass
        print(json.dumps({_LOADED}))
    """)
    assert "citycard.cli.calc" in out and "citycard.crypto.cipher" in out
    assert [m for m in out if m in ("citycard.sw", "citycard.apdu", "logging") or m.startswith("smartcard")] == []


def test_console_script_freezes_the_imports_but_the_cli_in_process_does_not():
    code = """
        import gc, json, sys
        from citycard.cli import main as m
        try:
            {call}
        except SystemExit:
            pass
        print(json.dumps({{"frozen": gc.get_freeze_count(), "calc_loaded": "citycard.cli.calc" in sys.modules}}))
    """
    script = _run(code.format(call='m.main(["calc", "kcv", "-k", "0123456789ABCDEF"])'))
    in_process = _run(code.format(call='m.cli.main(args=["calc", "kcv", "-k", "0123456789ABCDEF"], '
                                       'prog_name="citycard")'))
    assert script["calc_loaded"] and in_process["calc_loaded"]
    assert script["frozen"] > 1000            # the modules, classes and functions of the imports
    assert in_process["frozen"] == 0


def test_objects_made_after_the_freeze_are_still_collected():
    out = _run("""
        import gc, json, sys, weakref
        from citycard.cli import main as m
        try:
            m.main(["calc", "kcv", "-k", "0123456789ABCDEF"])
        except SystemExit:
            pass

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a           # a reference cycle: only the cyclic collector frees it
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        print(json.dumps({"frozen": gc.get_freeze_count() > 0, "collected": gone() is None}))
    """)
    assert out == {"frozen": True, "collected": True}


def test_calc_builds_only_the_calculation_asked_for_and_lists_them_all():
    out = _run("""
        import json
        import click
        from citycard.cli.main import cli
        from citycard.cli.calc import calc
        try:
            cli.main(args=["calc", "des", "-k", "0123456789ABCDEF", "-d", "0000000000000000"], prog_name="citycard")
        except SystemExit:
            pass
        built = sorted(calc.commands)
        listed = calc.list_commands(click.Context(calc))
        kcv = calc.get_command(click.Context(calc), "kcv")
        print(json.dumps({"built": built, "listed": listed, "kcv": [p.name for p in kcv.params],
                          "none": calc.get_command(click.Context(calc), "no-such") is None}))
    """)
    assert out["built"] == ["des"]
    assert out["listed"] == ["3des", "des", "diversify", "kcv", "load", "mac", "purchase", "secure-apdu", "sm4"]
    assert out["kcv"] == ["key", "cipher", "as_json"] and out["none"] is True


def test_raw_apdus_on_a_session_load_no_line_protection(tmp_path):
    out = _run(f"""
        import json, sys
        from citycard.cli.main import cli
        for args in (["sim", "new", {str(tmp_path / "c.json")!r}],
                     ["apdu", "--sim", {str(tmp_path / "c.json")!r}, "00A40000023F00=9000", "0084000004=9000"]):
            try:
                cli.main(args=args, prog_name="citycard")
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
        print(json.dumps({_LOADED}))
    """)
    assert "citycard.transport.session" in out
    assert "citycard.transport.protection" not in out


def test_every_summary_is_the_first_paragraph_of_its_commands_help():
    import click

    from citycard.cli.main import COMMANDS, SUMMARIES, cli

    assert set(SUMMARIES) == set(COMMANDS)
    for name in COMMANDS:
        cmd = cli.get_command(click.Context(cli), name)
        assert cmd is not None and cmd.help
        assert (cmd.short_help, cmd.hidden, cmd.deprecated) == (None, False, False), name
        end = cmd.help.find("\n\n")
        first = cmd.help if end < 0 else cmd.help[:end]
        assert SUMMARIES[name].split() == first.split(), f"{name}: update SUMMARIES in citycard/cli/main.py"


def test_help_lists_the_commands_without_importing_them_and_as_if_they_were():
    out = _run("""
        import json, sys
        import click
        from citycard.cli.main import COMMANDS, cli

        def text(width):
            ctx = click.Context(cli, info_name="citycard", terminal_width=width, max_content_width=width)
            return cli.get_help(ctx)

        lazy = {w: text(w) for w in (60, 80, 200)}
        loaded = sorted(m for m in sys.modules if m.startswith("citycard.cli.") and m != "citycard.cli.main")
        for name in COMMANDS:
            cli.get_command(click.Context(cli), name)
        print(json.dumps({"loaded": loaded, "same": [lazy[w] == text(w) for w in lazy],
                          "listed": [n for n in COMMANDS if f"\\n  {n} " in lazy[80]]}))
    """)
    assert out["loaded"] == []
    assert out["same"] == [True, True, True]
    assert len(out["listed"]) == 22
