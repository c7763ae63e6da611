"""pyramid_sessup: sessions and file uploads for Pyramid, done properly.

Two ways in:

* ``pserve development.ini`` runs the demo application (:func:`main`);
* ``config.include('pyramid_sessup')`` gives a host application the session
  factory, CSRF policy, settings handling and (when ``sessup.upload.path`` is
  set) the upload routes (:func:`includeme`).
"""
from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.router import Router

from .csrf import SessupCSRFStoragePolicy
from .settings import parse_settings

__all__ = ["main", "includeme", "get_sessup_settings"]


def get_sessup_settings(registry: Any) -> dict[str, Any]:
    """The parsed ``sessup.*`` values (by key without prefix) of an application."""
    return registry.sessup_settings


def includeme(config: Configurator) -> None:
    """Configure sessions, CSRF and uploads from the ``sessup.*`` settings.

    Raises :class:`pyramid.exceptions.ConfigurationError` naming the key for
    any unknown or ill-typed setting.
    """
    from .session import session_factory_from_values
    from .stores import make_store

    values = parse_settings(config.get_settings())
    config.registry.sessup_settings = values
    store = make_store(values)
    config.registry.sessup_store = store
    config.set_session_factory(session_factory_from_values(values, store))
    config.set_csrf_storage_policy(SessupCSRFStoragePolicy())
    config.set_default_csrf_options(require_csrf=True)
    config.include(".errors")
    config.include(".badrequest")
    config.include(".views.session")
    if values["upload.path"]:
        config.include(".uploads.views")
        config.include(".tus.views")


def main(global_config: dict[str, Any] | None, **settings: Any) -> Router:
    """The WSGI application behind ``pserve development.ini`` (``paste.app_factory``)."""
    with Configurator(settings=settings) as config:
        config.include(includeme)
        config.include(".badrequest")
        config.include(".routes")
    return config.make_wsgi_app()
