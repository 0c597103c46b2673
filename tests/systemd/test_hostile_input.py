"""Hostile input against systemd's real parser: for every field that reaches a unit, hypothesis generates
values; each goes through `sockact generate`. Rejected values give one line and exit status 2. Accepted ones
are loaded into a private systemd (one daemon-reload per field), which must load them without a warning,
and whose D-Bus properties (what `systemctl show` prints, without its lossy quoting) must equal the input
byte for byte; `systemd-analyze verify` must not complain about a setting either."""

from __future__ import annotations

import codecs
import contextlib
import io
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockact.box import PrivateSystemd
from sockact.cli import main as cli_main

MIN_CASES = 50
EXAMPLES = 80  # hypothesis may repeat a value; at least MIN_CASES distinct ones must remain
PYTHON = "/usr/bin/python3"
DEFAULTS = {"--listen": "8000", "--python": PYTHON, "--app": "a:app"}

any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
nasty = st.text(
    alphabet=st.sampled_from(list("\n\r\t \\\"'%$;#[]=:@/.-_aZ09\x00\x1b\u2028\u00a0é{}*?~!&|<>`")), max_size=24
)
path_text = st.text(alphabet=st.sampled_from(list(" \"'%$;#[]=:@.-_aZ09é{}*?~!&|<>`\\/\n")), max_size=20)
paths = st.one_of(path_text.map(lambda v: "/" + v), nasty, any_text.map(lambda v: "/" + v))
words = st.lists(st.one_of(nasty, any_text), min_size=0, max_size=3)


@dataclass
class Field:
    """How a value of one field becomes CLI options, and which bus properties must equal what."""

    strategy: st.SearchStrategy[str]
    option: str  # the CLI option the value is given to ("" for the positional NAME)
    expected: Callable[[str, str], dict[tuple[str, str, str], Any]]  # (name, value) -> {(unit, iface, prop): value}
    samples: tuple[str, ...]  # valid values whose units show the line structure every accepted value must keep
    cases: list[str] = field(default_factory=list)


def service(name: str) -> str:
    return f"{name}@1.service"


def listen_expected(value: str) -> str:
    """How systemd prints a ListenStream= back: the port alone binds [::]; IPv6 in inet_ntop form."""
    if value.isdigit():
        return f"[::]:{int(value)}"
    if value.startswith("/"):
        return norm(value)
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
        return f"[{socket.inet_ntop(socket.AF_INET6, ipaddress.IPv6Address(host).packed)}]:{int(port)}"
    host, _, port = value.rpartition(":")
    return f"{host}:{int(port)}"


def norm(path: str) -> str:
    """The one normalisation sockact applies to paths: systemd's path_simplify()."""
    return "/" + os.path.normpath(path).lstrip("/")


def exec_words(argv: list[str]) -> list[str]:
    # systemd keeps "$$" in the stored command line and turns it into "$" when it executes it.
    return [word.replace("$", "$$") for word in argv]


def runtime_argv(python: str, app: str) -> list[str]:
    return exec_words(
        [python, "-m", "sockact", "run", app, "--stop-timeout", "30", "--request-timeout", "30", "--respawn"]
    )


def command(argv: list[str]) -> list[list[Any]]:
    """ExecStart= as the bus reports it, cut to what the unit sets: [[path, argv]]."""
    return [[argv[0], argv]]


def as_set(prop: str, data: Any) -> Any:
    if prop == "ExecStart":  # drop the runtime fields (pids, times, status) of each command
        return [[entry[0], entry[1]] for entry in data]
    if prop == "Listen":  # systemd prints a unix socket path C-escaped; the bytes it binds are the raw ones
        return [[kind, c_unescape(address)] for kind, address in data]
    return data


def c_unescape(text: str) -> str:
    return codecs.escape_decode(text.encode())[0].decode()


SVC, SOCK, UNIT = "org.freedesktop.systemd1.Service", "org.freedesktop.systemd1.Socket", "org.freedesktop.systemd1.Unit"

