"""`sockact generate` and `sockact kube`, and the unit options they share with `install`: the option
definitions, and the validated spec built from them (spec_from)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from ..generator.spec import UnitSpec  # the generator is imported only when a command needs it
    from .main import Sub

GENERATE_EXAMPLE = """\
examples:
  sockact generate myapp --app myproj.asgi:app --listen 8000 --workers auto --chdir /srv/myproj
  sockact generate myapp --app myproj.asgi:app --listen 8000 --only socket | sudo tee /etc/systemd/system/myapp.socket
  sudo sockact generate myapp --app myproj.asgi:app --listen 8000 --output-dir /etc/systemd/system
"""

KUBE_DESCRIPTION = """\
The options of `sockact generate`, rendered for Kubernetes: one worker per pod, --workers N replicas
(auto: 2), the sandbox as a securityContext, the writable directories as emptyDir volumes, probes on
`sockact run --health-listen` (port 9000 unless given), terminationGracePeriodSeconds from
--stop-timeout and --drain-delay. --exec, --env-file, a named --user and a percentage --memory-max
have no counterpart in a pod and are refused.
"""
KUBE_EXAMPLE = """\
examples:
  sockact kube myapp --app myproj.asgi:app --listen 8000 --image registry.example.com/myapp:1.4.2 | kubectl apply -f -
  sockact kube myapp --app myproj.wsgi:application --listen 8000 --image myapp:1.4.2 --workers 4 --memory-max 512M
"""


def add_unit_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe an app's units; shared by generate and install."""
    parser.add_argument("name", help="app name: the unit-name prefix (NAME.socket, NAME@.service, NAME.target)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--app", metavar="MODULE:ATTR", help="ASGI/WSGI app served by the built-in runtime")
    what.add_argument("--exec", dest="exec_cmd", metavar="CMD", help="any command that adopts LISTEN_FDS itself")
    parser.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="ADDR",
        help="PORT, HOST:PORT, [V6ADDR]:PORT or /absolute/unix.sock; repeatable",
    )
    parser.add_argument("--workers", default="auto", metavar="auto|N", help="worker count (default: CPUs usable here)")
    parser.add_argument("--chdir", metavar="DIR", help="working directory of the workers")
    parser.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment variable; repeatable")
    parser.add_argument("--env-file", metavar="PATH", help="EnvironmentFile= for the workers")
    parser.add_argument("--user", metavar="USER", help="run the workers as this user")
    parser.add_argument("--python", metavar="PATH", help="interpreter for --app (default: the one running sockact)")
    parser.add_argument(
        "--container",
        metavar="IMAGE",
        help="run each worker in a podman container of IMAGE (its `sockact run`, the socket passed "
        "in, no network; see docs/containers.md); --user is then a UID[:GID] in the container",
    )
    parser.add_argument(
        "--watchdog",
        metavar="SECONDS",
        help="WatchdogSec=: restart a worker whose serving loop stops for this long (default with --app: 10; 0: off)",
    )
    parser.add_argument(
        "--request-timeout",
        metavar="SECONDS",
        help="restart a WSGI worker whose every thread has run one request this long, "
        "and log the request that blocks an ASGI worker's event loop (default: 30; 0: off)",
    )
    parser.add_argument(
        "--stop-timeout", metavar="SECONDS", default="30", help="TimeoutStopSec= and the drain deadline (default: 30)"
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: it costs throughput and journald's rate limit)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        help="behind a proxy: take the client's address and scheme from X-Forwarded-For, "
        "X-Forwarded-Proto and Forwarded, but only on connections from these peers: "
        "addresses and networks separated by commas (127.0.0.1,::1,10.0.0.0/8), unix for "
        "a proxy on a Unix socket, * for every peer (default: off)",
    )
    health = parser.add_argument_group(
        "health and drain", "built-in runtime (--app) only: for a load balancer or an orchestrator in front"
    )
    health.add_argument(
        "--health-listen",
        metavar="ADDR",
        help="NAME-health.socket listens here, shared by every worker: GET /ready answers 200 while "
        "a worker of the app has started and is not leaving (so a reload keeps it 200), GET "
        "/live 503 while the answering worker's serving loop or every WSGI thread is stuck "
        "(default: off; sockact kube: port 9000)",
    )
    health.add_argument(
        "--drain-delay",
        metavar="SECONDS",
        help="on stop, /ready answers 503 at once but the workers keep accepting this long before "
        "they drain; skipped by a worker while another one serves (reload, scale-down); counts "
        "inside --stop-timeout (default: 0; sockact kube: 5, or half of --stop-timeout when "
        "that is shorter)",
    )
    add_http_limits(parser)
    memory = parser.add_argument_group(
        "memory",
        "limits per worker; a worker past --max-requests or --max-rss drains like on SIGTERM and "
        "exits with status 4, and systemd starts it again at once while the others serve",
    )
    memory.add_argument(
        "--memory-max",
        metavar="SIZE",
        help="MemoryMax=: the kernel kills a worker above SIZE (OOM) and systemd restarts it; "
        "e.g. 512M, 2G or 25%% of the host "
        "(default: no limit; needs the cgroup v2 memory controller)",
    )
    memory.add_argument(
        "--memory-high",
        metavar="SIZE",
        help="MemoryHigh=: above SIZE the kernel reclaims the worker's memory and slows it down (default: no limit)",
    )
    memory.add_argument(
        "--max-requests",
        metavar="N",
        default="0",
        help="recycle a worker after N requests, like gunicorn's max_requests (default: 0, off)",
    )
    memory.add_argument(
        "--max-requests-jitter",
        metavar="J",
        default="0",
        help="each worker recycles after a number drawn from N to N+J, so they do not all "
        "recycle together (default: 0)",
    )
    memory.add_argument(
        "--max-rss",
        metavar="MIB",
        default="0",
        help="recycle a worker once its resident memory passes MIB MiB, checked every 0.1 s; keep "
        "it below --memory-max so the worker leaves before the kernel kills it (default: 0, off)",
    )
    sandbox = parser.add_argument_group(
        "sandbox",
        "workers run as a dynamic user on a read-only system (systemd-analyze security: 1.1); "
        "these options give an app that needs more exactly that",
    )
    sandbox.add_argument("--state-dir", metavar="DIR", help="StateDirectory=: writable /var/lib/DIR ($STATE_DIRECTORY)")
    sandbox.add_argument(
        "--cache-dir", metavar="DIR", help="CacheDirectory=: writable /var/cache/DIR ($CACHE_DIRECTORY)"
    )
    sandbox.add_argument("--logs-dir", metavar="DIR", help="LogsDirectory=: writable /var/log/DIR ($LOGS_DIRECTORY)")
    sandbox.add_argument(
        "--writable",
        action="append",
        metavar="PATH",
        help="ReadWritePaths=: let the workers write there (file permissions still apply); repeatable",
    )
    sandbox.add_argument(
        "--allow-jit",
        action="store_true",
        help="drop MemoryDenyWriteExecute= for JITs and cffi callbacks (score stays 1.1)",
    )
    sandbox.add_argument(
        "--no-harden",
        dest="harden",
        action="store_false",
        help="no sandbox at all: the workers run as root unless --user is given (score 9.6)",
    )


