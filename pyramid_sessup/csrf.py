"""CSRF checks of the add-on's own views, whatever the host's CSRF policy.

The add-on's views run with ``require_csrf=False`` (Pyramid's check would parse
an upload body through ``request.POST``, and the host's policy may keep its
token elsewhere) and call these instead.  The token is the one the session
hands out (``request.session.get_csrf_token()``, which ``GET /csrf`` returns).
"""
from __future__ import annotations

import hmac

from pyramid.csrf import check_csrf_origin
from pyramid.exceptions import BadCSRFOrigin
from pyramid.interfaces import IDefaultCSRFOptions
from pyramid.request import Request

from .exceptions import CSRFRefused

#: Header and form field of the token (Pyramid's defaults).
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

#: What a refused script client is told, so the 403 says how to succeed.
HOW_TO = (f"get a token from GET /csrf (keep its cookies) and send it in the {CSRF_HEADER} header "
          f"or a {CSRF_FIELD} form field before the files")


def check_origin(request: Request) -> None:
    """Pyramid's HTTPS ``Origin``/``Referer`` check, with the host's options."""
    options = request.registry.queryUtility(IDefaultCSRFOptions)
    try:
        check_csrf_origin(request, raises=True, allow_no_origin=getattr(options, "allow_no_origin", False))
    except BadCSRFOrigin:
        raise CSRFRefused("Cross-origin request refused (Origin/Referer check)", code="csrf_origin") from None


def check_token(request: Request, supplied: str | None) -> None:
    """Raise :class:`CSRFRefused` unless ``supplied`` is this visitor's token
    (constant-time comparison)."""
    if not supplied:
        raise CSRFRefused(f"CSRF token missing: {HOW_TO}", code="csrf_token_missing")
    expected = str(request.session.get_csrf_token())
    if not hmac.compare_digest(expected.encode("utf-8"), supplied.encode("utf-8", "surrogateescape")):
        raise CSRFRefused(f"CSRF token incorrect or expired: {HOW_TO}")


def require_csrf(request: Request) -> None:
    """Check a small state-changing request: origin, then the token from the
    header or (urlencoded forms only) the ``csrf_token`` field."""
    check_origin(request)
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None and request.content_type == "application/x-www-form-urlencoded":
        supplied = request.POST.get(CSRF_FIELD)
    check_token(request, supplied)
