"""What the client asked for, when something stands between it and the server.

Behind nginx the socket's peer is nginx and the scheme on the wire is http,
so without help an app sees the proxy's address as REMOTE_ADDR and builds
`http://` links for an `https://` site. The proxy says what it received in
request headers; this module decides when to believe them and what they
mean, as pure functions, and `Front` applies the answer to an environ.

Trust. Only a peer in `--forwarded-allow-ips` (addresses and CIDR networks,
`*` for all; default `127.0.0.1,::1` as gunicorn) is believed; from anyone
else the headers change nothing, since any client can send them. A peer on
a unix socket is always trusted: only a local process with permission on
the socket file can be one.

What is read, from a trusted peer:

* `X-Forwarded-For: client, proxy1, proxy2` -> REMOTE_ADDR. Each proxy
  appends the address it received from, so the list is read from the right:
  the right-most address that is not itself a trusted proxy is the client
  (anything left of it was written by that client and proves nothing).
* `X-Forwarded-Proto` (http or https) -> wsgi.url_scheme, and
  `X-Forwarded-Ssl: on|off` (https|http) where a front end says it that way;
  when both come and disagree, neither is believed (gunicorn answers 400);
  `X-Forwarded-Host` -> HTTP_HOST, SERVER_NAME, SERVER_PORT;
  `X-Forwarded-Port` -> SERVER_PORT (and the port in HTTP_HOST). Of a
  comma list, the right-most value: the one our peer added.
* RFC 7239 `Forwarded: for=...;proto=...;host=..., for=...` (quoted
  values, `"[v6]:port"`, `unknown` and obfuscated `_ids`): the elements
  are walked from the right like X-Forwarded-For; the element that names
  the client gives for=, proto= and host= together.

Precedence. When a request carries any X-Forwarded-* header, `Forwarded` is
ignored. The common front ends (nginx, HAProxy, cloud load balancers) set
X-Forwarded-* and pass a `Forwarded` they do not know through untouched, so
a client could forge one; a front end that speaks RFC 7239 should drop the
X-Forwarded-* headers it receives (or set both).

A malformed value is ignored - logged at DEBUG, never an error response.

Cost. Nothing is read unless the request carries one of the headers, and
`front_for` installs no hook at all when no peer can be trusted.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Mapping, MutableMapping
from typing import NamedTuple

log = logging.getLogger("flash.proxy")

#: The environ keys of the forwarding headers.
X_FORWARDED_KEYS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_SSL",
                    "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT")
DEFAULT_PORTS = {"http": "80", "https": "443"}
#: Addresses whose trust verdict is remembered (a proxy tier has few).
_VERDICT_CACHE_SIZE = 1024
#: Distinct sets of forwarding headers whose resolution a Front remembers:
#: behind a proxy every request carries them, and a client's requests
#: carry the same values again and again.
_RESOLUTION_CACHE_SIZE = 4096


class Malformed(ValueError):
    """A forwarding header that does not parse; it is ignored."""


# ---------------------------------------------------------------------------
# Whom to believe
# ---------------------------------------------------------------------------


class TrustedPeers:
    """The parsed `--forwarded-allow-ips`: may this peer speak for the client?"""

    def __init__(self, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
                 everyone: bool = False) -> None:
        self.networks = networks
        self.everyone = everyone
        self._verdicts: dict[str, bool] = {}

    @classmethod
    def parse(cls, text: str) -> "TrustedPeers":
        """`"127.0.0.1, ::1, 10.0.0.0/8"` or `"*"`; ValueError names a bad entry."""
        networks = []
        everyone = False
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            if entry == "*":
                everyone = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"--forwarded-allow-ips: {entry!r} is not an address or a network "
                                 "(e.g. 10.0.0.0/8)") from None
        return cls(tuple(networks), everyone)

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def __contains__(self, address: str) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            verdict = self._judge(address)
            if len(self._verdicts) >= _VERDICT_CACHE_SIZE:
                self._verdicts.clear()
            self._verdicts[address] = verdict
        return verdict

    def _judge(self, address: str) -> bool:
        if self.everyone:
            return True
        canonical = canonical_ip(address)
        if canonical is None:
            return False
        ip = ipaddress.ip_address(canonical)
        return any(ip in network for network in self.networks)


_V4_MAPPED = bytes(10) + b"\xff\xff"


def canonical_ip(text: str) -> str | None:
    """An IP address in canonical text (an IPv4-mapped IPv6 one as IPv4), or None.

    inet_pton, not the ipaddress module: it runs for every forwarded
    request, and is strict (no leading zeros, no zone, no spaces).
    """
    try:
        if ":" not in text:
            socket.inet_pton(socket.AF_INET, text)
            return text
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None
    if packed[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed)


# ---------------------------------------------------------------------------
# Parsing the values
# ---------------------------------------------------------------------------


class Node(NamedTuple):
    """A hop named by X-Forwarded-For or Forwarded's for=: an address, or hidden."""

    #: The address in canonical text (None for `unknown` or an obfuscated identifier).
    address: str | None
    port: str | None = None

    def trusted_by(self, trusted: TrustedPeers) -> bool:
        return self.address is not None and self.address in trusted


