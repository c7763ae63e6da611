"""The session layer's cost without a server: the demo app in process (WebTest),
file store, best of 7 rounds of 300 requests each.

    .venv/bin/python bench/inprocess.py

Two rows: ``GET /session`` with a cookie (load, merge, write, cookie) and an
anonymous ``GET /csrf`` (a fresh client each time).  Run it from two checkouts
(``PYTHONPATH=<checkout>``) to compare commits; it needs no other process.
"""
from __future__ import annotations

import tempfile
import time

import webtest
from pyramid.paster import get_appsettings

from pyramid_sessup.demo import main

ROUNDS, REQUESTS = 7, 300


def best_microseconds(app: webtest.TestApp, path: str, fresh_client: bool) -> float:
    """Best per-request time of ``GET path`` over the rounds, in µs."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(REQUESTS):
            client = webtest.TestApp(app.app, extra_environ={"HTTP_HOST": "example.com"}) if fresh_client else app
            client.get(path)
        best = min(best, (time.perf_counter() - started) / REQUESTS * 1e6)
    return best


def run() -> None:
    data = tempfile.mkdtemp(prefix="sessup-inprocess-")
    settings = dict(get_appsettings("testing.ini"))
    settings.update({"sessup.session.store": "file", "sessup.session.file.path": data + "/sessions",
                     "sessup.upload.path": data + "/uploads"})
    app = webtest.TestApp(main({}, **settings), extra_environ={"HTTP_HOST": "example.com"})
    app.get("/session")  # the session the first row reuses
    print(f"GET /session with cookie: {best_microseconds(app, '/session', False):.0f} µs; "
          f"anonymous GET /csrf: {best_microseconds(app, '/csrf', True):.0f} µs")


if __name__ == "__main__":
    run()
