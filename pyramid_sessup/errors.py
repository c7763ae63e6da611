"""Turn pyramid_sessup's errors into clear answers: text or JSON by ``Accept``.

Every error a client can cause maps to a 4xx (or 503/507) with a message that
names what went wrong, never a server path or a traceback.
"""
from __future__ import annotations

import logging

from pyramid.config import Configurator
from pyramid.exceptions import BadCSRFOrigin, BadCSRFToken
from pyramid.request import Request
from pyramid.response import Response

from .exceptions import SessupError

log = logging.getLogger("pyramid_sessup")


def wants_json(request: Request) -> bool:
    """True if the client prefers JSON over plain text (``Accept`` header)."""
    best = request.accept.best_match(["text/plain", "application/json", "text/html"], "text/plain")
    return best == "application/json"


def error_response(request: Request, status: int, message: str, **extra: object) -> Response:
    """A plain-text or JSON error answer; JSON is ``{"error": message, **extra}``."""
    if wants_json(request):
        response = Response(status=status, json_body={"error": message, **extra})
    else:
        response = Response(status=status, body=(message + "\n").encode("utf-8"),
                            content_type="text/plain", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    # Messages may repeat a client's file name: never let a browser sniff them as HTML.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def sessup_error_view(exc: SessupError, request: Request) -> Response:
    response = error_response(request, exc.status_code, str(exc) or type(exc).__name__)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def csrf_error_view(exc: BadCSRFToken | BadCSRFOrigin, request: Request) -> Response:
    # Pyramid answers 400 here; a missing/wrong token or a foreign origin is a refusal, so 403.
    if isinstance(exc, BadCSRFOrigin):
        return error_response(request, 403, "Cross-origin request refused (Origin/Referer check)")
    return error_response(request, 403, "CSRF token missing or incorrect")


def includeme(config: Configurator) -> None:
    config.add_exception_view(sessup_error_view, context=SessupError)
    config.add_exception_view(csrf_error_view, context=BadCSRFToken)
    config.add_exception_view(csrf_error_view, context=BadCSRFOrigin)
