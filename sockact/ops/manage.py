"""`sockact install` and `uninstall`: an app's unit files in the unit directory, and their enablement."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..contract import health_socket_unit, socket_unit, target_unit, template_unit
from ..errors import NotOursError, StartFailed, SystemdError, UsageError
from . import chosen_unit_dir, default_unit_dir
from .app import is_ours, require_ours, require_root, validated_name
from .systemctl import Props, daemon_reload, show_by_id, systemctl, try_systemctl

if TYPE_CHECKING:
    from ..generator.render import Unit
    from ..generator.spec import UnitSpec


def unit_names(name: str) -> tuple[str, ...]:
    """Every unit file an app may have; NAME-health.socket only with --health-listen."""
    return socket_unit(name), template_unit(name), target_unit(name), health_socket_unit(name)


def sockets_of(spec: UnitSpec) -> list[str]:
    """The socket units install starts and enables: the app's, and the health endpoint's if it has one."""
    return [socket_unit(spec.name), *([health_socket_unit(spec.name)] if spec.health_listen is not None else [])]


def unit_directory(unit_dir: str | None) -> Path:
    directory = Path(unit_dir or default_unit_dir())
    if not directory.is_dir():
        raise UsageError(f"unit directory {str(directory)!r} does not exist; create it or pass another --unit-dir")
    return directory


def runtime_flag(directory: Path) -> list[str]:
    """['--runtime'] for units under /run: they vanish at reboot, so their enablement must too."""
    return ["--runtime"] if directory.resolve().is_relative_to("/run") else []


# --- install ---------------------------------------------------------------------------------------


def _check_loaded_elsewhere(name: str, directory: Path) -> None:
    """Refuse to shadow, or be shadowed by, a unit of the same name in another directory."""
    loaded = show_by_id([f"{name}.socket", f"{name}.target", f"{name}@1.service"], ["LoadState", "FragmentPath"])
    for unit, props in loaded.items():
        path = props.get("FragmentPath", "")
        if props.get("LoadState") == "masked":
            raise UsageError(f"{unit} is masked; unmask it (`sudo systemctl unmask {unit}`) or choose another app name")
        if not path or Path(path).parent.resolve() == directory.resolve():
            continue
        if not is_ours(path):
            raise NotOursError(
                f"{unit} is already defined by {path}, which sockact did not write; choose another app name"
            )
        raise UsageError(
            f"{name} is already installed in {Path(path).parent}; uninstall it there first "
            f"(`sudo sockact uninstall {name} --unit-dir {Path(path).parent}`) or install there"
        )


def _check_files(units: list[Unit], directory: Path) -> None:
    for unit in units:
        path = directory / unit.filename
        if path.exists():
            require_ours(unit.filename, path)


def install(
    spec: UnitSpec, *, unit_dir: str | None, enable: bool, now: bool, dry_run: bool = False, out: TextIO = sys.stdout
) -> int:
    """Preflight, then write the units, daemon-reload, start (--now: until every worker is ready) and
    enable. Nothing is written when a check fails; a fresh install that does not start is removed again."""
    from ..generator.render import render
    from ..generator.writer import write_units
    from .preflight import preflight

    if not dry_run:
        require_root("install")
    directory = unit_directory(unit_dir)
    units = render(spec)
    _check_files(units, directory)
    _check_loaded_elsewhere(spec.name, directory)
    out.writelines(f"checked {line}\n" for line in preflight(spec))
    if dry_run:
        _print_plan(spec, units, directory, enable=enable, now=now, out=out)
        return 0
    previous = {
        unit.filename: (directory / unit.filename).read_text(encoding="utf-8")
        for unit in units
        if (directory / unit.filename).exists()
    }
    serving, failing = _workers_before(spec)
    out.writelines(f"wrote {path}\n" for path in write_units(units, str(directory)))
    daemon_reload()
    _print_score(spec.name, out)
    if now:
        _start(spec, units, directory, previous, out)
    sockets = sockets_of(spec)
    if enable:  # after --now: an app that does not start is never enabled
        systemctl("enable", *runtime_flag(directory), *sockets)
        until = " (until the next reboot: --unit-dir is under /run)" if runtime_flag(directory) else ""
        out.write(f"enabled {' and '.join(sockets)}: it starts on boot{until}\n")
    if serving:
        out.write(
            f"{spec.name} is running ({len(serving)} workers on the previous units): run `sudo sockact reload "
            f"{spec.name}` to restart them on the new ones, and `sudo sockact scale {spec.name} {spec.workers}` "
            "if the worker count changed\n"
        )
    elif failing and not now:  # with --now they were restarted on the new units above
        out.write(
            f"{spec.name}'s workers could not start the app ({len(failing)} waiting to retry): run `sudo sockact "
            f"start {spec.name}` to try the new units now and wait until they are ready\n"
        )
    return 0


def _workers_before(spec: UnitSpec) -> tuple[list[str], list[str]]:
    """The installed app's workers that serve, and those that are failed or wait to retry an app that
    could not start (active to systemd: their parent lives on to retry)."""
    from ..contract import CANNOT_START

    shown = show_by_id(list(spec.instances), ["ActiveState", "StatusText"])
    serving, failing = [], []
    for unit, props in shown.items():
        state, text = props.get("ActiveState"), props.get("StatusText", "")
        if state == "failed" or (state in ("active", "activating") and text.startswith(CANNOT_START)):
            failing.append(unit)
        elif state == "active":
            serving.append(unit)
    return serving, failing


def _print_plan(spec: UnitSpec, units: list[Unit], directory: Path, *, enable: bool, now: bool, out: TextIO) -> None:
    """What install would do, for --dry-run."""
    out.writelines(f"would write {directory / unit.filename}\n" for unit in units)
    if now:
        out.write(f"would start {spec.name}.socket and {spec.workers} workers and wait until they are ready\n")
    if enable:
        out.write(
            f"would enable {' and '.join(sockets_of(spec))}"
            f"{' until the next reboot' if runtime_flag(directory) else ''}\n"
        )
    out.write("dry run: every check passed; nothing was written (run it again without --dry-run to install)\n")


def _start(spec: UnitSpec, units: list[Unit], directory: Path, previous: dict[str, str], out: TextIO) -> None:
    """Start the socket and every worker and wait until each is ready; on failure undo this install and
    raise StartFailed with the app's own reason."""
    from .ready import Before, Started, last_error, wait_started

    socket, target = f"{spec.name}.socket", f"{spec.name}.target"
    sockets = sockets_of(spec)
    shown = show_by_id([*sockets, target, *spec.instances], ["ActiveState"])
    was_active = {unit for unit, props in shown.items() if props.get("ActiveState") == "active"}
    before = Before.read(spec.instances)
    if before.retrying:  # workers waiting to retry the old app try the new units at once
        systemctl("restart", "--no-block", *before.retrying)
    try:
        systemctl("start", *sockets)
    except SystemdError as exc:  # the port was taken after the preflight, or systemd refused the socket
        started = Started(0.0, socket, last_error(socket) or str(exc))
    else:
        # Starting the target pulls every wanted worker; --no-block, so that a worker that cannot start is
        # seen retrying instead of blocking here until its start times out.
        systemctl("start", "--no-block", target, *spec.instances)
        started = wait_started(spec.instances, before)
    if started.ready:
        listening = ", ".join(item.address for item in spec.listeners)
        out.write(
            f"started {spec.name}: listening on {listening}, {spec.workers} workers ready in {started.seconds:.1f} s\n"
        )
        return
    if previous:
        undone = _restore(spec, directory, previous, was_active)
    else:
        undone = _roll_back(spec.name, directory, units, out)
    raise StartFailed(f"{spec.name} did not start: {started.unit}: {started.reason}; {undone}")


