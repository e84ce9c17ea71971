"""The `zato-gitops` command line: options in, one engine call, rendering out (see `commands`)."""

from reconciler.cli.commands import main

__all__ = ["main"]
