"""A small Django project the cross-engine suite serves under /django/.

Templates, a form POST guarded by CSRF, a multipart upload, a streamed and a
file response, and a view that raises: the parts of Django that lean on the
WSGI server (cookies, wsgi.input, wsgi.file_wrapper, iterables, SCRIPT_NAME).
"""