def _roll_back(name: str, directory: Path, units: list[Unit], out: TextIO) -> str:
    """A fresh install that does not start leaves nothing behind: stopped, units removed."""
    _stop(name)
    # The boot-failure counters the workers kept in RuntimeDirectory= (preserved across restarts) go too.
    try_systemctl("clean", "--what=runtime", f"{name}@1.service")
    _remove([directory / unit.filename for unit in units], directory, name, out)
    daemon_reload()
    _reset_failed(name)
    return "rolled back: the units were stopped and removed, nothing is installed or enabled"


def _restore(spec: UnitSpec, directory: Path, previous: dict[str, str], was_active: set[str]) -> str:
    """An upgrade that does not start gets its previous units back; what this install started is stopped
    again, and workers that ran before keep running."""
    from ..generator.render import Unit
    from ..generator.writer import write_units

    name = spec.name
    started_now = [unit for unit in (f"{name}.target", *spec.instances, *sockets_of(spec)) if unit not in was_active]
    if started_now:
        systemctl("stop", *started_now)
    write_units([Unit("previous", filename, text) for filename, text in previous.items()], str(directory))
    daemon_reload()
    try_systemctl("reset-failed", f"{name}.target", f"{name}@*.service")
    running = sum(unit in was_active for unit in spec.instances)
    workers = f"{running} of its workers still run as before" if running else "its workers are stopped"
    sock = "listening" if f"{name}.socket" in was_active else "stopped"
    return (
        f"this was an upgrade: the previous units of {name} are back in place (its enablement is unchanged), "
        f"{workers} and its socket is {sock}"
    )


