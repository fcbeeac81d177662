"""The views: each one leans on one part of the WSGI contract."""

import hashlib

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from .settings import HERE

#: The file /django/file serves.
SERVED_FILE = HERE / "templates" / "hello.html"


def hello(request):
    return render(request, "hello.html", {"name": request.GET.get("name", "world")})


def form(request):
    """GET: a form with a CSRF token (and its cookie); POST: the posted field."""
    if request.method == "POST":
        return HttpResponse(f"posted {request.POST['field']}", content_type="text/plain")
    return render(request, "form.html")


@csrf_exempt
def upload(request):
    """A multipart upload: the file's name, size and SHA-256, as Django parsed it."""
    received = request.FILES["file"]
    digest = hashlib.sha256(received.read()).hexdigest()
    return HttpResponse(f"{received.name} {received.size} {digest} {request.POST['note']}",
                        content_type="text/plain")


def stream(request):
    count = int(request.GET.get("chunks", "3"))
    return StreamingHttpResponse((f"django chunk {i}\n" for i in range(count)), content_type="text/plain")


def file(request):
    return FileResponse(open(SERVED_FILE, "rb"), content_type="text/html")


def error(request):
    raise RuntimeError("the Django /error view always fails")
