"""A small Falcon app the cross-engine suite serves under /falcon/.

    /hello?name=N  a page from a (stdlib) template
    /form          GET: a form and its CSRF cookie; POST: the field, only
                   when the form's token matches the cookie (double submit)
    /upload        a multipart upload: file name, size, SHA-256 and a field
    /stream        a streamed body (a generator: no Content-Length)
    /file          a file body (Falcon hands it to wsgi.file_wrapper)
    /error         raises: Falcon's default handler logs it and answers 500

Falcon has neither templates nor CSRF protection of its own: a real app
adds both, as here. Built on first use: the cgi engine starts a process per
request and only the requests for /falcon/ pay for importing Falcon.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from pathlib import Path

import falcon

#: The file /falcon/file serves.
SERVED_FILE = Path(__file__).resolve().parent / "django_project" / "templates" / "hello.html"
CSRF_COOKIE = "csrftoken"

HELLO = string.Template("<p>Hello, $name, from a Falcon page.</p>\n")
FORM = string.Template('<form method="post" action="form">'
                       '<input type="hidden" name="csrf" value="$token"><input name="field"></form>\n')


class Hello:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_HTML
        resp.text = HELLO.substitute(name=req.get_param("name", default="world"))


class Form:
    def on_get(self, req, resp):
        token = secrets.token_hex(16)
        resp.set_cookie(CSRF_COOKIE, token, secure=False, http_only=True, path="/")
        resp.content_type = falcon.MEDIA_HTML
        resp.text = FORM.substitute(token=token)

    def on_post(self, req, resp):
        form = req.get_media()
        cookie = req.get_cookie_values(CSRF_COOKIE) or [""]
        if not cookie[0] or not hmac.compare_digest(cookie[0], form.get("csrf", "")):
            raise falcon.HTTPForbidden(title="CSRF token missing or wrong")
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"posted {form['field']}"


class Upload:
    def on_post(self, req, resp):
        found: dict[str, str] = {}
        for part in req.get_media():
            if part.name == "file":
                data = part.stream.read()
                found["file"] = f"{part.secure_filename} {len(data)} {hashlib.sha256(data).hexdigest()}"
            else:
                found[part.name] = part.text
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"{found['file']} {found['note']}"


class Stream:
    def on_get(self, req, resp):
        count = req.get_param_as_int("chunks", default=3)
        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = (f"falcon chunk {i}\n".encode() for i in range(count))


class File:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_HTML
        resp.set_stream(open(SERVED_FILE, "rb"), SERVED_FILE.stat().st_size)


class Error:
    def on_get(self, req, resp):
        raise RuntimeError("the Falcon /error resource always fails")


def make_app() -> falcon.App:
    app = falcon.App()
    for route, resource in (("/hello", Hello()), ("/form", Form()), ("/upload", Upload()),
                            ("/stream", Stream()), ("/file", File()), ("/error", Error())):
        app.add_route(route, resource)
    return app
