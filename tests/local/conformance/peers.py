"""The peers' own published HTTP tests, fetched at test time: pinned sdists from PyPI, checked by sha256.

Nothing of uvicorn's or gunicorn's tests is copied into this repository: the sdists are downloaded
(over HTTPS from PyPI) into a cache directory, their checksums
verified, and only the test files the conformance suites need are extracted next to them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true")
INDEX = "https://pypi.org/simple"  # PyPI's simple index, over HTTPS


@dataclass(frozen=True)
class Sdist:
    name: str
    version: str
    sha256: str
    members: tuple[str, ...]  # path prefixes inside the sdist's top directory to extract

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"

    @property
    def top(self) -> str:
        return f"{self.name}-{self.version}"


UVICORN = Sdist(
    "uvicorn",
    "0.55.0",
    "b65ae5f0f30cdcbc26a104b93d7d19723aa5f46fec3915a6c247d5795449331c",
    ("tests/__init__.py", "tests/response.py", "tests/protocols/__init__.py", "tests/protocols/test_http.py"),
)
GUNICORN = Sdist(
    "gunicorn",
    "23.0.0",
    "f014447a0101dc57e294f6c18ca6b40227a4c90e9bdb586042628030cba004ec",
    ("tests/requests/valid/", "tests/requests/invalid/"),
)


class PeerUnavailable(Exception):
    """The sdist could not be downloaded or did not match its pinned checksum."""


def cache_dir() -> Path:
    configured = os.environ.get("SOCKACT_PEER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "sockact-peers"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def download(sdist: Sdist, into: Path) -> Path:
    """The verified sdist in `into`, downloaded unless a copy with the pinned checksum is already there.

    The file's address comes from PyPI's simple index (JSON form); nothing is built or installed, so
    no build backend is fetched, and the pinned checksum is checked against the bytes received.
    """
    archive = into / sdist.filename
    if archive.exists() and sha256(archive) == sdist.sha256:
        return archive
    into.mkdir(parents=True, exist_ok=True)
    url = _file_url(sdist)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise PeerUnavailable(f"cannot download {url}: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sdist.sha256:
        # Not a skip: a changed file under a pinned version is exactly what the pin is there to catch.
        raise AssertionError(f"{sdist.filename}: sha256 {actual} is not the pinned {sdist.sha256}")
    staging = archive.with_suffix(".part")
    staging.write_bytes(data)
    staging.replace(archive)
    return archive


def _file_url(sdist: Sdist) -> str:
    index = f"{INDEX}/{sdist.name}/"
    request = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            files = json.load(response)["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise PeerUnavailable(f"cannot read the index page {index}: {exc}") from None
    for entry in files:
        if entry.get("filename") == sdist.filename:
            return str(entry["url"])
    raise PeerUnavailable(f"{index} lists no {sdist.filename}")


def extract(sdist: Sdist, archive: Path, into: Path) -> Path:
    """Extract the wanted members under into/<name>-<version>/ (once: a marker names the checksum)."""
    root = into / sdist.top
    marker = root / ".extracted"
    if marker.exists() and marker.read_text() == sdist.sha256:
        return root
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            inner = member.name.partition("/")[2]
            if not member.isfile() or not any(
                inner == want or (want.endswith("/") and inner.startswith(want)) for want in sdist.members
            ):
                continue
            target = root / inner
            if ".." in Path(inner).parts:
                raise AssertionError(f"{sdist.filename}: unsafe member path {member.name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    marker.write_text(sdist.sha256)
    return root


def fetch(sdist: Sdist) -> Path:
    """The extracted test tree of `sdist`. Unavailable: a failure under CI=true, else a skip naming why."""
    base = cache_dir()
    try:
        return extract(sdist, download(sdist, base), base)
    except PeerUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI=true and the peer tests cannot be fetched: {exc}", pytrace=False)
        pytest.skip(f"peer tests unavailable (set CI=true to make this a failure): {exc}")