FIELDS: dict[str, Field] = {
    "name": Field(
        st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}", fullmatch=True), nasty, any_text),
        "",
        lambda n, v: {
            (f"{v}.socket", UNIT, "Id"): f"{v}.socket",
            (service(v), UNIT, "Id"): service(v),
            (f"{v}.target", UNIT, "Wants"): [service(v)],
        },
        ("myapp",),
    ),
    "listen": Field(
        st.one_of(
            st.integers(0, 70000).map(str),
            st.ip_addresses(v=4).map(str).flatmap(lambda h: st.integers(1, 65535).map(lambda p: f"{h}:{p}")),
            st.ip_addresses(v=6).map(str).flatmap(lambda h: st.integers(1, 65535).map(lambda p: f"[{h}]:{p}")),
            paths,
            nasty,
        ),
        "--listen",
        lambda n, v: {(f"{n}.socket", SOCK, "Listen"): [["Stream", listen_expected(v)]]},
        ("8000", "/run/myapp.sock"),
    ),
    "app": Field(
        st.one_of(
            st.from_regex(
                r"[A-Za-z_][A-Za-z0-9_]{0,8}(\.[A-Za-z_][A-Za-z0-9_]{0,8}){0,2}:[A-Za-z_]\w{0,8}", fullmatch=True
            ),
            nasty,
            any_text,
        ),
        "--app",
        lambda n, v: {(service(n), SVC, "ExecStart"): command(runtime_argv(PYTHON, v))},
        ("a:app",),
    ),
    "exec": Field(
        words.map(lambda ws: shlex.join(["/usr/bin/server", *ws])),
        "--exec",
        lambda n, v: {(service(n), SVC, "ExecStart"): command(exec_words(shlex.split(v)))},
        ("/usr/bin/server",),
    ),
    "env": Field(
        st.one_of(
            st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), st.one_of(nasty, any_text)).map(
                lambda kv: f"{kv[0]}={kv[1]}"
            ),
            nasty,
            any_text,
        ),
        "--env",
        lambda n, v: {(service(n), SVC, "Environment"): [f"SOCKACT_APP={n}", "SOCKACT_WORKER=1", v]},
        ("A=1",),
    ),
    "chdir": Field(
        paths, "--chdir", lambda n, v: {(service(n), SVC, "WorkingDirectory"): norm(v)}, ("/srv/myapp", "/home/myapp")
    ),
    "user": Field(
        st.one_of(
            st.from_regex(r"[a-z_][a-z0-9_-]{0,30}[a-z0-9_$-]?", fullmatch=True),
            st.integers(0, 2**33).map(str),
            nasty,
            any_text,
        ),
        "--user",
        lambda n, v: {(service(n), SVC, "User"): v, (service(n), SVC, "DynamicUser"): False},
        ("www-data",),
    ),
    "python": Field(
        paths,
        "--python",
        lambda n, v: {(service(n), SVC, "ExecStart"): command(runtime_argv(norm(v), "a:app"))},
        ("/usr/bin/python3",),
    ),
    "env_file": Field(
        paths,
        "--env-file",
        lambda n, v: {(service(n), SVC, "EnvironmentFiles"): [[norm(v), False]]},
        ("/etc/myapp.env",),
    ),
    "state_dir": Field(
        st.one_of(
            st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}){0,2}", fullmatch=True),
            nasty,
            any_text,
        ),
        "--state-dir --cache-dir --logs-dir",
        lambda n, v: {(service(n), SVC, key): [v] for key in ("StateDirectory", "CacheDirectory", "LogsDirectory")},
        ("myapp",),
    ),
    "writable": Field(
        paths, "--writable", lambda n, v: {(service(n), SVC, "ReadWritePaths"): [norm(v)]}, ("/srv/myapp",)
    ),
}


