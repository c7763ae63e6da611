"""400, never 500, for request input that is not valid UTF-8.

Pyramid and WebOb decode the path, the query string, cookies and form bodies
as UTF-8 when something first reads them, and a ``UnicodeDecodeError`` there
(``/%ff``, ``?x=%ff``, ``?_LOCALE_=%ff``, a cookie holding ``\\xff``) would
be a 500 with a traceback in the log; so would the ``DeprecationWarning``
WebOb *raises* when a form body declares a charset other than UTF-8.  This
module answers 400 instead, with a short plain-text body, ``nosniff`` and
``no-store``, and logs no traceback:

* a tween checks the path and the query string before anything else runs;
* an exception view turns such an error raised by a view into 400 when the
  request's cookies or form body are what fails to decode;
* the same tween catches such an error escaping an exception view (a
  not-found page rendered in the locale the query string asks for).

An error that no request input explains is a bug and still propagates (a
500), so this never hides one.
"""
from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import unquote_to_bytes

from pyramid.config import Configurator
from pyramid.registry import Registry
from pyramid.request import Request
from pyramid.response import Response
from pyramid.tweens import EXCVIEW

log = logging.getLogger("pyramid_sessup.badrequest")

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def bad_request(message: str = "Bad request: the URL, a cookie or the form is not valid UTF-8") -> Response:
    """The 400 answer (plain text, never sniffed, never cached)."""
    response = Response(status=400, body=(message + "\n").encode("utf-8"), content_type="text/plain",
                        charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def url_is_malformed(environ: dict[str, object]) -> bool:
    """Whether the path or the query string does not decode as UTF-8 (as
    Pyramid's router and WebOb's ``request.GET`` will decode them)."""
    path = str(environ.get("PATH_INFO") or "")
    query = str(environ.get("QUERY_STRING") or "")
    if path.isascii() and query.isascii() and "%" not in query:
        return False  # the common case, without any copying
    try:
        return not (_utf8(path.encode("latin-1")) and _utf8(unquote_to_bytes(query.encode("latin-1"))))
    except UnicodeEncodeError:  # not a PEP 3333 string at all
        return True


#: What this module answers 400 for, when the request's input explains it.
DECODE_ERRORS = (UnicodeDecodeError, DeprecationWarning)


def input_explains(request: Request, exc: BaseException) -> bool:
    """Whether the request's own input (URL, cookies, form body) explains ``exc``."""
    form = request.content_type in _FORM_TYPES
    if isinstance(exc, DeprecationWarning):
        # WebOb's refusal of a form in another charset ("Requests are expected to be submitted in UTF-8").
        return form and request.charset.upper() not in ("UTF-8", "UTF8")
    if url_is_malformed(request.environ):
        return True
    try:
        request.cookies.items()
    except UnicodeDecodeError:
        return True
    return form


def decode_error_view(exc: Exception, request: Request) -> Response:
    if not input_explains(request, exc):
        raise exc
    log.debug("400: request input is not UTF-8 (%s)", request.method)
    return bad_request()


def tween_factory(handler: Callable[[Request], Response], registry: Registry) -> Callable[[Request], Response]:
    def tween(request: Request) -> Response:
        if url_is_malformed(request.environ):
            return bad_request("Bad request: the URL is not valid UTF-8")
        try:
            return handler(request)
        except DECODE_ERRORS as exc:
            if not input_explains(request, exc):
                raise
            log.debug("400: request input is not UTF-8 (%s)", request.method)
            return bad_request()

    return tween


def includeme(config: Configurator) -> None:
    # Once per application: the route groups and the demo all include it.
    if getattr(config.registry, "sessup_badrequest", False):
        return
    config.registry.sessup_badrequest = True
    # Over the exception-view tween: it also sees errors raised while an
    # exception view renders.
    config.add_tween("pyramid_sessup.badrequest.tween_factory", over=EXCVIEW)
    for error in DECODE_ERRORS:
        config.add_exception_view(decode_error_view, context=error)