def add_http_limits(parser: argparse.ArgumentParser) -> None:
    """`sockact run`'s HTTP limits; left out, the unit keeps the runtime's defaults (given in each help)."""
    http = parser.add_argument_group(
        "HTTP limits",
        "built-in runtime (--app) only: a request past a limit is refused with the status named "
        "and its connection closed",
    )
    http.add_argument(
        "--max-body",
        metavar="BYTES",
        help="request body size: 413 past it (suffixes K, M, G, 1024-based; 0: no limit; default: 100M)",
    )
    http.add_argument("--max-headers", metavar="N", help="header fields per request: 431 past it (default: 100)")
    http.add_argument("--max-header-size", metavar="BYTES", help="one header field line: 431 past it (default: 8190)")
    http.add_argument(
        "--max-target", metavar="BYTES", help="the request target (path and query): 414 past it (default: 8190)"
    )
    http.add_argument(
        "--head-timeout",
        metavar="SECONDS",
        help="a request head, or a body that stops arriving, taking longer is dropped with 408 (default: 10)",
    )
    http.add_argument(
        "--keep-alive", metavar="SECONDS", help="an idle keep-alive connection is closed after this long (default: 5)"
    )
    http.add_argument(
        "--send-timeout",
        metavar="SECONDS",
        help="a client that takes no byte of its response for this long is dropped (default: 30)",
    )


def spec_from(args: argparse.Namespace) -> UnitSpec:
    from ..generator import versions

    if args.container is not None and args.python is not None:
        raise UsageError(
            "--python names a host interpreter; with --container the workers run the image's own "
            "`sockact` (on its PATH), so leave --python out"
        )
    given = getattr(args, "systemd_version", None)  # only generate has the option; install asks systemd
    detected = versions.running_version() if given is None else versions.Detected(0)
    built = build_spec(args, detected.version if given is None else given)
    from ..generator.cgroups import memory_note
    from ..generator.sandbox import unreadable_note

    for note in (detected.note, unreadable_note(built), memory_note(built)):
        if note:
            sys.stderr.write(f"sockact: {note}\n")
    return built


