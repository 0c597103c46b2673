"""gunicorn 23.0.0's request corpus (tests/requests/{valid,invalid}) sent over a real socket to `sockact run`.

A valid/NAME.http must reach the app as valid/NAME.py says (method, path, query, version, headers,
body); an invalid/NAME.http must not reach the app whole (the server answers 4xx/5xx or closes). The
files are read as gunicorn's tests/treq.py reads them; the .py expectations are executed with stand-ins
for the gunicorn modules they import (the settings they make on gunicorn's Config are recorded: an
expectation that holds only under a non-default gunicorn option is reported with it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import sys
import time
import types
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READ_TIMEOUT = 2.0  # seconds to wait for an answer the server owes (loopback, a trivial app)
SETTLE = 0.5  # an invalid request not answered or closed by then gets the client's end-of-stream


# --- loading ---------------------------------------------------------------------------------------------
def load_http(path: Path) -> bytes:
    """The bytes of a .http file, unescaped as gunicorn's treq.request does."""
    data = path.read_bytes().replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\000").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    if b"\\" in data:
        raise AssertionError(f"{path.name}: unexpected backslash (treq handles only HTAB, NUL and CRLF)")
    return data


def split_request_uri(uri: str) -> urllib.parse.SplitResult:
    """gunicorn.util.split_request_uri: a target starting with // is a path, not a network location."""
    if uri.startswith("//"):
        parts = urllib.parse.urlsplit("." + uri)
        return parts._replace(path=parts.path[1:])
    return urllib.parse.urlsplit(uri)


def uri(data: str) -> dict[str, Any]:
    """treq.uri: what gunicorn's parser makes of a request target."""
    parts = split_request_uri(data)
    return {
        "raw": data,
        "scheme": parts.scheme or "",
        "host": parts.netloc.rsplit(":", 1)[0] or None,
        "port": parts.port or 80,
        "path": parts.path or "",
        "query": parts.query or "",
        "fragment": parts.fragment or "",
    }


class _Config:
    """Stands in for gunicorn.config.Config: records the settings an expectation file makes."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}

    def set(self, name: str, value: Any) -> None:
        self.settings[name] = value


def _stand_ins() -> dict[str, types.ModuleType]:
    package = types.ModuleType("gunicorn")
    package.__path__ = []
    config = types.ModuleType("gunicorn.config")
    config.Config = _Config  # type: ignore[attr-defined]
    http = types.ModuleType("gunicorn.http")
    http.__path__ = []
    errors = types.ModuleType("gunicorn.http.errors")

    def error_class(name: str) -> type[Exception]:
        return type(name, (Exception,), {})

    vars(errors)["__getattr__"] = error_class  # PEP 562: any name the module lacks is an exception class
    return {"gunicorn": package, "gunicorn.config": config, "gunicorn.http": http, "gunicorn.http.errors": errors}


@dataclass
class Case:
    kind: str  # "valid" or "invalid"
    name: str
    data: bytes
    expect: list[dict[str, Any]] = field(default_factory=list)  # valid: the requests, in order
    error: str = ""  # invalid: the gunicorn exception named
    options: dict[str, Any] = field(default_factory=dict)  # non-default gunicorn settings the file makes

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"


def load_py(path: Path) -> dict[str, Any]:
    saved = {
        name: sys.modules.get(name) for name in ("gunicorn", "gunicorn.config", "gunicorn.http", "gunicorn.http.errors")
    }
    sys.modules.update(_stand_ins())
    try:
        namespace: dict[str, Any] = {"__name__": "__config__", "uri": uri, "cfg": _Config()}
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - pinned, checksummed file
        return namespace
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_cases(root: Path) -> list[Case]:
    cases = []
    for kind in ("valid", "invalid"):
        for http_file in sorted((root / "tests" / "requests" / kind).glob("*.http")):
            namespace = load_py(http_file.with_suffix(".py"))
            cfg = namespace.get("cfg")
            options = dict(cfg.settings) if isinstance(cfg, _Config) else {}
            case = Case(kind, http_file.stem, load_http(http_file), options=options)
            expected = namespace["request"]
            if kind == "valid":
                case.expect = expected if isinstance(expected, list) else [expected]
            else:
                case.error = getattr(expected, "__name__", str(expected))
            cases.append(case)
    return cases


# --- the wire ----------------------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def recorded(self) -> dict[str, Any] | None:
        """What the app received, when the app (not the server) answered."""
        return json.loads(self.body) if self.headers.get("x-recorded") == "1" else None


class Reader:
    """Reads HTTP/1.1 responses off a socket until a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def _more(self, deadline: float) -> bool:
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _until(self, marker: bytes, deadline: float) -> bytes | None:
        while marker not in self.buffer:
            if not self._more(deadline):
                return None
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _exactly(self, size: int, deadline: float) -> bytes | None:
        while len(self.buffer) < size:
            if not self._more(deadline):
                return None
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self, deadline: float) -> Response | None:
        head = self._until(b"\r\n\r\n", deadline)
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status in (100, 101) or 100 <= status < 200:
            return self.response(deadline) if status == 100 else Response(status, headers, b"")
        if "content-length" in headers:
            body = self._exactly(int(headers["content-length"]), deadline)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked(deadline)
        else:
            while self._more(deadline):
                pass
            body, self.buffer = self.buffer, b""
        return None if body is None else Response(status, headers, body)

    def _chunked(self, deadline: float) -> bytes | None:
        body = b""
        while True:
            size_line = self._until(b"\r\n", deadline)
            if size_line is None:
                return None
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return body if self._until(b"\r\n", deadline) is not None else None
            chunk = self._exactly(size + 2, deadline)
            if chunk is None:
                return None
            body += chunk[:-2]


