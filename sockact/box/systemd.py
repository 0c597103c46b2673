"""PrivateSystemd: a booted box and everything a test does with it (run commands inside, units, systemctl, journal)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import subprocess
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .host import HarnessError, unavailable_reason
from .lifecycle import Box, children, comm, destroy, launch

if TYPE_CHECKING:
    from typing import Self


class _GroupPopen(subprocess.Popen[Any]):
    """A Popen of nsenter whose signals reach the whole process group.

    nsenter forks to enter the PID namespace and does not forward signals, so terminate() and
    kill() are sent to the group, which holds both nsenter and the command inside the box.
    """

    def send_signal(self, sig: int) -> None:
        self.poll()
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)


class PrivateSystemd:
    """A throwaway systemd running as PID 1 of its own namespaces; use as a context manager.

    Units go into the box's /run/systemd/system (``write_unit``); commands run inside through
    nsenter (``run``, ``systemctl``, ``journal``). The host's files are shared: a venv under /opt
    is usable by DynamicUser= services, /root is not. Boxes are independent of each other.
    """

    def __init__(self, *, boot_timeout: float = 30.0) -> None:
        self.boot_timeout = boot_timeout
        self._box: Box | None = None
        self._finalizer: weakref.finalize[[Box], PrivateSystemd] | None = None
        self._version: int | None = None

    @property
    def pid(self) -> int:
        """The host's PID of the systemd inside the box."""
        return self._running().pid

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self._box.pid}" if self._box is not None else "stopped"
        return f"<PrivateSystemd {state}>"

    def start(self) -> Self:
        """Boot the box and wait until systemd reports the boot finished."""
        if self._box is not None:
            return self
        reason = unavailable_reason()
        if reason is not None:
            raise HarnessError(reason)
        box = launch()
        self._box = box
        self._finalizer = weakref.finalize(self, destroy, box)
        try:
            self._await_boot(box)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill the box and everything in it. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
        self._box = None
        self._finalizer = None

    def _await_boot(self, box: Box) -> None:
        deadline = time.monotonic() + self.boot_timeout
        box.pid = self._await_systemd_pid(box, deadline)
        box.pidfd = os.pidfd_open(box.pid)
        state = ""
        while state not in ("running", "degraded"):
            if box.launcher.poll() is not None:
                raise HarnessError(self._boot_failure(box, f"systemd exited during boot ({state or 'no state'})"))
            if state in ("maintenance", "stopping", "offline"):
                raise HarnessError(self._boot_failure(box, f"systemd boot failed: state {state}"))
            if time.monotonic() > deadline:
                summary = f"systemd did not finish booting within {self.boot_timeout:g}s ({state or 'no state'})"
                raise HarnessError(self._boot_failure(box, summary))
            time.sleep(0.02)
            state = self._system_state()
        # The box's network namespace starts with lo down; servers and clients inside need it.
        self.run("ip", "link", "set", "lo", "up")

    def _system_state(self) -> str:
        """What ``systemctl is-system-running`` says, or why it said nothing (manager not up yet)."""
        answer = self.run("systemctl", "is-system-running", check=False, timeout=10)
        return answer.stdout.strip() or answer.stderr.strip()

    def _await_systemd_pid(self, box: Box, deadline: float) -> int:
        """The PID of unshare's child once it has exec'd systemd (before that it is the boot script)."""
        while True:
            for child in children(box.launcher.pid):
                if comm(child) == "systemd":
                    return child
            if box.launcher.poll() is not None:
                raise HarnessError(self._boot_failure(box, "the box exited before systemd started"))
            if time.monotonic() > deadline:
                raise HarnessError(self._boot_failure(box, "systemd did not start in the box"))
            time.sleep(0.005)

    def _boot_failure(self, box: Box, summary: str) -> str:
        tail: list[str] = []
        if box.pid and box.launcher.poll() is None:
            with contextlib.suppress(HarnessError):
                tail = self.run(
                    "journalctl", "--no-pager", "-q", "-n", "15", check=False, timeout=10
                ).stdout.splitlines()
        if not tail:
            box.console.flush()
            box.console.seek(0)
            tail = box.console.read().decode(errors="replace").splitlines()[-15:]
        return summary + ("; last log lines:\n" + "\n".join(tail) if tail else "")

    def _running(self) -> Box:
        if self._box is None or not self._box.pid:
            raise HarnessError("the private systemd is not running (call start() first)")
        return self._box

    def _nsenter(self, argv: tuple[str, ...]) -> list[str]:
        if not argv:
            raise HarnessError("no command given to run in the private systemd")
        return ["nsenter", "-t", str(self._running().pid), "-a", "--", *argv]

    @staticmethod
    def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
        # Layered over the caller's environment so PATH and locale carry over; pagers and colours
        # would only get in the way of parsing output.
        env = {**os.environ, "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "PAGER": "cat"}
        env.update(extra or {})
        return env

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the box and capture its output as text.

        ``env`` adds to the caller's environment. On a non-zero exit with ``check``, or on
        ``timeout``, raise HarnessError naming the command, its exit status and stderr.
        """
        with _GroupPopen(
            self._nsenter(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",  # journal and unit output may hold any bytes
            env=self._env(env),
            start_new_session=True,  # so a timeout can kill the command inside, not just nsenter
        ) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.communicate(timeout=5)
                raise HarnessError(f"timed out after {timeout:g}s in the private systemd: {shlex.join(argv)}") from None
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and result.returncode != 0:
            raise HarnessError(f"{shlex.join(argv)} exited with status {result.returncode}: {err.strip()}")
        return result

    def popen(self, *argv: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start argv inside the box in the background; terminate()/kill() reach the command itself."""
        kw.setdefault("start_new_session", True)
        kw["env"] = self._env(kw.get("env"))
        return _GroupPopen(self._nsenter(argv), **kw)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def journal(self, *args: str) -> str:
        """journalctl's output for args, e.g. ``journal("-u", "app.socket")``."""
        return self.run("journalctl", "--no-pager", *args).stdout

    def path(self, inside: str) -> pathlib.Path:
        """The host's path to a path inside the box (through /proc/PID/root).

        Absolute symlinks met on the way resolve against the host's root, not the box's.
        """
        return pathlib.Path(f"/proc/{self._running().pid}/root") / inside.lstrip("/")

    def unit_dir(self) -> pathlib.Path:
        """The host's path to the box's /run/systemd/system, where runtime units go."""
        return self.path("/run/systemd/system")

    def write_unit(self, name: str, text: str) -> None:
        """Write a unit (or a drop-in such as ``app.service.d/10-x.conf``) into the box; daemon_reload() follows."""
        relative = pathlib.PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise HarnessError(f"unit name must be relative to the unit directory: {name!r}")
        target = self.unit_dir() / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` of unit as a dict; all properties unless some are named."""
        selected = [f"--property={','.join(props)}"] if props else []
        output = self.systemctl("show", *selected, "--", unit).stdout
        return dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 20, interval: float = 0.05, what: str = ""
    ) -> None:
        """Poll predicate until it is true; HarnessError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise HarnessError(f"timed out waiting for {what or 'condition'} after {timeout:g}s")
            time.sleep(interval)

    def wait_active(self, unit: str, timeout: float = 20) -> None:
        """Wait until unit is active; fail at once, with its log, if it fails instead."""

        def active() -> bool:
            state = self.systemctl("is-active", "--", unit, check=False).stdout.strip()
            if state == "failed":
                log = self.run("journalctl", "--no-pager", "-q", "-n", "20", "-u", unit, check=False).stdout
                raise HarnessError(f"{unit} failed; last log lines:\n{log.rstrip()}")
            return state == "active"

        self.wait_for(active, timeout=timeout, what=f"{unit} to become active")

    def systemd_version(self) -> int:
        """The major version of the systemd running in the box, e.g. 252."""
        if self._version is None:
            first_line = self.systemctl("--version").stdout.split("\n", 1)[0]
            self._version = int(first_line.split()[1])
        return self._version
