"""`sockact run` (the worker runtime, which parses its own arguments) and `sockact demo`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .main import Sub


def cmd_run(args: argparse.Namespace) -> int:
    from ..runtime.main import main as run_main

    return run_main(args.rest)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(workers=args.workers, requests=args.requests)


def register(sub: Sub) -> None:
    run = sub.add_parser(
        "run", help="the worker runtime (what ExecStart= runs): sockact run MODULE:ATTR", add_help=False
    )
    run.add_argument("rest", nargs=argparse.REMAINDER)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo",
        help="start a bundled app under systemd, show which worker answers, clean up",
        epilog="example:\n  sudo sockact demo --workers 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--requests", type=int, default=32)
    demo.set_defaults(func=cmd_demo)
