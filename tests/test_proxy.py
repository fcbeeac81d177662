"""Trusted proxy headers (flash_green/proxy.py): whom to believe, and what they say."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flash_green import proxy
from flash_green.http import Request, ServerConnection
from flash_green.proxy import Front, Node, TrustedPeers, front_for, parse_forwarded, resolve
from flash_green.wsgi import InputStream, WSGIContext, peer_keys

LOCAL = TrustedPeers.parse("127.0.0.1,::1")
PROXIES = TrustedPeers.parse("10.0.0.0/8, 127.0.0.1")


def environ(peer: str = "127.0.0.1", **headers: str) -> dict:
    env = {"REMOTE_ADDR": peer, "REMOTE_PORT": "40000", "wsgi.url_scheme": "http",
           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "backend:8000"}
    env.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return env


def through(env: dict, allow: str = "127.0.0.1,::1", unix: bool = False) -> dict:
    front = front_for(socket.AF_UNIX if unix else socket.AF_INET, allow)
    if front is not None:
        front(env)
    return env


# -- whom to believe -----------------------------------------------------------


def test_allow_list_takes_addresses_networks_and_star() -> None:
    peers = TrustedPeers.parse(" 192.168.1.7, 10.0.0.0/8 ,fd00::/8")
    assert "192.168.1.7" in peers and "10.200.3.4" in peers and "fd00::1" in peers
    assert "192.168.1.8" not in peers and "11.0.0.1" not in peers
    assert "anything" in TrustedPeers.parse("*")
    assert not TrustedPeers.parse("")


def test_an_ipv4_mapped_peer_is_judged_as_ipv4() -> None:
    assert "::ffff:127.0.0.1" in LOCAL


def test_a_bad_allow_list_entry_is_named() -> None:
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        TrustedPeers.parse("127.0.0.1,10.0.0.300")


def test_no_trusted_peer_installs_no_hook_on_tcp_but_a_unix_socket_always_gets_one() -> None:
    assert front_for(socket.AF_INET, "") is None
    assert isinstance(front_for(socket.AF_UNIX, ""), Front)


# -- X-Forwarded-* ---------------------------------------------------------------


def test_x_forwarded_headers_from_a_trusted_peer_rewrite_the_environ() -> None:
    env = through(environ(x_forwarded_for="203.0.113.9", x_forwarded_proto="https",
                          x_forwarded_host="shop.example"))
    assert env["REMOTE_ADDR"] == "203.0.113.9" and "REMOTE_PORT" not in env
    assert env["wsgi.url_scheme"] == "https"
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("shop.example", "shop.example", "443")


def test_x_forwarded_headers_from_an_untrusted_peer_change_nothing() -> None:
    env = environ("198.51.100.2", x_forwarded_for="203.0.113.9", x_forwarded_proto="https",
                  x_forwarded_host="evil.example", forwarded="for=1.2.3.4;proto=https")
    assert through(dict(env)) == env


def test_the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() -> None:
    # The client forged "6.6.6.6"; 10.1.1.1 is an inner proxy of ours.
    env = through(environ(x_forwarded_for="6.6.6.6, 203.0.113.9, 10.1.1.1"), "10.0.0.0/8,127.0.0.1")
    assert env["REMOTE_ADDR"] == "203.0.113.9"


def test_when_every_hop_is_trusted_the_leftmost_is_the_client() -> None:
    env = through(environ(x_forwarded_for="10.0.0.5, 10.0.0.6"), "10.0.0.0/8,127.0.0.1")
    assert env["REMOTE_ADDR"] == "10.0.0.5"


def test_only_the_part_right_of_the_client_must_parse() -> None:
    env = through(environ(x_forwarded_for="garbage!!, [2001:db8::7]:5555"))
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::7", "5555")
    assert through(environ(x_forwarded_for="203.0.113.9, junk"))["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize("value", ["ftp", "https, javascript", "", "http s"])
def test_a_scheme_other_than_http_or_https_is_ignored(value: str) -> None:
    assert through(environ(x_forwarded_proto=value))["wsgi.url_scheme"] == "http"


def test_of_a_proto_list_the_value_our_peer_added_counts() -> None:
    assert through(environ(x_forwarded_proto="http, HTTPS"))["wsgi.url_scheme"] == "https"


def test_forwarded_port_sets_server_port_and_the_host_header() -> None:
    env = through(environ(x_forwarded_host="shop.example", x_forwarded_port="8443",
                          x_forwarded_proto="https"))
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("shop.example:8443",
                                                                        "shop.example", "8443")
    env = through(environ(x_forwarded_host="shop.example:9000", x_forwarded_port="443",
                          x_forwarded_proto="https"))
    assert (env["HTTP_HOST"], env["SERVER_PORT"]) == ("shop.example", "443")


@pytest.mark.parametrize(("ssl", "scheme"), [("on", "https"), ("off", "http"), ("ON", "https")])
def test_x_forwarded_ssl_alone_sets_the_scheme(ssl: str, scheme: str) -> None:
    assert through(environ(x_forwarded_ssl=ssl))["wsgi.url_scheme"] == scheme


@pytest.mark.parametrize(("proto", "ssl", "scheme", "believed"), [
    ("https", "on", "https", True), ("http", "off", "http", True),
    ("https", "off", "http", False), ("http", "on", "http", False), ("ftp", "on", "http", False),
])
def test_x_forwarded_proto_and_ssl_must_agree_to_be_believed(proto: str, ssl: str, scheme: str,
                                                             believed: bool, caplog) -> None:
    """gunicorn's corpus row invalid/019 (Proto https, Ssl off): a front end
    contradicting itself is not believed; the scheme stays the socket's."""
    caplog.set_level("DEBUG", logger="flash.proxy")
    assert through(environ(x_forwarded_proto=proto, x_forwarded_ssl=ssl))["wsgi.url_scheme"] == scheme
    assert ("forwarding header ignored" in caplog.text) is not believed