@dataclass
class Exchange:
    responses: list[Response]
    closed: bool  # the server closed the connection
    timed_out: bool  # the server neither answered all that was asked nor closed


def exchange(port: int, data: bytes, want: int, settle: float) -> Exchange:
    """Send `data`, read up to `want` responses. With `settle` > 0 (invalid requests): when the server has
    neither answered nor closed after `settle` seconds, end our side (a request cut short, as gunicorn's
    tests feed it) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        # the server may refuse before reading everything: what it answered is still readable
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        reader = Reader(sock)
        responses: list[Response] = []
        deadline = time.monotonic() + (settle or READ_TIMEOUT)
        half_closed = False
        while len(responses) < want:
            response = reader.response(deadline)
            if response is not None:
                responses.append(response)
                continue
            if reader.eof:
                break
            if settle and not half_closed:
                half_closed = True
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + READ_TIMEOUT
                continue
            break
        return Exchange(responses, reader.eof, not reader.eof and len(responses) < want)


# --- comparison ------------------------------------------------------------------------------------------
def _version(pair: tuple[int, int]) -> str:
    return f"{pair[0]}.{pair[1]}"


def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def _environ_headers(headers: list[tuple[str, str]]) -> dict[str, Any]:
    """gunicorn's expected header list as a WSGI server puts it in the environ (PEP 3333): a field given
    on several lines becomes one comma-separated list (RFC 9110 §5.3), compared as a list, so that
    "a,b" and "a, b" are the same; a field given once is compared exactly."""
    lines: dict[str, list[str]] = {}
    for name, value in headers:
        lines.setdefault(_environ_key(name), []).append(value)
    return {key: values if len(values) > 1 else values[0] for key, values in lines.items()}


def _as_expected(seen: dict[str, str], wanted: dict[str, Any]) -> dict[str, Any]:
    return {
        key: [part.strip() for part in value.split(",")] if isinstance(wanted.get(key), list) else value
        for key, value in seen.items()
    }


def _body(expected: dict[str, Any]) -> bytes:
    body = expected["body"]
    return body.encode("latin-1") if isinstance(body, str) else body  # a few files write '' for b""


def compare_asgi(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    wanted = {
        "method": expected["method"],
        "raw_path": expected["uri"]["path"],
        "query": expected["uri"]["query"],
        "version": _version(expected["version"]),
        # Field names are case-insensitive: gunicorn upper-cases them, ASGI servers lower-case them.
        "headers": [[name.lower(), value] for name, value in expected["headers"]],
        "body": _body(expected),
    }
    seen = {
        **{key: got[key] for key in ("method", "raw_path", "query", "version", "headers")},
        "body": base64.b64decode(got["body"]),
    }
    return [f"{key}: expected {wanted[key]!r}, got {seen[key]!r}" for key in wanted if wanted[key] != seen[key]]


def compare_wsgi(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    path = urllib.parse.unquote_to_bytes(expected["uri"]["path"]).decode("latin-1")  # PEP 3333 PATH_INFO
    wanted_headers = _environ_headers(expected["headers"])
    seen_headers = _as_expected(got["environ_headers"], wanted_headers)
    wanted = {
        "method": expected["method"],
        "path": path,
        "query": expected["uri"]["query"],
        "version": "HTTP/" + _version(expected["version"]),
        "headers": wanted_headers,
        "body": _body(expected),
    }
    seen = {
        "method": got["method"],
        "path": got["path"],
        "query": got["query"],
        "version": got["version"],
        "headers": seen_headers,
        "body": base64.b64decode(got["body"]),
    }
    return [f"{key}: expected {wanted[key]!r}, got {seen[key]!r}" for key in wanted if wanted[key] != seen[key]]


def check(case: Case, port: int, interface: str) -> list[str]:
    """What differs from the expectation; empty when sockact serves the case as gunicorn's corpus says."""
    if case.kind == "valid":
        result = exchange(port, case.data, len(case.expect), settle=0.0)
        problems = []
        for index, expected in enumerate(case.expect):
            if index >= len(result.responses):
                state = "timed out" if result.timed_out else "connection closed"
                problems.append(f"request {index + 1}: no answer ({state})")
                break
            response = result.responses[index]
            recorded = response.recorded
            if recorded is None:
                problems.append(f"request {index + 1}: refused with {response.status}: {response.body[:80]!r}")
                break
            compare = compare_asgi if interface == "asgi" else compare_wsgi
            problems += [f"request {index + 1}: {problem}" for problem in compare(expected, recorded)]
        return problems
    result = exchange(port, case.data, 10, settle=SETTLE)  # read until the server closes
    reached = [response for response in result.responses if response.recorded is not None]
    problems = []
    if reached:
        problems.append(f"reached the app ({case.error} expected): {reached[-1].recorded!r}"[:400])
    if result.timed_out:
        problems.append("the server neither answered nor closed")
    for response in result.responses:
        if response.recorded is None and not 400 <= response.status < 600:
            problems.append(f"answered {response.status} instead of 4xx/5xx")
    return problems


# --- the cases sockact refuses for a missing Host, checked again with one ------------------------------------
ADDED_HOST = ("Host", "corpus.invalid")
_REQUEST_LINE = re.compile(rb"(?m)^([!-~]+ [!-~]+ HTTP/1\.[01]\r\n)")


def with_host(case: Case) -> Case:
    """The case with `Host: corpus.invalid` first in every expected HTTP/1.1 head that has none, and the
    same field in its expectation: what the rest of the request must then do is still gunicorn's to say."""
    lines = list(_REQUEST_LINE.finditer(case.data))[: len(case.expect)]  # not the bytes after a `close`
    if len(lines) != len(case.expect):
        raise ValueError(f"{case.id}: {len(lines)} request lines for {len(case.expect)} requests")
    data, expect, start = b"", [], 0
    for line, expected in zip(lines, case.expect):
        lacking = expected["version"] == (1, 1) and not any(name.lower() == "host" for name, _ in expected["headers"])
        data += case.data[start : line.end()] + (b"Host: corpus.invalid\r\n" if lacking else b"")
        expect.append({**expected, "headers": [ADDED_HOST, *expected["headers"]]} if lacking else expected)
        start = line.end()
    return Case(case.kind, case.name, data + case.data[start:], expect, case.error, case.options)
