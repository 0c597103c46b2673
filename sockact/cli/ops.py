"""Operator sub-commands, install to exec: arguments in, one ops call out."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .main import Sub

INSTALL_EXAMPLE = """\
examples:
  sudo sockact install myapp --app myproj.asgi:app --listen 8000 --workers auto --chdir /srv/myproj --enable --now
  sudo sockact install myapp --app myproj.asgi:app --listen 127.0.0.1:8000 --unit-dir /run/systemd/system --now
  sudo sockact install myapp --app myproj.asgi:app --listen 8000 --chdir /srv/myproj --dry-run
"""
UNINSTALL_EXAMPLE = "example:\n  sudo sockact uninstall myapp\n"
LIST_EXAMPLE = "examples:\n  sockact list\n  sockact list --unit-dir /run/systemd/system --json\n"
STATUS_EXAMPLE = """\
examples:
  sockact status myapp
  sockact status myapp --watch 1
  sockact status myapp --json | jq '.workers[].rss_bytes'
"""
SCALE_EXAMPLE = "examples:\n  sudo sockact scale myapp 8\n  sudo sockact scale myapp auto\n"
START_EXAMPLE = "examples:\n  sudo sockact start myapp      # also the way back after a crash loop\n"
STOP_EXAMPLE = "example:\n  sudo sockact stop myapp\n"
RELOAD_EXAMPLE = "example (after deploying new code):\n  sudo sockact reload myapp\n"
LOGS_EXAMPLE = """\
examples:
  sockact logs myapp -f
  sockact logs myapp -n 100 --worker 2 --priority warning
  sockact logs myapp --since '10 min ago' --json
"""
EXEC_EXAMPLE = """\
examples (as the workers run: their user, environment, directory, state directory and sandbox):
  sudo sockact exec myapp -- python3 manage.py migrate
  sudo sockact exec myapp -- python3 manage.py createsuperuser
  sudo sockact exec myapp -- python3 manage.py collectstatic --noinput
  sudo sockact exec myapp -- python3      # a shell; `python3` is the workers' interpreter
