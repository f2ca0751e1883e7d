"""``python -m rescompiler`` runs the CLI."""

from .cli import main

main()
