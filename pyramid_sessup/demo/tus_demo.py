"""``GET /tus-demo``: a minimal page driving ``static/sessup-tus.js``.

Part of the demo application, not of the add-on: a host application that
includes ``pyramid_sessup.tus`` gets the ``/files/`` endpoint but no demo page.
"""
from __future__ import annotations

from html import escape

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from ..tus.views import ROUTE_COLLECTION

ROUTE_DEMO = "sessup.tus_demo"

_DEMO = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Resumable upload (tus)</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>Resumable upload (tus)</h1>
<form id="tus-form" data-sessup-tus data-endpoint="{endpoint}" data-chunk-size="{chunk}">
  <p><label for="tus-file">File</label> <input type="file" name="inputFile" id="tus-file"></p>
  <p><progress id="tus-progress" data-tus-progress value="0" max="100"></progress>
     <output id="tus-status" data-tus-status></output></p>
  <p><a id="tus-result" data-tus-result hidden></a></p>
</form>
<script src="{script}"></script>
</body></html>
"""


def demo(request: Request) -> Response:
    """A minimal page driving ``static/sessup-tus.js`` (``?chunk=`` bytes per PATCH)."""
    chunk = request.params.get("chunk", "")
    chunk = chunk if chunk.isdigit() and 0 < int(chunk) <= 1 << 30 else str(5 * 1024 * 1024)
    from .pages import page_values

    script = page_values(request, csrf=False).static("sessup-tus.js")
    body = _DEMO.format(endpoint=escape(request.route_path(ROUTE_COLLECTION, slash="/")), chunk=chunk,
                        script=escape(script))
    response = Response(body=body.encode("utf-8"), content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def includeme(config: Configurator) -> None:
    if config.registry.sessup_settings.routes.tus:
        config.add_route(ROUTE_DEMO, "/tus-demo")
        config.add_view(demo, route_name=ROUTE_DEMO, request_method="GET")
