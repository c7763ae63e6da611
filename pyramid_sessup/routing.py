"""How the route groups (``pyramid_sessup.session_api``, ``.uploads``, ``.tus``)
add their routes: each path from its ``sessup.routes.*`` setting, under the
host's ``route_prefix``, with the add-on's own CSRF checks and a 405 (with
``Allow``) for any other method."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from pyramid.config import Configurator
from pyramid.request import Request

from .exceptions import MethodNotAllowed
from .settings import SessupSettings
from .urls import remember_prefix


def ensure_base(config: Configurator) -> SessupSettings:
    """The parsed settings, including ``pyramid_sessup`` first if the host has not.

    Also :mod:`pyramid_sessup.badrequest`: a route's URL that is not valid UTF-8
    (``/api/uploads/%ff``) would otherwise be a 500 from the router itself,
    before any view of the group could answer.  It only turns such 500s into
    400s, whichever route they hit."""
    if getattr(config.registry, "sessup_settings", None) is None:
        config.include("pyramid_sessup")
    config.include("pyramid_sessup.badrequest")
    return config.registry.sessup_settings


def add_route_views(config: Configurator, group: str, name: str, path: str,
                    views: Mapping[str | tuple[str, ...], Callable[[Request], Any]], **view_options: Any) -> None:
    """Route ``name`` at ``path`` answering ``views`` (method(s) -> view), and
    405 with ``Allow`` for every other method.

    The views run with ``require_csrf=False`` whatever the host's default: each
    state-changing view of the add-on checks the add-on's token itself.
    """
    remember_prefix(config, group)
    config.add_route(name, path)
    methods: list[str] = []
    for method, view in views.items():
        config.add_view(view, route_name=name, request_method=method, require_csrf=False, **view_options)
        methods.extend([method] if isinstance(method, str) else method)
    allowed = ", ".join(methods)

    def not_allowed(request: Request) -> Any:
        raise MethodNotAllowed(f"Method {request.method} is not allowed here; use {allowed}",
                               headers={"Allow": allowed})

    config.add_view(not_allowed, route_name=name, require_csrf=False)
