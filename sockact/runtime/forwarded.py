"""Who the client is behind a proxy: X-Forwarded-For/-Proto and RFC 7239 Forwarded, believed only
when the connection comes from a proxy named by --forwarded-allow-ips.

A client can write any header it likes, so these headers say something only when a proxy we trust
wrote (or overwrote) them. Each proxy appends the address it received the request from, so the list
is read from the right: hops that are trusted proxies are skipped, and the first address that is
not one is the client (a client cannot forge what sits to the right of its own entry).

Both header families at once: a proxy usually sets one family and passes the other through from
the client untouched (nginx sets X-Forwarded-For and forwards a client's Forwarded as is; a proxy
set up to write Forwarded passes X-Forwarded-For on the same way), and nothing in the request says
which one the proxy wrote.
So neither wins: when they name different clients, the client is unknown (None), and when they name
different schemes, the connection's own scheme stays. Where they agree, or only one is present, it
is used. Choosing a winner would let a client pick its address through the family the proxy ignores.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from ..errors import UsageError

logger = logging.getLogger("sockact.runtime")

Client = Union[tuple[str, int], None]  # the ASGI scope's "client"; None: a Unix socket, or not known
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

OPTION = "--forwarded-allow-ips"
EVERYONE = "*"
UNIX = "unix"
EXAMPLE = f"e.g. {OPTION} 127.0.0.1,::1,10.0.0.0/8 (or unix for a proxy on a Unix socket)"
# The schemes a proxy may report, as an HTTP scope and as a WebSocket scope would name them.
HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
WEBSOCKET_SCHEME = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_CACHE_MAX = 4096  # trust answers kept per worker: the few proxies and recent clients
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a Forwarded parameter name or value


class _Absent:
    """A header family that says nothing about the client (as opposed to None: it says "unknown")."""


ABSENT = _Absent()
Found = Union[Client, _Absent]  # what one header family says about the client


class ProxyTrust:
    """The peers whose forwarding headers are believed, parsed from the --forwarded-allow-ips text:
    IP addresses and CIDR networks (IPv4 and IPv6) separated by commas, `unix` for peers on a Unix
    socket, or `*` alone for every peer (then the leftmost X-Forwarded-For entry is the client)."""

    __slots__ = ("_cache", "_conflict_logged", "_read", "addresses", "everyone", "networks", "text", "unix")

    def __init__(self, text: str) -> None:
        self.everyone = False
        self.unix = False
        self.addresses: set[Address] = set()
        self.networks: list[Network] = []
        self.text = self._parse(text)  # the canonical form, as a unit's ExecStart= carries it
        self._cache: dict[str, bool] = {}
        # What a header value says depends on nothing else (the list above never changes), and a proxy
        # sends the same few values again and again: measured 9.5 us per request parsed, 3.5 remembered.
        self._read: dict[tuple[bytes, ...], tuple[Found, str | None]] = {}
        self._conflict_logged = False

    def _parse(self, text: str) -> str:
        items = [item.strip() for item in text.split(",")]
        if not text.strip() or "" in items:
            raise UsageError(f"{OPTION} {text!r} has an empty entry; list proxies separated by commas, {EXAMPLE}")
        if EVERYONE in items:
            if len(items) > 1:
                raise UsageError(f"{OPTION} {text!r}: '*' trusts every peer already; give it alone or list the proxies")
            self.everyone = True
            return EVERYONE
        canonical = [self._entry(item, text) for item in items]
        return ",".join(dict.fromkeys(canonical))

    def _entry(self, item: str, text: str) -> str:
        if item.lower() == UNIX:
            self.unix = True
            return UNIX
        if "%" in item:
            raise UsageError(f"{OPTION} {text!r}: {item!r} has a zone (%IFACE); give the address without it")
        try:
            if "/" in item:
                network = _unmapped_network(ipaddress.ip_network(item))
                self.networks.append(network)
                return str(network)
            address = _unmapped(ipaddress.ip_address(item))
        except ValueError:
            raise UsageError(f"{OPTION} {text!r}: {_why_not(item)}") from None
        self.addresses.add(address)
        return str(address)

    # trust ------------------------------------------------------------------------------------------
    def trusts_peer(self, peer: Any) -> bool:
        """The connection's peer: a (host, port, ...) tuple, or None (or "") for a Unix socket."""
        if self.everyone:
            return True
        if not isinstance(peer, tuple) or not peer:
            return self.unix
        return self.trusts(str(peer[0]))

    def trusts(self, host: str) -> bool:
        """An address as text (a peer's, or one hop of a header); anything that is no IP address is not trusted."""
        if self.everyone:
            return True
        known = self._cache.get(host)
        if known is None:
            known = self._look_up(host)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # addresses from headers are the client's choice: keep the cache bounded
            self._cache[host] = known
        return known

    def _look_up(self, host: str) -> bool:
        address = _ip(host)
        if address is None:
            return False
        return address in self.addresses or any(address in network for network in self.networks)

    # the request ------------------------------------------------------------------------------------
    def resolve(
        self, peer: Any, headers: Iterable[tuple[bytes, bytes]], *, websocket: bool = False
    ) -> tuple[Client, str]:
        """The (client, scheme) for the ASGI scope or WSGI environ: the peer and the connection's own
        scheme unless the peer is trusted and its headers say otherwise."""
        own_client: Client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and peer else None
        own_scheme = "ws" if websocket else "http"
        if not self.trusts_peer(peer):
            return own_client, own_scheme
        x_for, x_proto, forwarded = _collect(headers)
        from_x = self._read_once(self._from_x_forwarded, x_for, x_proto) if x_for or x_proto else (ABSENT, None)
        from_rfc = self._read_once(self._from_forwarded, forwarded) if forwarded else (ABSENT, None)
        client = self._merge_client(from_x[0], from_rfc[0])
        scheme = _merge_scheme(from_x[1], from_rfc[1])
        names = WEBSOCKET_SCHEME if websocket else HTTP_SCHEME
        return (own_client if isinstance(client, _Absent) else client), (names[scheme] if scheme else own_scheme)

    def apply_to_environ(self, environ: dict[str, Any], peer: Any, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """resolve() for a WSGI environ: REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme and HTTPS."""
        to_environ(environ, *self.resolve(peer, headers))

    def _read_once(
        self, read: Callable[..., tuple[Found, str | None]], *values: list[bytes]
    ) -> tuple[Found, str | None]:
        key = (read.__name__.encode(), *(b",".join(value) for value in values))
        found = self._read.get(key)
        if found is None:
            found = read(*values)
            if len(self._read) >= _CACHE_MAX:
                self._read.clear()
            self._read[key] = found
        return found

    def _from_x_forwarded(self, x_for: list[bytes], x_proto: list[bytes]) -> tuple[Found, str | None]:
        hops = _split(b",".join(x_for).decode("latin-1")) if x_for else []
        client: Found = ABSENT
        depth = 0
        if any(hops):
            client, depth = self._walk([_node(hop) for hop in hops])
        protos = _split(b",".join(x_proto).decode("latin-1")) if x_proto else []
        # One value: set by a single proxy. A list: each proxy appended its own; the one at the
        # client's depth from the right is the scheme the client used.
        if len(protos) == 1:
            return client, _scheme(protos[0])
        return client, (_scheme(protos[-1 - depth]) if depth < len(protos) else None)

    def _from_forwarded(self, forwarded: list[bytes]) -> tuple[Found, str | None]:
        elements = [_element(text) for text in _split_quoted(b",".join(forwarded).decode("latin-1"), ",")]
        elements = [element for element in elements if element != {}]  # RFC 7239 allows empty list members
        if not elements:
            return ABSENT, None
        if all(element is not None and "for" not in element for element in elements):
            # proto= alone (a proxy that does not name clients): the client stays the peer.
            last = elements[-1]
            return ABSENT, _scheme(last.get("proto", "")) if last is not None else None
        nodes = [_node(element["for"]) if element is not None and "for" in element else None for element in elements]
        client, depth = self._walk(nodes)
        element = elements[-1 - depth]
        return client, (_scheme(element.get("proto", "")) if element is not None else None)

    def _walk(self, nodes: Sequence[tuple[str, int] | None]) -> tuple[Client, int]:
        """From the right: skip trusted proxies; the first other hop is the client, with its depth
        from the right. A hop that is no address (unknown, obfuscated, garbage) ends the walk: no
        client can be named. Every hop trusted: the leftmost is the client (a proxy host itself)."""
        for depth in range(len(nodes)):
            node = nodes[-1 - depth]
            if node is None:
                return None, depth
            if not self.trusts(node[0]):
                return node, depth
        return nodes[0], len(nodes) - 1

    def _merge_client(self, from_x: Found, from_rfc: Found) -> Found:
        if isinstance(from_x, _Absent):
            return from_rfc
        if isinstance(from_rfc, _Absent) or from_x == from_rfc:
            return from_x
        if from_x is None or from_rfc is None or from_x[0] != from_rfc[0]:
            self._log_conflict()
            return None
        return from_rfc if from_rfc[1] else from_x  # the same host: keep the port one of them gave

    def _log_conflict(self) -> None:
        if not self._conflict_logged:  # once per worker: a client can send this on every request
            self._conflict_logged = True
            logger.warning(
                "X-Forwarded-For and Forwarded name different clients: the client is left unknown; "
                "make the proxy set one family and remove the other (nginx: proxy_set_header "
                'Forwarded "";) (logged once)'
            )


def to_environ(environ: dict[str, Any], client: Client, scheme: str) -> None:
    """Put a resolved (client, scheme) into a WSGI environ; an unknown client leaves no REMOTE_ADDR,
    as a Unix socket peer does, and a port 0 (none given) no REMOTE_PORT."""
    environ.pop("REMOTE_ADDR", None)
    environ.pop("REMOTE_PORT", None)
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        if client[1]:
            environ["REMOTE_PORT"] = str(client[1])
    environ["wsgi.url_scheme"] = HTTP_SCHEME[scheme]
    if environ["wsgi.url_scheme"] == "https":
        environ["HTTPS"] = "on"


def _collect(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The values of every X-Forwarded-For, X-Forwarded-Proto and Forwarded line, in order."""
    x_for: list[bytes] = []
    x_proto: list[bytes] = []
    forwarded: list[bytes] = []
    for name, value in headers:
        if len(name) in (9, 15, 17):  # forwarded, x-forwarded-for, x-forwarded-proto: most headers skip lower()
            name = name.lower()
            if name == b"x-forwarded-for":
                x_for.append(value)
            elif name == b"x-forwarded-proto":
                x_proto.append(value)
            elif name == b"forwarded":
                forwarded.append(value)
    return x_for, x_proto, forwarded


def _merge_scheme(from_x: str | None, from_rfc: str | None) -> str | None:
    if from_x and from_rfc and HTTP_SCHEME[from_x] != HTTP_SCHEME[from_rfc]:
        return None  # they disagree: the connection's own scheme
    return from_rfc or from_x


def _scheme(text: str) -> str | None:
    """One of http/https/ws/wss, lowercased; anything else is ignored."""
    value = text.strip().lower()
    return value if value in HTTP_SCHEME else None


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def _node(text: str) -> tuple[str, int] | None:
    """One hop: an address with an optional port (1.2.3.4, 1.2.3.4:80, 2001:db8::1, [2001:db8::1]:80);
    None for anything else (unknown, an obfuscated _identifier, garbage). The port is 0 when not given."""
    text = text.strip()
    port = ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host = text
    address = _ip(host)
    if address is None:
        return None
    number = int(port) if port.isascii() and port.isdigit() and 0 < int(port) < 65536 else 0  # "_obf" ports: 0
    return str(address), number


def _element(text: str) -> dict[str, str] | None:
    """One Forwarded element's parameters by lowercased name ({} when empty); None when malformed."""
    pairs: dict[str, str] = {}
    for pair in _split_quoted(text, ";"):
        if not pair.strip():
            continue
        name, equals, value = pair.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not equals or not _TOKEN.fullmatch(name) or name in pairs:
            return None  # RFC 7239: name=value pairs, each name once per element
        parsed = _value(value)
        if parsed is None:
            return None
        pairs[name] = parsed
    return pairs


def _value(text: str) -> str | None:
    """A token, or a quoted-string with its backslash escapes undone."""
    if _TOKEN.fullmatch(text):
        return text
    if len(text) >= 2 and text[0] == text[-1] == '"':
        body = text[1:-1]
        if re.search(r'(?<!\\)(?:\\\\)*"', body):
            return None  # an unescaped quote inside
        return re.sub(r"\\(.)", r"\1", body)
    return None


def _split_quoted(text: str, separator: str) -> list[str]:
    """Split at `separator` outside double quotes (a quoted value may hold commas and semicolons)."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _ip(host: str) -> Address | None:
    try:  # without a zone: a link-local peer (fe80::1%eth0) matches fe80::/10 and fe80::1
        return _unmapped(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        return None


def _unmapped(address: Address) -> Address:
    """::ffff:10.0.0.1 is 10.0.0.1: a dual-stack listener sees IPv4 peers that way."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _unmapped_network(network: Network) -> Network:
    mapped = ipaddress.ip_network("::ffff:0:0/96")
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(mapped):  # type: ignore[arg-type]
        return ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
    return network


def _why_not(item: str) -> str:
    if "/" in item:
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not a network; write ADDRESS/PREFIX, {EXAMPLE}"
        return f"{item!r} has bits set past its prefix; write the network address {network}"
    if any(char.isalpha() for char in item) and ":" not in item:
        return f"{item!r} is a host name; give the proxy's IP address (names are not resolved), {EXAMPLE}"
    return f"{item!r} is not an IP address, a network, 'unix' or '*'; {EXAMPLE}"
