"""The command line: main (the parser and the exit statuses), units (generate, kube and the unit options),
ops (the operator commands), runtime (run, demo)."""

from .main import build_parser, entry, main

__all__ = ["build_parser", "entry", "main"]
