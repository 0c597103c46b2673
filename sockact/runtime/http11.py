"""The HTTP/1.1 rules of every serving path, without I/O: what a request is, and what may be sent back.

Every decision that keeps a server safe on the open internet is made here and only here:
- the request line: method, version (1.0 and 1.1; 505 otherwise), target form (origin, absolute,
  asterisk for OPTIONS only; CONNECT is not served), its length (414);
- header fields: token names and visible values (llhttp, the C tokenizer under httptools, refuses
  the rest), optional whitespace stripped from values, field count and size (431), Host (RFC 9112
  §3.2: exactly one in HTTP/1.1);
- body framing (RFC 9112 §6): Transfer-Encoding only `chunked` and only in HTTP/1.1, never beside
  Content-Length, trailer fields checked and dropped, the body size (413, from Content-Length before
  any byte of the body is read, and while a chunked body streams);
- keep-alive or close, from the Connection tokens (`keep-alive, close` closes);
- the response head: status and reason, header names (tokens) and values (no CR, LF, NUL or other
  control bytes), the framing of the response body (Content-Length, chunked, or close-delimited for
  HTTP/1.0), and what HEAD, 1xx, 204 and 304 responses may carry.

`RequestReader` is fed bytes and calls its subclass back (`request_head`, `request_body`,
`request_end`, `request_error`, `request_upgrade`); `ResponseHead` turns what an app asks for into the
bytes of a status line and header block, or raises `ResponseError`. The engines (asgi_http.py) only
move bytes and run apps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

import httptools

__all__ = ["Head", "Limits", "RequestReader", "ResponseError", "ResponseHead", "chunk", "error_response"]


@dataclass(frozen=True)
class Limits:
    """What one request may cost before it is refused; each is a `sockact run` option."""

    max_target: int = 8190  # bytes of the request target: 414 past it (nginx's and gunicorn's order of size)
    max_fields: int = 100  # header fields: 431 past it (gunicorn's default)
    max_field: int = 8190  # bytes of one header line: 431 past it (gunicorn's default)
    max_head: int = 64 * 1024  # bytes of the whole head: 431 past it
    max_body: int = 100 * 1024 * 1024  # bytes of a request body: 413 past it; 0 = no limit
    head_timeout: float = 10.0  # seconds for a request head (or a stalled body) to arrive: 408 after it
    keep_alive: float = 5.0  # seconds an idle keep-alive connection is kept (uvicorn's default)
    send_timeout: float = 30.0  # seconds a client may take no bytes of a response before it is dropped


DEFAULT_LIMITS = Limits()

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_BODY_STATUS = frozenset({204, 304}) | frozenset(range(100, 200))
LAST_CHUNK = b"0\r\n\r\n"
# RFC 9110 §5.6.2 token, for response header names.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5 field-value: visible bytes, obs-text, SP and HTAB; never CR, LF, NUL or another control.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9112 §4 status-line: a three-digit code, SP, a reason of HTAB, SP, VCHAR and obs-text.
_STATUS = re.compile(r"([1-5][0-9][0-9]) ([\t \x21-\x7e\x80-\xff]*)")
# Trailer fields that would change how this message or the connection is framed or routed, were any
# hop to merge trailers into the head (RFC 9110 §6.5.1): refused. The others are dropped, never merged.
_FORBIDDEN_TRAILERS = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"trailer",
        b"connection",
        b"keep-alive",
        b"te",
        b"upgrade",
        b"expect",
    }
)


_DROPPED = (b"", b"")  # a field counted against the limits, then left out of the head


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode("ascii")


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}


def error_response(status: int, text: str | None = None) -> bytes:
    """A complete plain-text response that ends the connection: for requests the core refused and for
    apps that failed before they answered. Never carries a traceback."""
    body = (text or reason_phrase(status) or "Error").encode()
    return STATUS_LINES[status] + (
        b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Head:
    """A request head the core accepted, with its framing and keep-alive decided."""

    __slots__ = (
        "content_length",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: bytes,
        query: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        content_length: int,
        expect_continue: bool,
        upgrade: bytes | None,
    ) -> None:
        self.method = method
        self.target = target  # as sent
        self.path = path  # raw (still percent-encoded) path: "/" for OPTIONS * and absolute-form without one
        self.query = query
        self.version = version  # "1.0" or "1.1"
        self.headers = headers  # lowercase names, values without surrounding whitespace, in order
        self.keep_alive = keep_alive
        self.content_length = content_length  # -1 for a chunked body
        self.expect_continue = expect_continue
        self.upgrade = upgrade  # the Upgrade token asked for (b"websocket"), or None


class Refused(Exception):
    """A request the core refuses: answered with `status` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestReader:
    """Parses the requests of one connection (httptools' llhttp tokenizes; the rules are applied here).

    Subclasses implement the callbacks; after `request_error` the reader takes no more bytes. A request
    with an Upgrade the engine may take (`request_upgrade`) stops the parsing: the bytes after its head
    belong to the new protocol.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # bytes of the head being received, counted as they are fed
        self._in_head = False  # a head has begun and is not complete
        self._in_body = False  # a head was accepted and its message is not complete
        self._body_bytes = 0
        self._failed = False
        self._upgrading: Head | None = None

    # the engine's side --------------------------------------------------------------------------
    def request_head(self, head: Head) -> None:
        raise NotImplementedError

    def request_body(self, data: bytes) -> None:
        raise NotImplementedError

    def request_end(self) -> None:
        raise NotImplementedError

    def request_error(self, status: int, reason: str) -> None:
        """The request being received (or the next one) is refused; answer `status` and close."""
        raise NotImplementedError

    def request_upgrade(self, head: Head, rest: bytes) -> None:
        """A request asking to switch protocols was accepted by `wants_upgrade`; `rest` followed its head."""
        raise NotImplementedError

    def wants_upgrade(self, token: bytes) -> bool:
        """Whether the engine switches to the protocol `token` (lowercase); the request is otherwise
        served as plain HTTP and its connection closed after it."""
        return False

    @property
    def receiving_head(self) -> bool:
        return self._in_head

    @property
    def failed(self) -> bool:
        return self._failed

    # bytes in -------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self._failed:
            return
        if self._in_head or not self._in_body:
            # llhttp holds an unfinished header line without calling back: count what it was given.
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            head, self._upgrading = self._upgrading, None
            if head is not None:
                self._failed = True  # this reader is done: the rest belongs to the new protocol
                offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
                self.request_upgrade(head, data[offset:])
            elif not self._failed:
                # An upgrade not taken (a bodiless request, served as plain HTTP): llhttp stops at its
                # end, so a new parser reads what follows, as the next request of the connection.
                self._parser = httptools.HttpRequestParser(self)
                offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
                if offset < len(data):
                    self.feed(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, Refused):
                # the engine's own failure, not the client's: raised as itself, without httptools' wrapper
                raise (cause or exc) from None
            self._fail(cause.status, cause.reason)
        except httptools.HttpParserInvalidMethodError:
            # llhttp knows the registered methods only: anything else is as likely garbage as an
            # extension method, and gets 400 (as from uvicorn) rather than 501.
            self._fail(400, "Bad Request: unknown method")
        except httptools.HttpParserError as exc:
            if not self._failed:
                if self._in_head and self._head_bytes > self.limits.max_head:
                    self._fail(431, "Request Header Fields Too Large")
                else:
                    self._fail(400, f"Bad Request: {exc}" if str(exc) else "Bad Request")
        else:
            if self._in_head and self._head_bytes > self.limits.max_head:
                self._fail(431, "Request Header Fields Too Large")

    def _fail(self, status: int, reason: str) -> None:
        self._failed = True
        self._in_head = False
        self.request_error(status, reason)

    # llhttp callbacks -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = []
        self._in_head = True
        self._in_body = False
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_target:
            raise Refused(414, "URI Too Long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # a trailer field of a chunked body: checked, then dropped
            if name.lower() in _FORBIDDEN_TRAILERS:
                raise Refused(400, f"Bad Request: {name.decode('latin-1')} is not allowed in a trailer")
            return
        fields = self._fields
        if len(fields) >= self.limits.max_fields:
            raise Refused(431, "Request Header Fields Too Large")
        if len(name) + len(value) + 2 > self.limits.max_field:
            raise Refused(431, "Request Header Fields Too Large")
        if b"_" in name:
            # X_Forwarded_For or Transfer_Encoding would become the same CGI-style key (HTTP_X_FORWARDED_FOR)
            # as the real header in Django, a2wsgi and every WSGI environ: dropped, as gunicorn and nginx do.
            fields.append(_DROPPED)
            return
        if value[-1:] in (b" ", b"\t"):
            value = value.rstrip(b" \t")  # RFC 9110 §5.5: OWS around a value is not part of it
        fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        head = self._accept_head()
        self._in_body = True
        if head.upgrade is not None and self.wants_upgrade(head.upgrade):
            self._upgrading = head
            return
        self.request_head(head)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        limit = self.limits.max_body
        if limit and self._body_bytes > limit:
            within = limit - (self._body_bytes - len(body))  # the same bytes reach the app however they arrive
            if within > 0:
                self.request_body(body[:within])
            raise Refused(413, "Content Too Large")
        self.request_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._upgrading is None:
            self.request_end()

    # the rules ---------------------------------------------------------------------------------------
    def _accept_head(self) -> Head:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            if version == "0.9":  # llhttp's reading of a request line without a version: not HTTP/1
                raise Refused(400, "Bad Request: no HTTP version in the request line")
            raise Refused(505, "HTTP Version Not Supported")
        method = parser.get_method().decode("ascii")
        url = self._url
        path, query = _split_target(method, url)
        closing = keeping = False
        hosts = 0
        content_length = 0
        lengths = 0
        codings: list[bytes] = []
        expect = False
        upgrade_token: bytes | None = None
        upgrade_option = False
        for name, value in self._fields:
            first = name[:1]
            if first == b"c":
                if name == b"connection":
                    for option in value.lower().split(b","):
                        option = option.strip(b" \t")
                        if option == b"close":
                            closing = True  # wins over every other option, in any order and any field
                        elif option == b"keep-alive":
                            keeping = True
                        elif option == b"upgrade":
                            upgrade_option = True
                elif name == b"content-length":
                    lengths += 1  # llhttp refuses a second one, and anything not digits
                    content_length = int(value)
            elif first == b"h" and name == b"host":
                hosts += 1
            elif first == b"t" and name == b"transfer-encoding":
                codings.extend(coding.strip(b" \t").lower() for coding in value.split(b","))
            elif first == b"e" and name == b"expect":
                expect = value.lower() == b"100-continue"
            elif first == b"u" and name == b"upgrade":
                upgrade_token = value.split(b",")[0].strip(b" \t").split(b"/")[0].lower()
        # HTTP/1.0 closes unless the client asks to keep the connection; `close` always closes.
        close = closing or (version == "1.0" and not keeping)
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise Refused(400, "Bad Request: an HTTP/1.1 request needs exactly one Host field")
        if codings:
            if version == "1.0":
                # RFC 9112 §6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty.
                raise Refused(400, "Bad Request: Transfer-Encoding in an HTTP/1.0 request")
            if lengths:
                raise Refused(400, "Bad Request: both Transfer-Encoding and Content-Length")
            if codings != [b"chunked"]:
                raise Refused(501, "Not Implemented: only the chunked transfer coding is served")
            content_length = -1
        elif self.limits.max_body and content_length > self.limits.max_body:
            raise Refused(413, "Content Too Large")
        if not (upgrade_option and upgrade_token):
            upgrade_token = None
        elif upgrade_token is not None and not (method == "GET" and self.wants_upgrade(upgrade_token)):
            # Served as plain HTTP. llhttp reads no body after an upgrade request's head: one would be
            # read as the next request (smuggled), so a body here is refused.
            if content_length:
                raise Refused(400, "Bad Request: a body on an upgrade request")
            upgrade_token = None
        if method == "CONNECT":
            raise Refused(501, "Not Implemented: CONNECT is not served")
        fields = self._fields
        if _DROPPED in fields:
            fields = [field for field in fields if field is not _DROPPED]
        return Head(
            method,
            url,
            path,
            query,
            version,
            fields,
            not close,
            content_length,
            expect and version == "1.1",
            upgrade_token,
        )


def _split_target(method: str, url: bytes) -> tuple[bytes, bytes]:
    """The raw path and query of a request target (RFC 9112 §3.2), or Refused."""
    if url[:1] == b"/":
        # origin-form; llhttp already refused control bytes, spaces and bytes past 0x7e.
        path, mark, query = url.partition(b"?")
        if b"#" in path or b"#" in query:  # a fragment is not part of a request target; it is dropped
            if mark:
                query = query.partition(b"#")[0]
            else:
                path = path.partition(b"#")[0]
        return path, query
    if url == b"*":
        if method == "OPTIONS":
            return b"*", b""
        raise Refused(400, "Bad Request: the target * is for OPTIONS only")
    if method == "CONNECT":
        return url, b""  # authority-form: refused once the head is complete (501)
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise Refused(400, "Bad Request: invalid request target") from None
    if parsed.schema is None or parsed.host is None or parsed.schema.lower() not in (b"http", b"https"):
        raise Refused(400, "Bad Request: invalid request target")
    return parsed.path or b"/", parsed.query or b""


class ResponseError(Exception):
    """What an app asked to send cannot be sent as HTTP/1.1; the engine answers 500 instead (when it can)."""


_good_names: dict[bytes, bytes] = {}  # names seen valid, lowercase: most apps send the same few


def _checked_name(name: bytes) -> bytes:
    lower = _good_names.get(name)
    if lower is None:
        if not _TOKEN.fullmatch(name):
            raise ResponseError(f"invalid response header name {name!r}")
        lower = name.lower()
        if len(_good_names) < 4096:
            _good_names[name] = lower
    return lower


class ResponseHead:
    """The head of one response and the framing of its body.

    `keep_alive` may only turn False here (an app's `Connection: close`, a body without a length to
    an HTTP/1.0 client); `skip_body` is set for HEAD, 1xx, 204 and 304; `chunked` when the body is
    sent in chunks; `length` is the Content-Length promised, or -1.
    """

    __slots__ = ("chunked", "data", "keep_alive", "length", "skip_body", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...],
        *,
        request_method: str,
        request_version: str,
        keep_alive: bool,
        extra: bytes = b"",
        status_line: bytes | None = None,
    ) -> None:
        if status_line is None:
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise ResponseError(f"invalid response status {status!r}")
            status_line = STATUS_LINES[status]
        self.status = status
        self.length = -1
        self.chunked = False
        lines = [status_line, extra]
        append = lines.append
        for name, value in headers:
            lower = _checked_name(name)
            if _BAD_VALUE.search(value):
                raise ResponseError(f"invalid value for response header {name!r}: control bytes (CR, LF, NUL...)")
            first = lower[:1]
            if first == b"c":
                if lower == b"content-length":
                    if not value.isdigit():
                        raise ResponseError(f"invalid Content-Length {value!r}")
                    if self.length >= 0 and int(value) != self.length:
                        raise ResponseError("two different Content-Length values")
                    self.length = int(value)
                    continue  # written once, below
                if lower == b"connection":
                    if b"close" in [option.strip(b" \t") for option in value.lower().split(b",")]:
                        keep_alive = False
                    continue  # the engine writes its own decision
            elif first == b"t" and lower == b"transfer-encoding":
                if value.lower().rstrip(b" \t").split(b",")[-1].strip(b" \t") != b"chunked":
                    raise ResponseError(f"unsupported response Transfer-Encoding {value!r}")
                self.chunked = True
                continue  # written once, below
            append(b"%b: %b\r\n" % (name, value))
        self.skip_body = skip = request_method == "HEAD" or status in NO_BODY_STATUS
        if self.chunked:
            self.length = -1  # RFC 9112 §6.2: never both; the chunks frame the body
        if self.length >= 0:
            if status not in NO_BODY_STATUS:
                append(b"content-length: %d\r\n" % self.length)
        elif not skip or self.chunked:
            if request_version == "1.1":
                if not skip:
                    self.chunked = True
                    append(b"transfer-encoding: chunked\r\n")
                else:
                    self.chunked = False
            else:
                self.chunked = False
                keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
        if not keep_alive:
            append(b"connection: close\r\n")
        elif request_version == "1.0":
            append(b"connection: keep-alive\r\n")  # HTTP/1.0 closes unless told otherwise
        append(b"\r\n")
        self.keep_alive = keep_alive
        self.data = b"".join(lines)


def wsgi_status(status: str) -> tuple[int, bytes]:
    """The code and the status line of a WSGI status string ("200 OK"), or ResponseError."""
    if not isinstance(status, str):
        raise ResponseError(f"the WSGI status must be a str, not {type(status).__name__}")
    match = _STATUS.fullmatch(status) or _STATUS.fullmatch(status + " ")  # "200" alone: an empty reason
    if match is None:
        raise ResponseError(f"invalid WSGI status {status!r}: three digits, a space, a reason without control bytes")
    return int(match.group(1)), b"HTTP/1.1 %b\r\n" % status.encode("latin-1")
