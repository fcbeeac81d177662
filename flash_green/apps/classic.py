"""An example of the class-based API (`flash_green.handler`).

    python -m flash_green serve flash_green.apps.classic:app --engine threaded
"""

from __future__ import annotations

import json

from ..handler import RequestHandler, as_wsgi


class Guestbook(RequestHandler):
    """GET / lists the entries, POST / adds one (the body), anything else 501."""

    entries: list[str] = []

    def do_GET(self):
        if self.path != "/":
            self.send_error(404, f"no page at {self.path}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"entries": self.entries}).encode())

    def do_POST(self):
        entry = self.body.decode("utf-8", "replace").strip()
        if not entry:
            self.send_error(400, "an entry needs a body")
            return
        self.entries.append(entry)
        self.send_response(201, "Created")
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(f"entry {len(self.entries)} added\n".encode())

    def do_error(self, code, message):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.wfile.write(json.dumps({"error": code, "message": message}).encode())


app = as_wsgi(Guestbook)
