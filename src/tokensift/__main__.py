"""``python -m tokensift`` runs the CLI."""

from tokensift.cli import main

main()
