"""An ASGI app that reports, as JSON, what the sandbox lets a worker do (see tests/systemd/test_hardening.py)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import mmap
import os
import sys
from typing import Any, Callable


def attempt(action: Callable[[], object]) -> str:
    try:
        return f"ok {action()}"
    except OSError as exc:
        return f"denied {exc.strerror}"


def ctypes_callback() -> int:
    # libffi closures: what cffi-less C bindings use for callbacks; must work under MemoryDenyWriteExecute=.
    libc = ctypes.CDLL(None)
    numbers = (ctypes.c_int * 4)(3, 1, 4, 2)
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    libc.qsort(numbers, 4, ctypes.sizeof(ctypes.c_int), compare(lambda a, b: a[0] - b[0]))
    return int("".join(str(n) for n in numbers))


def write_execute_memory() -> str:
    # What a JIT (or cffi's ffi.callback()) asks for.
    region = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    region.close()
    return "mapped"


def write_file(directory: str | None) -> str:
    if not directory:
        return "no directory"
    path = os.path.join(directory, f"probe-{os.getpid()}")
    with open(path, "w") as handle:
        handle.write("x")
    os.unlink(path)
    return path


def effective_capabilities() -> str:
    with open("/proc/self/status") as status:
        return next(line.split()[1] for line in status if line.startswith("CapEff:"))


def report() -> dict[str, Any]:
    here = os.path.dirname(os.path.abspath(__file__))
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "capeff": effective_capabilities(),
        "loop": type(asyncio.get_running_loop()).__module__,
        "ctypes_callback": attempt(ctypes_callback),
        "write_execute": attempt(write_execute_memory),
        "write_app_dir": attempt(lambda: write_file(here)),
        "write_tmp": attempt(lambda: write_file("/tmp")),
        "write_state": attempt(lambda: write_file(os.environ.get("STATE_DIRECTORY"))),
        "write_writable": attempt(lambda: write_file(os.environ.get("PROBE_WRITABLE"))),
        # The unit's main process (sockact run --respawn, which forked this one) is the only other one.
        "other_processes": sorted(
            int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (os.getpid(), os.getppid())
        )[:3],
        "meminfo": attempt(lambda: open("/proc/meminfo").readline().split()[0]),
    }


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            print("sandbox probe started", file=sys.stderr, flush=True)
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = json.dumps(report()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
