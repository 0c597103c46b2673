"""The command line's entry: one parser made of the command groups' own registrations (GROUPS), and
the only place that turns a SockactError into an exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .. import __version__
from ..errors import SockactError

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[Any]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _groups() -> tuple[Callable[[Sub], None], ...]:
    """Each command group adds its commands; none imports another, or this module, at run time."""
    from . import ops, runtime, units

    return units.register, runtime.register, ops.register


def build_parser() -> Parser:
    parser = Parser(
        prog="sockact", description="Serve Python web apps with one worker per core, supervised by systemd."
    )
    parser.add_argument("--version", action="version", version=f"sockact {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for register in _groups():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        # The runtime parses its own arguments (its --help included), as `python -m sockact run` does.
        from ..runtime.main import main as run_main

        return run_main(argv[1:])
    parser = build_parser()
    if not argv:
        # No command: the help, on stdout so that `sockact | less` shows it; still a usage mistake (2).
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args))
    except SockactError as exc:
        sys.stderr.write(f"sockact: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    sys.exit(main())
