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
from typing import TYPE_CHECKING, Any

from ..errors import RuntimeFailure, SockactError
from . import http11, limits, sizes
from .interface import INTERFACES
from .notify import Notifier

if TYPE_CHECKING:
    from .forwarded import ProxyTrust
    from .health import State
    from .recycle import Recycler

logger = logging.getLogger("sockact.runtime")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.drain_delay and args.drain_delay >= args.stop_timeout:
        # One line, exit status 2, like every usage mistake: the delay must leave time to drain.
        sys.stderr.write(
            f"sockact run: --drain-delay {args.drain_delay:g} is not below --stop-timeout "
            f"{args.stop_timeout:g}; the delay counts inside the stop timeout, lower it\n"
        )
        raise SystemExit(2)
    return args


def build_parser() -> argparse.ArgumentParser:
    """`sockact run`'s arguments; also read by sockact/manpage.py to write its section of the man page."""
    parser = argparse.ArgumentParser(
        prog="sockact run",
        description="Serve MODULE:ATTR on the sockets systemd passes (LISTEN_FDS), or on --bind without systemd.",
        epilog="example:\n  sockact run myproj.asgi:application --bind 127.0.0.1:8000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("app", metavar="MODULE:ATTR")
    parser.add_argument(
        "--bind", action="append", metavar="ADDR", help="bind this address when systemd passed no socket"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="drain deadline after SIGTERM (match TimeoutStopSec=)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    parser.add_argument(
        "--interface", default="auto", choices=INTERFACES, help="protocol of the app (default: detected)"
    )
    parser.add_argument(
        "--request-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="WSGI: a worker whose every thread has run one request this long stops its watchdog "
        "pings and is restarted; ASGI: a request that blocks the event loop this long is "
        "logged (0: off; default: 30)",
    )
    parser.add_argument("--threads", type=int, default=10, metavar="N", help="WSGI threads per worker (default: 10)")
    parser.add_argument(
        "--respawn",
        action="store_true",
        help="keep a parent that forks the serving process again at once when it crashes "
        "(sockact's units use it; the unit needs NotifyAccess=all)",
    )
    parser.add_argument(
        "--health-listen",
        metavar="ADDR",
        help="answer GET /ready and /live on this address (HOST:PORT, [V6]:PORT or a socket path), "
        "from a thread of its own; under systemd the socket named 'health' in LISTEN_FDNAMES "
        "is used instead (default: off)",
    )
    parser.add_argument(
        "--drain-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="after SIGTERM, while no other worker of the app serves, /ready answers 503 at once but "
        "the worker goes on accepting this long before it drains, so load balancers take the "
        "host out first; counts inside --stop-timeout (default: 0)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--forwarded-allow-ips",
        type=proxy_trust,
        metavar="LIST",
        help="believe X-Forwarded-For, X-Forwarded-Proto and Forwarded only from these peers: IP "
        "addresses and networks separated by commas (127.0.0.1,::1,10.0.0.0/8), unix for "
        "a Unix socket, or * for every peer (default: off, the headers change nothing)",
    )
    http = parser.add_argument_group(
        "HTTP limits", "a request past a limit is refused with the status named and its connection closed"
    )
    default = http11.DEFAULT_LIMITS
    http.add_argument(
        "--max-body",
        type=size,
        default=default.max_body,
        metavar="BYTES",
        help="request body size: 413, from Content-Length before the body is read, or once a chunked "
        "body passes it (suffixes K, M, G; 0: no limit; default: 100M)",
    )
    http.add_argument(
        "--max-headers",
        type=positive,
        default=default.max_fields,
        metavar="N",
        help=f"header fields per request: 431 past it (default: {default.max_fields})",
    )
    http.add_argument(
        "--max-header-size",
        type=size,
        default=default.max_field,
        metavar="BYTES",
        help=f"one header field line: 431 past it (default: {default.max_field})",
    )
    http.add_argument(
        "--max-target",
        type=size,
        default=default.max_target,
        metavar="BYTES",
        help=f"the request target (path and query): 414 past it (default: {default.max_target})",
    )
    http.add_argument(
        "--head-timeout",
        type=_seconds,
        default=default.head_timeout,
        metavar="SECONDS",
        help="a request head (or a body) still arriving after this long is dropped with 408 "
        f"(default: {default.head_timeout:g})",
    )
    http.add_argument(
        "--keep-alive",
        type=_seconds,
        default=default.keep_alive,
        metavar="SECONDS",
        help=f"an idle keep-alive connection is closed after this long (default: {default.keep_alive:g})",
    )
    http.add_argument(
        "--send-timeout",
        type=_seconds,
        default=default.send_timeout,
        metavar="SECONDS",
        help="a client that takes no byte of its response for this long is dropped "
        f"(default: {default.send_timeout:g})",
    )
    recycling = parser.add_argument_group(
        "recycling",
        "a worker past a limit drains as on SIGTERM and exits with status 4; systemd starts it "
        "again at once while its siblings serve",
    )
    recycling.add_argument(
        "--max-requests", type=count, default=0, metavar="N", help="recycle after N requests (default: 0, off)"
    )
    recycling.add_argument(
        "--max-requests-jitter",
        type=count,
        default=0,
        metavar="J",
        help="each worker draws its own limit in [N, N+J], so siblings do not recycle together (default: 0)",
    )
    recycling.add_argument(
        "--max-rss",
        type=count,
        default=0,
        metavar="MIB",
        help="recycle once the worker's resident memory passes MIB MiB, checked every 0.1 s "
        "(default: 0, off: a fitting limit depends on the app)",
    )
    return parser


def count(text: str) -> int:
    """A whole number, 0 or more; argparse reports anything else as a usage error (exit status 2)."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def size(text: str) -> int:
    """Bytes: a whole number with an optional K, M or G suffix (powers of 1024); see runtime/sizes.py."""
    try:
        return sizes.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> int:
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def limits_of(args: argparse.Namespace) -> http11.Limits:
    return http11.Limits(
        max_target=args.max_target,
        max_fields=args.max_headers,
        max_field=args.max_header_size,
        max_body=args.max_body,
        head_timeout=args.head_timeout,
        keep_alive=args.keep_alive,
        send_timeout=args.send_timeout,
    )


def proxy_trust(text: str) -> ProxyTrust:
    """--forwarded-allow-ips; a bad list is a usage error (exit status 2) in one line."""
    from .forwarded import ProxyTrust

    try:
        return ProxyTrust(text)
    except SockactError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def recycler_for(args: argparse.Namespace) -> Recycler | None:
    """A Recycler when a limit is on, else None (the engines then ask nothing per request)."""
    from .recycle import Limits, Recycler

    limits = Limits(args.max_requests, args.max_requests_jitter, args.max_rss)
    return Recycler(limits) if limits.any else None


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
        in_full(f"cannot import {module_name}", exc)
        raise RuntimeFailure(f"cannot import {module_name}: {one_line(exc)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RuntimeFailure(f"module {module_name} has no attribute {attr!r}; check --app") from None
    return obj


def one_line(exc: BaseException) -> str:
    """'Type: message (at the app's file:line)'; the import machinery's own frames name no place of the app's."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ") and not _is_importlib(frame.filename)
    ]
    app_frames = [frame for frame in frames if frame.filename != __file__]
    where = f" (at {app_frames[-1].filename}:{app_frames[-1].lineno})" if frames and frames[-1] in app_frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def in_full(what: str, exc: BaseException) -> None:
    """The whole traceback of a failure reported in one line. Under the journal it goes at debug priority
    whatever --log-level says (`journalctl -p debug -u NAME@1` or `sockact logs NAME` show it; every other
    view keeps one line per attempt); on a terminal only with --log-level debug."""
    from .logs import under_journal

    if not under_journal() and not logger.isEnabledFor(logging.DEBUG):
        return
    logger.handle(
        logger.makeRecord(
            logger.name, logging.DEBUG, __file__, 0, "%s, in full:", (what,), (type(exc), exc, exc.__traceback__)
        )
    )


