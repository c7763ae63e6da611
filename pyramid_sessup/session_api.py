"""``config.include("pyramid_sessup.session_api")``: session endpoints for
script clients and the demo pages.

``GET /csrf``
    A CSRF token for script clients (send it back in ``X-CSRF-Token``).
``GET /session``
    Counts views (express-session's classic example): ``{"views": N}``.
``GET /session/info``
    The session's views, ``new``, created time and expiry, without counting.
``POST /session/regenerate``, ``POST /session/destroy``
    New ID with the same data, or no session at all; CSRF-checked.

Each path comes from a ``sessup.routes.*`` setting (empty leaves the route
out) and honours ``route_prefix``.  Every answer depends on the session, so
none may be cached (``Cache-Control: no-store``).
"""
from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request

from .csrf import require_csrf
from .routing import add_route_views, ensure_base

GROUP = "session_api"


def _no_store(request: Request) -> None:
    request.response.headers["Cache-Control"] = "no-store"


def session_views(request: Request) -> dict[str, Any]:
    _no_store(request)
    session = request.session
    session["views"] = session.get("views", 0) + 1
    return {"views": session["views"]}


def session_info(request: Request) -> dict[str, Any]:
    """What the session page shows, without counting a view."""
    _no_store(request)
    session = request.session
    return {
        "views": session.get("views", 0),
        "new": session.new,
        "created": session.created,
        # The idle expiry, or the end of sessup.session.max_lifetime if that comes first.
        "expires_at": session.expires_at,
    }


def csrf_token(request: Request) -> dict[str, str]:
    _no_store(request)
    return {"csrf_token": request.session.get_csrf_token()}


def regenerate(request: Request) -> dict[str, Any]:
    require_csrf(request)
    _no_store(request)
    request.session.regenerate()
    return {"regenerated": True, "views": request.session.get("views", 0)}


def destroy(request: Request) -> dict[str, Any]:
    require_csrf(request)
    _no_store(request)
    request.session.invalidate()
    return {"destroyed": True}


#: Route name, the RouteSettings field of its path, method, view.
ROUTES = (
    ("sessup.csrf", "csrf", "GET", csrf_token),
    ("sessup.session", "session", "GET", session_views),
    ("sessup.session_info", "session_info", "GET", session_info),
    ("sessup.session_regenerate", "session_regenerate", "POST", regenerate),
    ("sessup.session_destroy", "session_destroy", "POST", destroy),
)


def includeme(config: Configurator) -> None:
    routes = ensure_base(config).routes
    for name, field, method, view in ROUTES:
        path = getattr(routes, field)
        if path:
            add_route_views(config, GROUP, name, path, {method: view}, renderer="json")
