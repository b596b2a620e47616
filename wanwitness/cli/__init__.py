"""`wanwitness`: the command line. Each command is a thin wrapper over the library."""

from wanwitness.cli.app import cli, main

__all__ = ["cli", "main"]
