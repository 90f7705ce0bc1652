"""`citycard demo-assets DIR`: copy the demo profiles, TEST KEYS, cardholders and example
scripts that ship inside the package (citycard.assets)."""

from __future__ import annotations

import click


@click.command("demo-assets")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files of DIRECTORY that differ.")
def demo_assets(directory: str, force: bool) -> None:
    """Copy the shipped demo files to DIRECTORY/profiles and DIRECTORY/examples.

    Inside DIRECTORY the README's commands then run as written
    (profiles/citycard.toml, profiles/demo-keys.toml: TEST KEYS ONLY, ...).
    """
    from ..assets import asset_names, copy_assets

    written = copy_assets(directory, overwrite=force)
    total = len(asset_names())
    click.echo(f"{len(written)} of {total} demo files written to {directory} "
               f"({total - len(written)} already there)")
    click.echo("warning: profiles/demo-keys.toml holds published TEST KEYS: never use them for real cards",
               err=True)
