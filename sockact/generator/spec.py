"""The validation layer: user input in, frozen unit specs out. No I/O beyond reading the CPU count."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shlex
import socket
import unicodedata
from dataclasses import dataclass
from typing import Literal

from ..contract import instance_unit
from ..errors import UsageError
from . import versions

# systemd's unit-name alphabet (unit_name_is_valid); '@' is excluded because NAME becomes
# the prefix of the template NAME@.service, and '\\' because sockact never emits escaped names.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_NAME_MAX = 200  # leaves room for "@NNNN.service" under systemd's 255-byte limit
_UNIT_SUFFIXES = (".service", ".socket", ".target", ".timer", ".mount", ".path", ".slice", ".scope")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER_RE = re.compile(r"(?:[a-z_][a-z0-9_-]{0,30}[a-z0-9_$-]?|[0-9]{1,10})")
_SECONDS_RE = re.compile(r"[0-9]+(?:\.[0-9]{1,6})?")
_MAX_WORKERS = 1024
# StateDirectory= and friends: relative paths below /var/lib, /var/cache, /var/log. ':' is excluded
# because systemd 255+ reads "SOURCE:LINK" there, spaces because the setting is a list.
_DIR_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
_DIR_NAME_MAX = 200
# systemd's strict user-name rule, which DynamicUser= names must pass (at most 31 characters).
_DYNAMIC_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,30}")
_DYNAMIC_USER_PREFIX = "sockact-"
_ROOT_USERS = ("root", "0")
# systemd refuses UIDs past 32 bits and the two "-1" values, (uid_t) -1 and the 16-bit 65535.
_UID_MAX = 4294967294
_UID_16BIT_MINUS_1 = 65535
# `--container`: an image reference as podman reads it (registry[:port]/path[:tag][@digest]), after the
# reference grammar of the containers/image library; the path is lowercase, the tag at most 128 characters.
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?/)"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"{_DOMAIN}?{_PATH_PART}(?:/{_PATH_PART})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_IMAGE_NAME_MAX = 255
# podman's container names: letters, digits and '_.-' after a first letter or digit ("sockact-NAME-N").
_CONTAINER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# A container's user is numeric: the host makes its directories owned by it, and cannot read the image's names.
_CONTAINER_USER_RE = re.compile(r"([0-9]{1,10})(?::([0-9]{1,10}))?")
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
# MemoryMax=/MemoryHigh=: bytes with systemd's 1024-based suffixes, or a percentage of the host's memory.
_SIZE_RE = re.compile(r"([0-9]{1,19})([KMGT]?)")
_PERCENT_RE = re.compile(r"([0-9]{1,3})%")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_MIN = 32 << 20  # a Python worker needs about 30 MiB before it serves anything
_COUNT_MAX = 10**9
# WatchdogSec= of the built-in runtime unless --watchdog says otherwise. Its pings come from the
# serving loop every WatchdogSec/4, and a healthy loop never stalls for seconds; an ASGI loop blocked
# this long has kept every other request waiting all that time. A command given with --exec may not
# ping at all, so it gets no watchdog unless asked for.
DEFAULT_WATCHDOG = "10"
# `sockact run --request-timeout`: gunicorn's --timeout, and half of nginx's proxy_read_timeout, so a
# stuck worker is restarted before the proxy in front has given up on the requests waiting for it.
DEFAULT_REQUEST_TIMEOUT = "30"


@dataclass(frozen=True)
class Listener:
    """One ListenStream= of the socket unit."""

    kind: Literal["tcp", "unix"]
    address: str  # exactly what follows "ListenStream=" before escaping

    @property
    def is_tcp(self) -> bool:
        return self.kind == "tcp"


@dataclass(frozen=True)
class UnitSpec:
    """Everything needed to render NAME.socket, NAME@.service and NAME.target."""

    name: str
    listeners: tuple[Listener, ...]
    workers: int
    python: str
    app: str | None = None
    exec_argv: tuple[str, ...] | None = None
    chdir: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None
    user: str | None = None
    watchdog: str | None = None  # WatchdogSec=, seconds as validated text; None: no watchdog
    request_timeout: str = DEFAULT_REQUEST_TIMEOUT  # `sockact run --request-timeout`; "0": off
    stop_timeout: str = "30"
    access_log: bool = False
    systemd_version: int = versions.FALLBACK
    harden: bool = True
    allow_jit: bool = False
    state_dir: str | None = None  # relative to /var/lib
    cache_dir: str | None = None  # relative to /var/cache
    logs_dir: str | None = None  # relative to /var/log
    writable: tuple[str, ...] = ()
    memory_max: str | None = None  # MemoryMax=, as validated text (512M, 2G, 25%)
    memory_high: str | None = None  # MemoryHigh=
    max_requests: int = 0  # sockact run --max-requests (0: off)
    max_requests_jitter: int = 0
    max_rss: int = 0  # sockact run --max-rss, MiB (0: off)
    forwarded_allow_ips: str | None = None  # sockact run --forwarded-allow-ips, canonical text (None: off)
    # sockact run's HTTP limits that differ from its defaults: (option, canonical value), in HTTP_LIMITS order
    http_limits: tuple[tuple[str, str], ...] = ()
    # sockact run --health-listen: NAME-health.socket listens here and passes its fd to every worker
    health_listen: Listener | None = None
    drain_delay: str | None = None  # sockact run --drain-delay, validated seconds below stop_timeout (None: 0)
    # `--container IMAGE`: each worker runs `sockact run` in a podman container of this image; `user` is
    # then the container's UID[:GID] (sockact.container), and the unit itself runs podman as root.
    container: str | None = None

    @property
    def dynamic_user(self) -> bool:
        return self.harden and self.user is None and self.container is None

    @property
    def run_as(self) -> str | None:
        """User= of the workers: the given account, or the name of their dynamic user, or None (root,
        which a container worker's unit needs to run podman)."""
        if self.container is not None:
            return None
        if self.user is not None:
            return self.user
        return dynamic_user_name(self.name) if self.harden else None

    def instance(self, index: int) -> str:
        return instance_unit(self.name, index)

    @property
    def instances(self) -> tuple[str, ...]:
        return tuple(self.instance(i) for i in range(1, self.workers + 1))


def dynamic_user_name(unit_name: str) -> str:
    """User= for DynamicUser=: "sockact-NAME", or a hash of NAME when that is no valid user name.

    Without User=, systemd names the dynamic user after the unit ("myapp") and, if an account of
    that name exists, runs the service as that account: an app called "root" would run as root.
    The "sockact-" prefix keeps the name away from the system's own accounts.
    """
    candidate = _DYNAMIC_USER_PREFIX + unit_name
    if _DYNAMIC_USER_RE.fullmatch(candidate):
        return candidate
    return _DYNAMIC_USER_PREFIX + hashlib.sha256(unit_name.encode()).hexdigest()[:16]


def reject_control(field: str, value: str) -> str:
    """Refuse newlines and other control or line-separator characters anywhere in a value."""
    if not isinstance(value, str):  # argparse turns "--opt=--" into [] instead of "--"
        raise UsageError(f"{field} got no value; write {field}=VALUE with a real value")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch == "\x7f":
            raise UsageError(
                f"{field} {value!r} contains the control character {ch!r}; "
                "remove it (unit files are line-based, so it could add a directive)"
            )
    return value


def name(value: str) -> str:
    reject_control("name", value)
    if value.endswith(_UNIT_SUFFIXES):
        stem = value.rsplit(".", 1)[0]
        raise UsageError(f"name {value!r} has a unit suffix; give the bare name, e.g. {stem!r}")
    if not _NAME_RE.fullmatch(value) or len(value) > _NAME_MAX:
        raise UsageError(
            f"name {value!r} is not a valid unit name prefix; use letters, digits and '_.:-', "
            f"starting with a letter or digit, at most {_NAME_MAX} characters (e.g. 'myapp')"
        )
    return value


def is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and other digits int() refuses or reads."""
    return text.isascii() and text.isdigit()


def port(text: str, whole: str, field: str = "--listen") -> int:
    if not is_number(text):
        raise UsageError(f"{field} {whole!r}: port {text!r} is not a number from 1 to 65535")
    if not 1 <= int(text) <= 65535:
        raise UsageError(f"{field} {whole!r}: port {text} is out of range (1-65535)")
    return int(text)


def listener(value: str, field: str = "--listen") -> Listener:
    """Parse PORT, HOST:PORT, [V6ADDR]:PORT or an absolute unix socket path."""
    reject_control(field, value)
    if is_number(value):
        return Listener("tcp", str(port(value, value, field)))
    if value.startswith("/"):
        return Listener("unix", _unix_path(value, field))
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]:")
        if not sep:
            raise UsageError(f"{field} {value!r}: write an IPv6 listener as [ADDRESS]:PORT, e.g. [::1]:8000")
        return Listener("tcp", f"[{ipv6(host, value, field)}]:{port(rest, value, field)}")
    host, sep, rest = value.rpartition(":")
    if not sep:
        raise UsageError(f"{field} {value!r} is not PORT, HOST:PORT, [V6ADDR]:PORT or an absolute unix socket path")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise UsageError(
            f"{field} {value!r}: {host!r} is not an IPv4 address; systemd listens on addresses, "
            "not host names (use e.g. 127.0.0.1:8000, [::1]:8000 or just the port)"
        ) from None
    return Listener("tcp", f"{host}:{port(rest, value, field)}")


def ipv6(host: str, whole: str, field: str = "--listen") -> str:
    """The address as systemd prints it back (inet_ntop), so the unit says what systemd will show."""
    if "%" in host:
        raise UsageError(
            f"{field} {whole!r}: scoped addresses (%IFACE) are not supported; listen on the address without the scope"
        )
    try:
        packed = ipaddress.IPv6Address(host).packed
    except ValueError:
        raise UsageError(f"{field} {whole!r}: {host!r} is not an IPv6 address") from None
    return socket.inet_ntop(socket.AF_INET6, packed)


def _unix_path(value: str, field: str = "--listen") -> str:
    path = file_path(field, value)
    if len(path.encode()) > _UNIX_PATH_MAX:
        raise UsageError(f"{field} {value!r}: a unix socket path may have at most {_UNIX_PATH_MAX} bytes")
    return path


def listen_port(item: Listener) -> int | None:
    """The TCP port of a validated listener ("8000", "127.0.0.1:8000", "[::1]:8000"); None for a unix socket."""
    return int(item.address.rpartition(":")[2]) if item.is_tcp else None


def health_listener(value: str, listeners: tuple[Listener, ...], builtin_runtime: bool) -> Listener:
    """--health-listen: an address of its own, on a port (or path) no --listen uses."""
    if not builtin_runtime:
        raise UsageError(
            "--health-listen applies to the built-in runtime (--app); "
            "a command given with --exec serves its own health checks"
        )
    health = listener(value, "--health-listen")
    for item in listeners:
        same_port = health.is_tcp and item.is_tcp and listen_port(health) == listen_port(item)
        if same_port or health == item:
            raise UsageError(
                f"--health-listen {value!r} collides with --listen {item.address}; "
                "give the health endpoint a port of its own, e.g. 127.0.0.1:9000"
            )
    return health


def drain_delay_sec(value: str, stop_timeout: str, builtin_runtime: bool) -> str | None:
    """--drain-delay: seconds below --stop-timeout, since the delay counts inside it; None for 0."""
    delay = seconds_or_off("--drain-delay", value)
    if delay is None:
        return None
    if not builtin_runtime:
        raise UsageError(
            "--drain-delay applies to the built-in runtime (--app); a command given with --exec drains its own way"
        )
    if float(delay) >= float(stop_timeout):
        raise UsageError(
            f"--drain-delay {value} is not below --stop-timeout {stop_timeout}: the delay counts inside "
            "the stop timeout and the drain needs the rest; lower it or raise --stop-timeout"
        )
    return canonical_seconds(delay)


def absolute_path(field: str, value: str) -> str:
    """An absolute, normalised path that can be written verbatim after '%' escaping."""
    reject_control(field, value)
    if not value.startswith("/"):
        raise UsageError(f"{field} {value!r} must be an absolute path, e.g. /srv/myapp")
    if "\\" in value or value != value.strip():
        raise UsageError(f"{field} {value!r}: rename the path without backslashes or surrounding spaces")
    # normpath keeps a leading "//" (POSIX allows it a meaning); systemd folds it to "/".
    return "/" + os.path.normpath(value).lstrip("/")


def file_path(field: str, value: str) -> str:
    """An absolute path that names a file, so not the root directory."""
    path = absolute_path(field, value)
    if path == "/":
        raise UsageError(f"{field} {value!r} is the root directory; give the path of a file")
    return path


def app(value: str) -> str:
    reject_control("--app", value)
    module, sep, attr = value.partition(":")
    dotted_ok = all(part.isidentifier() and part.isascii() for part in module.split("."))
    attr_ok = all(part.isidentifier() and part.isascii() for part in attr.split("."))
    if not sep or not dotted_ok or not attr_ok:
        raise UsageError(
            f"--app {value!r} is not MODULE:ATTRIBUTE; write the dotted module and the app object, "
            "e.g. myproj.asgi:application"
        )
    return value


def exec_command(value: str) -> tuple[str, ...]:
    reject_control("--exec", value)
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:
        raise UsageError(f"--exec {value!r}: {exc}; check the quotes") from None
    if not argv:
        raise UsageError("--exec is empty; give the command that serves the app, e.g. --exec '/usr/bin/myserver'")
    if not argv[0].startswith("/"):
        raise UsageError(f"--exec {value!r}: start with the absolute path of the program, e.g. /usr/bin/{argv[0]}")
    executable_path("--exec", argv[0])
    return argv


def workers(value: str) -> int:
    reject_control("--workers", value)
    if value == "auto":
        return len(os.sched_getaffinity(0))
    if not is_number(value) or not 1 <= int(value) <= _MAX_WORKERS:
        raise UsageError(f"--workers {value!r}: give 'auto' or a whole number from 1 to {_MAX_WORKERS}")
    return int(value)


def env_pair(value: str) -> tuple[str, str]:
    reject_control("--env", value)
    key, sep, val = value.partition("=")
    if not sep:
        raise UsageError(
            f"--env {value!r} has no '='; write KEY=VALUE, e.g. --env DJANGO_SETTINGS_MODULE=proj.settings"
        )
    if not _ENV_KEY_RE.fullmatch(key):
        raise UsageError(f"--env {value!r}: {key!r} is not a variable name; use letters, digits and '_'")
    return key, val


def user(value: str, *, harden: bool = True) -> str:
    reject_control("--user", value)
    numeric_ok = not is_number(value) or (int(value) <= _UID_MAX and int(value) != _UID_16BIT_MINUS_1)
    if not _USER_RE.fullmatch(value) or not numeric_ok:
        raise UsageError(f"--user {value!r} is not a user name or UID; use e.g. www-data or 33")
    if harden and value in _ROOT_USERS:
        raise UsageError(
            f"--user {value}: workers never need root (systemd binds the port); "
            "leave --user out for a dynamic user, or add --no-harden to insist"
        )
    return value


def image_reference(value: str) -> str:
    """A container image reference podman can run, e.g. registry.example.com/team/myapp:1.4."""
    reject_control("--container", value)
    bare = value.partition("@")[0]  # without the digest
    name = bare[: bare.rindex(":")] if ":" in bare.rpartition("/")[2] else bare  # and without the tag
    if not _IMAGE_RE.fullmatch(value) or len(name) > _IMAGE_NAME_MAX:
        raise UsageError(
            f"--container {value!r} is not an image reference; give [REGISTRY/]PATH[:TAG][@DIGEST] with a "
            "lowercase path, e.g. registry.example.com/myapp:1.4 or localhost/myapp:latest"
        )
    return value


def container_user(value: str, *, harden: bool = True) -> str:
    """--user with --container: UID or UID:GID inside the container."""
    reject_control("--user", value)
    found = _CONTAINER_USER_RE.fullmatch(value)
    if not found or any(int(part) > _UID_MAX for part in found.groups() if part is not None):
        raise UsageError(
            f"--user {value!r}: with --container give a UID or UID:GID (e.g. 1000 or 1000:1000); "
            "the host makes the worker's directories owned by it and cannot read the image's user names"
        )
    if harden and found.group(1) == "0":
        raise UsageError(
            f"--user {value}: workers never need root (systemd binds the port); leave --user out "
            "for nobody (65534), or add --no-harden to insist"
        )
    return value


def check_container(spec: UnitSpec) -> UnitSpec:
    """Options that mean nothing for a worker in a container, each refused with its reason."""
    if spec.container is None:
        return spec
    if spec.exec_argv is not None:
        raise UsageError(
            "--container runs `sockact run MODULE:ATTR` in the image; give --app, not --exec "
            "(an image that serves by itself needs no socket unit: see docs/containers.md)"
        )
    if spec.writable:
        raise UsageError(
            "--writable opens host paths in systemd's sandbox; a container sees only its image and "
            "its volumes: keep data in --state-dir, --cache-dir or --logs-dir, mounted at the same paths"
        )
    if spec.allow_jit:
        raise UsageError(
            "--allow-jit lifts MemoryDenyWriteExecute= of systemd's sandbox, which a container worker "
            "does not run under (podman's seccomp profile lets a JIT map executable memory)"
        )
    if spec.health_listen is not None:
        raise UsageError(
            "--health-listen with --container: the health socket is not passed into the container "
            "yet; check the app's port instead (or run without --container)"
        )
    if not _CONTAINER_NAME_RE.fullmatch(spec.name):
        raise UsageError(
            f"name {spec.name!r} cannot name a container (sockact-{spec.name}-N); with --container use "
            "letters, digits and '_.-' only"
        )
    return spec


def directory_name(field: str, value: str) -> str:
    """A relative directory below /var/lib, /var/cache or /var/log, e.g. 'myapp' or 'myapp/uploads'."""
    reject_control(field, value)
    if not _DIR_NAME_RE.fullmatch(value) or len(value) > _DIR_NAME_MAX:
        raise UsageError(
            f"{field} {value!r}: give a directory name relative to /var/lib, /var/cache or /var/log, "
            f"of letters, digits and '_.-' with '/' between parts, e.g. {field} myapp"
        )
    return value


def executable_path(field: str, value: str) -> str:
    """A program's path for ExecStart=: systemd refuses quote characters in it (string_is_safe)."""
    path = file_path(field, value)
    if '"' in path or "'" in path:
        raise UsageError(f"{field} {value!r}: systemd refuses quote characters in a program's path; rename it")
    return path


def writable_path(value: str) -> str:
    """A path for ReadWritePaths=; quotes are refused because that setting unquotes its words."""
    path = absolute_path("--writable", value)
    if '"' in path or "'" in path:
        raise UsageError(f"--writable {value!r}: rename the path without quote characters")
    return path


def target_version(value: int | str) -> int:
    text = str(value)
    if not is_number(text) or not versions.OLDEST <= int(text) <= 9999:
        raise UsageError(
            f"--systemd-version {text!r}: give the major version of the target's systemd "
            f"(systemctl --version), {versions.OLDEST} or newer, e.g. 252"
        )
    return int(text)


def seconds(field: str, value: str, *, maximum: int = 86400) -> str:
    reject_control(field, value)
    if not _SECONDS_RE.fullmatch(value) or not 0 < float(value) <= maximum:
        raise UsageError(f"{field} {value!r}: give a number of seconds above 0 and at most {maximum}, e.g. 30")
    return value


def seconds_or_off(field: str, value: str) -> str | None:
    """Seconds, or None for "0" (the feature is off)."""
    reject_control(field, value)
    if not _SECONDS_RE.fullmatch(value) or float(value) > 86400:
        raise UsageError(f"{field} {value!r}: give a number of seconds from 0 (off) to 86400, e.g. 30")
    return value if float(value) else None


def watchdog_sec(value: str | None, builtin_runtime: bool) -> str | None:
    if value is None:
        return DEFAULT_WATCHDOG if builtin_runtime else None
    return seconds_or_off("--watchdog", value)


def request_timeout_sec(value: str | None, builtin_runtime: bool) -> str:
    if value is None:
        return DEFAULT_REQUEST_TIMEOUT
    if not builtin_runtime:
        raise UsageError(
            "--request-timeout applies to the built-in runtime (--app); a command given with --exec enforces its own"
        )
    return seconds_or_off("--request-timeout", value) or "0"


def trusted_proxies(value: str, builtin_runtime: bool) -> str:
    """The proxies whose forwarding headers the workers believe, in the runtime's canonical form."""
    from ..runtime.forwarded import ProxyTrust  # the one parser: the runtime reads this text back

    reject_control("--forwarded-allow-ips", value)
    if not builtin_runtime:
        raise UsageError(
            "--forwarded-allow-ips applies to the built-in runtime (--app); "
            "a command given with --exec reads forwarding headers its own way"
        )
    return ProxyTrust(value).text


# `sockact run`'s HTTP limit options, each with the field of runtime.http11.Limits holding its default:
# only a value that differs from it is rendered, so units keep the runtime's defaults unless asked.
HTTP_LIMITS = {
    "--max-body": "max_body",
    "--max-headers": "max_fields",
    "--max-header-size": "max_field",
    "--max-target": "max_target",
    "--head-timeout": "head_timeout",
    "--keep-alive": "keep_alive",
    "--send-timeout": "send_timeout",
}
_BODY_MAX = 1 << 40  # 1024G; above it, 0 (no limit) says the same more plainly
_SHORTEST_FIELD = 4  # "a:" and CRLF: the fewest bytes a header field line takes


def http_limits(given: dict[str, str | None], builtin_runtime: bool) -> tuple[tuple[str, str], ...]:
    """(option, canonical value) of each HTTP limit given whose value differs from `sockact run`'s default."""
    if all(value is None for value in given.values()):
        return ()  # the runtime's defaults: its HTTP core is not imported for nothing
    from ..runtime.http11 import DEFAULT_LIMITS  # the runtime's own defaults, not a copy that could drift

    chosen = []
    for option, value in given.items():
        if value is None:
            continue
        reject_control(option, value)
        if not builtin_runtime:
            raise UsageError(
                f"{option} applies to the built-in runtime (--app); "
                "a command given with --exec sets its own HTTP limits"
            )
        text, number = _http_limit(option, value, DEFAULT_LIMITS.max_head)
        if number != getattr(DEFAULT_LIMITS, HTTP_LIMITS[option]):
            chosen.append((option, text))
    return tuple(chosen)


def _http_limit(option: str, value: str, max_head: int) -> tuple[str, float]:
    """One HTTP limit: its canonical text and the number `sockact run` reads from that text."""
    if option == "--max-body":
        return _request_size(option, value, (0, _BODY_MAX), "or 0 for no limit", "1G")
    if option in ("--max-header-size", "--max-target"):
        # Every byte of a request head counts against Limits.max_head: a larger limit would never be reached.
        return _request_size(option, value, (1, max_head), "the most a whole request head may take", "16K")
    if option == "--max-headers":
        most = max_head // _SHORTEST_FIELD
        if not is_number(value) or not 1 <= int(value) <= most:
            raise UsageError(
                f"{option} {value!r}: give a whole number of header fields from 1 to {most}, e.g. {option} 200"
            )
        return str(int(value)), int(value)
    text = canonical_seconds(seconds(option, value))
    return text, float(text)


def _request_size(option: str, value: str, bounds: tuple[int, int], why: str, example: str) -> tuple[str, float]:
    from ..runtime import sizes  # the parser `sockact run` reads the rendered value with

    least, most = bounds
    hint = f"from {sizes.canonical(least)} to {sizes.canonical(most)} ({why})"
    try:
        size = sizes.parse(value)
    except ValueError:
        raise UsageError(
            f"{option} {value!r} is not a size; give bytes with an optional K, M or G suffix "
            f"(1024-based) {hint}, e.g. {option} {example}"
        ) from None
    if not least <= size <= most:
        raise UsageError(f"{option} {value!r} is out of range; give a size {hint}")
    return sizes.canonical(size), size


def canonical_seconds(text: str) -> str:
    """Validated seconds without padding zeros: "015.50" -> "15.5", "20.0" -> "20"."""
    whole, _, fraction = text.partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def python(value: str) -> str:
    return executable_path("--python", value)


def memory_size(field: str, value: str) -> str:
    """A MemoryMax=/MemoryHigh= value: bytes with an optional K, M, G or T (1024-based), a percentage of
    the host's memory, or "infinity". Returned as written, systemd's own syntax."""
    reject_control(field, value)
    if value == "infinity":
        return value
    percent = _PERCENT_RE.fullmatch(value)
    if percent:
        if not 1 <= int(percent.group(1)) <= 100:
            raise UsageError(f"{field} {value!r}: a percentage of the host's memory goes from 1% to 100%")
        return value
    size = size_bytes(value)
    if size is None or size >= 1 << 64:
        raise UsageError(
            f"{field} {value!r}: give a size such as 512M or 2G (K, M, G, T are 1024-based), "
            "a percentage of the host's memory such as 25%, or infinity"
        )
    if size < _SIZE_MIN:
        raise UsageError(
            f"{field} {value!r} is below 32M, less than a Python worker needs to start; "
            "give e.g. 512M (a bare number counts bytes)"
        )
    return value


def size_bytes(value: str) -> int | None:
    """Bytes of an absolute size ("512M"); None for a percentage, "infinity" or anything else."""
    found = _SIZE_RE.fullmatch(value)
    return int(found.group(1)) * _SIZE_UNITS[found.group(2)] if found else None


def count(field: str, value: str) -> int:
    """A whole number from 0 (off) to a billion, for the recycling limits."""
    text = reject_control(field, value)
    if not is_number(text) or int(text) > _COUNT_MAX:
        raise UsageError(f"{field} {text!r}: give a whole number from 0 (off) to {_COUNT_MAX}, e.g. {field} 1000")
    return int(text)


def check_memory(spec: UnitSpec) -> UnitSpec:
    """Limits that contradict each other: each is valid alone, the pair is not."""
    high, top = (size_bytes(v) if v else None for v in (spec.memory_high, spec.memory_max))
    if high is not None and top is not None and high >= top:
        raise UsageError(
            f"--memory-high {spec.memory_high} is not below --memory-max {spec.memory_max}: "
            "MemoryHigh= is where reclaim starts, before the kill at MemoryMax=; lower it"
        )
    if spec.max_rss and top is not None and spec.max_rss * (1 << 20) >= top:
        raise UsageError(
            f"--max-rss {spec.max_rss} (MiB) is not below --memory-max {spec.memory_max}: the kernel "
            "would kill the worker before it recycles itself; set --max-rss below it"
        )
    if spec.max_requests_jitter and not spec.max_requests:
        raise UsageError("--max-requests-jitter spreads the limit of --max-requests; give --max-requests N too")
    if spec.exec_argv is not None and (spec.max_requests or spec.max_rss):
        raise UsageError(
            "--max-requests and --max-rss are options of the built-in runtime (--app); "
            "a command given with --exec recycles itself, if it can"
        )
    return spec


def build(
    *,
    unit_name: str,
    listen: list[str],
    python_path: str,
    app_ref: str | None = None,
    exec_cmd: str | None = None,
    worker_count: str = "auto",
    chdir: str | None = None,
    env: list[str] | None = None,
    env_file: str | None = None,
    run_as: str | None = None,
    watchdog: str | None = None,
    request_timeout: str | None = None,
    stop_timeout: str = "30",
    systemd_version: int | str = versions.FALLBACK,
    harden: bool = True,
    allow_jit: bool = False,
    state_dir: str | None = None,
    cache_dir: str | None = None,
    logs_dir: str | None = None,
    writable: list[str] | None = None,
    access_log: bool = False,
    memory_max: str | None = None,
    memory_high: str | None = None,
    max_requests: str = "0",
    max_requests_jitter: str = "0",
    max_rss: str = "0",
    forwarded_allow_ips: str | None = None,
    max_body: str | None = None,
    max_headers: str | None = None,
    max_header_size: str | None = None,
    max_target: str | None = None,
    head_timeout: str | None = None,
    keep_alive: str | None = None,
    send_timeout: str | None = None,
    health_listen: str | None = None,
    drain_delay: str = "0",
    container: str | None = None,
) -> UnitSpec:
    """Validate every raw option and return the spec; raises UsageError on the first bad value.

    ``systemd_version`` is the major version the units are rendered for (default: Debian 12's 252).
    ``watchdog`` None gives the built-in runtime DEFAULT_WATCHDOG; "0" turns the watchdog off.
    The HTTP limits (``max_body`` to ``send_timeout``) left None keep `sockact run`'s defaults.
    ``container`` is an image reference: each worker runs in a podman container of it.
    """
    if (app_ref is None) == (exec_cmd is None):
        raise UsageError("give exactly one of --app MODULE:ATTR (the built-in runtime) or --exec CMD")
    if not listen:
        raise UsageError("give at least one --listen: a port, HOST:PORT, [V6ADDR]:PORT or a unix socket path")
    listeners = tuple(listener(item) for item in listen)
    if len(set(listeners)) != len(listeners):
        raise UsageError("the same --listen address is given twice; list each address once")
    builtin_runtime = app_ref is not None
    stop = seconds("--stop-timeout", stop_timeout)
    image = image_reference(container) if container is not None else None
    if run_as is None:
        chosen_user = None
    elif image is not None:
        chosen_user = container_user(run_as, harden=harden)
    else:
        chosen_user = user(run_as, harden=harden)
    return check_container(
        check_memory(
            UnitSpec(
                name=name(unit_name),
                listeners=listeners,
                workers=workers(worker_count),
                python=python(python_path),
                app=app(app_ref) if app_ref is not None else None,
                exec_argv=exec_command(exec_cmd) if exec_cmd is not None else None,
                chdir=absolute_path("--chdir", chdir) if chdir is not None else None,
                env=tuple(env_pair(item) for item in env or ()),
                env_file=file_path("--env-file", env_file) if env_file is not None else None,
                user=chosen_user,
                watchdog=watchdog_sec(watchdog, builtin_runtime=app_ref is not None),
                request_timeout=request_timeout_sec(request_timeout, builtin_runtime=app_ref is not None),
                stop_timeout=stop,
                systemd_version=target_version(systemd_version),
                harden=harden,
                allow_jit=allow_jit,
                state_dir=directory_name("--state-dir", state_dir) if state_dir is not None else None,
                cache_dir=directory_name("--cache-dir", cache_dir) if cache_dir is not None else None,
                logs_dir=directory_name("--logs-dir", logs_dir) if logs_dir is not None else None,
                writable=tuple(writable_path(item) for item in writable or ()),
                access_log=access_log,
                memory_max=memory_size("--memory-max", memory_max) if memory_max is not None else None,
                memory_high=memory_size("--memory-high", memory_high) if memory_high is not None else None,
                max_requests=count("--max-requests", max_requests),
                max_requests_jitter=count("--max-requests-jitter", max_requests_jitter),
                max_rss=count("--max-rss", max_rss),
                forwarded_allow_ips=(
                    trusted_proxies(forwarded_allow_ips, builtin_runtime=app_ref is not None)
                    if forwarded_allow_ips is not None
                    else None
                ),
                http_limits=http_limits(
                    dict(
                        zip(
                            HTTP_LIMITS,
                            (
                                max_body,
                                max_headers,
                                max_header_size,
                                max_target,
                                head_timeout,
                                keep_alive,
                                send_timeout,
                            ),
                        )
                    ),
                    builtin_runtime=app_ref is not None,
                ),
                health_listen=(
                    health_listener(health_listen, listeners, builtin_runtime) if health_listen is not None else None
                ),
                drain_delay=drain_delay_sec(drain_delay, stop, builtin_runtime),
                container=image,
            )
        )
    )
