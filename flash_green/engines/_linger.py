"""Lingering after an error response: the rule, written once; each I/O model waits its own way.

Why
    A server that answers 400 or 413 and closes while the client is still
    sending (the rest of an oversized body, requests pipelined after a bad
    one) closes with unread input, and Linux then sends RST instead of FIN.
    The RST can overtake the error response in the client's receive path:
    the client reads "connection reset" instead of our 4xx. So the server
    half-closes first (FIN after the response; on TLS a close_notify before
    it), reads and drops what still comes, and closes at the client's end
    of stream (Apache's and nginx's lingering close).

The rule
    At most `LINGER_SECONDS` in all, so that a client trickling a byte now
    and then cannot hold the connection, and at most `LINGER_BYTES`, so that
    one still uploading gigabytes cannot either: past either bound we close
    anyway (its RST is then the client's own doing). `still_to_drop` counts
    the bytes.

Each model, its own way of waiting
    * blocking sockets (`_blocking.linger`: sequential, threads, green
      threads): a recv loop under a socket timeout that shrinks to what is
      left of `LINGER_SECONDS`;
    * callbacks (`_pump.RequestPump.drop_input`: the reactor of epoll and
      event, asyncio's Protocol): a LINGERING state whose data callbacks
      count down, and a timer of `LINGER_SECONDS`;
    * tasklets: a tasklet drains under `ignore_after(LINGER_SECONDS, ...)`;
    * asyncio over TLS cannot half-close: its transport's close sends
      close_notify and reads until the client answers, bounded by
      `LINGER_SECONDS` (`ssl_shutdown_timeout`).
"""

from __future__ import annotations

#: The longest a connection lingers after an error response (seconds, in all).
LINGER_SECONDS = 1.0
#: The most input a lingering connection reads and drops.
LINGER_BYTES = 1 << 20


def still_to_drop(left: int, data: bytes) -> int:
    """Bytes a lingering connection may still drop once `data` arrived with
    `left` to go; 0 means close now: the client's end of stream (b"") or the
    byte bound reached."""
    if not data:
        return 0
    return max(0, left - len(data))