def _is_importlib(filename: str) -> bool:
    return os.path.dirname(filename) == os.path.dirname(importlib.__file__ or "")


def sockets_for(bind: list[str] | None) -> list[Any]:
    from .listen import bind as bind_address
    from .listen import listeners

    adopted = listeners()
    if adopted:
        return adopted
    if bind:
        return [bind_address(address) for address in bind]
    raise RuntimeFailure(
        "no sockets: systemd passed none (LISTEN_FDS unset) and no --bind was given; "
        "start it through its socket unit or add --bind 127.0.0.1:8000"
    )


def health_sockets_for(address: str | None) -> list[Any]:
    """The health endpoint's sockets: the one systemd passed as "health", else --health-listen bound here."""
    from .listen import bind as bind_address
    from .listen import health_listeners

    adopted = health_listeners()
    if adopted or address is None:
        return adopted
    return [bind_address(address, "--health-listen")]


def start_health(args: argparse.Namespace, sockets: list[Any]) -> State | None:
    """Serve /ready and /live from a thread of this (serving) process; None when there is no health socket."""
    if not sockets:
        return None
    from .balance import siblings_view
    from .health import Endpoint, State
    from .notify import watchdog_interval
    from .stuck import DEFAULT_REQUEST_TIMEOUT, loop_limit

    # The watchdog side's own limit; with both timeouts off a loop still counts as blocked after 30 s.
    state = State(loop_limit(args.request_timeout, watchdog_interval()) or DEFAULT_REQUEST_TIMEOUT)
    state.others = siblings_view()  # while starting, /ready answers for the host from the siblings' slots
    Endpoint(sockets, state).start()
    return state


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    from . import boot, logs
    from .notify import default_notifier

    logs.setup(getattr(logging, args.log_level.upper()))
    limits.prepare()
    # systemd's watchdog kills with SIGABRT: every thread's Python stack goes to the journal first.
    faulthandler.enable()
    notifier = default_notifier()
    try:
        from .share import mode_from_env

        mode_from_env()  # a bad SOCKACT_CPU_SHARE stops the worker before it binds or imports anything
        sockets = sockets_for(args.bind)  # adopted here: LISTEN_PID names this process, not a forked one
        health = health_sockets_for(args.health_listen)
    except SockactError as exc:
        boot.failed(str(exc), notifier)
        return exc.exit_code
    if args.respawn:
        from .respawn import supervise

        return supervise(lambda: serve_once(args, sockets, notifier, health), notifier)
    return serve_once(args, sockets, notifier, health)


