"""A test app whose answer is the content of a file, read when it is imported.

`FLASH_TEST_RELOAD_FILE` names the file. Change the file, and only a reload
of the app (a new import) changes the answer.
"""

from __future__ import annotations

import os

with open(os.environ["FLASH_TEST_RELOAD_FILE"], "rb") as source:
    ANSWER = source.read()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]
