"""How much a client may send: the protocol core's own limits.

The parser enforces them and answers each with its own status; the server's
configuration (`flash_green.config.Config.limits`) holds one of these, filled
from the command line. Defined here so that the core depends on nothing
above it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Request-size limits. Each one, when exceeded, gets its own status."""

    #: Longest request line in octets (414 beyond). RFC 9112 s.3 asks for at
    #: least 8000.
    max_request_line: int = 8190
    #: Longest single header field line in octets (431 beyond).
    max_field_size: int = 8190
    #: Most header fields in one request (431 beyond).
    max_header_fields: int = 100
    #: Whole header section, request line included (431 beyond).
    max_header_size: int = 65536
    #: Largest request body, by Content-Length or decoded chunks (413 beyond).
    max_body_size: int = 256 * 1024 * 1024
    #: Longest chunk-size line, extensions included (400 beyond).
    max_chunk_line: int = 4096
    #: Largest trailer section of a chunked body (431 beyond).
    max_trailer_size: int = 8192
    #: Refuse HTTP/1.1 requests without a Host field (RFC 9112 s.3.2 says
    #: MUST); off only to replay old corpora that omit it.
    require_host: bool = True
