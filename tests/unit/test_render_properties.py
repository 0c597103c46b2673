"""Property tests: no value from the user can add a line or a directive to a unit."""

from __future__ import annotations

from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockact.errors import UsageError
from sockact.generator import escape
from sockact.generator.render import render
from sockact.generator.spec import build

BASE: dict[str, Any] = dict(  # noqa: C408 - keyword form reads like the CLI flags
    unit_name="myapp",
    listen=["8000"],
    python_path="/usr/bin/python3",
    app_ref="proj.asgi:app",
    chdir="/srv/proj",
    env=["A=1"],
    env_file="/etc/proj.env",
    run_as="www-data",
    watchdog="10",
    state_dir="proj",
    cache_dir="proj",
    logs_dir="proj",
    writable=["/srv/proj/data"],
    systemd_version=252,
)


def structure(texts: list[str]) -> list[list[str]]:
    """Each unit as its list of line keys: what systemd's parser would see as directives."""
    return [["#" if line.startswith("#") else line.split("=", 1)[0] for line in text.split("\n")] for text in texts]


BASELINE = structure([unit.text for unit in render(build(**BASE))])
BASELINE_UNIX = structure([unit.text for unit in render(build(**{**BASE, "listen": ["/run/a.sock"]}))])


def expected(spec: Any) -> list[list[str]]:
    if spec.systemd_version != 252 or spec.watchdog is None:
        # The version picks directives, and --watchdog 0 drops WatchdogSec=; only the user's values must not.
        return structure(
            [
                unit.text
                for unit in render(
                    build(
                        **{
                            **BASE,
                            "systemd_version": spec.systemd_version,
                            "listen": [item.address for item in spec.listeners],
                            "watchdog": spec.watchdog or "0",
                        }
                    )
                )
            ]
        )
    return BASELINE if spec.listeners[0].is_tcp else BASELINE_UNIX


any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
nasty = st.text(alphabet=st.sampled_from(list("\n\r\t \\\"'%$;#[]=:@/.-_aZ09\x00\x1b\u2028")), max_size=30)
values = st.one_of(any_text, nasty)


def check(**override: Any) -> None:
    try:
        spec = build(**{**BASE, **override})
    except UsageError as exc:
        assert "\n" not in str(exc)  # rejected: a one-line message
        return
    assert structure([unit.text for unit in render(spec)]) == expected(spec)


FIELDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "name": lambda v: {"unit_name": v},
    "listen": lambda v: {"listen": [v]},
    "app": lambda v: {"app_ref": v},
    "chdir": lambda v: {"chdir": "/" + v},
    "env value": lambda v: {"env": [f"KEY={v}"]},
    "env": lambda v: {"env": [v]},
    "env_file": lambda v: {"env_file": "/" + v},
    "user": lambda v: {"run_as": v},
    "python": lambda v: {"python_path": "/" + v},
    "watchdog": lambda v: {"watchdog": v},
    "stop_timeout": lambda v: {"stop_timeout": v},
    "request_timeout": lambda v: {"request_timeout": v},
    "state_dir": lambda v: {"state_dir": v},
    "cache_dir": lambda v: {"cache_dir": v},
    "logs_dir": lambda v: {"logs_dir": v},
    "writable": lambda v: {"writable": ["/" + v]},
    "systemd_version": lambda v: {"systemd_version": v},
    "forwarded_allow_ips": lambda v: {"forwarded_allow_ips": v},
    "max_body": lambda v: {"max_body": v},
    "max_headers": lambda v: {"max_headers": v},
    "max_header_size": lambda v: {"max_header_size": v},
    "max_target": lambda v: {"max_target": v},
    "head_timeout": lambda v: {"head_timeout": v},
    "keep_alive": lambda v: {"keep_alive": v},
    "send_timeout": lambda v: {"send_timeout": v},
}

fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(field=st.sampled_from(sorted(FIELDS)), value=values)
def test_no_field_adds_a_line_or_directive(field: str, value: str) -> None:
    check(**FIELDS[field](value))


@fast
@given(words=st.lists(values, min_size=1, max_size=4))
def test_exec_words_stay_one_line_of_words(words: list[str]) -> None:
    import shlex

    try:
        spec = build(**{**BASE, "app_ref": None, "exec_cmd": shlex.join(["/usr/bin/server", *words])})
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    exec_baseline = structure(
        [unit.text for unit in render(build(**{**BASE, "app_ref": None, "exec_cmd": "/usr/bin/server"}))]
    )
    assert structure([unit.text for unit in render(spec)]) == exec_baseline


@given(value=values)
def test_quoted_round_trips_through_c_unescaping(value: str) -> None:
    """escape.quoted is undone exactly by systemd's rules: %% -> %, then C unescape inside quotes."""
    if any(ch in value for ch in "\n\r\x00"):
        return
    text = escape.quoted(value)
    assert text[0] == text[-1] == '"'
    body = text[1:-1].replace("%%", "\x00")
    assert "%" not in body
    unescaped = body.replace("\x00", "%").encode().decode("unicode_escape").encode("latin-1").decode("utf-8")
    assert unescaped == value


sizes_text = st.tuples(st.integers(0, 1 << 41), st.sampled_from(["", "k", "K", "M", "G"])).map(
    lambda t: f"{t[0]}{t[1]}"
)
seconds_text = st.from_regex(r"0{0,2}[0-9]{1,5}(\.[0-9]{1,6})?", fullmatch=True)
LIMIT_VALUES = {
    "max_body": sizes_text,
    "max_header_size": sizes_text,
    "max_target": sizes_text,
    "max_headers": st.integers(0, 20000).map(str),
    "head_timeout": seconds_text,
    "keep_alive": seconds_text,
    "send_timeout": seconds_text,
}
# What `sockact run` must read back from the rendered option: the value as the user meant it.
SIZE_UNITS = {"k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
READ_AS: dict[str, Callable[[str], float]] = {
    "max_body": lambda v: int(v.rstrip("kKMG")) * SIZE_UNITS.get(v[-1], 1),
    "max_headers": int,
    "head_timeout": float,
    "keep_alive": float,
    "send_timeout": float,
}
READ_AS["max_header_size"] = READ_AS["max_target"] = READ_AS["max_body"]
RUN_FIELD = {
    "max_body": "max_body",
    "max_headers": "max_fields",
    "max_header_size": "max_field",
    "max_target": "max_target",
    "head_timeout": "head_timeout",
    "keep_alive": "keep_alive",
    "send_timeout": "send_timeout",
}


@fast
@given(data=st.data(), field=st.sampled_from(sorted(LIMIT_VALUES)))
def test_http_limits_render_what_sockact_run_reads_back(data: st.DataObject, field: str) -> None:
    """Any accepted HTTP limit, rendered and parsed by `sockact run`'s parser, is the value the user gave."""
    from sockact.generator.render import exec_start
    from sockact.runtime.main import limits_of, parse

    value = data.draw(LIMIT_VALUES[field])
    try:
        spec = build(**{**BASE, field: value})
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    argv = exec_start(spec)
    limits = limits_of(parse(argv[argv.index("run") + 1 :]))
    assert getattr(limits, RUN_FIELD[field]) == READ_AS[field](value)
