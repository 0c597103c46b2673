"""`sockact run MODULE:ATTR`: the entry point of every worker."""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from ..errors import RuntimeFailure, SockactError

logger = logging.getLogger("sockact.runtime")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sockact run",
        description="Serve MODULE:ATTR on the sockets systemd passes (LISTEN_FDS), or on --bind without systemd.",
        epilog="example:\n  sockact run myproj.asgi:application --bind 127.0.0.1:8000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", metavar="MODULE:ATTR")
    parser.add_argument("--bind", action="append", metavar="ADDR", help="bind this address when systemd passed no socket")
    parser.add_argument("--stop-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="drain deadline after SIGTERM (match TimeoutStopSec=)")
    parser.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    parser.add_argument("--interface", default="auto", choices=("auto", "asgi3", "asgi2", "wsgi"),
                        help="protocol of the app (default: detected)")
    parser.add_argument("--request-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                        help="WSGI: a worker whose every thread has run one request this long stops its watchdog "
                             "pings and is restarted; ASGI: a request that blocks the event loop this long is "
                             "logged (0: off; default: 30)")
    parser.add_argument("--threads", type=int, default=10, metavar="N", help="WSGI threads per worker (default: 10)")
    parser.add_argument("--wsgi-engine", default="threads", choices=("threads", "waitress", "asgi"),
                        help="WSGI apps: sockact's threads on one epoll set (default), waitress's thread pool, "
                             "or a2wsgi on the ASGI engine")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser.parse_args(argv)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(text)
    return value


def load_app(reference: str) -> Any:
    """Import MODULE:ATTR; an error becomes one line naming the app's own failing line."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise RuntimeFailure(f"{reference!r} is not MODULE:ATTR, e.g. myproj.asgi:application")
    sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the app's own import error, reported in one line
        raise RuntimeFailure(f"cannot import {module_name}: {one_line(exc)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RuntimeFailure(f"module {module_name} has no attribute {attr!r}; check --app") from None
    return obj


def one_line(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def sockets_for(bind: list[str] | None) -> list[Any]:
    from .listen import bind as bind_address
    from .listen import listeners

    adopted = listeners()
    if adopted:
        return adopted
    if bind:
        return [bind_address(address) for address in bind]
    raise RuntimeFailure("no sockets: systemd passed none (LISTEN_FDS unset) and no --bind was given; "
                         "start it through its socket unit or add --bind 127.0.0.1:8000")


def _has_httptools() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    from . import logs

    logs.setup(getattr(logging, args.log_level.upper()))
    # systemd's watchdog kills with SIGABRT: every thread's Python stack goes to the journal first.
    faulthandler.enable()
    try:
        from .share import mode_from_env

        mode_from_env()  # a bad SOCKACT_CPU_SHARE stops the worker before it binds or imports anything
        sockets = sockets_for(args.bind)
        app = load_app(args.app)
        from .interface import detect
        from .notify import default_notifier

        interface = detect(app) if args.interface == "auto" else args.interface
        if interface == "wsgi" and args.wsgi_engine in ("threads", "waitress"):
            if args.wsgi_engine == "threads" and _has_httptools():
                from .httpd import run as run_wsgi
            else:
                if args.wsgi_engine == "threads":
                    logger.info("httptools is not installed: serving with waitress (pip install httptools, "
                                "or apt install python3-httptools, for sockact's faster WSGI engine)")
                from .wsgi import run as run_wsgi

            run_wsgi(app, sockets, threads=args.threads, stop_timeout=args.stop_timeout, notifier=default_notifier(),
                     access_log=args.access_log, request_timeout=args.request_timeout)
        else:
            from .server import run

            run(app, sockets, stop_timeout=args.stop_timeout, access_log=args.access_log,
                notifier=default_notifier(), interface=interface, threads=args.threads,
                request_timeout=args.request_timeout)
    except SockactError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
