"""TLS for every engine: the server's context, written once, and what all models share.

The options are gunicorn's: `--certfile` (the PEM certificate chain),
`--keyfile` (its key, if not in the certfile), `--ca-certs` and `--cert-reqs`
(client certificates: 0 not asked for, 1 optional, 2 required), `--ciphers`
(the OpenSSL list for TLS 1.2). Every TCP listener then speaks TLS, no unix
socket does (`flash_green.binds`), and `wsgi.url_scheme` is `https` there.
A mistake in them - a missing file, a key that does not match, a cipher
list OpenSSL rejects - is one line at start-up, before anything listens.

What TLS adds to a connection, on every engine
    A handshake before the first request: a round trip (two with TLS 1.2)
    and about a millisecond of CPU for the key exchange and the signature
    (`docs/deploy.md` has the figures). It is bounded by --header-timeout,
    like a request head, so a client that connects and never says hello
    holds its connection - a thread, a greenlet, a Channel - that long, no
    longer. Then each request and response is encrypted and authenticated:
    a copy and an AES-GCM pass over every byte, and records of at most 16
    KB, so a large response is cut into more system calls.

How each model waits for the handshake is that model's lesson (see each
engine's docstring): a blocking call with a timeout in a thread, a green
socket in a greenlet, a HANDSHAKING state with EPOLLIN/EPOLLOUT interest in
the epoll loops, traps in a tasklet, the SSL protocol of an asyncio
transport. OpenSSL says what it waits for with SSLWantReadError and
SSLWantWriteError - OSErrors, not BlockingIOErrors, so a loop that only
knows EAGAIN takes them for a broken connection.

What the context refuses, and why the loops may rely on it: renegotiation
(TLS 1.2) is off, and OpenSSL answers a TLS 1.3 KeyUpdate at the next
write, so a read never has to write and a write never has to read; the
non-blocking loops wait for the direction of the call they made.

A client that speaks plain HTTP, or garbage, to a TLS port fails the
handshake: its connection is closed, with one INFO line naming it, and
nobody else notices.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

#: --cert-reqs values (gunicorn's, ssl.CERT_* numbers).
CERT_REQS = {0: ssl.CERT_NONE, 1: ssl.CERT_OPTIONAL, 2: ssl.CERT_REQUIRED}


class TLSError(ValueError):
    """TLS options that cannot work; the message is one line for the operator."""


def server_context(config: Config, context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """The SSLContext of `config`'s TLS options (`context_class` for a green one).

    TLS 1.2 at least, ALPN `http/1.1`, no renegotiation. A client that
    closes without close_notify ends its stream like one that sends it: HTTP
    frames its own messages, so a cut is seen anyway, and OpenSSL 3 would
    otherwise answer the end of the stream with a decode_error alert - on
    a connection we shut for reading ourselves (`BlockingServer.close_idle`)
    the client would read that alert instead of our close_notify.
    """
    if config.cert_reqs not in CERT_REQS:
        raise TLSError(f"--cert-reqs must be 0 (none), 1 (optional) or 2 (required), got {config.cert_reqs}")
    if config.cert_reqs and not config.ca_certs:
        raise TLSError(f"--cert-reqs {config.cert_reqs} needs --ca-certs: the CAs client certificates are checked against")
    context = context_class(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_IGNORE_UNEXPECTED_EOF
    context.set_alpn_protocols(["http/1.1"])
    _load(context.load_cert_chain, "--certfile/--keyfile", config.certfile, config.keyfile)
    if config.ca_certs:
        _load(context.load_verify_locations, "--ca-certs", config.ca_certs)
    context.verify_mode = CERT_REQS[config.cert_reqs]
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError:
            raise TLSError(f"--ciphers {config.ciphers!r}: OpenSSL knows no cipher in that list") from None
    return context


def _load(load, option: str, *paths: str | None) -> None:
    try:
        load(*paths)
    except FileNotFoundError as exc:
        raise TLSError(f"{option}: {exc.filename or paths[0]}: no such file") from None
    except ssl.SSLError as exc:
        raise TLSError(f"{option} {' '.join(p for p in paths if p)}: {_reason(exc)}") from None
    except OSError as exc:
        raise TLSError(f"{option}: {exc.filename or paths[0]}: {exc.strerror}") from None


def _reason(exc: ssl.SSLError) -> str:
    known = {
        "KEY_VALUES_MISMATCH": "the key does not belong to the certificate",
        "NO_START_LINE": "not a PEM file",
        "PEM_LIB": "not a PEM certificate and key",
    }
    return known.get(exc.reason or "", exc.reason or str(exc))


def check(config: Config) -> None:
    """Refuse unusable TLS options at start-up (TLSError), before anything listens."""
    if config.certfile is None:
        for option, value in (("--keyfile", config.keyfile), ("--ca-certs", config.ca_certs),
                              ("--ciphers", config.ciphers)):
            if value is not None:
                raise TLSError(f"{option} is given without --certfile: TLS needs a certificate")
        if config.cert_reqs:
            raise TLSError("--cert-reqs is given without --certfile: TLS needs a certificate")
        return
    server_context(config)


def wrap(context: ssl.SSLContext, sock) -> ssl.SSLSocket:
    """The server side of TLS over an accepted socket, its handshake not begun:
    the engine drives it in its own way (`context` may be a green one)."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def handshake_failure(exc: BaseException) -> str:
    """Why a handshake failed, in a few words for the log."""
    reason = getattr(exc, "reason", None)
    if reason == "HTTP_REQUEST":
        return "the client spoke plain HTTP to a TLS port"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "it did not complete within --header-timeout"
    return reason or str(exc) or type(exc).__name__


def shut_reading(sock) -> None:
    """Shut the reading side of an SSL socket's descriptor, leaving its TLS
    session alone: its reader (another thread, another greenlet) then sees
    the end of the stream and may still say close_notify. The socket's own
    `shutdown` would drop the session under the reader's feet."""
    raw = socket.socket(fileno=sock.fileno())
    try:
        raw.shutdown(socket.SHUT_RD)
    finally:
        raw.detach()


def send_close_notify(sock) -> None:
    """End the TLS session (close_notify) without waiting for the client's.

    Waiting would hold the connection for a peer that may never answer;
    sending lets the client tell our end of the stream from a cut
    connection. One non-blocking attempt: whatever fails, the caller closes.
    """
    try:
        sock.settimeout(0.0)
        sock.unwrap()
    except (OSError, ValueError):
        pass  # SSLWantReadError: sent, the client's answer not there (yet)