_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_node(text: str) -> Node:
    """`1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:80`, `2001:db8::1`, `unknown`, `_hidden:_port`."""
    port = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise Malformed(f"bad node {text!r}")
        if rest:
            port = _node_port(rest[1:], text)
        if ":" not in host:
            raise Malformed(f"bad IPv6 node {text!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _node_port(port_text, text)
    else:
        host = text
    if host == "unknown" or (host.startswith("_") and _OBFUSCATED.fullmatch(host)):
        return Node(None)
    address = canonical_ip(host)
    if address is None:
        raise Malformed(f"bad node address {text!r}")
    return Node(address, port)


def _node_port(text: str, node: str) -> str | None:
    if _OBFUSCATED.fullmatch(text):
        return None
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise Malformed(f"bad port in node {node!r}")
    return text


_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+=%-]+)(?::([0-9]{1,5}))?")


def parse_host(text: str) -> tuple[str, str | None]:
    """`name`, `name:port`, `1.2.3.4:80`, `[::1]:80` -> (host, port or None)."""
    match = _HOST.fullmatch(text)
    if match is None:
        raise Malformed(f"bad host {text!r}")
    host, port = match.group(1), match.group(2)
    if host.startswith("[") and canonical_ip(host[1:-1]) is None:
        raise Malformed(f"bad IPv6 host {text!r}")
    if port is not None and int(port) > 65535:
        raise Malformed(f"bad port in host {text!r}")
    return host, port


def parse_scheme(text: str) -> str:
    scheme = text.strip().lower()
    if scheme not in DEFAULT_PORTS:
        raise Malformed(f"scheme {text!r} is neither http nor https")
    return scheme


def parse_port(text: str) -> str:
    port = text.strip()
    if not _PORT.fullmatch(port) or not 0 < int(port) <= 65535:
        raise Malformed(f"bad port {text!r}")
    return str(int(port))


