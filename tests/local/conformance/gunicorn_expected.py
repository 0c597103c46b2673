"""Reviewed classification of every gunicorn 23.0.0 request-corpus case that sockact does not serve as the
corpus expects, per interface (the ASGI engine, the WSGI engine).

The suite asserts that the set of mismatching cases is exactly the set listed here: a new mismatch fails
the suite, and so does a listed case that starts matching (remove it then).

Categories:
- "defect": sockact is wrong; the entry goes when the engine is fixed.
- "stricter": sockact refuses (400) a request gunicorn accepts, and may: the refusal is llhttp's (the
  parser under both engines today) and is within what RFC 9112 allows a server, or safer.
- "by-design": sockact differs on purpose.
- "not-applicable": the expectation holds only under a non-default gunicorn option (proxy_protocol,
  permit_obsolete_folding, limit_request_*, header_map, ...), or the corpus file is not a complete
  request on a socket (gunicorn's parser tests end at the end of the data).
"""

from __future__ import annotations

DEFECT = "defect"
STRICTER = "stricter"
BY_DESIGN = "by-design"
NOT_APPLICABLE = "not-applicable"

_INCOMPLETE = (
    NOT_APPLICABLE,
    (
        "the file ends the chunked body without the CRLF after the last chunk (gunicorn's "
        "parser test accepts the end of data there); on a socket the request is incomplete, "
        "so the server waits for the rest"
    ),
)

BOTH: dict[str, tuple[str, str]] = {
    **{
        f"valid/{name}": (
            STRICTER,
            (
                "an HTTP/1.1 request without Host is refused with 400, as RFC 9112 §3.2 "
                "requires and h11 does (gunicorn, uvicorn and granian serve it); "
                "tests/unit/test_http11.py holds the rule"
            ),
        )
        for name in ("004", "005", "006", "007", "010", "011", "012", "014", "018", "021", "022", "023", "100")
    },
    **{
        f"valid/{name}": (
            STRICTER,
            (
                "Transfer-Encoding 'gzip' before 'chunked' is answered 501 (RFC 9112 §6.1: a "
                "coding the server does not decode), where gunicorn hands the app a body still "
                "coded; the request also has no Host"
            ),
        )
        for name in ("025", "025_line")
    },
    "valid/013": (
        STRICTER,
        (
            "chunk extensions with whitespace ('5; some') are refused with 400 by llhttp (RFC 9112 "
            "§7.1.1 allows BWS there; a 400 at once, the app told the client left)"
        ),
    ),
    "valid/024": (
        NOT_APPLICABLE,
        (
            "valid only under gunicorn's limit_request_line=0 and limit_request_field_size=0; "
            "sockact's --max-header-size (8190, gunicorn's default too) answers 431"
        ),
    ),
    "valid/026": (
        NOT_APPLICABLE,
        (
            "valid only under gunicorn's limit_request_field_size=8210; sockact's "
            "--max-header-size (8190, gunicorn's default too) answers 431"
        ),
    ),
    "valid/040_compat": (
        NOT_APPLICABLE,
        (
            "gunicorn's header_map='dangerous' (underscore header names kept); "
            "sockact drops them for both interfaces, as gunicorn does by default"
        ),
    ),
    "valid/009": (
        STRICTER,
        (
            "Transfer-Encoding with Content-Length is refused (RFC 9112 §6.1 allows it: the "
            "classic request-smuggling shape)"
        ),
    ),
    "valid/027": (
        STRICTER,
        ("a raw non-ASCII byte in the request target is refused (RFC 9112's request-target is ASCII)"),
    ),
    "valid/028": (
        NOT_APPLICABLE,
        (
            "valid only under gunicorn's strip_header_spaces: 'Content-Length : 3' must be "
            "refused (RFC 9112 §5.1), as sockact does"
        ),
    ),
    "valid/029": _INCOMPLETE,
    "valid/030": _INCOMPLETE,
    "valid/031": (STRICTER, "method '-BLARGH' (a valid token) is refused: llhttp accepts registered methods only"),
    "valid/031compat": (NOT_APPLICABLE, "gunicorn's permit_unconventional_http_method and casefold_http_method"),
    "valid/031compat2": (NOT_APPLICABLE, "gunicorn's permit_unconventional_http_method"),
    "valid/099": (
        NOT_APPLICABLE,
        (
            "the file holds 8599 body bytes under Content-Length: 17914 (gunicorn's parser "
            "test ends at the end of data); on a socket the body is incomplete"
        ),
    ),
    "valid/compat_obs_fold": (
        NOT_APPLICABLE,
        ("gunicorn's permit_obsolete_folding; refusing obs-fold with 400 is what RFC 9112 §5.2 asks by default"),
    ),
    "valid/compat_obs_fold_huge": (NOT_APPLICABLE, "gunicorn's permit_obsolete_folding (see compat_obs_fold)"),
    "valid/pp_01": (NOT_APPLICABLE, "gunicorn's proxy_protocol (a PROXY v1 line before the request)"),
    "valid/pp_02": (NOT_APPLICABLE, "gunicorn's proxy_protocol (a PROXY v1 line before the request)"),
    "invalid/006": (
        BY_DESIGN,
        (
            "gunicorn limits the request line to 4094 bytes; sockact's --max-target is 8190 "
            "(the request target alone, nginx's header buffer size), "
            "so a 4112-byte line is served"
        ),
    ),
    "invalid/008": (
        BY_DESIGN,
        (
            "gunicorn also limits two lines of the same field together (8189 + 4108 bytes); "
            "sockact limits each line (--max-header-size 8190) and the whole head (64 KiB)"
        ),
    ),
    "invalid/011": (NOT_APPLICABLE, "invalid only under gunicorn's limit_request_fields=2"),
    "invalid/012": (NOT_APPLICABLE, "invalid only under gunicorn's limit_request_field_size=98"),
    "invalid/040": (
        NOT_APPLICABLE,
        ("invalid only under gunicorn's header_map='refuse' (an underscore in a header name)"),
    ),
}

ASGI: dict[str, tuple[str, str]] = {}

WSGI: dict[str, tuple[str, str]] = {}


def expected_mismatches(interface: str) -> dict[str, tuple[str, str]]:
    """Every listed case for the ASGI or the WSGI engine, with its category and reason."""
    return {**BOTH, **(ASGI if interface == "asgi" else WSGI)}
