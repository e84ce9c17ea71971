"""`python -m reconciler` runs the CLI (handy where the console script is not on PATH)."""

from reconciler.cli import main

main()