def last_item(value: str) -> str:
    """The right-most entry of a comma list: the one our peer added."""
    return value.rpartition(",")[2].strip(" \t")


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_OWS = " \t"


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239: `for=a;proto=https, for="[::1]:80"` -> one dict per element.

    Parameter names are lower-cased; quoted values unquoted. Malformed on a
    syntax error or a parameter repeated within one element.
    """
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    i, end = 0, len(value)
    while True:
        while i < end and value[i] in _OWS:
            i += 1
        if i < end and value[i] not in ",;":
            name_match = _TOKEN.match(value, i)
            if name_match is None or name_match.end() >= end or value[name_match.end()] != "=":
                raise Malformed(f"expected name=value at {i} in {value!r}")
            name = name_match.group().lower()
            i = name_match.end() + 1
            value_match = _QUOTED.match(value, i) or _TOKEN.match(value, i)
            if value_match is None:
                raise Malformed(f"bad value at {i} in {value!r}")
            if name in pairs:
                raise Malformed(f"{name}= twice in one element of {value!r}")
            text = value_match.group()
            pairs[name] = re.sub(r"\\(.)", r"\1", text[1:-1]) if text.startswith('"') else text
            i = value_match.end()
            while i < end and value[i] in _OWS:
                i += 1
        if i >= end or value[i] == ",":
            if pairs:
                elements.append(pairs)
            pairs = {}
            if i >= end:
                return elements
        elif value[i] != ";":
            raise Malformed(f"unexpected {value[i]!r} at {i} in {value!r}")
        i += 1


# ---------------------------------------------------------------------------
# Resolving: what the client sent to the first proxy
# ---------------------------------------------------------------------------


class Resolution(NamedTuple):
    """What the trusted headers say; None fields were not said (or not believable)."""

    client: Node | None = None
    scheme: str | None = None
    #: Host (and port, if the proxy gave one) the client addressed.
    host: str | None = None
    port: str | None = None


def client_from_chain(nodes: list[Node], trusted: TrustedPeers) -> int:
    """Index of the client in a hop list: the right-most node not a trusted proxy.

    When every node is trusted, the left-most is the origin.
    """
    for index in range(len(nodes) - 1, -1, -1):
        if not nodes[index].trusted_by(trusted):
            return index
    return 0


def from_x_forwarded(headers: Mapping[str, str], trusted: TrustedPeers) -> Resolution:
    """X-Forwarded-For/-Proto/-Host/-Port; each malformed one is left out on its own."""
    client = scheme = host = port = None
    if "HTTP_X_FORWARDED_FOR" in headers:
        client = _guarded(_x_forwarded_client, headers["HTTP_X_FORWARDED_FOR"], trusted)
    if "HTTP_X_FORWARDED_PROTO" in headers:
        scheme = _guarded(parse_scheme, last_item(headers["HTTP_X_FORWARDED_PROTO"]))
    if "HTTP_X_FORWARDED_SSL" in headers:
        scheme = _guarded(_scheme_from_ssl, headers["HTTP_X_FORWARDED_SSL"], scheme,
                          "HTTP_X_FORWARDED_PROTO" in headers)
    if "HTTP_X_FORWARDED_HOST" in headers:
        host = _guarded(_checked_host, last_item(headers["HTTP_X_FORWARDED_HOST"]))
    if "HTTP_X_FORWARDED_PORT" in headers:
        port = _guarded(parse_port, last_item(headers["HTTP_X_FORWARDED_PORT"]))
    return Resolution(client, scheme, host, port)


def _scheme_from_ssl(value: str, proto_scheme: str | None, proto_sent: bool) -> str | None:
    """X-Forwarded-Ssl, checked against what X-Forwarded-Proto said."""
    flag = last_item(value).strip().lower()
    if flag not in ("on", "off"):
        raise Malformed(f"X-Forwarded-Ssl {value!r} is neither on nor off")
    ssl_scheme = "https" if flag == "on" else "http"
    if proto_sent and proto_scheme != ssl_scheme:
        raise Malformed(f"X-Forwarded-Ssl {value!r} disagrees with X-Forwarded-Proto: the scheme is left as is")
    return ssl_scheme


def _x_forwarded_client(value: str, trusted: TrustedPeers) -> Node:
    nodes = []
    # Parsed from the right, and only as far as the client: what lies
    # left of it was written by the client and may be anything.
    for item in reversed(value.split(",")):
        node = parse_node(item.strip(_OWS))
        nodes.append(node)
        if not node.trusted_by(trusted):
            break
    nodes.reverse()
    return nodes[client_from_chain(nodes, trusted)]


def from_forwarded(value: str, trusted: TrustedPeers) -> Resolution:
    """RFC 7239: the element naming the client supplies for=, proto= and host=."""
    elements = parse_forwarded(value)
    if not elements:
        raise Malformed(f"no element in {value!r}")
    nodes = [parse_node(e["for"]) if "for" in e else Node(None) for e in elements]
    index = client_from_chain(nodes, trusted)
    chosen, client = elements[index], nodes[index]
    scheme = parse_scheme(chosen["proto"]) if "proto" in chosen else None
    host = _checked_host(chosen["host"]) if "host" in chosen else None
    return Resolution(client if client.address else None, scheme, host)


def _checked_host(text: str) -> str:
    parse_host(text)
    return text


def _guarded(parse, value: str, *args):
    try:
        return parse(value, *args)
    except Malformed as exc:
        log.debug("forwarding header ignored: %s", exc)
        return None


def resolve(headers: Mapping[str, str], trusted: TrustedPeers) -> Resolution:
    """What a trusted peer's headers say (X-Forwarded-* first; see the module docstring)."""
    if any(key in headers for key in X_FORWARDED_KEYS):
        return from_x_forwarded(headers, trusted)
    if "HTTP_FORWARDED" in headers:
        return _guarded(from_forwarded, headers["HTTP_FORWARDED"], trusted) or Resolution()
    return Resolution()


# ---------------------------------------------------------------------------
# Applying it to an environ
# ---------------------------------------------------------------------------