def generate(argv: list[str]) -> tuple[int, str]:
    """`sockact generate` in this process: its exit status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = int(exc.code or 0)
    return code, err.getvalue()


def argv_for(spec: Field, name: str, value: str, unit_dir: Path) -> list[str]:
    """generate NAME with the value under test and defaults for the rest; '--opt=value' keeps '-x' a value."""
    given = spec.option.split()
    options = [f"{option}={value}" for option in given]
    if spec.option == "--exec":
        given.append("--app")
    options += [f"{option}={default}" for option, default in DEFAULTS.items() if option not in given]
    return ["generate", name, *options, "--workers", "1", "--systemd-version", "252", "--output-dir", str(unit_dir)]


def structure(text: str) -> list[str]:
    return ["#" if line.startswith("#") else line.split("=", 1)[0] for line in text.split("\n")]


def shapes(box: PrivateSystemd, names: list[str]) -> list[list[list[str]]]:
    return [[structure((box.unit_dir() / f"{name}{ext}").read_text()) for ext in EXTENSIONS] for name in names]


EXTENSIONS = (".socket", "@.service", ".target")


def clashes_with_installed(name: str) -> bool:
    """A generated name may be that of a real unit (e.g. 'systemd-journald'); never shadow one in the box."""
    return any(
        Path(d, f"{name}{ext}").exists()
        for d in ("/lib/systemd/system", "/etc/systemd/system", "/usr/lib/systemd/system")
        for ext in EXTENSIONS
    )


def write_baselines(box: PrivateSystemd, label: str, spec: Field) -> list[str]:
    names = []
    for index, sample in enumerate(spec.samples):
        name = sample if label == "name" else f"base{label.replace('_', '')}{index}"
        code, err = generate(argv_for(spec, name, sample, box.unit_dir()))
        assert code == 0, err
        names.append(name)
    return names


def collect(box: PrivateSystemd, label: str, spec: Field, baselines: list[list[list[str]]]) -> dict[str, str]:
    """Run hypothesis over the field; write accepted cases' units into the box. Returns {unit name: value}."""
    accepted: dict[str, str] = {}
    spec.cases.clear()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(value=spec.strategy)
    def one(value: str) -> None:
        if value in spec.cases or (label == "name" and clashes_with_installed(value)):
            return
        spec.cases.append(value)
        name = value if label == "name" else f"hx{label.replace('_', '')}{len(spec.cases)}"
        code, err = generate(argv_for(spec, name, value, box.unit_dir()))
        if code != 0:
            assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (value, err)
            return
        assert shapes(box, [name])[0] in baselines, (value, "a line or directive was added or lost")
        accepted[name] = value

    one()
    assert len(spec.cases) >= MIN_CASES, f"only {len(spec.cases)} distinct {label} values were generated"
    return accepted


def bus_path(unit: str) -> str:
    """The D-Bus object path of a unit (sd_bus_path_encode)."""
    label = "".join(ch if ch.isascii() and ch.isalnum() else "".join(f"_{b:02x}" for b in ch.encode()) for ch in unit)
    return f"/org/freedesktop/systemd1/unit/{label}"


def bus_properties(box: PrivateSystemd, queries: list[tuple[str, str, list[str]]]) -> list[list[Any]]:
    """For each (unit, interface, properties): the properties' values, all read in one run inside the box."""
    script = "".join(
        f"busctl --json=short get-property org.freedesktop.systemd1 {shlex.quote(bus_path(unit))} {iface} "
        f"{' '.join(props)} || echo '\"ERROR\"'; echo '\"END\"'\n"
        for unit, iface, props in queries
    )
    out = box.run("bash", "-s", input=script, timeout=120).stdout
    blocks: list[list[Any]] = []
    current: list[Any] = []
    for line in out.splitlines():
        item = json.loads(line)
        if item == "END":
            blocks.append(current)
            current = []
        else:
            current.append(item["data"] if isinstance(item, dict) else item)
    return blocks


def manager_warnings(box: PrivateSystemd, since: str) -> list[str]:
    log = box.run("journalctl", "--no-pager", "-o", "cat", "_PID=1", "--after-cursor", since).stdout
    return [line for line in log.splitlines() if "/run/systemd/system/" in line]


