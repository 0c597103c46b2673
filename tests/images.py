"""Container images built offline from this host's own files, for tests that run podman.

No registry is reachable from a test, so an image is a tar of a minimal root file system put
together here: the host's Python interpreter with its standard library, the shared libraries that
`ldd` names for it and for every extension module copied, sockact with the distributions it
requires (as installed in the running interpreter's environment), a `sockact` console script, and
any extra modules a test adds (an app). `podman import` turns the tar into an image. Any podman
test reuses it: `systemd` units (tests/systemd/test_containers.py) as much as `podman kube play`.

The tag is a digest of the tar, so an image already in the store is reused, and a changed tree
(a new sockact, another app) is a new tag.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

# Parts of the standard library no server needs: leaving them out halves the image.
_STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    f"config-{sys.version_info.major}.{sys.version_info.minor}-x86_64-linux-gnu",
}
SITE = "usr/local/lib/python3/dist-packages"  # on sys.path through a .pth file written below
_LDD_PATH = re.compile(r"(/\S+) \(0x")
NOBODY = "65534"

_Runner = Callable[..., subprocess.CompletedProcess[str]]


def distributions(root: str = "sockact") -> list[metadata.Distribution]:
    """`root` and every distribution it requires, recursively, with markers evaluated and no extras."""
    found: dict[str, metadata.Distribution] = {}
    pending = [root]
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        dist = metadata.distribution(name)
        found[key] = dist
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return list(found.values())


def _dist_files(dist: metadata.Distribution) -> Iterable[tuple[Path, str]]:
    """(host file, path inside SITE) of every installed file of a distribution inside site-packages."""
    for entry in dist.files or ():
        source = Path(str(dist.locate_file(entry)))
        relative = str(entry)
        if relative.startswith("..") or "__pycache__" in relative or not source.is_file():
            continue  # console scripts (bin/) are written anew below; caches are rebuilt
        yield source, relative


def _shared_libraries(binaries: Iterable[Path]) -> set[Path]:
    """Every shared library (with the dynamic loader) that `ldd` names for these ELF files."""
    libraries: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
        libraries.update(Path(match) for match in _LDD_PATH.findall(out))
        libraries.update(Path(line.split()[0]) for line in out.splitlines() if line.strip().startswith("/"))
    return libraries


class _Tree:
    """A root file system being written into a tar, in memory."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w")  # noqa: SIM115 - closed by close()
        self.dirs: set[str] = set()

    def directory(self, path: str, mode: int = 0o755) -> None:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            name = "/".join(parts[:depth])
            if name and name not in self.dirs:
                self.dirs.add(name)
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode if depth == len(parts) else 0o755, 0
                self.tar.addfile(info)

    def data(self, path: str, content: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(content), mode, 0
        self.tar.addfile(info, io.BytesIO(content))

    def file(self, source: Path, path: str) -> None:
        """A host file's content (symlinks followed) at `path`, keeping its permission bits."""
        self.data(path, source.read_bytes(), source.stat().st_mode & 0o777)

    def link(self, path: str, target: str) -> None:
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
        self.tar.addfile(info)

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def _stdlib(tree: _Tree) -> list[Path]:
    """The interpreter's standard library under its own path; returns the extension modules copied."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    extensions = []
    for directory, subdirs, files in os.walk(stdlib):
        here = Path(directory)
        subdirs[:] = sorted(
            d
            for d in subdirs
            if d not in _STDLIB_SKIP
            and d != "__pycache__"
            and not (here == stdlib and d in ("site-packages", "dist-packages"))
        )
        for name in sorted(files):
            source = here / name
            tree.file(source, str(source))
            if name.endswith(".so"):
                extensions.append(source)
    return extensions


def root_tar(extra_modules: dict[str, Path] | None = None) -> bytes:
    """The image's root file system as a tar: Python, sockact and its requirements, the extra modules
    ({module file name in site-packages: host file}), their shared libraries, and accounts for root and nobody."""
    tree = _Tree()
    interpreter = Path(os.path.realpath(sys.executable))
    tree.file(interpreter, str(interpreter))
    tree.link("usr/bin/python3", interpreter.name)
    extensions = _stdlib(tree)
    for dist in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
        for source, relative in _dist_files(dist):
            tree.file(source, f"{SITE}/{relative}")
            if relative.endswith(".so"):
                extensions.append(source)
    for module, source in sorted((extra_modules or {}).items()):
        tree.file(source, f"{SITE}/{module}")
    # Debian's interpreter reads /usr/local/lib/python3.X/dist-packages; a .pth there adds SITE.
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    tree.data(f"usr/local/lib/{version}/dist-packages/sockact-image.pth", f"/{SITE}\n".encode())
    tree.data(
        "usr/local/bin/sockact",
        b"#!/usr/bin/python3\nimport sys\nfrom sockact.cli import entry\nsys.exit(entry())\n",
        0o755,
    )
    for library in sorted(_shared_libraries([interpreter, *extensions])):
        tree.file(library, str(library))
    accounts = f"root:x:0:0:root:/root:/nonexistent\nnobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/nonexistent\n"
    tree.data("etc/passwd", accounts.encode())
    tree.data("etc/group", f"root:x:0:\nnogroup:x:{NOBODY}:\n".encode())
    mount_points = (("tmp", 0o1777), ("run", 0o755), ("dev", 0o755), ("proc", 0o755), ("sys", 0o755), ("root", 0o700))
    for path, mode in mount_points:
        tree.directory(path, mode)
    return tree.close()


def build(
    run: _Runner,
    name: str = "localhost/sockact-test",
    extra_modules: dict[str, Path] | None = None,
    host_path: Callable[[str], Path] = Path,
) -> str:
    """Import the image into podman's store through `run` (host or box), once per content; returns NAME:TAG.

    `run(*argv, check=..., timeout=...)` runs a command where podman's store lives: the box's
    `PrivateSystemd.run`, or subprocess on the host. The tar goes to /var/tmp as that command sees it:
    `host_path` maps that path to the host's (`PrivateSystemd.path` for a box).
    """
    content = root_tar(extra_modules)
    tag = hashlib.sha256(content).hexdigest()[:16]
    reference = f"{name}:{tag}"
    if run("podman", "image", "exists", reference, check=False, timeout=60).returncode == 0:
        return reference
    seen_as = f"/var/tmp/sockact-image-{tag}.tar"
    tar_path = host_path(seen_as)
    tar_path.write_bytes(content)
    try:
        imported = run(
            "podman", "import", "--change", 'ENTRYPOINT ["sockact"]', seen_as, reference, check=False, timeout=300
        )
        if imported.returncode != 0:
            raise RuntimeError(f"podman import failed: {imported.stderr.strip()}")
    finally:
        tar_path.unlink(missing_ok=True)
    return reference


def host_run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command on the host, shaped like PrivateSystemd.run."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def podman_missing() -> str | None:
    """None when podman is installed, else why a podman test cannot run."""
    return None if shutil.which("podman") else "podman is not installed (scripts/setup installs it)"
