"""`sockact install --container IMAGE` preflight: podman is there, the image is in its store, the app imports in it."""

from __future__ import annotations

import os
import subprocess

from ..errors import PreflightFailed
from ..generator import container
from ..generator.spec import UnitSpec
from .preflight import EXIT_APP, EXIT_NO_SOCKACT, IMPORT_CHECK, IMPORT_TIMEOUT, check_port

PYTHON_IN_IMAGE = "python3"  # on the image's PATH, like its `sockact`


def preflight(spec: UnitSpec) -> list[str]:
    """Every check in order; one line per check that passed. PreflightFailed at the first that fails."""
    passed = [check_podman(), check_image(spec)]
    if spec.env_file is not None:
        if not os.path.isfile(spec.env_file) or not os.access(spec.env_file, os.R_OK):
            raise PreflightFailed(
                f"--env-file {spec.env_file} is not a readable file; podman reads it at each "
                "start: create it (KEY=VALUE lines) or leave --env-file out"
            )
        passed.append(f"--env-file {spec.env_file}: readable")
    passed += [check_port(spec, item) for item in spec.listeners if item.is_tcp]
    passed.append(check_import(spec))
    return passed


def check_podman() -> str:
    if not os.access(container.PODMAN, os.X_OK):
        raise PreflightFailed(f"--container needs podman at {container.PODMAN}; install it (apt-get install podman)")
    return f"podman: {container.PODMAN}"


def _podman(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [container.PODMAN, *argv],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, -1, "", f"podman {argv[0]} took longer than {timeout:g} s")


def check_image(spec: UnitSpec) -> str:
    """The workers start with --pull=never: the image must be in root's store before they start."""
    assert spec.container is not None
    if _podman("image", "exists", spec.container).returncode != 0:
        raise PreflightFailed(
            f"--container {spec.container} is not in podman's image store; `podman pull "
            f"{spec.container}` (or build it) first: the workers never pull"
        )
    return f"--container {spec.container}: in podman's image store"


def check_command(spec: UnitSpec) -> list[str]:
    """podman run for the import check: the workers' user, sandbox, environment and directory, no socket."""
    assert spec.container is not None and spec.app is not None
    uid, gid = container.user(spec)
    flags = ["run", "--rm", "--pull=never", "--network=none", "--cgroups=disabled", "--ulimit=host"]
    if spec.harden:
        flags += ["--read-only", "--cap-drop=all", "--security-opt=no-new-privileges"]
    flags.append(f"--user={uid}:{gid}")
    flags += [f"--env={key}={value}" for key, value in spec.env]
    if spec.env_file is not None:
        flags.append(f"--env-file={spec.env_file}")
    flags += [f"--env={variable}={path}" for variable, path in container.kept_dirs(spec)]
    if spec.chdir is not None:
        flags.append(f"--workdir={spec.chdir}")
    return flags + [f"--entrypoint={PYTHON_IN_IMAGE}", spec.container, "-c", IMPORT_CHECK, spec.app]


def check_import(spec: UnitSpec) -> str:
    assert spec.app is not None
    result = _podman(*check_command(spec), timeout=IMPORT_TIMEOUT + 15)
    said = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode == EXIT_APP and said:
        raise PreflightFailed(f"{said[-1]}; fix the app, the image or --app/--chdir (checked in {spec.container})")
    if result.returncode == EXIT_NO_SOCKACT:
        reason = said[-1] if said else "no reason given"
        raise PreflightFailed(
            f"{PYTHON_IN_IMAGE} in {spec.container} cannot import sockact ({reason}); "
            "install sockact into the image (docs/containers.md has a Containerfile)"
        )
    if result.returncode != 0:
        errors = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        detail = errors[-1] if errors else f"exit status {result.returncode}"
        raise PreflightFailed(f"the import check of {spec.app} in {spec.container} failed ({detail})")
    return f"--app {spec.app}: imports in {spec.container} (as the workers' user, in their container sandbox)"
