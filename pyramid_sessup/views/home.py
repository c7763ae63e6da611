"""``GET /``: the demo application's home page."""
from __future__ import annotations

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pyramid_sessup</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>pyramid_sessup</h1>
<p>Sessions and file uploads for Pyramid.</p>
<ul>
<li><a href="/session">/session</a>: this session's view count (JSON)</li>
<li><a href="/csrf">/csrf</a>: a CSRF token for script clients (JSON)</li>
</ul></body></html>
"""


def home(request: Request) -> Response:
    return Response(_PAGE, content_type="text/html", charset="utf-8")


def includeme(config: Configurator) -> None:
    config.add_route("home", "/")
    config.add_view(home, route_name="home", request_method="GET")
