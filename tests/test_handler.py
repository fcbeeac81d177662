"""The class-based handler API, served through the real WSGI adapter."""

from __future__ import annotations

import json
from wsgiref.validate import validator

from flash_green.apps.classic import Guestbook
from flash_green.handler import RequestHandler, as_wsgi

from .httpclient import build_request
from .test_wsgi import serve, split_response


def call(app, method="GET", path="/", body=b"", headers=None):
    """One request, as bytes, through the protocol core and the WSGI adapter
    (flash_green.wsgi.Exchange) with wsgiref.validate around the app; the
    status line, header fields and body of the bytes that would go out."""
    raw, _, _ = serve(build_request(method, path, body, headers), validator(app))
    status_line, fields, body = split_response(raw)
    return status_line.split(" ", 1)[1], fields, body


def test_get_post_and_errors():
    Guestbook.entries = []
    app = as_wsgi(Guestbook)
    status, _, body = call(app, "POST", "/", b"hello")
    assert status == "201 Created" and body == b"entry 1 added\n"
    status, headers, body = call(app)
    assert status == "200 OK" and json.loads(body) == {"entries": ["hello"]}
    assert headers["Content-Length"] == str(len(body))
    status, _, body = call(app, path="/nope")
    assert status == "404 Not Found" and json.loads(body)["error"] == 404
    status, _, body = call(app, "DELETE")
    assert status.startswith("501") and json.loads(body)["error"] == 501


def test_exception_goes_through_do_error():
    class Broken(RequestHandler):
        def do_GET(self):
            raise ValueError("boom")

    status, _, body = call(as_wsgi(Broken))
    assert status == "500 Internal Server Error" and body.startswith(b"500")


def test_headers_and_query():
    class Echo(RequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.wfile.write(f"{self.headers['X-Name']} {self.query['q'][0]}".encode())

    _, _, body = call(as_wsgi(Echo), path="/?q=1", headers={"X-Name": "ada"})
    assert body == b"ada 1"