@pytest.mark.parametrize("headers", [
    {"x_forwarded_ssl": "yes"}, {"x_forwarded_host": "a b"}, {"x_forwarded_host": "host:99999"}, {"x_forwarded_host": "[nope]:80"},
    {"x_forwarded_port": "0"}, {"x_forwarded_port": "eighty"}, {"x_forwarded_for": "1.2.3"},
])
def test_malformed_values_are_ignored_with_a_debug_line(headers: dict, caplog) -> None:
    caplog.set_level("DEBUG", logger="flash.proxy")
    before = environ(**headers)
    assert through(dict(before)) == before
    assert "forwarding header ignored" in caplog.text


# -- Forwarded (RFC 7239) ----------------------------------------------------------


def test_forwarded_parses_quoted_values_and_several_elements() -> None:
    assert parse_forwarded('for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"'
                           ' ; host="a\\"b"') == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711", "host": 'a"b'},
    ]


@pytest.mark.parametrize("value", ["for", "for=", "for=a;for=b", 'for="open', "for=a b", "=x", "for=[::1]"])
def test_forwarded_syntax_errors_are_malformed(value: str) -> None:
    with pytest.raises(proxy.Malformed):
        parse_forwarded(value)


def test_forwarded_gives_client_scheme_and_host_of_the_element_naming_the_client() -> None:
    env = through(environ(forwarded='for=6.6.6.6;proto=http, for="[2001:db8::17]:4711";proto=https;'
                                    'host=shop.example, for=10.9.8.7;proto=http;host=inner'),
                  "10.0.0.0/8,127.0.0.1")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::17", "4711")
    assert env["wsgi.url_scheme"] == "https"
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("shop.example", "shop.example", "443")


@pytest.mark.parametrize("node", ["unknown", "_hidden", '"_x:_p"'])
def test_a_hidden_client_keeps_the_peer_address_but_its_scheme_counts(node: str) -> None:
    env = through(environ(forwarded=f"for={node};proto=https"))
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "https"


def test_x_forwarded_headers_win_over_forwarded() -> None:
    # nginx sets X-Forwarded-* and passes a client's Forwarded through untouched.
    env = through(environ(forwarded="for=6.6.6.6;proto=https", x_forwarded_for="203.0.113.9"))
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "http"


