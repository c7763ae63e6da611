"""The demo application behind ``pserve development.ini``: a client of the
add-on, never imported by it.

:func:`main` includes the add-on (session factory, the three route groups)
the way a host application would, then (unless ``sessup.demo.pages = false``,
as in production.ini) the demo's own pages: ``/``, ``/upload`` (the deform
form), ``/ajax``, ``/session/page``, ``/account/...`` (sign in, your
sessions) and ``/tus-demo``, ``/favicon.ico`` and the assets at ``/static``.
"""
from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.router import Router

from .. import STATIC
from ..csrf import SessupCSRFStoragePolicy
from ..settings import SessupSettings


def static_spec(values: SessupSettings) -> str:
    """What ``/static`` serves: ``sessup.static.path``, else the package's assets."""
    return values.static_path or STATIC


def includeme(config: Configurator) -> None:
    """The demo's pages (after the add-on and its route groups are included)."""
    values = config.registry.sessup_settings
    config.add_static_view("static", static_spec(values), cache_max_age=3600)
    config.include(".pages")
    config.include(".account")
    if values.upload.enabled:
        config.include(".form")
    if values.upload.enabled:
        config.include(".tus_demo")


def main(global_config: dict[str, Any] | None, **settings: Any) -> Router:
    """The WSGI application behind ``pserve development.ini`` (``paste.app_factory``)."""
    with Configurator(settings=settings) as config:
        config.include("pyramid_sessup")
        # The demo is the host here: a 400 (not a 500) for input that is not
        # UTF-8, and Pyramid's require_csrf on the add-on's tokens.
        config.include("pyramid_sessup.badrequest")
        config.set_csrf_storage_policy(SessupCSRFStoragePolicy())
        config.include("pyramid_sessup.session_api")
        if config.registry.sessup_settings.upload.enabled:
            config.include("pyramid_sessup.uploads")
        if config.registry.sessup_settings.upload.enabled:  # tus keeps its state where the files go
            config.include("pyramid_sessup.tus")
        if config.registry.sessup_settings.demo_pages:
            config.include(".")
    return config.make_wsgi_app()
