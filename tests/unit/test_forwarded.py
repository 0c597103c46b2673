"""--forwarded-allow-ips: which peers are believed, and what X-Forwarded-* and Forwarded then say."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sockact.errors import UsageError
from sockact.runtime.forwarded import ProxyTrust

PROXY = ("127.0.0.1", 40000)  # the peer of most cases
PEER = object()  # expected: the peer's own address, the headers changed nothing
H = list[tuple[bytes, bytes]]


def headers(*pairs: tuple[str, str]) -> H:
    return [(name.lower().encode(), value.encode("latin-1")) for name, value in pairs]


XFF = "x-forwarded-for"
XFP = "x-forwarded-proto"
FWD = "forwarded"

# (allow text, peer, headers, websocket, expected client, expected scheme)
CASES: list[tuple[str, Any, H, bool, Any, str]] = [
    # the peer decides whether anything is read
    ("127.0.0.1", PROXY, headers((XFF, "203.0.113.7"), (XFP, "https")), False, ("203.0.113.7", 0), "https"),
    ("10.0.0.1", PROXY, headers((XFF, "203.0.113.7"), (XFP, "https")), False, PEER, "http"),
    ("127.0.0.0/8", ("127.9.9.9", 5), headers((XFF, "203.0.113.7")), False, ("203.0.113.7", 0), "http"),
    ("127.0.0.1", PROXY, [], False, PEER, "http"),
    ("*", ("198.51.100.1", 7), headers((XFF, "203.0.113.7")), False, ("203.0.113.7", 0), "http"),
    # Unix socket peers only with "unix" (or "*")
    ("127.0.0.1", None, headers((XFF, "203.0.113.7")), False, None, "http"),
    ("unix", None, headers((XFF, "203.0.113.7"), (XFP, "https")), False, ("203.0.113.7", 0), "https"),
    ("unix", PROXY, headers((XFF, "203.0.113.7")), False, PEER, "http"),
    ("*", None, headers((XFF, "203.0.113.7")), False, ("203.0.113.7", 0), "http"),
    # chains: from the right, trusted hops skipped, the first other one is the client
    (
        "127.0.0.1,10.0.0.0/8",
        PROXY,
        headers((XFF, "198.51.100.9, 203.0.113.7, 10.1.1.1, 10.2.2.2")),
        False,
        ("203.0.113.7", 0),
        "http",
    ),
    ("127.0.0.1", PROXY, headers((XFF, "198.51.100.9, 203.0.113.7, 10.1.1.1")), False, ("10.1.1.1", 0), "http"),
    ("127.0.0.1,10.0.0.0/8", PROXY, headers((XFF, "10.1.1.1, 10.2.2.2")), False, ("10.1.1.1", 0), "http"),
    ("*", PROXY, headers((XFF, "198.51.100.9, 203.0.113.7")), False, ("198.51.100.9", 0), "http"),
    # several header lines are one list, in order
    (
        "127.0.0.1,10.0.0.0/8",
        PROXY,
        headers((XFF, "203.0.113.7"), (XFF, "10.1.1.1")),
        False,
        ("203.0.113.7", 0),
        "http",
    ),
    # ports and IPv6 in X-Forwarded-For
    ("127.0.0.1", PROXY, headers((XFF, "203.0.113.7:51234")), False, ("203.0.113.7", 51234), "http"),
    ("127.0.0.1", PROXY, headers((XFF, "2001:db8::7")), False, ("2001:db8::7", 0), "http"),
    ("127.0.0.1", PROXY, headers((XFF, "[2001:db8::7]:443")), False, ("2001:db8::7", 443), "http"),
    ("127.0.0.1", PROXY, headers((XFF, "[2001:DB8:0::7]")), False, ("2001:db8::7", 0), "http"),
    (
        "::1,2001:db8:1::/48",
        ("::1", 9, 0, 0),
        headers((XFF, "2001:db8::9, 2001:db8:1::5")),
        False,
        ("2001:db8::9", 0),
        "http",
    ),
    ("10.0.0.1", ("::ffff:10.0.0.1", 9, 0, 0), headers((XFF, "203.0.113.7")), False, ("203.0.113.7", 0), "http"),
    ("fe80::/10", ("fe80::1%eth0", 9, 0, 2), headers((XFF, "203.0.113.7")), False, ("203.0.113.7", 0), "http"),
    # an entry that is no address ends the walk: the client is not known
    ("127.0.0.1", PROXY, headers((XFF, "203.0.113.7, unknown")), False, None, "http"),
    ("127.0.0.1", PROXY, headers((XFF, "not-an-ip")), False, None, "http"),
    ("127.0.0.1", PROXY, headers((XFF, "203.0.113.7, , 127.0.0.1")), False, None, "http"),
    ("127.0.0.1", PROXY, headers((XFF, "  ")), False, PEER, "http"),  # empty: says nothing
    # X-Forwarded-Proto: http/https/ws/wss only, any case; websocket scopes get ws/wss
    ("127.0.0.1", PROXY, headers((XFP, " HTTPS ")), False, PEER, "https"),
    ("127.0.0.1", PROXY, headers((XFP, "ftp")), False, PEER, "http"),
    ("127.0.0.1", PROXY, headers((XFP, "https")), True, PEER, "wss"),
    ("127.0.0.1", PROXY, headers((XFP, "http")), True, PEER, "ws"),
    ("127.0.0.1", PROXY, headers((XFP, "wss")), False, PEER, "https"),
    # appended X-Forwarded-Proto lists: the entry at the client's depth
    (
        "127.0.0.1,10.0.0.0/8",
        PROXY,
        headers((XFF, "203.0.113.7, 10.1.1.1"), (XFP, "https, http")),
        False,
        ("203.0.113.7", 0),
        "https",
    ),
    (
        "127.0.0.1,10.0.0.0/8",
        PROXY,
        headers((XFF, "203.0.113.7, 10.1.1.1"), (XFP, "http, https")),
        False,
        ("203.0.113.7", 0),
        "http",
    ),
    (
        "127.0.0.1",
        PROXY,
        headers((XFF, "203.0.113.7, 198.51.100.1, 10.1.1.1"), (XFP, "https, http")),
        False,
        ("10.1.1.1", 0),
        "http",
    ),
    (
        "127.0.0.1,10.0.0.0/8",
        PROXY,
        headers((XFF, "198.51.100.1, 203.0.113.7, 10.1.1.1, 10.2.2.2"), (XFP, "https, http")),
        False,
        ("203.0.113.7", 0),
        "http",
    ),
    # RFC 7239 Forwarded
    ("127.0.0.1", PROXY, headers((FWD, "for=203.0.113.7;proto=https")), False, ("203.0.113.7", 0), "https"),
    (
        "127.0.0.1",
        PROXY,
        headers((FWD, 'For="[2001:db8:cafe::17]:4711"; Proto=HTTPS')),
        False,
        ("2001:db8:cafe::17", 4711),
        "https",
    ),
    (
        "127.0.0.1",
        PROXY,
        headers((FWD, 'for="203.0.113.7:8443";by=10.0.0.1;host="a,b;c.example"')),
        False,
        ("203.0.113.7", 8443),
        "http",
    ),
    (
        "127.0.0.1,10.0.0.0/8",
        PROXY,
        headers((FWD, "for=203.0.113.7;proto=https, for=10.1.1.1;proto=http")),
        False,
        ("203.0.113.7", 0),
        "https",
    ),
    (
        "127.0.0.1",
        PROXY,
        headers((FWD, "for=203.0.113.7;proto=https, for=10.1.1.1;proto=http")),
        False,
        ("10.1.1.1", 0),
        "http",
    ),
    (
        "127.0.0.1,10.0.0.0/8",
        PROXY,
        headers((FWD, "for=203.0.113.7"), (FWD, "for=10.1.1.1")),
        False,
        ("203.0.113.7", 0),
        "http",
    ),
    ("127.0.0.1", PROXY, headers((FWD, "for=unknown;proto=https")), False, None, "https"),
    ("127.0.0.1", PROXY, headers((FWD, "for=_hidden, for=_SEVKISEK")), False, None, "http"),
    ("127.0.0.1", PROXY, headers((FWD, 'for="203.0.113.7:_port"')), False, ("203.0.113.7", 0), "http"),
    ("127.0.0.1", PROXY, headers((FWD, "proto=https")), False, PEER, "https"),  # no for=: the peer stays
    ("127.0.0.1", PROXY, headers((FWD, "for=203.0.113.7;proto=https")), True, ("203.0.113.7", 0), "wss"),
    ("127.0.0.1", PROXY, headers((FWD, ", for=203.0.113.7,")), False, ("203.0.113.7", 0), "http"),
    # a malformed element is a hop nobody can read past
    ("127.0.0.1", PROXY, headers((FWD, "for=203.0.113.7;for=198.51.100.1")), False, None, "http"),
    ("127.0.0.1", PROXY, headers((FWD, "for=203.0.113.7 junk")), False, None, "http"),
    ("127.0.0.1", PROXY, headers((FWD, 'garbage"here, for=203.0.113.7')), False, None, "http"),
    ("127.0.0.1,10.0.0.0/8", PROXY, headers((FWD, "junk, for=10.1.1.1")), False, None, "http"),
    (
        "127.0.0.1",
        PROXY,
        headers((FWD, "for=198.51.100.1;bad name=x, for=203.0.113.7")),
        False,
        ("203.0.113.7", 0),
        "http",
    ),
    # both families: used where they agree, ignored where they differ
    (
        "127.0.0.1",
        PROXY,
        headers((XFF, "203.0.113.7"), (FWD, 'for="203.0.113.7:555"'), (XFP, "https")),
        False,
        ("203.0.113.7", 555),
        "https",
    ),
    ("127.0.0.1", PROXY, headers((XFF, "203.0.113.7"), (FWD, "for=198.51.100.66;proto=https")), False, None, "https"),
    (
        "127.0.0.1",
        PROXY,
        headers((XFF, "203.0.113.7"), (XFP, "http"), (FWD, "for=203.0.113.7;proto=https")),
        False,
        ("203.0.113.7", 0),
        "http",
    ),
    (
        "127.0.0.1",
        PROXY,
        headers((XFF, "203.0.113.7"), (XFP, "https"), (FWD, "for=203.0.113.7;proto=wss")),
        False,
        ("203.0.113.7", 0),
        "https",
    ),
    ("127.0.0.1", PROXY, headers((XFF, "203.0.113.7"), (FWD, "for=unknown")), False, None, "http"),
    # header names arrive in any case from the WSGI engine; X_Forwarded_For is not X-Forwarded-For
    (
        "127.0.0.1",
        PROXY,
        [(b"X-Forwarded-For", b"203.0.113.7"), (b"X-FORWARDED-PROTO", b"https")],
        False,
        ("203.0.113.7", 0),
        "https",
    ),
    ("127.0.0.1", PROXY, [(b"x_forwarded_for", b"203.0.113.7")], False, PEER, "http"),
]


@pytest.mark.parametrize("allow,peer,given,websocket,client,scheme", CASES)
def test_resolve(allow: str, peer: Any, given: H, websocket: bool, client: Any, scheme: str) -> None:
    if client is PEER:
        client = (peer[0], peer[1])
    trust = ProxyTrust(allow)
    assert trust.resolve(peer, given, websocket=websocket) == (client, scheme)
    assert trust.resolve(peer, given, websocket=websocket) == (client, scheme)  # again, from what it read before


def test_an_untrusted_peer_gets_its_own_address_whatever_it_sends() -> None:
    trust = ProxyTrust("10.0.0.0/8")
    forged = headers((XFF, "10.0.0.1"), (XFP, "https"), (FWD, "for=10.0.0.2;proto=https"))
    assert trust.resolve(("203.0.113.7", 1234), forged) == (("203.0.113.7", 1234), "http")
    assert trust.resolve(("203.0.113.7", 1234), forged, websocket=True) == (("203.0.113.7", 1234), "ws")


def test_a_client_cannot_push_itself_past_the_proxy_entry() -> None:
    """The client writes its own X-Forwarded-For; the proxy appends the real address after it."""
    trust = ProxyTrust("127.0.0.1")
    sent = headers((XFF, "127.0.0.1, 10.0.0.1, 8.8.8.8, 198.51.100.23"))
    assert trust.resolve(PROXY, sent)[0] == ("198.51.100.23", 0)


def test_conflicting_families_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    trust = ProxyTrust("127.0.0.1")
    conflict = headers((XFF, "203.0.113.7"), (FWD, "for=198.51.100.66"))
    with caplog.at_level(logging.WARNING, logger="sockact.runtime"):
        for _ in range(3):
            assert trust.resolve(PROXY, conflict)[0] is None
    assert [r.getMessage().count("different clients") for r in caplog.records] == [1]


def test_environ_of_a_resolved_request() -> None:
    trust = ProxyTrust("127.0.0.1")
    env = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.url_scheme": "http"}
    trust.apply_to_environ(env, PROXY, headers((XFF, "203.0.113.7"), (XFP, "https")))
    assert env == {"REMOTE_ADDR": "203.0.113.7", "wsgi.url_scheme": "https", "HTTPS": "on"}
    env = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.url_scheme": "http"}
    trust.apply_to_environ(env, PROXY, headers((FWD, 'for="[2001:db8::5]:8080";proto=http')))
    assert env == {"REMOTE_ADDR": "2001:db8::5", "REMOTE_PORT": "8080", "wsgi.url_scheme": "http"}
    env = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.url_scheme": "http"}
    trust.apply_to_environ(env, PROXY, headers((XFF, "unknown")))
    assert env == {"wsgi.url_scheme": "http"}  # unknown: no REMOTE_ADDR, as for a Unix socket peer
    env = {"REMOTE_ADDR": "198.51.100.1", "REMOTE_PORT": "5", "wsgi.url_scheme": "http"}
    trust.apply_to_environ(env, ("198.51.100.1", 5), headers((XFF, "203.0.113.7"), (XFP, "https")))
    assert env == {"REMOTE_ADDR": "198.51.100.1", "REMOTE_PORT": "5", "wsgi.url_scheme": "http"}


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("127.0.0.1", "127.0.0.1"),
        (" 127.0.0.1 , ::1 ", "127.0.0.1,::1"),
        ("10.0.0.0/8,2001:DB8::/32,UNIX", "10.0.0.0/8,2001:db8::/32,unix"),
        ("::ffff:10.0.0.1,::ffff:10.0.0.0/104", "10.0.0.1,10.0.0.0/8"),
        ("10.0.0.1,10.0.0.1", "10.0.0.1"),
        ("*", "*"),
        (" * ", "*"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    assert ProxyTrust(text).text == canonical


@pytest.mark.parametrize(
    "text,says",
    [
        ("", "empty entry"),
        ("10.0.0.1,", "empty entry"),
        ("10.0.0.1,,::1", "empty entry"),
        ("*,10.0.0.1", "give it alone"),
        ("localhost", "host name"),
        ("proxy.example.com", "host name"),
        ("10.0.0.1/8", "network address 10.0.0.0/8"),
        ("10.0.0.0/33", "not a network"),
        ("1.2.3", "not an IP address"),
        ("300.1.1.1", "not an IP address"),
        ("fe80::1%eth0", "zone"),
        ("10.0.0.1 10.0.0.2", "not an IP address"),
    ],
)
def test_bad_lists_are_one_line_saying_how_to_fix(text: str, says: str) -> None:
    with pytest.raises(UsageError) as raised:
        ProxyTrust(text)
    message = str(raised.value)
    assert says in message and "\n" not in message and message.startswith("--forwarded-allow-ips")


def test_the_trust_cache_stays_bounded() -> None:
    trust = ProxyTrust("127.0.0.1")
    for index in range(10000):
        trust.resolve(PROXY, headers((XFF, f"10.{index // 256 % 256}.{index % 256}.1, 203.0.113.{index % 250}")))
    assert len(trust._cache) <= 4096 and len(trust._read) <= 4096
