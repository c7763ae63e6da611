"""``GET /``: the demo application's home page (``templates/home.pt``)."""
from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request


def home(request: Request) -> dict[str, Any]:
    from .pages import home as render_home

    return render_home(request)


def includeme(config: Configurator) -> None:
    config.add_route("home", "/")
    config.add_view(home, route_name="home", request_method="GET", renderer="pyramid_sessup:templates/home.pt")
