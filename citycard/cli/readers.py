"""`citycard readers`: PC/SC readers, card presence and ATR."""

from __future__ import annotations

import click

from ..transport.pcsc import list_readers


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def readers(as_json: bool) -> None:
    """List PC/SC readers, whether a card is present, and its ATR."""
    found = list_readers()
    if as_json:
        import json

        click.echo(json.dumps([
            {"index": i, "name": r.name, "card_present": r.card_present, "atr": r.atr.hex().upper() or None}
            for i, r in enumerate(found)
        ], indent=2))
        return
    width = max(len(r.name) for r in found)
    for i, r in enumerate(found):
        state = "card " + r.atr.hex().upper() if r.card_present else "no card"
        click.echo(f"{i}  {r.name:<{width}}  {state}")