def _print_score(name: str, out: TextIO) -> None:
    from .security import security_score

    score = security_score(f"{name}@1.service")
    if score is not None:
        out.write(
            f"sandbox: `systemd-analyze security {name}@1.service` exposure {score:.1f} "
            f"(`sockact generate {name} ... --explain` says what each line does)\n"
        )


# --- uninstall -------------------------------------------------------------------------------------


def _drop_ins(directory: Path, name: str) -> tuple[list[Path], list[Path]]:
    """(drop-ins sockact wrote, drop-ins it did not) for the app's units."""
    found = [conf for unit in unit_names(name) for conf in sorted((directory / f"{unit}.d").glob("*.conf"))]
    return [conf for conf in found if is_ours(conf)], [conf for conf in found if not is_ours(conf)]


def _stop(name: str) -> None:
    """Stop the socket (no new activations) and the target (its workers drain first); then stray instances."""
    units = [socket_unit(name), health_socket_unit(name), target_unit(name)]
    loaded = show_by_id(units, ["LoadState"])
    systemctl("stop", *(unit for unit in units if loaded.get(unit, {}).get("LoadState") == "loaded"))
    systemctl("stop", f"{name}@*.service")


def _reset_failed(name: str) -> None:
    try_systemctl("reset-failed", f"{name}.socket", f"{name}.target", f"{name}@*.service")
    try_systemctl("reset-failed", health_socket_unit(name))  # apart: an app without one would fail the call above


def _remove(paths: list[Path], directory: Path, name: str, out: TextIO) -> None:
    for path in paths:
        path.unlink()
        out.write(f"removed {path}\n")
    for unit in unit_names(name):
        drop_in_dir = directory / f"{unit}.d"
        if drop_in_dir.is_dir() and not any(drop_in_dir.iterdir()):
            drop_in_dir.rmdir()


def installed_dir(name: str, unit_dir: str | None) -> Path:
    """The directory given, else the one systemd loaded NAME.target from, else the default."""
    chosen = unit_dir or chosen_unit_dir()
    if chosen is None:
        target = show_by_id([f"{name}.target"], ["LoadState", "FragmentPath"]).get(f"{name}.target", {})
        if target.get("LoadState") == "loaded" and target.get("FragmentPath"):
            return Path(target["FragmentPath"]).parent
    return unit_directory(chosen)


# systemd's directory settings, their base under /, and what they hold for a person.
_KEPT = (
    ("StateDirectory", "var/lib", "the app's data"),
    ("CacheDirectory", "var/cache", "its cache"),
    ("LogsDirectory", "var/log", "its log files"),
)


def kept_directories(props: Props, root: Path = Path("/")) -> list[tuple[Path, str]]:
    """The state, cache and logs directories of an app's workers that exist: uninstall leaves them.

    With DynamicUser= systemd keeps the real directory under private/ and links to it.
    """
    found: list[tuple[Path, str]] = []
    for setting, base, what in _KEPT:
        for entry in props.get(setting, "").split():
            relative = entry.partition(":")[0]  # DIR or DIR:SYMLINK (systemd 256+)
            public, private = root / base / relative, root / base / "private" / relative
            if private.is_dir():
                link = f", linked from {public}" if public.is_symlink() else ""
                found.append((private, f"{setting}=, {what}{link}"))
            elif public.exists():
                found.append((public, f"{setting}=, {what}"))
    return found


def _kept_count(count: int) -> str:
    return f", {count} director{'y' if count == 1 else 'ies'} kept" if count else ""


def uninstall(name: str, *, unit_dir: str | None, out: TextIO = sys.stdout) -> int:
    require_root("uninstall")
    validated_name(name)
    directory = installed_dir(name, unit_dir)
    files = [directory / unit for unit in unit_names(name) if (directory / unit).exists()]
    if not files:
        raise UsageError(f"unknown app {name!r}: no units of it in {directory}; see `sockact list --unit-dir DIR`")
    for path in files:
        require_ours(path.name, path)
    ours, theirs = _drop_ins(directory, name)
    worker = show_by_id([f"{name}@1.service"], [setting for setting, _, _ in _KEPT]).get(f"{name}@1.service", {})
    _stop(name)
    try_systemctl("disable", *runtime_flag(directory), f"{name}.socket", f"{name}.target")
    try_systemctl("disable", *runtime_flag(directory), health_socket_unit(name))  # apart: most apps have none
    _remove([*ours, *files], directory, name, out)
    daemon_reload()
    _reset_failed(name)
    for path in theirs:
        out.write(f"left {path}: sockact did not write it\n")
    kept = kept_directories(worker)
    for path, what in kept:
        out.write(f"kept {path} ({what}): remove it yourself once it is no longer needed\n")
    out.write(
        f"uninstalled {name}: stopped, disabled, {len(ours) + len(files)} files removed{_kept_count(len(kept))}\n"
    )
    return 0
