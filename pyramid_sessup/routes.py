"""Routes of the demo application (``main``); the add-on's own routes are
added by :func:`pyramid_sessup.includeme`."""
from __future__ import annotations

import os

from pyramid.config import Configurator

#: The project's top-level static/ folder, beside the package.
DEFAULT_STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def includeme(config: Configurator) -> None:
    values = config.registry.sessup_settings
    config.add_static_view("static", values["static.path"] or DEFAULT_STATIC, cache_max_age=3600)
    config.include(".views.home")
    config.include(".views.pages")
    config.include(".forms.views")
    config.include(".tus.demo")
