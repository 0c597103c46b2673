"""gunicorn 23.0.0's request corpus (fetched from PyPI) over a real socket to `sockact run`, ASGI and WSGI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import gunicorn_corpus
import peers
import pytest
from gunicorn_expected import expected_mismatches

HERE = Path(__file__).parent
APPS = {"asgi": ("recording_app:asgi", "asgi3"), "wsgi": ("recording_app:wsgi", "wsgi")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"sockact run exited with {process.returncode}: {process.stderr.read()[-2000:]}"
                if process.stderr
                else f"sockact run exited with {process.returncode}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"sockact run did not listen on port {port} in time")


@pytest.fixture(scope="module")
def corpus() -> list[gunicorn_corpus.Case]:
    return gunicorn_corpus.load_cases(peers.fetch(peers.GUNICORN))


@pytest.fixture(scope="module", params=sorted(APPS))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    interface = request.param
    app, flag = APPS[interface]
    port = free_port()
    log = (tmp_path_factory.mktemp("gunicorn-corpus") / f"{interface}.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sockact",
            "run",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--interface",
            flag,
            "--log-level",
            "warning",
        ],
        cwd=HERE,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_listening(port, process, time.monotonic() + 20)
        yield interface, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_gunicorn_request_corpus(server: tuple[str, int], corpus: list[gunicorn_corpus.Case]) -> None:
    interface, port = server
    mismatches = {case.id: gunicorn_corpus.check(case, port, interface) for case in corpus}
    failing = {case_id for case_id, problems in mismatches.items() if problems}
    for kind in ("valid", "invalid"):
        total = sum(case.kind == kind for case in corpus)
        bad = sum(case_id.startswith(kind + "/") for case_id in failing)
        print(f"\ngunicorn 23.0.0 corpus, {interface}: {kind} {total - bad} of {total} as gunicorn expects", end="")
    listed = expected_mismatches(interface)
    categories = Counter(category for category, _ in listed.values())
    print(f"\nclassified ({interface}): " + ", ".join(f"{n} {c}" for c, n in sorted(categories.items())))
    assert len(corpus) >= 90, f"only {len(corpus)} cases loaded"
    options = {case.id: case.options for case in corpus if case.options}
    new = {
        case_id: mismatches[case_id] + ([f"gunicorn options: {options[case_id]}"] if case_id in options else [])
        for case_id in sorted(failing - set(listed))
    }
    fixed = sorted(set(listed) - failing)
    assert not new, "gunicorn corpus mismatches not classified in gunicorn_expected.py:\n" + "\n".join(
        f"{case_id}: {problems}" for case_id, problems in new.items()
    )
    assert not fixed, f"classified as mismatching but now as gunicorn expects (remove them): {fixed}"


def test_cases_refused_for_a_missing_host_pass_with_one(
    server: tuple[str, int], corpus: list[gunicorn_corpus.Case]
) -> None:
    """sockact refuses HTTP/1.1 without Host (stricter by design): so that the rest of those requests is
    still held to gunicorn's expectations, each is sent again with a Host field added."""
    interface, port = server
    listed = expected_mismatches(interface)
    no_host = [case for case in corpus if case.id in listed and "without Host" in listed[case.id][1]]
    assert len(no_host) >= 10, f"only {len(no_host)} cases refused for a missing Host"
    problems = {case.id: gunicorn_corpus.check(gunicorn_corpus.with_host(case), port, interface) for case in no_host}
    failing = {case_id: found for case_id, found in problems.items() if found}
    print(
        f"\ngunicorn 23.0.0 corpus, {interface}: {len(no_host) - len(failing)} of {len(no_host)} requests refused "
        "for a missing Host reach the app as gunicorn expects once they have one"
    )
    assert not failing, "\n".join(f"{case_id}: {found}" for case_id, found in failing.items())
