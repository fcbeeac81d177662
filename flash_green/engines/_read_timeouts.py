"""How long a client may take to send a request: the rules, written once.

Every engine bounds the same three waits; only the clock differs (a socket
timeout, a hub timer, a once-a-second sweep, the reactor's deadline
heap, a loop timer):

* **idle** (`--keep-alive`): waiting for the first byte of a request. When
  it runs out the connection closes without a word: nothing was asked.
* **head** (`--header-timeout`): from the first byte of a request head to
  its blank line, *absolute*. A deadline that moved with every byte would
  let a client trickling one byte a second hold its connection (a thread,
  a slot of --max-connections) for ever: slowloris.
* **body** (`--body-timeout`, `--min-body-rate`): the wait between two
  reads of body bytes is bounded (inactivity, nginx's client_body_timeout),
  and the upload as a whole must keep a minimum pace: it may take
  --body-timeout seconds plus one second per --min-body-rate bytes received
  (Apache mod_reqtimeout's MinRate), checked when bytes arrive - silence is
  the inactivity rule's business. `UploadPace` is that check.

A head or body that runs out of time gets `408 Request Timeout` with
`Connection: close` when no response to the request began (a request
body read by a streaming app after its head went out can only be cut),
then the connection closes.
"""

from __future__ import annotations

import math

from ..config import Config
from ..http import HTTPError


def head_timeout(config: Config) -> HTTPError:
    return HTTPError(408, f"request head not complete within {config.header_timeout:g} s")


def body_timeout(config: Config) -> HTTPError:
    return HTTPError(408, f"no request body bytes for {config.body_timeout:g} s")


class UploadPace:
    """The minimum-rate rule for one request body.

    Create it when the server first waits for body bytes; report the bytes
    as they come (`arrived`, or `extend` per piece and `check` once per
    read). With --min-body-rate 0 the deadline is infinite.
    """

    __slots__ = ("config", "deadline", "seconds_per_byte")

    def __init__(self, config: Config, now: float) -> None:
        self.config = config
        rate = config.min_body_rate
        self.seconds_per_byte = 1.0 / rate if rate > 0 else 0.0
        self.deadline = now + config.body_timeout if rate > 0 else math.inf

    def extend(self, nbytes: int) -> None:
        """Each body byte received buys 1 / --min-body-rate more seconds."""
        self.deadline += nbytes * self.seconds_per_byte

    def check(self, now: float) -> None:
        """HTTPError 408 if the upload has fallen behind the minimum rate."""
        if now > self.deadline:
            raise HTTPError(408, f"request body slower than {self.config.min_body_rate:g} bytes/s")

    def arrived(self, nbytes: int, now: float) -> None:
        self.extend(nbytes)
        self.check(now)
