"""Cold-start probe, run inside the box: `python probe.py PORT TIMEOUT`.

Prints "polling" once it is running, then polls GET / until a 200 and prints the CLOCK_MONOTONIC
time of that answer. The box has no time namespace of its own, so the harness outside compares it
with the time at which it issued the start command. Standalone: imports nothing from the bench.
"""

from __future__ import annotations

import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def answered_200(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(REQUEST)
            return conn.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:  # refused while nothing listens, reset while a server starts
        return False


def main(argv: list[str]) -> int:
    port, timeout = int(argv[0]), float(argv[1])
    print("polling", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answered_200(port):
            print(f"{time.monotonic():.6f}", flush=True)
            return 0
        time.sleep(0.001)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
