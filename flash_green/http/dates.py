"""The Date field every response carries (RFC 9110 s.6.6.1), cached per second."""

from __future__ import annotations

import time
from email.utils import formatdate

_date_cache: list = [0, ""]


def http_date() -> str:
    """The current IMF-fixdate, recomputed at most once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]
