"""``python -m citycard`` runs the CLI."""

from .cli.main import main

main()
