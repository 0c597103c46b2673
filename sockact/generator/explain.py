"""`sockact generate --explain`: the sandbox, the memory limits and the runtime options of NAME@.service,
line by line, in words."""

from __future__ import annotations

import textwrap

from . import sandbox
from .spec import UnitSpec

# systemd-analyze security NAME@1.service on systemd 252 for each way of lifting the sandbox;
# tests/systemd/test_hardening.py measures every one and fails when systemd disagrees.
OPTION_SCORES: dict[str, tuple[tuple[str, ...], float]] = {
    "default": ((), 1.2),
    "--user USER": (("--user", "www-data"), 1.2),
    "--allow-jit": (("--allow-jit",), 1.3),
    "--state-dir/--cache-dir/--logs-dir/--writable": (
        ("--state-dir", "probe", "--cache-dir", "probe", "--logs-dir", "probe", "--writable", "/srv"),
        1.2,
    ),
    "app under /home (ProtectHome=read-only)": (("--chdir", "/home/probe"), 1.3),
    "--no-harden --user USER": (("--no-harden", "--user", "www-data"), 9.4),
    "--no-harden": (("--no-harden",), 9.8),
}
SCORE_DEFAULT = OPTION_SCORES["default"][1]
SCORE_NO_HARDEN = OPTION_SCORES["--no-harden"][1]


def explain(spec: UnitSpec) -> str:
    """Plain text: every sandbox line this spec gets, what it does, what it costs, and the score without it."""
    if spec.container is not None:
        from . import container

        runtime = _memory(spec) + _proxies(spec) + _http_limits(spec)
        return "\n\n".join(container.explain(spec) + runtime) + "\n"
    out = [f"Sandbox of {spec.name}@.service, rendered for systemd {spec.systemd_version}."]
    entries = sandbox.chosen(spec)
    if not entries:
        out.append(
            f"None: --no-harden leaves the workers with every right of their user "
            f"(systemd-analyze security: {SCORE_NO_HARDEN} UNSAFE)."
        )
        runtime = _memory(spec) + _proxies(spec) + _http_limits(spec)
        return "\n".join(out) + "\n" + "".join(f"\n{paragraph}\n" for paragraph in runtime)
    out.append(
        f"systemd-analyze security {spec.name}@1.service scores the default sandbox {SCORE_DEFAULT} "
        "(0 is sealed, 10 is UNSAFE; systemd 252); 'without' is the score with that line alone removed."
    )
    out.append(_user_paragraph(spec))
    for entry in entries:
        out.append(_paragraph(entry))
    out.extend(_opened(spec))
    out.extend(_memory(spec))
    out.extend(_proxies(spec))
    out.extend(_http_limits(spec))
    return "\n\n".join(out) + "\n"


def _paragraph(entry: sandbox.Hardening) -> str:
    body = textwrap.fill(
        f"{entry.does}. Trade-off: {entry.trade_off}.", width=100, initial_indent="    ", subsequent_indent="    "
    )
    return f"{entry.line}  (without: {entry.exposure_without})\n{body}"


def _user_paragraph(spec: UnitSpec) -> str:
    if spec.dynamic_user:
        why = (
            "the dynamic user's name; the sockact- prefix keeps it apart from system accounts "
            "(a dynamic user named like an existing account would run as that account)"
        )
    else:
        why = "the account given with --user; its files stay its own, so keep the sandbox's --writable list short"
    return f"User={spec.run_as}\n    {why}."


def _opened(spec: UnitSpec) -> list[str]:
    opened: list[str] = []
    for key, value, where in (
        ("StateDirectory", spec.state_dir, "/var/lib"),
        ("CacheDirectory", spec.cache_dir, "/var/cache"),
        ("LogsDirectory", spec.logs_dir, "/var/log"),
    ):
        if value:
            opened.append(
                f"{key}={value}\n    {where}/{value} is created for the workers' user and is writable; "
                f"its path is in ${key.replace('Directory', '').upper()}_DIRECTORY. Score unchanged."
            )
    for path in spec.writable:
        opened.append(
            f"ReadWritePaths={path}\n    writable despite ProtectSystem=strict, "
            "if the file permissions let the workers' user write there. Score unchanged."
        )
    return opened


RECYCLES = "it stops taking work, drains as on SIGTERM, exits with status 4, and systemd starts it again at once"