def test_a_malformed_forwarded_header_changes_nothing() -> None:
    before = environ(forwarded="for=1.2.3.4;;proto=https,,for=")
    assert through(dict(before)) == before


# -- unix sockets ------------------------------------------------------------------


def test_a_unix_socket_peer_is_trusted_whatever_the_allow_list() -> None:
    env = through(environ("", x_forwarded_for="203.0.113.9", x_forwarded_proto="https"), allow="", unix=True)
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "https"


def test_on_a_unix_socket_server_name_and_port_come_from_the_host_header() -> None:
    env = environ("", HOST="[::1]:8080")
    env.update(SERVER_NAME="/run/flash.sock", SERVER_PORT="")
    assert through(env, unix=True)["SERVER_NAME"] == "::1" and env["SERVER_PORT"] == "8080"
    env = dict(environ(""), HTTP_HOST="example.com", SERVER_NAME="/run/flash.sock", SERVER_PORT="")
    assert (through(env, unix=True)["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "80")
    env = {"REMOTE_ADDR": "", "wsgi.url_scheme": "http", "SERVER_NAME": "/run/flash.sock", "SERVER_PORT": ""}
    assert through(dict(env), unix=True) == env


# -- the hook in the WSGI adapter --------------------------------------------------------


def test_wsgi_context_applies_the_front_to_every_environ() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: backend\r\nX-Forwarded-Proto: https\r\n"
                      b"X-Forwarded-For: 203.0.113.9\r\n\r\n")
    request = conn.next_event()
    assert type(request) is Request
    ctx = WSGIContext(lambda e, s: [], "127.0.0.1", 8000, front=front_for(socket.AF_INET, "127.0.0.1"))
    env = ctx.environ(peer_keys(("127.0.0.1", 5000)), request, InputStream(None))
    assert env["wsgi.url_scheme"] == "https" and env["REMOTE_ADDR"] == "203.0.113.9"


# -- properties ---------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["forwarded", "x_forwarded_for", "x_forwarded_proto",
                                        "x_forwarded_host", "x_forwarded_port"]), header_text))
def test_any_header_values_never_raise_and_leave_a_usable_environ(headers: dict) -> None:
    env = through(environ(**headers), allow="*")
    assert env["wsgi.url_scheme"] in ("http", "https")
    assert isinstance(env["REMOTE_ADDR"], str) and env["SERVER_PORT"].isdigit()


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["forwarded", "x_forwarded_for", "x_forwarded_proto",
                                        "x_forwarded_host", "x_forwarded_port"]), header_text))
def test_any_header_values_from_an_untrusted_peer_change_nothing(headers: dict) -> None:
    before = environ("198.51.100.2", **headers)
    assert through(dict(before)) == before


# IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry (tested above).
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(addresses, st.booleans()), min_size=1, max_size=6))
def test_the_client_found_is_the_rightmost_untrusted_hop(hops: list) -> None:
    trusted_ips = {str(ip) for ip, is_proxy in hops if is_proxy}
    trusted = TrustedPeers.parse(",".join(trusted_ips))
    nodes = [Node(str(ip)) for ip, _ in hops]
    expected = next((str(ip) for ip, _ in reversed(hops) if str(ip) not in trusted_ips), str(hops[0][0]))
    assert nodes[proxy.client_from_chain(nodes, trusted)].address == expected
    shown = ", ".join(f"[{ip}]:1" if ip.version == 6 else str(ip) for ip, _ in hops)
    resolved = resolve({"HTTP_X_FORWARDED_FOR": shown}, trusted).client
    assert resolved is not None and ipaddress.ip_address(resolved.address) == ipaddress.ip_address(expected)


token = st.text(st.sampled_from("abcXYZ019-._~!#$%&'*+^`|"), min_size=1, max_size=8)
quoted_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(token.map(str.lower), quoted_value, min_size=1, max_size=3),
                min_size=1, max_size=4))
def test_forwarded_round_trips_through_quoting(elements: list) -> None:
    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = ", ".join(";".join(f"{name}={quote(value)}" for name, value in element.items())
                     for element in elements)
    assert parse_forwarded(text) == elements
