"""Baselines for bench/run.py, served by the bench INIs' server (production.ini's gunicorn) and tuning.

    .venv/bin/python bench/bare_app.py pyramid PORT   # a bare Pyramid app: GET / and /static/*
    .venv/bin/python bench/bare_app.py wsgi PORT      # a bare WSGI hello world (the ceiling)

The bare Pyramid app serves the project's static/ folder the way
pyramid_sessup's demo app does, so "requests that never touch the session"
(a static file) measure only what sessup adds (session factory, CSRF policy,
exception views, more routes), not a different body.
"""
from __future__ import annotations

import configparser
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent

_PAGE = (
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bare</title>\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\n"
    "<body><h1>bare Pyramid</h1>\n<p>A bare Pyramid view, the baseline of the benchmark.</p>\n"
    + "<p>" + "x" * 300 + "</p>\n</body></html>\n"
)


def pyramid_app() -> Callable[..., Any]:
    from pyramid.config import Configurator
    from pyramid.response import Response

    def home(request: Any) -> Response:
        return Response(_PAGE, content_type="text/html", charset="utf-8")

    with Configurator() as config:
        config.add_route("home", "/")
        config.add_view(home, route_name="home", request_method="GET")
        # The project's static files, served as pyramid_sessup's demo app serves them.
        config.add_static_view("static", str(HERE.parent / "static"), cache_max_age=3600)
    return config.make_wsgi_app()


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"Hello World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def server_options(ini: Path = HERE / "file.ini") -> dict[str, str]:
    """The [server:main] tuning of the bench INIs (without use and port)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    return {k: v for k, v in parser.items("server:main") if k not in ("use", "bind")}


def main(argv: list[str]) -> None:
    from pyramid_sessup.serving import gunicorn

    kind, port = argv[1], argv[2]
    app = pyramid_app() if kind == "pyramid" else wsgi_app
    # The same runner and settings as pserve bench/<store>.ini (gunicorn's logging from that INI).
    gunicorn(app, {"__file__": str(HERE / "file.ini"), "here": str(HERE)}, port=port, **server_options())


if __name__ == "__main__":
    main(sys.argv)
