from django.urls import path

from . import views

urlpatterns = [
    path("hello", views.hello),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
    path("file", views.file),
    path("error", views.error),
]