def apply(environ: MutableMapping[str, object], resolution: Resolution) -> bool:
    """Rewrite REMOTE_ADDR/PORT, wsgi.url_scheme and HTTP_HOST; True if the host changed."""
    client = resolution.client
    if client is not None and client.address is not None:
        environ["REMOTE_ADDR"] = client.address
        if client.port is not None:
            environ["REMOTE_PORT"] = client.port
        else:
            # The port of the proxy's own connection, paired with the
            # client's address, would name a socket that never existed.
            environ.pop("REMOTE_PORT", None)
    if resolution.scheme is not None:
        environ["wsgi.url_scheme"] = resolution.scheme
    host = resolution.host or environ.get("HTTP_HOST")
    if resolution.port is not None and isinstance(host, str):
        name, _ = _split_host(host)
        default = resolution.port == DEFAULT_PORTS.get(str(environ["wsgi.url_scheme"]))
        environ["HTTP_HOST"] = name if default else f"{name}:{resolution.port}"
        return True
    if resolution.host is not None:
        environ["HTTP_HOST"] = resolution.host
        return True
    return False


def _split_host(text: str) -> tuple[str, str | None]:
    try:
        return parse_host(text)
    except Malformed:
        return text, None


def server_from_host(environ: MutableMapping[str, object]) -> None:
    """SERVER_NAME and SERVER_PORT from HTTP_HOST (the port defaults by scheme).

    Used on a unix socket, which has no host or port of its own (as
    gunicorn does), and after a proxy named the host. Without a usable Host
    header the socket's values stay.
    """
    host = environ.get("HTTP_HOST")
    if not isinstance(host, str):
        return
    try:
        name, port = parse_host(host)
    except Malformed:
        return
    environ["SERVER_NAME"] = name[1:-1] if name.startswith("[") else name
    environ["SERVER_PORT"] = port or DEFAULT_PORTS.get(str(environ.get("wsgi.url_scheme")), "")


#: The environ keys of the headers `Front` may act on (`Front.__call__`
#: tests them inline: it runs per request).
FORWARDING_KEYS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED",
                   "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_SSL")


class Front:
    """The per-request hook of a listener (`WSGIContext(front=...)`)."""

    __slots__ = ("trusted", "unix", "_resolved")

    def __init__(self, trusted: TrustedPeers, unix: bool) -> None:
        self.trusted = trusted
        self.unix = unix
        self._resolved: dict[tuple, Resolution] = {}

    def concerns(self, environ: dict) -> bool:
        """Could this hook change a request with these headers? On a unix
        socket always (SERVER_NAME comes from Host); on TCP only with a
        forwarding header. `WSGIContext` asks once per environ template, and
        its requests without one skip the call."""
        return self.unix or any(key in environ for key in FORWARDING_KEYS)

    def __call__(self, environ: dict) -> None:
        host_changed = False
        if ("HTTP_X_FORWARDED_FOR" in environ or "HTTP_X_FORWARDED_PROTO" in environ
                or "HTTP_FORWARDED" in environ or "HTTP_X_FORWARDED_HOST" in environ
                or "HTTP_X_FORWARDED_PORT" in environ or "HTTP_X_FORWARDED_SSL" in environ) \
                and (self.unix or environ["REMOTE_ADDR"] in self.trusted):
            host_changed = apply(environ, self._resolve(environ))
        if host_changed or self.unix:
            server_from_host(environ)

    def _resolve(self, environ: dict) -> Resolution:
        get = environ.get
        key = (get("HTTP_X_FORWARDED_FOR"), get("HTTP_X_FORWARDED_PROTO"), get("HTTP_X_FORWARDED_SSL"),
               get("HTTP_X_FORWARDED_HOST"), get("HTTP_X_FORWARDED_PORT"), get("HTTP_FORWARDED"))
        resolution = self._resolved.get(key)
        if resolution is None:
            resolution = resolve(environ, self.trusted)
            if len(self._resolved) >= _RESOLUTION_CACHE_SIZE:
                self._resolved.clear()
            self._resolved[key] = resolution
        return resolution


def front_for(family: int, allow_ips: str) -> Front | None:
    """The hook for a listener of `family`; None (no per-request work) if nothing to do.

    On TCP with no trusted peer the headers can never count; a unix socket
    always needs SERVER_NAME/SERVER_PORT from the Host header.
    """
    trusted = TrustedPeers.parse(allow_ips)
    unix = family == socket.AF_UNIX
    if not unix and not trusted:
        return None
    return Front(trusted, unix)
