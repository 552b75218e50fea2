"""``python -m chatcli`` runs the command-line interface."""

from chatcli.cli import main

main()
