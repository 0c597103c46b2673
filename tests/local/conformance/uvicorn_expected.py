"""Reviewed classification of every uvicorn 0.55.0 tests/protocols/test_http.py test that does not pass
with sockact's HTTP engine (sockact.runtime.connection).

The suite asserts that the set of tests not passing is exactly the set listed here: a test that starts
failing fails the suite, and so does a listed test that starts passing (remove it from the list then).

Categories:
- "defect": sockact is wrong; the entry goes when the engine is fixed.
- "by-design": sockact differs from uvicorn on purpose, within what HTTP/1.1 and ASGI allow.
- "not-applicable": the test checks something of uvicorn's own (a log message's wording, an internal
  attribute, an option sockact does not have), not what reaches the wire or the app.
"""

from __future__ import annotations

DEFECT = "defect"
BY_DESIGN = "by-design"
NOT_APPLICABLE = "not-applicable"

_BAD_NAME_CHARS = (
    "space",
    "null",
    "open_paren",
    "close_paren",
    "less_than",
    "greater_than",
    "at",
    "comma",
    "semicolon",
    "colon",
    "open_bracket",
    "close_bracket",
    "open_brace",
    "close_brace",
    "equals",
    "double_quote",
    "backslash",
    "tab",
    "del",
)
_INVALID_REQUESTS = ("invalid-method", "invalid-path", "invalid-http-version", "non-ascii-path", "non-ascii-query")

EXPECTED_FAILURES: dict[str, tuple[str, str]] = {
    **{
        f"test_invalid_header_name[asyncio-sockact-reject_{name}]": (
            BY_DESIGN,
            (
                "a response header name that is not an RFC 9110 token is refused before anything is "
                "written, so the client gets a 500 where uvicorn closes without an answer; the name never "
                "reaches the wire (the test's other assertion, checked in tests/local/test_http_defects.py)"
            ),
        )
        for name in _BAD_NAME_CHARS
    },
    "test_keepalive_timeout[asyncio-sockact]": (
        BY_DESIGN,
        (
            "idle keep-alive connections are closed by a once-a-second sweep from the server's tick "
            "(Site.tick), not by a loop.call_later timer per connection, so uvicorn's MockLoop never "
            "sees a timer to run"
        ),
    ),
    "test_keepalive_timeout_with_pipelined_requests[asyncio-sockact]": (
        NOT_APPLICABLE,
        "reads uvicorn's timeout_keep_alive_task attribute; sockact has no per-connection timer",
    ),
    "test_keepalive_timeout_with_pipelined_websocket_upgrade[asyncio-sockact-wsproto]": (
        NOT_APPLICABLE,
        "reads uvicorn's timeout_keep_alive_task attribute; sockact has no per-connection timer",
    ),
    "test_keepalive_timeout_with_pipelined_websocket_upgrade[asyncio-sockact-websockets-sansio]": (
        NOT_APPLICABLE,
        "reads uvicorn's timeout_keep_alive_task attribute; sockact has no per-connection timer",
    ),
    "test_duplicate_start_message[asyncio-sockact]": (
        BY_DESIGN,
        (
            "a second http.response.start is the app's error before any byte was written (the head "
            "leaves with the first body part), so the client gets a 500 where uvicorn closes without "
            "an answer"
        ),
    ),
    "test_response_header_splitting[asyncio-sockact]": (
        BY_DESIGN,
        (
            "a response start with CR/LF in a header is refused before anything is written: the client "
            "gets a 500 and the connection closes (uvicorn closes without an answer); the smuggled "
            "header never reaches the wire"
        ),
    ),
    "test_message_after_body_complete[asyncio-sockact]": (
        BY_DESIGN,
        (
            "send() after the response is complete raises in the app (as ASGI requires) and is logged; "
            "the response on the wire was complete and well framed, so the connection stays usable "
            "(uvicorn closes it)"
        ),
    ),
    "test_value_returned[asyncio-sockact]": (
        BY_DESIGN,
        (
            "an app that completed its response and returned a value other than None: the response is "
            "complete, sockact keeps the connection (uvicorn treats the return value as an error)"
        ),
    ),
    "test_early_disconnect[asyncio-sockact]": (
        BY_DESIGN,
        (
            "a request whose client is gone before the app started is not run at all (a request that "
            "kills its worker must not get a second go from a backlog), so the app never sees "
            "http.disconnect"
        ),
    ),
    "test_early_response[asyncio-sockact]": (
        BY_DESIGN,
        (
            "after a response sent before the request body was read, the connection closes rather than "
            "reading and discarding the rest of the body on the app's behalf"
        ),
    ),
    "test_max_concurrency[asyncio-sockact]": (
        NOT_APPLICABLE,
        (
            "uvicorn's limit_concurrency option: sockact's admission control (the scoreboard) "
            "replaces it and the protocol ignores the option"
        ),
    ),
    "test_shutdown_during_idle[asyncio-sockact]": (
        BY_DESIGN,
        (
            "on shutdown an idle connection gets IDLE_GRACE for a request already on the wire before "
            "it closes, instead of closing at once"
        ),
    ),
    "test_100_continue_sent_when_body_consumed[asyncio-sockact]": (
        BY_DESIGN,
        ("no 100 Continue once the body has already arrived with the head (RFC 9110 §10.1.1 lets a server omit it)"),
    ),
    "test_unsupported_ws_upgrade_request_warn_on_auto[asyncio-sockact]": (
        NOT_APPLICABLE,
        (
            "wording of the warning for a WebSocket upgrade without a WebSocket library (sockact "
            "logs its own message once per worker); the request is served as plain HTTP as expected"
        ),
    ),
    **{
        f"test_invalid_http_request[asyncio-sockact-{case}]": (
            NOT_APPLICABLE,
            (
                "answered 400 and closed as expected; the body text is sockact's ('Bad Request'), not "
                "uvicorn's 'Invalid HTTP request received.'"
            ),
        )
        for case in _INVALID_REQUESTS
    },
    "test_header_upgrade_is_not_websocket_depend_installed[asyncio-sockact]": (
        NOT_APPLICABLE,
        (
            "expects uvicorn's 'Unsupported upgrade request.' warning; sockact serves an upgrade it "
            "does not speak as plain HTTP without logging"
        ),
    ),
    "test_header_upgrade_is_websocket_depend_not_installed[asyncio-sockact]": (
        NOT_APPLICABLE,
        (
            "expects uvicorn's 'Unsupported upgrade request.' warning; sockact serves an upgrade it "
            "does not speak as plain HTTP without logging"
        ),
    ),
}