def serve_once(args: argparse.Namespace, sockets: list[Any], notifier: Notifier, health: list[Any]) -> int:
    """Serve until SIGTERM (or a recycle); the exit status. A failure before READY=1 is a boot
    failure, retried by systemd after a growing delay; one after it is a crash."""
    from . import boot

    try:
        recycler = serve(args, sockets, notifier, start_health(args, health))
    except SockactError as exc:
        if exc.exit_code != RuntimeFailure.exit_code or boot.ready():
            logger.error("%s", exc)
            return exc.exit_code
        boot.failed(str(exc), notifier)
        return exc.exit_code
    except Exception as exc:
        if boot.ready():
            raise  # a crash while serving: restarted at once
        # Anything else that stops a worker before READY=1 is a boot failure too, retried with a delay.
        in_full("cannot start", exc)
        boot.failed(f"cannot start: {one_line(exc)}", notifier)
        return RuntimeFailure.exit_code
    return recycler.exit_status() if recycler is not None else 0


def serve(
    args: argparse.Namespace, sockets: list[Any], notifier: Notifier, health: State | None = None
) -> Recycler | None:
    """Serve until SIGTERM (or a recycle); the recycler, if a limit was on, says how to exit."""
    from . import boot

    app = load_app(args.app)
    from .interface import detect

    interface = detect(app) if args.interface == "auto" else args.interface
    recycler = recycler_for(args)
    from .server import run

    boot.engine = run.__module__
    run(
        app,
        sockets,
        stop_timeout=args.stop_timeout,
        access_log=args.access_log,
        notifier=notifier,
        interface=interface,
        threads=args.threads,
        recycler=recycler,
        request_timeout=args.request_timeout,
        limits=limits_of(args),
        proxies=args.forwarded_allow_ips,
        health=health,
        drain_delay=args.drain_delay,
    )
    return recycler


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
