"""One renderer for every error answer of pyramid_sessup.

Every error a client can cause maps to a 4xx (or 503/507) whose message names
what went wrong, never a server path or a traceback: text or JSON by
``Accept``, ``X-Content-Type-Options: nosniff``, ``Cache-Control: no-store``,
and ``Retry-After`` (``sessup.retry_after``) on 503.  Only the add-on's own
exception classes are rendered here; the host application's errors stay the
host's.
"""
from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from .exceptions import SessupError
from .urls import Answer

#: Seconds in ``Retry-After`` when no setting says otherwise.
DEFAULT_RETRY_AFTER = 5


def wants_json(request: Request) -> bool:
    """True if the client prefers JSON over plain text (``Accept`` header)."""
    # acceptable_offers: best quality first, ties in our order (WebOb deprecates best_match).
    offers = request.accept.acceptable_offers(["text/plain", "application/json", "text/html"])
    return bool(offers) and offers[0][0] == "application/json"


def _retry_after(request: Request) -> int:
    values = getattr(request.registry, "sessup_settings", None)
    return values.retry_after if values else DEFAULT_RETRY_AFTER


def fill_error(response: Response, request: Request, exc: SessupError) -> Response:
    """Make ``response`` (new or already built) the error answer for ``exc``."""
    response.status = exc.status_code  # type: ignore[assignment]
    if request.method == "HEAD":
        response.body = b""
    elif wants_json(request):
        body: dict[str, Any] = {"error": exc.message, "code": exc.code, **exc.details}
        response.json_body = body
        response.content_type = "application/json"
    else:
        response.content_type = "text/plain"
        response.charset = "utf-8"
        response.text = exc.message + "\n"
    headers = response.headers
    headers["Cache-Control"] = "no-store"
    # Messages may repeat a client's file name: never let a browser sniff them as HTML.
    headers["X-Content-Type-Options"] = "nosniff"
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.status_code in (429, 503) and "Retry-After" not in exc.headers:
        headers["Retry-After"] = str(_retry_after(request))
    for key, value in exc.headers.items():
        headers[key] = value
    return response


def render_error(request: Request, exc: SessupError) -> Response:
    """The error answer for ``exc``."""
    return fill_error(Answer(), request, exc)


def error_response(request: Request, status: int, message: str, **details: Any) -> Response:
    """A plain-text or JSON error answer without raising."""
    return render_error(request, SessupError(message, status=status, **details))


def sessup_error_view(exc: SessupError, request: Request) -> Response:
    # No log line here: the session store logs an outage once, not per request.
    return render_error(request, exc)


def includeme(config: Configurator) -> None:
    config.add_exception_view(sessup_error_view, context=SessupError)
