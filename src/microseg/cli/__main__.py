"""``python -m microseg.cli`` runs the CLI (same as the ``microseg`` command)."""

from microseg.cli import main

main()