def _memory(spec: UnitSpec) -> list[str]:
    """The memory lines and recycling options this spec sets, and what happens when each is reached."""
    said: list[str] = []

    def add(line: str, text: str) -> None:
        said.append(f"{line}\n" + textwrap.fill(text, width=100, initial_indent="    ", subsequent_indent="    "))

    if spec.memory_high:
        add(
            f"MemoryHigh={spec.memory_high}",
            "Per worker: above it the kernel reclaims the worker's pages and slows "
            "it down; nothing is killed (cgroup v2 only).",
        )
    if spec.memory_max:
        add(
            f"MemoryMax={spec.memory_max}",
            "Per worker: above it the kernel kills the worker (OOM), its in-flight "
            "requests fail, and Restart= starts it again (cgroup v2, or memory.limit_in_bytes on cgroup v1).",
        )
    if spec.max_requests:
        jitter = spec.max_requests_jitter
        upto = f" to {spec.max_requests + jitter}" if jitter else ""
        add(
            f"--max-requests {spec.max_requests}" + (f" --max-requests-jitter {jitter}" if jitter else ""),
            f"Each worker recycles after {spec.max_requests}{upto} requests (drawn per worker): {RECYCLES}.",
        )
    if spec.max_rss:
        add(
            f"--max-rss {spec.max_rss}",
            f"A worker whose resident memory passes {spec.max_rss} MiB (checked every "
            f"0.1 s) recycles: {RECYCLES}, before MemoryMax= could kill it mid-request.",
        )
    return said


def _proxies(spec: UnitSpec) -> list[str]:
    """--forwarded-allow-ips: whose forwarding headers the workers believe."""
    allowed = spec.forwarded_allow_ips
    if not allowed:
        return []
    if allowed == "*":
        whom = (
            "from every peer: anyone who can reach the socket chooses the address the app sees, so keep "
            "it reachable by the proxy alone (a Unix socket, or a firewall); the leftmost "
            "X-Forwarded-For entry is the client"
        )
    else:
        whom = (
            f"only on connections from {allowed}; read from the right, the first address that is not one "
            "of these is the client, and from any other peer the headers change nothing"
        )
    text = (
        f"The app sees the client address and scheme from X-Forwarded-For, X-Forwarded-Proto and Forwarded "
        f"{whom}. Where X-Forwarded-For and Forwarded name different clients the client is left unknown: "
        "make the proxy set one family and clear the other."
    )
    return [
        f"--forwarded-allow-ips {allowed}\n"
        + textwrap.fill(text, width=100, initial_indent="    ", subsequent_indent="    ")
    ]


# What each HTTP limit does when a request reaches it; {} is the value set.
_HTTP_LIMIT_WORDS = {
    "--max-body": "A request body above {} is refused with 413: from its Content-Length before the body is read, "
    "or once a chunked body passes it.",
    "--max-headers": "A request with more than {} header fields is refused with 431.",
    "--max-header-size": "A request with a header field line above {} is refused with 431.",
    "--max-target": "A request target (path and query) above {} is refused with 414.",
    "--head-timeout": "A request head still arriving after {} s, or a body that stops arriving for that long, "
    "is answered 408 and its connection closed.",
    "--keep-alive": "An idle keep-alive connection is closed after {} s.",
    "--send-timeout": "A client that takes no byte of its response for {} s is dropped.",
}
_SIZES = ("--max-body", "--max-header-size", "--max-target")  # a bare number of these is said with "bytes"


def _http_limits(spec: UnitSpec) -> list[str]:
    """The HTTP limits this spec sets apart from the runtime's defaults, and what each does."""
    from ..runtime.http11 import DEFAULT_LIMITS
    from ..runtime.sizes import canonical
    from .spec import HTTP_LIMITS

    said = []
    for option, value in spec.http_limits:
        default = getattr(DEFAULT_LIMITS, HTTP_LIMITS[option])
        shown = canonical(default) if isinstance(default, int) else f"{default:g}"
        in_words = f"{value} bytes" if option in _SIZES and value.isdigit() else value
        text = (
            "Request bodies have no size limit: the app reads whatever a client sends."
            if value == "0" and option == "--max-body"
            else _HTTP_LIMIT_WORDS[option].format(in_words)
        ) + f" Default of sockact run: {shown}."
        said.append(
            f"{option} {value}\n" + textwrap.fill(text, width=100, initial_indent="    ", subsequent_indent="    ")
        )
    return said
