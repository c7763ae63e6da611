"""Streaming multipart uploads: one pipeline (:mod:`.pipeline`), one upload
directory (:mod:`.storage`), safe names (:mod:`.names`) and the ``/upFile``
and download views (:mod:`.views`).

``config.include("pyramid_sessup.uploads")`` adds ``POST /upFile`` and
``GET /uploads/{name}`` (paths from ``sessup.routes.upload`` and
``sessup.upload.url_prefix``), under the include's ``route_prefix``.
"""
from __future__ import annotations

from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    config.include(".views")