def build_spec(args: argparse.Namespace, systemd_version: int | str) -> UnitSpec:
    """The validated spec of add_unit_options' arguments, for units of that systemd version."""
    from ..generator import spec

    return spec.build(
        unit_name=args.name,
        listen=args.listen,
        python_path=sys.executable if args.python is None else args.python,
        app_ref=args.app,
        exec_cmd=args.exec_cmd,
        worker_count=args.workers,
        chdir=args.chdir,
        env=args.env,
        env_file=args.env_file,
        run_as=args.user,
        watchdog=args.watchdog,
        request_timeout=args.request_timeout,
        stop_timeout=args.stop_timeout,
        systemd_version=systemd_version,
        harden=args.harden,
        allow_jit=args.allow_jit,
        state_dir=args.state_dir,
        cache_dir=args.cache_dir,
        logs_dir=args.logs_dir,
        writable=args.writable,
        access_log=args.access_log,
        memory_max=args.memory_max,
        memory_high=args.memory_high,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        max_rss=args.max_rss,
        forwarded_allow_ips=args.forwarded_allow_ips,
        max_body=args.max_body,
        max_headers=args.max_headers,
        max_header_size=args.max_header_size,
        max_target=args.max_target,
        head_timeout=args.head_timeout,
        keep_alive=args.keep_alive,
        send_timeout=args.send_timeout,
        health_listen=args.health_listen,
        drain_delay="0" if args.drain_delay is None else args.drain_delay,
        container=args.container,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from ..generator.render import as_listing, render

    if args.explain:
        from ..generator.explain import explain

        sys.stdout.write(explain(spec_from(args)))
        return 0
    built = spec_from(args)
    units = render(built)
    if not (args.only or args.output_dir or sys.stdout.isatty()):
        sys.stderr.write(split_hint(built.name, getattr(args, "argv", []), built.health_listen is not None))
    if args.only:
        chosen = [unit.text for unit in units if unit.kind == args.only]
        if not chosen:
            raise UsageError("--only health-socket: there is no NAME-health.socket without --health-listen ADDR")
        sys.stdout.write(chosen[0])
    elif args.output_dir:
        from ..generator.writer import write_units

        for path in write_units(units, args.output_dir):
            print(f"wrote {path}")
    else:
        sys.stdout.write(as_listing(units))
    return 0


def split_hint(name: str, argv: Sequence[str], health: bool = False) -> str:
    """How to write the three units when stdout goes to a pipe or a file: one `tee` makes one broken unit file."""
    import shlex

    from ..ops import DEFAULT_UNIT_DIR

    given = shlex.join(["sockact", *argv])
    from ..generator.render import unit_filenames

    files = unit_filenames(name, health)
    count = "four" if health else "three"
    lines = [
        f"  {given} --only {kind} | sudo tee {DEFAULT_UNIT_DIR}/{file} >/dev/null\n" for kind, file in files.items()
    ]
    return (
        f"sockact: stdout holds {count} units in one listing; one `tee` of it makes one broken unit file. "
        "Write each unit with --only:\n"
        + "".join(lines)
        + f"or all {count} at once: sudo {given} --output-dir {DEFAULT_UNIT_DIR}\n"
        "(then `sudo systemctl daemon-reload`; `sudo sockact install` does all of this)\n"
    )


def cmd_kube(args: argparse.Namespace) -> int:
    from ..generator import kube, versions

    # The units' systemd version plays no part in a pod; host notes (cgroups, readable paths) neither.
    built = kube.build(
        build_spec(args, versions.FALLBACK),
        image=args.image,
        workers=args.workers,
        drain_given=args.drain_delay is not None,
    )
    for note in kube.notes(built):
        sys.stderr.write(f"sockact: {note}\n")
    if args.output_dir:
        from ..generator.writer import write_units

        for path in write_units(kube.files(built), args.output_dir):
            print(f"wrote {path}")
    else:
        sys.stdout.write(kube.render(built))
    return 0


def register(sub: Sub) -> None:
    """generate and kube: the units, or a Kubernetes manifest, of one app's options."""
    gen = sub.add_parser(
        "generate",
        help="print or write NAME.socket, NAME@.service, NAME.target",
        epilog=GENERATE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_unit_options(gen)
    out = gen.add_mutually_exclusive_group()
    out.add_argument("--output-dir", metavar="DIR", help="write the three unit files there (all or nothing)")
    out.add_argument(
        "--only",
        choices=("socket", "service", "target", "health-socket"),
        help="print that one unit's text alone (health-socket: NAME-health.socket, with --health-listen)",
    )
    out.add_argument(
        "--explain",
        action="store_true",
        help="print what each sandbox and memory line of NAME@.service does and costs, instead of the units",
    )
    gen.add_argument(
        "--systemd-version",
        metavar="N",
        help="render for this systemd major version (default: the running one, see systemctl --version)",
    )
    gen.set_defaults(func=cmd_generate)

    kube = sub.add_parser(
        "kube",
        help="print or write a Kubernetes Deployment, Service and PodDisruptionBudget of the same app",
        description=KUBE_DESCRIPTION,
        epilog=KUBE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_unit_options(kube)
    kube.add_argument(
        "--image",
        required=True,
        metavar="IMAGE",
        help="the container image, with sockact and the app installed: [REGISTRY/]REPOSITORY[:TAG][@DIGEST]",
    )
    kube.add_argument(
        "--output-dir",
        metavar="DIR",
        help="write NAME-deployment.yaml, NAME-service.yaml and NAME-pdb.yaml there (all or nothing)",
    )
    kube.set_defaults(func=cmd_kube)
