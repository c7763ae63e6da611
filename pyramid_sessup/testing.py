"""Helpers for host applications' WebTest suites.

::

    from pyramid_sessup.testing import csrf_token, settings_for_tests, upload

    def test_upload(tmp_path):
        app = webtest.TestApp(make_my_app(settings_for_tests(tmp_path)))
        res = upload(app, [("a.txt", b"hello")])
        assert res.json["files"][0]["size"] == 5

:func:`settings_for_tests` gives the ``sessup.*`` settings of a test (memory
store, an upload directory under ``tmp_path``); :func:`csrf_token` fetches the
add-on's CSRF token through ``GET /csrf`` (keeping the cookies in the
``TestApp``); :func:`upload` posts files to ``/upFile`` with that token.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

#: A secret for tests only; ``sessup.production`` refuses it.
TESTING_SECRET = "testing-secret-not-for-production-0123456789"


def settings_for_tests(tmp_path: str | os.PathLike[str], **overrides: Any) -> dict[str, Any]:
    """``sessup.*`` settings for a test: memory store, uploads under ``tmp_path/uploads``.

    ``overrides`` are more settings, by full key (``**{"sessup.session.rolling": "true"}``).
    """
    uploads = os.path.join(os.fspath(tmp_path), "uploads")
    os.makedirs(uploads, exist_ok=True)
    return {
        "sessup.session.secret": TESTING_SECRET,
        "sessup.session.store": "memory",
        "sessup.upload.path": uploads,
        **overrides,
    }


def csrf_token(app: Any, path: str = "/csrf") -> str:
    """The add-on's CSRF token for ``app``'s visitor (a ``webtest.TestApp``),
    from ``GET /csrf`` (``path`` under a route prefix: ``"/api/csrf"``)."""
    return str(app.get(path, headers={"Accept": "application/json"}).json["csrf_token"])


def upload(app: Any, files: Iterable[tuple[str, bytes] | tuple[str, bytes, str]], *,
           path: str = "/upFile", field: str = "inputFile", fields: Sequence[tuple[str, str]] = (),
           csrf_path: str = "/csrf", token: str | None = None, status: int | str | None = None,
           json: bool = True) -> Any:
    """POST ``files`` (``(filename, content)`` or ``(filename, content, type)``) to
    ``path`` as ``multipart/form-data`` in ``field``, with the CSRF token in
    ``X-CSRF-Token`` (fetched from ``csrf_path`` unless ``token`` is given).

    Returns the WebTest response (JSON unless ``json=False``); ``status`` as
    WebTest's (``"*"`` accepts any).
    """
    import webtest

    token = csrf_token(app, csrf_path) if token is None else token
    uploads = [(field, webtest.Upload(*f)) for f in files]
    headers = {"X-CSRF-Token": token}
    if json:
        headers["Accept"] = "application/json"
    return app.post(path, params=[*fields, *uploads], headers=headers, status=status,
                    content_type="multipart/form-data")
