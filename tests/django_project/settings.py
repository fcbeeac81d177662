"""Settings of the suite's Django project: no database, no sessions, CSRF on."""

from pathlib import Path

HERE = Path(__file__).resolve().parent

DEBUG = False
SECRET_KEY = "the-suite-does-not-keep-secrets"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.django_project.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [HERE / "templates"],
}]
USE_TZ = True
# Leave logging to the server: django.request's ERROR records (a view that
# raised) propagate to the root logger the CLI writes to stderr.
LOGGING_CONFIG = None
