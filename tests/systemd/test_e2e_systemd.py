"""End to end on a real systemd: generated units, socket activation, N workers on one socket."""

from __future__ import annotations

import subprocess
import time
from collections import Counter

from boxutil import concurrent_get, http_get, install_units, instance_states

from sockact.box import PrivateSystemd

HELLO = "sockact.examples.hello:app"


def test_first_connection_starts_every_worker_and_all_of_them_serve(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    install_units(box, "web", "--app", HELLO, "--listen", "8000", "--workers", "3")
    box.systemctl("start", "web.socket")
    assert instance_states(box, "web", 3) == ["inactive"] * 3  # nothing runs before the first connection

    assert http_get(box, "http://127.0.0.1:8000/").startswith("worker ")
    box.wait_for(lambda: instance_states(box, "web", 3) == ["active"] * 3, what="all 3 workers active")
    result = concurrent_get(box, 8000, "/sleep?ms=30", total=240, parallel=12)
    assert result["errors"] == []
    per_worker = Counter(worker for _, worker in result["answers"])
    assert set(per_worker) == {"1", "2", "3"}, per_worker


def test_stopping_the_target_keeps_the_socket_and_the_next_request_restarts_workers(
    private_systemd: PrivateSystemd,
) -> None:
    box = private_systemd
    install_units(box, "cycle", "--app", HELLO, "--listen", "8001", "--workers", "2")
    box.systemctl("start", "cycle.socket")
    http_get(box, "http://127.0.0.1:8001/")
    box.wait_for(lambda: instance_states(box, "cycle", 2) == ["active"] * 2, what="workers active")

    box.systemctl("stop", "cycle.target")
    assert instance_states(box, "cycle", 2) == ["inactive"] * 2
    assert box.show("cycle.socket", "ActiveState")["ActiveState"] == "active"
    assert ":8001 " in box.run("ss", "-ltnH").stdout  # still listening, nothing refused

    assert http_get(box, "http://127.0.0.1:8001/").startswith("worker ")
    box.wait_for(lambda: instance_states(box, "cycle", 2) == ["active"] * 2, what="workers restarted")


def test_unix_socket_app(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    install_units(box, "unixapp", "--app", HELLO, "--listen", "/run/unixapp.sock", "--workers", "2")
    box.systemctl("start", "unixapp.socket")
    body = http_get(box, "http://localhost/", "--unix-socket", "/run/unixapp.sock")
    assert body.startswith("worker ")
    box.wait_for(lambda: instance_states(box, "unixapp", 2) == ["active"] * 2, what="unix workers active")


def test_ipv6_and_ipv4_listeners_on_one_socket_unit(private_systemd: PrivateSystemd) -> None:
    box = private_systemd
    install_units(box, "dual", "--app", HELLO, "--listen", "[::1]:8002", "--listen", "127.0.0.1:8003", "--workers", "2")
    box.systemctl("start", "dual.socket")
    assert http_get(box, "http://[::1]:8002/").startswith("worker ")
    assert http_get(box, "http://127.0.0.1:8003/").startswith("worker ")
    box.wait_for(lambda: instance_states(box, "dual", 2) == ["active"] * 2, what="dual workers active")
    # both listeners are served by every worker: each worker adopted both fds
    pid = box.show("dual@2.service", "MainPID")["MainPID"]
    fds = box.run("ls", "-l", f"/proc/{pid}/fd").stdout
    assert fds.count("socket:") >= 2


SILENT_CLIENT = """
import socket, sys
conn = socket.create_connection(("127.0.0.1", 8004))
print("connected", flush=True)
sys.stdin.readline()
conn.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
answer = b""
while chunk := conn.recv(4096):
    answer += chunk
print(answer.split(b"\\r\\n", 1)[0].decode(), flush=True)
"""


def test_a_connection_reaches_the_workers_only_once_its_request_arrived(private_systemd: PrivateSystemd) -> None:
    """DeferAcceptSec= (TCP_DEFER_ACCEPT): a connected client that has sent nothing is held by the kernel,
    half-open on the server side, and neither starts nor wakes a worker; its request then goes through."""
    box = private_systemd
    install_units(box, "defer", "--app", HELLO, "--listen", "127.0.0.1:8004", "--workers", "1")
    box.systemctl("start", "defer.socket")
    client = box.popen("python3", "-c", SILENT_CLIENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "connected"
        held = box.run("ss", "-tnH", "state", "syn-recv", "( sport = :8004 )").stdout
        assert "127.0.0.1:8004" in held, box.run("ss", "-tanH").stdout
        time.sleep(0.5)
        assert instance_states(box, "defer", 1) == ["inactive"]  # systemd saw nothing to accept either

        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "HTTP/1.1 200 OK"
    finally:
        client.kill()
        client.wait()
    assert instance_states(box, "defer", 1) == ["active"]