"""
PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def _unit_dir(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--unit-dir", metavar="DIR", default=None, help=f"where the units live (default: {default})")


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"--watch {text!r}: give seconds from 0.1 to 3600, e.g. --watch 2")
    return value


def _priority(text: str) -> str:
    if text in PRIORITIES or (text.isdigit() and int(text) < len(PRIORITIES)):
        return text
    raise argparse.ArgumentTypeError(f"--priority {text!r}: give one of {', '.join(PRIORITIES)} or 0-7")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _add(sub: Sub, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def cmd_install(args: argparse.Namespace) -> int:
    from ..ops.manage import install
    from .units import spec_from

    return install(spec_from(args), unit_dir=args.unit_dir, enable=args.enable, now=args.now, dry_run=args.dry_run)


def cmd_uninstall(args: argparse.Namespace) -> int:
    from ..ops.manage import uninstall

    return uninstall(args.name, unit_dir=args.unit_dir)


def cmd_list(args: argparse.Namespace) -> int:
    from ..ops.listing import list_apps

    return list_apps(unit_dir=args.unit_dir, as_json=args.json)


def cmd_status(args: argparse.Namespace) -> int:
    from ..ops.status import show_status, watch_status

    if args.watch is not None:
        return watch_status(args.name, args.watch, as_json=args.json)
    return show_status(args.name, as_json=args.json)


def cmd_scale(args: argparse.Namespace) -> int:
    from ..ops.scale import scale

    return scale(args.name, args.count)


def cmd_reload(args: argparse.Namespace) -> int:
    from ..ops.reload import reload

    return reload(args.name)


def cmd_start(args: argparse.Namespace) -> int:
    from ..ops.lifecycle import start

    return start(args.name)


def cmd_stop(args: argparse.Namespace) -> int:
    from ..ops.lifecycle import stop

    return stop(args.name)


def cmd_logs(args: argparse.Namespace) -> int:
    from ..ops.logs import LogQuery, show_logs

    query = LogQuery(
        name=args.name,
        follow=args.follow,
        lines=args.lines,
        worker=args.worker,
        priority=args.priority,
        since=args.since,
        as_json=args.json,
    )
    return show_logs(query)


def cmd_exec(args: argparse.Namespace) -> int:
    from ..ops.oneoff import exec_command

    return exec_command(args.name, args.command)


def register(sub: Sub) -> None:
    """Add the operator commands to the CLI; each lives in sockact.ops."""
    from .units import add_unit_options

    install = _add(
        sub,
        "install",
        "check the app, write the units, daemon-reload, optionally start it (until "
        "every worker is ready) and enable it",
        INSTALL_EXAMPLE,
    )
    add_unit_options(install)
    _unit_dir(install, "$SOCKACT_UNIT_DIR, else /etc/systemd/system")
    install.add_argument("--enable", action="store_true", help="start NAME.socket on boot (like pm2 startup)")
    install.add_argument(
        "--now",
        action="store_true",
        help="start NAME.socket and every worker now and wait until each is ready (READY=1); "
        "a fresh install whose app does not start is removed again, with the app's reason",
    )
    install.add_argument(
        "--dry-run",
        action="store_true",
        help="run the checks alone (interpreter, --chdir, --env-file, the app's import under the "
        "workers' sandbox, the ports) and say what would be written; change nothing",
    )
    install.set_defaults(func=cmd_install)

    uninstall = _add(sub, "uninstall", "stop (draining), disable and remove an app's units", UNINSTALL_EXAMPLE)
    uninstall.add_argument("name", help="the app name given to install")
    _unit_dir(uninstall, "$SOCKACT_UNIT_DIR, else where systemd loaded NAME.target from")
    uninstall.set_defaults(func=cmd_uninstall)

    listing = _add(sub, "list", "the apps sockact installed on this host, with state and worker counts", LIST_EXAMPLE)
    _unit_dir(listing, "$SOCKACT_UNIT_DIR, else /etc/systemd/system and /run/systemd/system")
    listing.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    listing.set_defaults(func=cmd_list)

    status = _add(
        sub, "status", "socket, backlog and one row per worker (state, PID, RSS, CPU, requests)", STATUS_EXAMPLE
    )
    status.add_argument("name", help="the app name")
    status.add_argument("--json", action="store_true", help="one JSON document (schema in sockact.ops.status)")
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=_interval,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C, like pm2 monit",
    )
    status.set_defaults(func=cmd_status)

    scale = _add(sub, "scale", "set the worker count live and keep it across restarts", SCALE_EXAMPLE)
    scale.add_argument("name", help="the app name")
    scale.add_argument("count", metavar="N|auto", help="worker count, or auto for the CPUs usable here")
    scale.set_defaults(func=cmd_scale)

    reload = _add(
        sub, "reload", "rolling restart for new code: one worker at a time, each ready before the next", RELOAD_EXAMPLE
    )
    reload.add_argument("name", help="the app name")
    reload.set_defaults(func=cmd_reload)

    start = _add(
        sub, "start", "clear failed states, start the socket and every worker, wait until ready", START_EXAMPLE
    )
    start.add_argument("name", help="the app name")
    start.set_defaults(func=cmd_start)

    stop = _add(sub, "stop", "drain and stop every worker and close the socket", STOP_EXAMPLE)
    stop.add_argument("name", help="the app name")
    stop.set_defaults(func=cmd_stop)

    logs = _add(sub, "logs", "every worker's journal merged, each line tagged with its worker", LOGS_EXAMPLE)
    logs.add_argument("name", help="the app name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    logs.add_argument(
        "-n",
        "--lines",
        type=_positive,
        default=None,
        metavar="N",
        help="the last N lines (default: 20, or 10 with --follow)",
    )
    logs.add_argument("--worker", type=_positive, metavar="K", help="only worker K (NAME@K.service)")
    logs.add_argument(
        "-p",
        "--priority",
        type=_priority,
        metavar="LEVEL",
        help="only this priority or more urgent: " + ", ".join(PRIORITIES) + " or 0-7",
    )
    logs.add_argument("--since", metavar="TIME", help="journalctl --since, e.g. '10 min ago' or '2026-01-01 12:00'")
    logs.add_argument("--json", action="store_true", help="print the journal's JSON records as they are")
    logs.set_defaults(func=cmd_logs)

    run_once = _add(
        sub,
        "exec",
        "run a command once as the workers run (migrate, createsuperuser, a shell); exits with its status",
        EXEC_EXAMPLE,
    )
    run_once.add_argument("name", help="the app name")
    run_once.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- CMD ...",
        help="the command and its arguments; a bare name is looked up in the workers' PATH, "
        "where the directory of the workers' interpreter comes first",
    )
    run_once.set_defaults(func=cmd_exec)
