"""The Date field every response carries (RFC 9110 s.6.6.1), cached per second."""

from __future__ import annotations

import time
from email.utils import formatdate

#: (the second's start, its end, its IMF-fixdate): replaced whole, so a
#: thread reads the three of one second. Two float comparisons per call
#: (an int() of the clock costs more than the rest of the call).
_current: tuple[float, float, str] = (0.0, 0.0, "")


def http_date() -> str:
    """The current IMF-fixdate, recomputed at most once per second (and
    whenever the clock leaves the second it was made for, either way)."""
    now = time.time()
    start, end, text = _current
    if start <= now < end:
        return text
    return _new_second(now)


def _new_second(now: float) -> str:
    global _current
    second = int(now)
    text = formatdate(second, usegmt=True)
    _current = (float(second), float(second + 1), text)
    return text