def journal_cursor(box: PrivateSystemd) -> str:
    out = box.run("journalctl", "--no-pager", "-n", "1", "--show-cursor", "-q").stdout
    return out.rsplit("-- cursor: ", 1)[1].strip()


def verify_settings(box: PrivateSystemd, names: list[str], tmp: Path) -> list[str]:
    """systemd-analyze verify on every accepted unit; complaints about settings (not missing programs)."""
    for name in names:
        for ext in (".socket", "@.service", ".target"):
            shutil.copy(box.unit_dir() / f"{name}{ext}", tmp / f"{name}{ext}")
        shutil.copy(tmp / f"{name}@.service", tmp / f"{name}@1.service")
    files = [str(tmp / f"{n}{ext}") for n in names for ext in (".socket", "@1.service", ".target")]
    result = subprocess.run(
        ["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=120, check=False
    )
    missing = re.compile(
        r"is not executable|No such file or directory|Failed to (?:prepare|set up) .*filename|"
        r"has no executable|bad unit file setting|Unit .* not found|"
        r"Command .* is not|Neither a valid executable"
    )
    return [line for line in result.stderr.splitlines() if str(tmp) in line and not missing.search(line)]


@pytest.mark.parametrize("label", sorted(FIELDS))
def test_field_reaches_systemd_byte_for_byte(private_systemd: PrivateSystemd, label: str, tmp_path: Path) -> None:
    box, spec = private_systemd, FIELDS[label]
    before = set(os.listdir(box.unit_dir()))
    base_names = write_baselines(box, label, spec)
    accepted = collect(box, label, spec, shapes(box, base_names))
    try:
        # Rejected values wrote nothing: the only new files are the accepted cases' and the baselines'.
        written = set(os.listdir(box.unit_dir())) - before
        assert written == {f"{name}{ext}" for name in [*accepted, *base_names] for ext in EXTENSIONS}
        assert accepted, f"no {label} value was accepted; the strategy must produce valid ones too"
        cursor = journal_cursor(box)
        box.daemon_reload()
        expectations = {name: spec.expected(name, value) for name, value in accepted.items()}
        queries = [(unit, iface, [prop]) for exp in expectations.values() for (unit, iface, prop) in exp]
        loads = [(service(name), UNIT, ["LoadState"]) for name in accepted]
        answers = bus_properties(box, queries + loads)
        got = iter(answers)
        for name, exp in expectations.items():
            for key, want in exp.items():
                assert [as_set(key[2], item) for item in next(got)] == [want], (label, accepted[name], key)
        assert answers[len(queries) :] == [["loaded"]] * len(loads)
        assert manager_warnings(box, cursor) == []
        assert verify_settings(box, sorted(accepted), tmp_path) == []
        print(
            f"\n{label}: {len(spec.cases)} cases, {len(accepted)} accepted and loaded, "
            f"{len(spec.cases) - len(accepted)} rejected in one line"
        )
    finally:
        for name in [*accepted, *base_names]:
            for ext in EXTENSIONS:
                (box.unit_dir() / f"{name}{ext}").unlink(missing_ok=True)


@pytest.mark.parametrize(
    "option",
    [
        "--listen",
        "--app",
        "--exec",
        "--env",
        "--chdir",
        "--user",
        "--python",
        "--env-file",
        "--state-dir",
        "--writable",
        "--workers",
        "--watchdog",
        "--request-timeout",
        "--systemd-version",
        "--forwarded-allow-ips",
        "--max-body",
        "--max-headers",
        "--max-header-size",
        "--max-target",
        "--head-timeout",
        "--keep-alive",
        "--send-timeout",
    ],
)
def test_a_lone_double_dash_value_is_one_line_exit_2(option: str, tmp_path: Path) -> None:
    """argparse hands "--opt=--" over as [] rather than "--"; that must be a usage error, not a traceback."""
    options = {"--listen": "8000", "--app": "a:app"}
    options[option] = "--"
    if option == "--exec":
        del options["--app"]
    code, err = generate(
        ["generate", "myapp", *(f"{k}={v}" for k, v in options.items()), "--output-dir", str(tmp_path)]
    )
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
