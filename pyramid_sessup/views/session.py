"""Session endpoints: ``GET /session`` counts views (the classic express-session
example), ``GET /csrf`` hands script clients a CSRF token, and two POSTs
(CSRF-checked) regenerate the ID or destroy the session."""
from __future__ import annotations

import time
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request


def session_views(request: Request) -> dict[str, Any]:
    session = request.session
    session["views"] = session.get("views", 0) + 1
    return {"views": session["views"]}


def session_info(request: Request) -> dict[str, Any]:
    """What the session page shows, without counting a view."""
    session = request.session
    return {
        "views": session.get("views", 0),
        "new": session.new,
        "created": session.created,
        "expires_at": time.time() + request.registry.sessup_settings["session.timeout"],
    }


def csrf_token(request: Request) -> dict[str, str]:
    return {"csrf_token": request.session.get_csrf_token()}


def regenerate(request: Request) -> dict[str, Any]:
    request.session.regenerate()
    return {"regenerated": True, "views": request.session.get("views", 0)}


def destroy(request: Request) -> dict[str, Any]:
    request.session.invalidate()
    return {"destroyed": True}



def includeme(config: Configurator) -> None:
    config.add_route("sessup.session", "/session")
    config.add_route("sessup.session_info", "/session/info")
    config.add_route("sessup.csrf", "/csrf")
    config.add_route("sessup.session_regenerate", "/session/regenerate")
    config.add_route("sessup.session_destroy", "/session/destroy")
    config.add_view(session_views, route_name="sessup.session", request_method="GET", renderer="json")
    config.add_view(session_info, route_name="sessup.session_info", request_method="GET", renderer="json")
    config.add_view(csrf_token, route_name="sessup.csrf", request_method="GET", renderer="json")
    config.add_view(regenerate, route_name="sessup.session_regenerate", request_method="POST", renderer="json")
    config.add_view(destroy, route_name="sessup.session_destroy", request_method="POST", renderer="json")
